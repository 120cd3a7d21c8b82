//! Storage engine benchmarks (issue: foundation). Prints a Markdown table for docs/BENCHMARKS.md.
//!
//! `cargo bench -p timeshard-storage --bench storage`
//!
//! - durable appends (fdatasync before each append resolves) of 1 KiB records in batches of 500,
//!   and of 1 MiB records, against plain `write` + `fdatasync` of the same bytes to one file,
//!   measured in the same run on the same disk;
//! - sequential reads from the page cache;
//! - opening a store of 1,000,000 records across 100 streams;
//! - a time-index query returning 3,600 of 1,000,000 fragments.
//!
//! Arguments after `--` pick sections (`append`, `read`, `open`, `timeindex`); default all.
//! `TIMESHARD_BENCH_DIR` picks the directory (default `target/bench-data`, on the same disk as the
//! build; never a tmpfs, where fdatasync costs nothing). `TIMESHARD_BENCH_SCALE` (default 1.0)
//! scales the amounts of data.
#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use timeshard_storage::options::{StoreOptions, SyncPolicy};
use timeshard_storage::{
    NewRecord, NewShard, NewStream, Position, ReadLimits, Store, StreamKind, TimeKind,
};

fn scale() -> f64 {
    std::env::var("TIMESHARD_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn scaled(n: usize) -> usize {
    ((n as f64 * scale()) as usize).max(1)
}

fn bench_dir(name: &str) -> PathBuf {
    let root = std::env::var("TIMESHARD_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data"));
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stream(name: &str, kind: StreamKind) -> NewStream {
    NewStream::new(name, kind, u64::MAX / 4, vec![NewShard::whole_key_range()])
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// Plain sequential writes of `batch` bytes, each followed by fdatasync (unless `sync` is off).
fn plain_writes(dir: &Path, batch: usize, batches: usize, sync: bool) -> f64 {
    let path = dir.join("plain.bin");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap();
    let buf = vec![0xA5u8; batch];
    let t = Instant::now();
    for _ in 0..batches {
        f.write_all(&buf).unwrap();
        if sync {
            f.sync_data().unwrap();
        }
    }
    let r = mbps(batch * batches, t.elapsed());
    drop(f);
    std::fs::remove_file(path).unwrap();
    r
}

/// Appends of `per_append` records of `record_len` bytes, one append in flight at a time, each
/// durable before the next starts (the same rhythm as the plain baseline).
fn store_appends(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    sync: SyncPolicy,
    record_len: usize,
    per_append: usize,
    appends: usize,
) -> (f64, Store) {
    let store = Store::open(
        dir,
        StoreOptions {
            sync,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let payload = Bytes::from(vec![0x5Au8; record_len]);
    let shard = rt
        .block_on(store.create_stream(stream("bench", StreamKind::Data)))
        .unwrap()
        .shards[0]
        .uid;
    let batch: Vec<NewRecord> = (0..per_append)
        .map(|_| NewRecord {
            payload: payload.clone(),
            ..Default::default()
        })
        .collect();
    let t = Instant::now();
    rt.block_on(async {
        for _ in 0..appends {
            store.append(shard, batch.clone()).await.unwrap();
        }
    });
    (mbps(record_len * per_append * appends, t.elapsed()), store)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows: Vec<(String, String, String)> = Vec::new();

    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |section: &str| args.is_empty() || args.iter().any(|a| a == section);

    // 1. Durable appends vs plain fdatasync'd writes of the same bytes. This machine's disk is
    // noisy, so the two alternate over several rounds and the medians are compared.
    for (label, sync, record_len, per_append, appends) in [
        (
            "durable append, 1 KiB records, batches of 500",
            true,
            1024,
            500,
            scaled(200),
        ),
        (
            "durable append, 1 MiB records, one per append",
            true,
            1 << 20,
            1,
            scaled(200),
        ),
        (
            "append without fsync (software cost), 1 KiB records, batches of 500",
            false,
            1024,
            500,
            scaled(200),
        ),
    ] {
        if !run("append") {
            break;
        }
        let rounds = 5;
        let (mut plain, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let dir = bench_dir("append");
            plain.push(plain_writes(&dir, record_len * per_append, appends, sync));
            let policy = if sync {
                SyncPolicy::Always
            } else {
                SyncPolicy::Never
            };
            let (r, store) = store_appends(&rt, &dir, policy, record_len, per_append, appends);
            store.close();
            ours.push(r);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (plain_range, ours_range) = (
            format!(
                "{:.0}-{:.0}",
                plain.iter().copied().fold(f64::MAX, f64::min),
                plain.iter().copied().fold(0.0, f64::max)
            ),
            format!(
                "{:.0}-{:.0}",
                ours.iter().copied().fold(f64::MAX, f64::min),
                ours.iter().copied().fold(0.0, f64::max)
            ),
        );
        let (plain, ours) = (median(&mut plain), median(&mut ours));
        let plain_label = if sync {
            "plain write+fdatasync"
        } else {
            "plain write"
        };
        let target = if sync { " (target >= 0.7)" } else { "" };
        rows.push((
            label.to_string(),
            format!("{ours:.0} MB/s"),
            format!(
                "{plain_label} {plain:.0} MB/s; ratio {:.2}{target}; medians of {rounds} alternating rounds of {} MB, ranges {ours_range} vs {plain_range}",
                ours / plain,
                record_len * per_append * appends / 1_000_000
            ),
        ));
    }

    // 2. Sequential read from the page cache.
    if run("read") {
        let dir = bench_dir("read");
        let (_, store) = store_appends(&rt, &dir, SyncPolicy::Never, 1024, 500, scaled(2000));
        let shard = store.stream("bench").unwrap().shards[0].uid;
        let limits = ReadLimits::new(10_000, 10 << 20);
        let mut best = 0.0f64;
        for _ in 0..3 {
            let t = Instant::now();
            let mut bytes = 0;
            let mut at = Position::Oldest;
            loop {
                let b = store.read_blocking(shard, at, limits).unwrap();
                if b.records.is_empty() {
                    break;
                }
                bytes += b.records.iter().map(|r| r.payload.len()).sum::<usize>();
                at = Position::At(b.next_offset);
            }
            best = best.max(mbps(bytes, t.elapsed()));
        }
        rows.push((
            "sequential read, 1 KiB records, page cache".into(),
            format!("{best:.0} MB/s"),
            format!(
                "{} MB read, best of 3 (target >= 1000 MB/s)",
                scaled(2000) * 500 / 1000
            ),
        ));
        store.close();
    }

    // 3. Open time with 1,000,000 records across 100 streams.
    if run("open") {
        let dir = bench_dir("open");
        let streams = 100;
        let per_stream = scaled(10_000);
        let opts = StoreOptions {
            sync: SyncPolicy::Never,
            ..StoreOptions::default()
        };
        let store = Store::open(&dir, opts.clone()).unwrap();
        rt.block_on(async {
            for s in 0..streams {
                let shard = store
                    .create_stream(stream(&format!("s{s}"), StreamKind::Data))
                    .await
                    .unwrap()
                    .shards[0]
                    .uid;
                let batch: Vec<NewRecord> = (0..500)
                    .map(|i| NewRecord {
                        key: Bytes::from(format!("key{i}")),
                        payload: Bytes::from(vec![7u8; 100]),
                        ..Default::default()
                    })
                    .collect();
                for _ in 0..per_stream / 500 {
                    store.append(shard, batch.clone()).await.unwrap();
                }
            }
        });
        store.close();
        drop(store);
        let mut times = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let store = Store::open(&dir, opts.clone()).unwrap();
            times.push(t.elapsed());
            store.close();
        }
        times.sort();
        rows.push((
            format!(
                "open a store of {} records in {streams} streams",
                streams * per_stream
            ),
            format!("{:.1} ms", times[1].as_secs_f64() * 1e3),
            "median of 3 clean opens (target <= 1000 ms)".into(),
        ));
    }

    // 4. Time index: 3,600 of 1,000,000 fragments (one per second) by producer time.
    if run("timeindex") {
        let dir = bench_dir("timeindex");
        let total = scaled(1_000_000);
        let opts = StoreOptions {
            sync: SyncPolicy::Never,
            ..StoreOptions::default()
        };
        let store = Store::open(&dir, opts.clone()).unwrap();
        let shard = rt
            .block_on(store.create_stream(stream("cam", StreamKind::Video)))
            .unwrap()
            .shards[0]
            .uid;
        let start_ms = 1_700_000_000_000i64;
        let t = Instant::now();
        rt.block_on(async {
            for chunk in 0..total.div_ceil(1000) {
                let batch: Vec<NewRecord> = (0..1000)
                    .map(|i| {
                        let n = (chunk * 1000 + i) as i64;
                        NewRecord {
                            key: Bytes::from_static(b"fragment"),
                            payload: Bytes::from(vec![1u8; 64]),
                            producer_ts_ms: Some(start_ms + n * 1000),
                            flags: 0,
                        }
                    })
                    .collect();
                store.append(shard, batch).await.unwrap();
            }
        });
        let fill = t.elapsed();
        store.close();
        drop(store);
        let store = Store::open(&dir, opts).unwrap();
        let mut times = Vec::new();
        let mut returned = 0;
        for q in 0..50i64 {
            let from = start_ms + (q * 7919 % (total as i64 - 3600).max(1)) * 1000;
            let t = Instant::now();
            let r = store
                .time_range_blocking(
                    shard,
                    TimeKind::Producer,
                    from,
                    from + 3_599_999,
                    None,
                    10_000,
                )
                .unwrap();
            times.push(t.elapsed());
            returned = r.len();
        }
        times.sort();
        rows.push((
            format!("time index range query, {returned} of {total} fragments"),
            format!("{:.2} ms", times[times.len() / 2].as_secs_f64() * 1e3),
            format!(
                "median of 50, p99 {:.2} ms (target <= 2 ms); index filled at {:.0} fragments/s",
                times[times.len() * 99 / 100].as_secs_f64() * 1e3,
                total as f64 / fill.as_secs_f64()
            ),
        ));
        store.close();
    }

    println!("| benchmark | result | notes |");
    println!("|---|---|---|");
    for (a, b, c) in rows {
        println!("| {a} | {b} | {c} |");
    }
}
