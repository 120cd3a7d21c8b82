//! Counters the engine keeps for `/metrics`. Plain atomics: the writer thread bumps them without
//! locks, and the server renders them in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the fsync latency histogram buckets.
const FSYNC_BUCKETS_S: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A fixed-bucket latency histogram (cumulative on render, as Prometheus expects).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; FSYNC_BUCKETS_S.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = FSYNC_BUCKETS_S.iter().position(|&b| s <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in FSYNC_BUCKETS_S.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum_s = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum_s}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Engine-wide counters.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Append commands resolved successfully (a batch counts once).
    pub appends: AtomicU64,
    /// Records appended.
    pub appended_records: AtomicU64,
    /// Record bytes appended (headers included).
    pub appended_bytes: AtomicU64,
    /// Appends that failed with an I/O error.
    pub append_errors: AtomicU64,
    /// Segment fdatasync latency.
    pub fsync: Histogram,
    /// Segments removed by retention.
    pub segments_deleted: AtomicU64,
    /// Bytes read back from segments.
    pub read_bytes: AtomicU64,
}

impl StoreMetrics {
    /// Appends the engine's metrics in the Prometheus text exposition format.
    pub fn render_prometheus(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 6] = [
            (
                "timeshard_storage_appends_total",
                "Append commands completed.",
                &self.appends,
            ),
            (
                "timeshard_storage_appended_records_total",
                "Records appended.",
                &self.appended_records,
            ),
            (
                "timeshard_storage_appended_bytes_total",
                "Record bytes appended, headers included.",
                &self.appended_bytes,
            ),
            (
                "timeshard_storage_append_errors_total",
                "Append commands failed by an I/O error.",
                &self.append_errors,
            ),
            (
                "timeshard_storage_segments_deleted_total",
                "Segments removed by retention.",
                &self.segments_deleted,
            ),
            (
                "timeshard_storage_read_bytes_total",
                "Bytes read from segment files.",
                &self.read_bytes,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        self.fsync.render(
            "timeshard_storage_fsync_seconds",
            "Latency of segment fdatasync calls.",
            out,
        );
    }
}
