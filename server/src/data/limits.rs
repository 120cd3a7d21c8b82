//! The AWS per-shard quotas, enforced only in `--limits aws` mode (for users who test against
//! timeshard before deploying to AWS): writes 1 MiB/s and 1,000 records/s per shard, reads
//! 2 MiB/s and 5 GetRecords calls/s per shard. Token buckets refilled continuously from the
//! server's (injectable) clock, holding at most one second's worth.

use std::collections::HashMap;
use std::sync::Mutex;

use timeshard_storage::ShardUid;

const WRITE_BYTES_PER_S: f64 = 1_048_576.0;
const WRITE_RECORDS_PER_S: f64 = 1_000.0;
const READ_BYTES_PER_S: f64 = 2_097_152.0;
const READ_CALLS_PER_S: f64 = 5.0;

/// A token bucket holding at most one second's worth (`per_s` tokens), refilled continuously.
/// Also used by the video control-plane rates (`video::limits`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    pub(crate) tokens: f64,
    pub(crate) last_ms: i64,
    pub(crate) per_s: f64,
}

impl Bucket {
    pub(crate) fn full(per_s: f64, now_ms: i64) -> Self {
        Bucket {
            tokens: per_s,
            last_ms: now_ms,
            per_s,
        }
    }

    pub(crate) fn refill(&mut self, now_ms: i64) {
        let elapsed_s = (now_ms - self.last_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed_s * self.per_s).min(self.per_s);
        self.last_ms = now_ms.max(self.last_ms);
    }

    /// Refills, then takes one token if there is one.
    pub(crate) fn try_take(&mut self, now_ms: i64) -> bool {
        self.refill(now_ms);
        let fits = self.tokens >= 1.0;
        if fits {
            self.tokens -= 1.0;
        }
        fits
    }
}

#[derive(Debug, Clone, Copy)]
struct ShardBuckets {
    write_bytes: Bucket,
    write_records: Bucket,
    read_bytes: Bucket,
    read_calls: Bucket,
}

impl ShardBuckets {
    fn new(now_ms: i64) -> Self {
        ShardBuckets {
            write_bytes: Bucket::full(WRITE_BYTES_PER_S, now_ms),
            write_records: Bucket::full(WRITE_RECORDS_PER_S, now_ms),
            read_bytes: Bucket::full(READ_BYTES_PER_S, now_ms),
            read_calls: Bucket::full(READ_CALLS_PER_S, now_ms),
        }
    }
}

/// Per-shard quota state.
#[derive(Debug, Default)]
pub struct ShardQuotas {
    shards: Mutex<HashMap<ShardUid, ShardBuckets>>,
}

impl ShardQuotas {
    fn with<T>(&self, shard: ShardUid, now_ms: i64, f: impl FnOnce(&mut ShardBuckets) -> T) -> T {
        let mut map = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        let b = map
            .entry(shard)
            .or_insert_with(|| ShardBuckets::new(now_ms));
        for bucket in [
            &mut b.write_bytes,
            &mut b.write_records,
            &mut b.read_bytes,
            &mut b.read_calls,
        ] {
            bucket.refill(now_ms);
        }
        f(b)
    }

    /// Takes one record of `bytes` (data plus partition key) from the shard's write quota, if it
    /// has room for it.
    pub fn try_write(&self, shard: ShardUid, bytes: usize, now_ms: i64) -> bool {
        self.with(shard, now_ms, |b| {
            let fits = b.write_records.tokens >= 1.0 && b.write_bytes.tokens >= bytes as f64;
            if fits {
                b.write_records.tokens -= 1.0;
                b.write_bytes.tokens -= bytes as f64;
            }
            fits
        })
    }

    /// Takes one GetRecords call, if the shard has call quota and its read bytes are not in
    /// debt.
    pub fn try_read(&self, shard: ShardUid, now_ms: i64) -> bool {
        self.with(shard, now_ms, |b| {
            let fits = b.read_calls.tokens >= 1.0 && b.read_bytes.tokens > 0.0;
            if fits {
                b.read_calls.tokens -= 1.0;
            }
            fits
        })
    }

    /// Charges bytes a GetRecords call returned; a large response puts the shard in debt, so the
    /// calls that follow are refused until it is paid off (as AWS does after a 10 MiB read).
    pub fn charge_read(&self, shard: ShardUid, bytes: usize, now_ms: i64) {
        self.with(shard, now_ms, |b| b.read_bytes.tokens -= bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_limited_per_second_by_records_and_bytes() {
        let q = ShardQuotas::default();
        let s = ShardUid(1);
        assert_eq!((0..1500).filter(|_| q.try_write(s, 10, 0)).count(), 1000);
        // The quota refills continuously: half a second brings back half of it.
        assert_eq!((0..1500).filter(|_| q.try_write(s, 10, 500)).count(), 500);
        assert!(!q.try_write(s, 10, 500));
        // Bytes: one 1 MiB record fills the second.
        let big = ShardUid(2);
        assert!(q.try_write(big, 1 << 20, 0));
        assert!(!q.try_write(big, 1, 0));
        // Shards do not share quota.
        assert!(q.try_write(ShardUid(3), 10, 0));
    }

    #[test]
    fn reads_are_limited_by_calls_and_byte_debt() {
        let q = ShardQuotas::default();
        let s = ShardUid(1);
        assert_eq!((0..10).filter(|_| q.try_read(s, 0)).count(), 5);
        assert!(q.try_read(s, 1000));
        // A 10 MiB response: five seconds of read bytes owed.
        q.charge_read(s, 10 << 20, 1000);
        assert!(!q.try_read(s, 4000));
        assert!(q.try_read(s, 6100));
    }
}
