//! The catalog: streams, shards, segment rows and the time index, all in one redb file
//! (`catalog.redb`). Payload bytes never live here (DESIGN.md, storage rule 1).
//!
//! Stream and shard rows are JSON so they can grow fields without a format bump; the hot tables
//! (segments, time index) hold fixed binary values described in `format.rs`.

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::seqno::{SequenceNumber, ShardUid};

/// `meta`: `format_version` (u32), `next_stream_id` (u64), `next_shard_uid` (u64), LE bytes.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// `streams`: stream name -> JSON [`StreamMeta`].
pub(crate) const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
/// `shards`: shard uid -> JSON [`ShardMeta`].
pub(crate) const SHARDS: TableDefinition<u64, &[u8]> = TableDefinition::new("shards");
/// `segments`: (shard uid, base offset) -> [`crate::format::SegmentRow`].
pub(crate) const SEGMENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("segments");
/// `time_by_offset`: (shard uid, offset) -> time entry, for records with a producer timestamp.
pub(crate) const TIME_BY_OFFSET: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("time_by_offset");
/// `time_by_producer`: (shard uid, producer ts ms, offset) -> time entry.
pub(crate) const TIME_BY_PRODUCER: TableDefinition<(u64, i64, u64), &[u8]> =
    TableDefinition::new("time_by_producer");
/// `time_by_server`: (shard uid, server ts ms, offset) -> time entry.
pub(crate) const TIME_BY_SERVER: TableDefinition<(u64, i64, u64), &[u8]> =
    TableDefinition::new("time_by_server");
/// `stream_blobs`: (stream id, blob id) -> bytes. Small per-stream values that records refer to
/// by id (a video ingest session's tracks), numbered 1, 2, ... per stream.
pub(crate) const STREAM_BLOBS: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("stream_blobs");

pub(crate) const KEY_FORMAT_VERSION: &str = "format_version";
pub(crate) const KEY_NEXT_STREAM_ID: &str = "next_stream_id";
pub(crate) const KEY_NEXT_SHARD_UID: &str = "next_shard_uid";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Video,
    Data,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamStatus {
    Creating,
    Active,
    Updating,
    Deleting,
}

/// A stream as the catalog keeps it. API families keep their own fields (device name, media
/// type, stream mode, encryption, ...) in `attributes`, so storage needs no knowledge of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    pub name: String,
    /// Store-unique, never reused; part of the stream's ARN.
    pub id: u64,
    pub kind: StreamKind,
    /// Records older than this (by server time) are removed. 0 keeps nothing.
    pub retention_ms: u64,
    /// Oldest segments are removed while the stream holds more than this many bytes.
    pub byte_budget: Option<u64>,
    /// Bumped by every change; checked by optimistic updates.
    pub version: u64,
    pub tags: BTreeMap<String, String>,
    pub attributes: BTreeMap<String, String>,
    pub created_ms: i64,
    pub status: StreamStatus,
}

/// A shard: a hash-key range of a stream, and its append-only log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    pub uid: ShardUid,
    pub stream_id: u64,
    /// Index within the stream (`shardId-000000000003` is index 3); continues across reshards.
    pub index: u32,
    #[serde(with = "u128_string")]
    pub hash_start: u128,
    #[serde(with = "u128_string")]
    pub hash_end: u128,
    pub parent: Option<u32>,
    pub adjacent_parent: Option<u32>,
    /// Set when the shard closes: the offset after its last record. No appends after that.
    pub closed_at: Option<u64>,
    /// When the shard closed (server time, ms).
    #[serde(default)]
    pub closed_ms: Option<i64>,
    /// The first offset retention has not removed.
    pub trim_offset: u64,
    pub created_ms: i64,
}

impl ShardMeta {
    pub fn is_open(&self) -> bool {
        self.closed_at.is_none()
    }

    /// The number before the shard's first record (Kinesis `StartingSequenceNumber`).
    pub fn starting_sequence(&self) -> SequenceNumber {
        SequenceNumber::shard_start(self.uid)
    }

    /// For a closed shard, the number of its last record (Kinesis `EndingSequenceNumber`); a
    /// shard closed before any record ends at its starting number.
    pub fn ending_sequence(&self) -> Option<SequenceNumber> {
        self.closed_at.map(|end| match end.checked_sub(1) {
            Some(last) => SequenceNumber::of_record(self.uid, last),
            None => SequenceNumber::shard_start(self.uid),
        })
    }
}

mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

pub(crate) fn read_u64(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<u64>, StoreError> {
    match table.get(key)? {
        None => Ok(None),
        Some(v) => {
            let bytes: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| StoreError::Catalog(format!("meta key {key} is not 8 bytes")))?;
            Ok(Some(u64::from_le_bytes(bytes)))
        }
    }
}
