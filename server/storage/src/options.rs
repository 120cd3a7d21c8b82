//! Store configuration: durability policy, segment rolling, the clock and the file backend.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::fs::{Fs, RealFs};

/// When appended bytes are made durable with `fdatasync`, and when an append resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Every append resolves only after its bytes are fdatasync'd. Appends that queue while a
    /// sync is running share the next one (group commit). The default.
    #[default]
    Always,
    /// Appends resolve once written to the page cache; a sync follows within the given delay.
    /// A crash of the machine (not of the process) may lose up to that much acknowledged data.
    Batch(Duration),
    /// Never sync. For tests and benchmarks only: a machine crash loses data.
    Never,
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncPolicy::Always => f.write_str("always"),
            SyncPolicy::Batch(d) => write!(f, "batch:{}ms", d.as_millis()),
            SyncPolicy::Never => f.write_str("never"),
        }
    }
}

/// Parses `always`, `never`, or `batch:<delay>` / `batch <delay>` where the delay is a number
/// with a unit (`us`, `ms`, `s`), e.g. `batch:5ms`.
impl FromStr for SyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "always" => return Ok(SyncPolicy::Always),
            "never" => return Ok(SyncPolicy::Never),
            _ => {}
        }
        let rest = s
            .strip_prefix("batch")
            .ok_or_else(|| {
                format!("unknown sync policy {s:?}: expected always, batch:<delay> or never")
            })?
            .trim_start_matches([':', ' ', '='])
            .trim();
        let delay = parse_duration(rest).map_err(|e| format!("sync policy {s:?}: {e}"))?;
        if delay.is_zero() {
            return Err(format!(
                "sync policy {s:?}: the batch delay must be above zero"
            ));
        }
        Ok(SyncPolicy::Batch(delay))
    }
}

/// Parses a duration such as `250us`, `5ms`, `2s`, `10m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {s:?} has no unit (us, ms, s, m, h)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {s:?} does not start with a number"))?;
    let d = match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => {
            return Err(format!(
                "duration {s:?} has an unknown unit {unit:?} (us, ms, s, m, h)"
            ));
        }
    };
    Ok(d)
}

/// Everything [`crate::Store::open`] needs besides the directory.
#[derive(Clone)]
pub struct StoreOptions {
    pub sync: SyncPolicy,
    /// A segment is sealed and a new one started once it holds this many bytes.
    pub segment_max_bytes: u64,
    /// A segment is sealed on the first append after its first record is this old.
    pub segment_max_age: Duration,
    /// One sparse index entry per this many segment bytes (and always one for a segment's first
    /// record).
    pub index_interval_bytes: u64,
    /// Largest accepted record payload.
    pub max_record_bytes: u32,
    /// Commands queued for the writer before appenders wait (back-pressure).
    pub writer_queue: usize,
    /// Upper bound of the catalog's (redb's) page cache. Filled only as pages are read, so it
    /// costs nothing at idle; 32 MiB made time-index range queries over 1M fragments 2.5x slower
    /// (docs/BENCHMARKS.md).
    pub catalog_cache_bytes: usize,
    pub clock: Arc<dyn Clock>,
    pub fs: Arc<dyn Fs>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: SyncPolicy::Always,
            segment_max_bytes: 128 << 20,
            segment_max_age: Duration::from_secs(15 * 60),
            index_interval_bytes: 32 << 10,
            max_record_bytes: 64 << 20,
            writer_queue: 1024,
            catalog_cache_bytes: 128 << 20,
            clock: Arc::new(SystemClock),
            fs: Arc::new(RealFs),
        }
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("sync", &self.sync)
            .field("segment_max_bytes", &self.segment_max_bytes)
            .field("segment_max_age", &self.segment_max_age)
            .field("index_interval_bytes", &self.index_interval_bytes)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("writer_queue", &self.writer_queue)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_policy_parses() {
        assert_eq!("always".parse::<SyncPolicy>(), Ok(SyncPolicy::Always));
        assert_eq!("never".parse::<SyncPolicy>(), Ok(SyncPolicy::Never));
        assert_eq!(
            "batch:5ms".parse::<SyncPolicy>(),
            Ok(SyncPolicy::Batch(Duration::from_millis(5)))
        );
        assert_eq!(
            "batch 2s".parse::<SyncPolicy>(),
            Ok(SyncPolicy::Batch(Duration::from_secs(2)))
        );
        assert!("batch:0ms".parse::<SyncPolicy>().is_err());
        assert!("batch".parse::<SyncPolicy>().is_err());
        assert!("sometimes".parse::<SyncPolicy>().is_err());
        assert!("batch:5".parse::<SyncPolicy>().is_err());
    }
}
