//! The batching producer for Kinesis Data Streams (being written; see issue 5).
