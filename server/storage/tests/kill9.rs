//! Crash test with a real `kill -9`: a child process appends under load (several concurrent
//! appenders, batches, open records, small segments so rolls happen) and prints every
//! acknowledgement; the parent kills it at a random moment, reopens the directory and checks that
//! every acknowledged record reads back byte-identical, that no record reads back corrupted, and
//! that the store always opens. At least 20 cycles on the same directory.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use timeshard_storage::options::{StoreOptions, SyncPolicy};
use timeshard_storage::{NewRecord, Position, ReadLimits, ShardUid, Store, StreamKind};

const CHILD_ENV: &str = "TIMESHARD_KILL9_CHILD_DIR";

fn opts() -> StoreOptions {
    StoreOptions {
        sync: SyncPolicy::Always,
        segment_max_bytes: 256 << 10,
        index_interval_bytes: 4 << 10,
        ..StoreOptions::default()
    }
}

/// The record for a seed: its key names the seed, its payload is derived from it.
fn record(seed: u64) -> NewRecord {
    let len = match seed % 7 {
        0 => 40_000,
        1 | 2 => 3_000,
        _ => 200 + (seed % 500) as usize,
    };
    NewRecord {
        key: Bytes::from(seed.to_string()),
        payload: payload(seed, len),
        producer_ts_ms: seed.is_multiple_of(3).then_some(seed as i64),
        flags: 0,
    }
}

/// Child side: runs until killed. Appenders take seeds from disjoint sequences and print
/// `ACK <shard> <first offset> <seed> <seed> ...` once an append resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&dir), opts()).unwrap();
    let info = match store.stream("crash") {
        Some(i) => i,
        None => store
            .create_stream(new_stream("crash", StreamKind::Video, 3, u64::MAX / 4))
            .await
            .unwrap(),
    };
    let start: u64 = std::env::var("TIMESHARD_KILL9_SEED")
        .unwrap()
        .parse()
        .unwrap();
    println!("READY");
    let mut tasks = tokio::task::JoinSet::new();
    for (lane, shard) in info
        .shards
        .iter()
        .map(|s| s.uid)
        .cycle()
        .take(6)
        .enumerate()
    {
        let store = store.clone();
        tasks.spawn(async move {
            let mut seed = start + lane as u64 * 1_000_000;
            loop {
                let n = 1 + seed % 5;
                let seeds: Vec<u64> = (seed..seed + n).collect();
                seed += n;
                let first = if lane == 5 {
                    // Open records: pushed in pieces, then committed.
                    let r = record(seeds[0]);
                    let open = match store
                        .begin_record(shard, r.producer_ts_ms, r.key.clone(), 0)
                        .await
                    {
                        Ok(o) => o,
                        Err(_) => continue, // another lane's append holds the shard; try again
                    };
                    for piece in r.payload.chunks(1000) {
                        open.push(Bytes::copy_from_slice(piece)).unwrap();
                    }
                    let a = open.commit().await.unwrap();
                    println!("ACK {} {} {}", shard.0, a.first_offset, seeds[0]);
                    continue;
                } else {
                    match store
                        .append(shard, seeds.iter().map(|s| record(*s)).collect())
                        .await
                    {
                        Ok(a) => a.first_offset,
                        Err(timeshard_storage::StoreError::ShardBusy(_)) => continue,
                        Err(e) => panic!("{e}"),
                    }
                };
                let list: Vec<String> = seeds.iter().map(u64::to_string).collect();
                println!("ACK {} {} {}", shard.0, first, list.join(" "));
            }
        });
    }
    // The appenders never return: they run until the parent kills this process. A panic in one
    // ends the child, and the parent then finds it stopped acknowledging.
    if let Some(Err(e)) = tasks.join_next().await {
        panic!("an appender failed: {e}");
    }
}

fn verify(dir: &Path, acked: &BTreeMap<(u64, u64), u64>) -> usize {
    let store = Store::open(dir, opts()).expect("the store always opens after a kill");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut total = 0;
    let info = store.stream("crash");
    for shard in info.iter().flat_map(|i| i.shards.iter()).map(|s| s.uid) {
        let batch = rt
            .block_on(store.read(shard, Position::Oldest, ReadLimits::UNBOUNDED))
            .expect("no record reads back corrupted");
        // Every stored record is well-formed: dense offsets, and a payload matching its seed.
        for (i, r) in batch.records.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "offsets are dense in shard {}", shard.0);
            let seed: u64 = std::str::from_utf8(&r.key).unwrap().parse().unwrap();
            assert_eq!(
                r.payload,
                record(seed).payload,
                "record {} of shard {} is intact",
                r.offset,
                shard.0
            );
        }
        total += batch.records.len();
    }
    // Every acknowledged record is there, byte-identical, at the offset it was acknowledged with.
    for ((shard, offset), seed) in acked {
        let b = rt
            .block_on(store.read(
                ShardUid(*shard),
                Position::At(*offset),
                ReadLimits::new(1, 1),
            ))
            .unwrap();
        let r = b
            .records
            .first()
            .unwrap_or_else(|| panic!("acknowledged record {shard}/{offset} is missing"));
        assert_eq!(
            r.offset, *offset,
            "acknowledged record {shard}/{offset} is missing"
        );
        assert_eq!(&r.key[..], seed.to_string().as_bytes());
        assert_eq!(r.payload, record(*seed).payload);
    }
    store.close();
    total
}

#[test]
fn kill9_cycles() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let cycles: u64 = std::env::var("TIMESHARD_KILL9_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x5EED);
    let mut acked: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut records_seen = 0;
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args(["--exact", "kill9_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env(
                "TIMESHARD_KILL9_SEED",
                ((cycle + 1) * 100_000_000).to_string(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the child to be appending, then kill it at a random moment.
        let ready_by = Instant::now() + Duration::from_secs(60);
        loop {
            let line = rx
                .recv_timeout(ready_by.saturating_duration_since(Instant::now()))
                .expect("child started");
            if line.ends_with("READY") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        // Only lines the child printed in full count: a line cut by the kill is no acknowledgement.
        for line in rx.try_iter() {
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.first() != Some(&"ACK") || parts.len() < 4 {
                continue;
            }
            let (Ok(shard), Ok(first)) = (parts[1].parse::<u64>(), parts[2].parse::<u64>()) else {
                continue;
            };
            for (i, s) in parts[3..].iter().enumerate() {
                if let Ok(seed) = s.parse::<u64>() {
                    acked.insert((shard, first + i as u64), seed);
                }
            }
        }
        records_seen = verify(dir.path(), &acked);
    }
    eprintln!(
        "{cycles} kill cycles: {} acknowledged records verified, {records_seen} stored",
        acked.len()
    );
    assert!(
        acked.len() > 100,
        "the children acknowledged only {} records",
        acked.len()
    );
    assert!(records_seen >= acked.len());
}
