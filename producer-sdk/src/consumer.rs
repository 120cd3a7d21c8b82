//! The media client for consumers (being written; see issue 5).
