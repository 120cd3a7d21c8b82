//! Model test: seeded random operations against the store and an in-memory model.
//!
//! Appends (single, batched, open records committed or aborted), reads at every position kind
//! with random bounds, time-index queries, retention passes after moving the clock, and reopen
//! are checked against a plain `Vec` per shard. Retention removes whole segments, so the model
//! does not predict which records go; it checks that only expired records went, that the oldest
//! kept record is the new trim horizon, and that everything else reads back exactly.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use timeshard_storage::clock::ManualClock;
use timeshard_storage::options::SyncPolicy;
use timeshard_storage::{NewRecord, Position, ReadLimits, ShardUid, Store, StreamKind, TimeKind};

#[derive(Debug, Clone, PartialEq)]
struct M {
    offset: u64,
    server_ts: i64,
    producer_ts: Option<i64>,
    flags: u16,
    key: Bytes,
    payload: Bytes,
}

struct Model {
    shards: BTreeMap<ShardUid, Vec<M>>,
    next: BTreeMap<ShardUid, u64>,
    last_ts: BTreeMap<ShardUid, i64>,
    retention_ms: BTreeMap<ShardUid, u64>,
}

fn gen_record(rng: &mut Rng, video: bool) -> NewRecord {
    let len = match rng.below(10) {
        0 => 0,
        1..=6 => rng.below(300) as usize,
        7 | 8 => rng.below(5000) as usize,
        _ => 20_000 + rng.below(40_000) as usize,
    };
    NewRecord {
        key: payload(rng.next(), rng.below(20) as usize),
        payload: payload(rng.next(), len),
        producer_ts_ms: (video || rng.chance(20)).then(|| rng.below(1_000_000) as i64 - 1000),
        flags: rng.below(4) as u16,
    }
}

async fn whole_time_index(
    store: &Store,
    shard: ShardUid,
    kind: TimeKind,
) -> Vec<timeshard_storage::IndexedRecord> {
    store
        .time_range(shard, kind, i64::MIN, i64::MAX, None, usize::MAX)
        .await
        .unwrap()
}

async fn check_shard(store: &Store, model: &Model, shard: ShardUid, rng: &mut Rng) {
    let recs = &model.shards[&shard];
    let next = model.next[&shard];
    let stats = store.shard_stats(shard).unwrap();
    assert_eq!(stats.next_offset, next, "tail of {shard}");
    let trim = stats.trim_horizon;
    assert_eq!(
        trim,
        recs.first().map_or(next, |r| r.offset),
        "trim horizon of {shard}"
    );

    // Read everything in random-sized pages from the oldest.
    let mut got = Vec::new();
    let mut pos = Position::Oldest;
    loop {
        let limits = ReadLimits::new(1 + rng.below(50) as usize, 1 + rng.below(100_000) as usize);
        let batch = store.read(shard, pos, limits).await.unwrap();
        if batch.records.is_empty() {
            assert_eq!(batch.next_offset, next);
            break;
        }
        assert!(batch.records.len() <= limits.max_records);
        pos = Position::At(batch.next_offset);
        got.extend(batch.records);
    }
    let want: Vec<M> = recs.clone();
    let got: Vec<M> = got
        .into_iter()
        .map(|r| M {
            offset: r.offset,
            server_ts: r.server_ts_ms,
            producer_ts: r.producer_ts_ms,
            flags: r.flags,
            key: r.key,
            payload: r.payload,
        })
        .collect();
    assert_eq!(got.len(), want.len(), "record count of {shard}");
    assert!(got == want, "records of {shard} differ from the model");

    // Random point reads of every position kind.
    for _ in 0..5 {
        if recs.is_empty() {
            break;
        }
        let r = &recs[rng.below(recs.len() as u64) as usize];
        let one = ReadLimits::new(1, 1);
        let at = store
            .read(shard, Position::At(r.offset), one)
            .await
            .unwrap();
        assert_eq!(at.records[0].offset, r.offset);
        let after = store
            .read(shard, Position::After(r.offset), one)
            .await
            .unwrap();
        assert_eq!(
            after.records.first().map(|x| x.offset),
            recs.iter().find(|x| x.offset > r.offset).map(|x| x.offset)
        );
        let by_time = store
            .read(shard, Position::AtServerTime(r.server_ts), one)
            .await
            .unwrap();
        let expect = recs
            .iter()
            .find(|x| x.server_ts >= r.server_ts)
            .map(|x| x.offset);
        assert_eq!(by_time.records.first().map(|x| x.offset), expect);
    }
    // Below the trim horizon reads start at it.
    if trim > 0 {
        let b = store
            .read(shard, Position::At(trim - 1), ReadLimits::new(1, 1))
            .await
            .unwrap();
        assert_eq!(
            b.records.first().map(|x| x.offset),
            recs.first().map(|x| x.offset)
        );
    }
    assert_eq!(store.resolve(shard, Position::Latest).await.unwrap(), next);

    // The time index holds exactly the kept records with a producer timestamp.
    let mut indexed: Vec<(i64, u64)> = recs
        .iter()
        .filter_map(|r| r.producer_ts.map(|p| (p, r.offset)))
        .collect();
    indexed.sort();
    let got = whole_time_index(store, shard, TimeKind::Producer).await;
    assert_eq!(
        got.iter()
            .map(|e| (e.producer_ts_ms, e.offset))
            .collect::<Vec<_>>(),
        indexed,
        "time index of {shard}"
    );
    if let Some(&(lo, _)) = indexed.first() {
        let hi = lo + rng.below(300_000) as i64;
        let want: Vec<u64> = indexed
            .iter()
            .filter(|(p, _)| *p >= lo && *p <= hi)
            .map(|(_, o)| *o)
            .collect();
        let got = store
            .time_range(shard, TimeKind::Producer, lo, hi, None, usize::MAX)
            .await
            .unwrap();
        assert_eq!(got.iter().map(|e| e.offset).collect::<Vec<_>>(), want);
    }
    let by_server = whole_time_index(store, shard, TimeKind::Server).await;
    assert_eq!(by_server.len(), indexed.len());
    assert!(
        by_server
            .windows(2)
            .all(|w| (w[0].server_ts_ms, w[0].offset) < (w[1].server_ts_ms, w[1].offset))
    );
}

/// Runs one seed; returns how many records retention removed.
async fn run(seed: u64, ops: usize) -> usize {
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut opts = small_segments(&clock, None);
    opts.sync = SyncPolicy::Never;
    opts.segment_max_bytes = 8 << 10 << rng.below(4);
    opts.index_interval_bytes = 256 << rng.below(5);
    let mut store = open(dir.path(), opts.clone());
    let mut model = Model {
        shards: BTreeMap::new(),
        next: BTreeMap::new(),
        last_ts: BTreeMap::new(),
        retention_ms: BTreeMap::new(),
    };
    let mut video_shards = Vec::new();
    for (name, kind, n, retention) in [
        ("data", StreamKind::Data, 3, 3_600_000u64),
        ("video", StreamKind::Video, 1, 600_000),
    ] {
        let info = store
            .create_stream(new_stream(name, kind, n, retention))
            .await
            .unwrap();
        for s in info.shards {
            model.shards.insert(s.uid, Vec::new());
            model.next.insert(s.uid, 0);
            model.last_ts.insert(s.uid, i64::MIN);
            model.retention_ms.insert(s.uid, retention);
            if kind == StreamKind::Video {
                video_shards.push(s.uid);
            }
        }
    }
    let shards: Vec<ShardUid> = model.shards.keys().copied().collect();
    let mut removed = 0;

    for _ in 0..ops {
        let shard = shards[rng.below(shards.len() as u64) as usize];
        let video = video_shards.contains(&shard);
        match rng.below(100) {
            0..=39 => {
                let r = gen_record(&mut rng, video);
                let a = store.append(shard, vec![r.clone()]).await.unwrap();
                apply(&mut model, shard, a, vec![r], clock.as_ref());
            }
            40..=59 => {
                let n = 1 + rng.below(40) as usize;
                let rs: Vec<NewRecord> = (0..n).map(|_| gen_record(&mut rng, video)).collect();
                let a = store.append(shard, rs.clone()).await.unwrap();
                apply(&mut model, shard, a, rs, clock.as_ref());
            }
            60..=69 => {
                let r = gen_record(&mut rng, true);
                let open = store
                    .begin_record(shard, r.producer_ts_ms, r.key.clone(), r.flags)
                    .await
                    .unwrap();
                let cut = r.payload.len() / 2;
                open.push(r.payload.slice(..cut)).unwrap();
                open.push(r.payload.slice(cut..)).unwrap();
                if rng.chance(70) {
                    let a = open.commit().await.unwrap();
                    apply(&mut model, shard, a, vec![r], clock.as_ref());
                } else {
                    open.abort();
                }
            }
            70..=84 => clock.advance_ms(rng.below(120_000) as i64),
            85..=89 => {
                // Retention: only expired records may go, and the survivors are a suffix.
                let now = clock.now_ms_pub();
                store.enforce_retention().await.unwrap();
                for s in &shards {
                    let trim = store.shard_stats(*s).unwrap().trim_horizon;
                    let cutoff = now - model.retention_ms[s] as i64;
                    let recs = model.shards.get_mut(s).unwrap();
                    for gone in recs.iter().filter(|r| r.offset < trim) {
                        assert!(
                            gone.server_ts < cutoff,
                            "retention removed record {} of {s} that had not expired",
                            gone.offset
                        );
                    }
                    let before = recs.len();
                    recs.retain(|r| r.offset >= trim);
                    removed += before - recs.len();
                }
            }
            90..=94 => check_shard(&store, &model, shard, &mut rng).await,
            _ => {
                store.close();
                drop(store);
                store = open(dir.path(), opts.clone());
            }
        }
    }
    for s in &shards {
        check_shard(&store, &model, *s, &mut rng).await;
    }
    store.close();
    drop(store);
    let store = open(dir.path(), opts);
    for s in &shards {
        check_shard(&store, &model, *s, &mut rng).await;
    }
    removed
}

trait NowPub {
    fn now_ms_pub(&self) -> i64;
}

impl NowPub for ManualClock {
    fn now_ms_pub(&self) -> i64 {
        timeshard_storage::clock::Clock::now_ms(self)
    }
}

fn apply(
    model: &mut Model,
    shard: ShardUid,
    a: timeshard_storage::Appended,
    rs: Vec<NewRecord>,
    clock: &ManualClock,
) {
    let next = model.next.get_mut(&shard).unwrap();
    assert_eq!(a.first_offset, *next, "offsets are dense");
    let last = model.last_ts.get_mut(&shard).unwrap();
    // Server time is the clock's, held back from going backwards.
    assert_eq!(
        a.server_ts_ms,
        clock.now_ms_pub().max(*last),
        "server timestamp"
    );
    *last = a.server_ts_ms;
    for r in rs {
        model.shards.get_mut(&shard).unwrap().push(M {
            offset: *next,
            server_ts: a.server_ts_ms,
            producer_ts: r.producer_ts_ms,
            flags: r.flags,
            key: r.key,
            payload: r.payload,
        });
        *next += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_many_seeds() {
    let seeds: u64 = std::env::var("TIMESHARD_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut removed = 0;
    for seed in 0..seeds {
        removed += run(seed, 400).await;
    }
    assert!(removed > 0, "the runs never exercised retention");
}
