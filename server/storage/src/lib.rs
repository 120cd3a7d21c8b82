//! timeshard-storage: the shard storage engine under both video streams and data streams.
//!
//! A shard is an append-only, time-indexed log. Its records live in segment files
//! (`shards/<uid>/<base offset>.seg`), each with a sparse position index (`.idx`); the catalog
//! (streams, shards, segment rows) and the time index of records that carry a producer timestamp
//! live in one redb file. One writer thread per data directory turns concurrent appends into
//! group commits; readers use positional reads and follow a shard's tail through a `watch`.
//!
//! The crate knows nothing of MKV, Kinesis or HTTP. The byte formats are in `docs/storage-format.md`.

mod catalog;
pub mod clock;
mod error;
mod format;
pub mod fs;
pub mod metrics;
pub mod options;
mod read;
mod recovery;
mod segment;
mod seqno;
mod shard;
mod store;
mod syncer;
mod writer;

pub use catalog::{ShardMeta, StreamKind, StreamMeta, StreamStatus};
pub use error::StoreError;
pub use format::{FORMAT_VERSION, IndexedRecord};
pub use read::{Position, ReadBatch, ReadLimits, Record};
pub use seqno::{BadSequenceNumber, SequenceNumber, ShardUid};
pub use shard::{FollowEvent, OpenRecordFollower, OpenRecordView, OpenStatus, ShardState, Tail};
pub use store::{
    Appended, NewRecord, NewShard, NewStream, OpenRecord, RetentionReport, ShardStats, Store,
    StreamInfo, TimeKind,
};
