//! Reading a shard: resolving positions to offsets and walking records across segments.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::StoreError;
use crate::fs::Fs;
use crate::segment::{Cursor, SegmentView};
use crate::shard::ShardShared;

/// A place in a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The record with this offset (or the trim horizon, if it has been removed).
    At(u64),
    /// The record after this offset.
    After(u64),
    /// The first record whose server timestamp is at or after this time.
    AtServerTime(i64),
    /// The oldest stored record (the trim horizon).
    Oldest,
    /// The tail: only records appended from now on.
    Latest,
}

/// Bounds of one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    pub max_records: usize,
    /// Payload and key bytes; the first record is returned even if it alone is larger.
    pub max_bytes: usize,
}

impl ReadLimits {
    pub const fn new(max_records: usize, max_bytes: usize) -> Self {
        ReadLimits {
            max_records,
            max_bytes,
        }
    }

    /// Everything there is (tests, tools; not for request paths).
    pub const UNBOUNDED: ReadLimits = ReadLimits::new(usize::MAX, usize::MAX);
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_records: 10_000,
            max_bytes: 10 << 20,
        }
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub server_ts_ms: i64,
    pub producer_ts_ms: Option<i64>,
    pub flags: u16,
    pub key: Bytes,
    pub payload: Bytes,
}

/// What one read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBatch {
    pub records: Vec<Record>,
    /// The offset to continue from.
    pub next_offset: u64,
    /// The shard's tail when the read ran.
    pub tail_offset: u64,
    /// The oldest stored offset when the read ran.
    pub trim_horizon: u64,
}

pub(crate) fn resolve(shard: &ShardShared, fs: &dyn Fs, at: Position) -> Result<u64, StoreError> {
    let tail = shard.tail.borrow().next_offset;
    Ok(match at {
        Position::At(o) => o.max(shard.trim_horizon()),
        Position::After(o) => o.saturating_add(1).max(shard.trim_horizon()),
        Position::Oldest => shard.trim_horizon(),
        Position::Latest => tail,
        Position::AtServerTime(ts) => first_at_time(&shard.segments(), fs, ts)?.unwrap_or(tail),
    })
}

fn first_at_time(
    segments: &[Arc<SegmentView>],
    fs: &dyn Fs,
    ts: i64,
) -> Result<Option<u64>, StoreError> {
    for seg in segments {
        if seg.is_empty() || seg.last_ts_ms.load(std::sync::atomic::Ordering::Acquire) < ts {
            continue;
        }
        let (pos, _) = seg.position_for_time(fs, ts)?;
        let mut cursor = Cursor::new(seg.file(fs)?, seg.path.clone(), pos, seg.end_pos());
        while let Some((_, h, ())) = cursor.next_header()? {
            if h.server_ts_ms >= ts {
                return Ok(Some(h.offset));
            }
        }
    }
    Ok(None)
}

pub(crate) fn read(
    shard: &ShardShared,
    fs: &dyn Fs,
    from: Position,
    limits: ReadLimits,
) -> Result<ReadBatch, StoreError> {
    let segments = shard.segments();
    let tail_offset = shard.tail.borrow().next_offset;
    let trim_horizon = segments
        .iter()
        .find(|s| !s.is_empty())
        .map_or(tail_offset, |s| s.base);
    let mut offset = resolve(shard, fs, from)?.max(trim_horizon);
    let mut records = Vec::new();
    let mut bytes = 0usize;
    let first = segments
        .partition_point(|s| s.base <= offset)
        .saturating_sub(1);
    'segments: for seg in segments.iter().skip(first) {
        let end_offset = seg.end_offset();
        if offset >= end_offset {
            continue;
        }
        // A gap (a segment lost outside our control) skips ahead rather than stalling readers.
        offset = offset.max(seg.base);
        let (pos, _) = seg.position_for_offset(fs, offset)?;
        let mut cursor = Cursor::new(seg.file(fs)?, seg.path.clone(), pos, seg.end_pos());
        cursor.read_hint = limits.max_bytes.saturating_sub(bytes);
        while records.len() < limits.max_records {
            let Some((h, key, payload)) = cursor.next_split()? else {
                break;
            };
            if h.offset < offset {
                continue;
            }
            let size = h.payload_len() + h.key_len as usize;
            if !records.is_empty() && bytes + size > limits.max_bytes {
                break 'segments;
            }
            records.push(Record {
                offset: h.offset,
                server_ts_ms: h.server_ts_ms,
                producer_ts_ms: h.producer_ts_ms,
                flags: h.user_flags,
                key,
                payload,
            });
            bytes += size;
            offset = h.offset + 1;
        }
        if records.len() >= limits.max_records {
            break;
        }
    }
    Ok(ReadBatch {
        records,
        next_offset: offset,
        tail_offset,
        trim_horizon,
    })
}
