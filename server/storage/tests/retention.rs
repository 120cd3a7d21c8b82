//! Retention by age and by byte budget, driven by a manual clock (no sleeping).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use timeshard_storage::clock::ManualClock;
use timeshard_storage::{NewRecord, Position, ReadLimits, StreamKind, TimeKind};

const HOUR: i64 = 3_600_000;

fn fragment(i: u64, producer_ts: i64) -> NewRecord {
    NewRecord {
        key: Bytes::from(format!("f{i}")),
        payload: payload(i, 700),
        producer_ts_ms: Some(producer_ts),
        flags: 0,
    }
}

#[tokio::test]
async fn age_retention_removes_whole_expired_segments_and_their_index_entries() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(100 * HOUR));
    let opts = small_segments(&clock, None);
    let store = open(dir.path(), opts.clone());
    let shard = store
        .create_stream(new_stream("cam", StreamKind::Video, 1, 2 * HOUR as u64))
        .await
        .unwrap()
        .shards[0]
        .uid;

    // 40 fragments a minute apart, then 40 more three hours later.
    for i in 0..40 {
        store
            .append(shard, vec![fragment(i, 5_000 + i as i64)])
            .await
            .unwrap();
        clock.advance_ms(60_000);
    }
    clock.advance_ms(3 * HOUR);
    for i in 40..80 {
        store
            .append(shard, vec![fragment(i, 5_000 + i as i64)])
            .await
            .unwrap();
        clock.advance_ms(1_000);
    }
    let before = store.shard_stats(shard).unwrap();
    assert_eq!(before.trim_horizon, 0);

    let report = store.enforce_retention().await.unwrap();
    assert!(report.segments_deleted > 0);
    let after = store.shard_stats(shard).unwrap();
    // Everything of the first burst is past retention; the second burst is kept whole. Whole
    // segments go, so the boundary segment (holding offsets 39 and 40) may survive.
    assert!(
        after.trim_horizon <= 40 && after.trim_horizon >= 30,
        "trim horizon {}",
        after.trim_horizon
    );
    assert_eq!(after.next_offset, 80);
    assert!(after.bytes < before.bytes);
    assert_eq!(report.index_entries_deleted, after.trim_horizon);

    let oldest = store
        .read(shard, Position::Oldest, ReadLimits::default())
        .await
        .unwrap();
    assert_eq!(oldest.records[0].offset, after.trim_horizon);
    assert_eq!(oldest.trim_horizon, after.trim_horizon);
    // A position below the horizon reads from the horizon.
    let below = store
        .read(shard, Position::At(0), ReadLimits::new(1, 1))
        .await
        .unwrap();
    assert_eq!(below.records[0].offset, after.trim_horizon);
    // No dangling time index entries.
    let idx = store
        .time_range(shard, TimeKind::Producer, 0, i64::MAX, None, 1000)
        .await
        .unwrap();
    assert_eq!(idx.first().map(|e| e.offset), Some(after.trim_horizon));
    assert_eq!(idx.len() as u64, 80 - after.trim_horizon);
    let by_server = store
        .time_range(shard, TimeKind::Server, 0, i64::MAX, None, 1000)
        .await
        .unwrap();
    assert_eq!(by_server.len(), idx.len());
    assert!(store.indexed_record_blocking(shard, 0).unwrap().is_none());

    // The same state after a reopen; files of removed segments are gone.
    store.close();
    drop(store);
    let store = open(dir.path(), opts);
    assert_eq!(store.shard_stats(shard).unwrap(), after);
    let seg_files = std::fs::read_dir(dir.path().join("shards").join(format!("{:020}", shard.0)))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert_eq!(seg_files, after.segments);
}

#[tokio::test]
async fn an_idle_stream_expires_entirely_and_keeps_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(10 * HOUR));
    let store = open(dir.path(), small_segments(&clock, None));
    let shard = store
        .create_stream(new_stream("d", StreamKind::Data, 1, HOUR as u64))
        .await
        .unwrap()
        .shards[0]
        .uid;
    store
        .append(shard, (0..5).map(|i| fragment(i, 1)).collect())
        .await
        .unwrap();
    clock.advance_ms(HOUR - 1);
    assert_eq!(
        store.enforce_retention().await.unwrap().segments_deleted,
        0,
        "not yet expired"
    );
    clock.advance_ms(2);
    assert_eq!(store.enforce_retention().await.unwrap().segments_deleted, 1);
    let stats = store.shard_stats(shard).unwrap();
    assert_eq!(
        (stats.trim_horizon, stats.next_offset, stats.segments),
        (5, 5, 0)
    );
    assert!(
        store
            .read(shard, Position::Oldest, ReadLimits::default())
            .await
            .unwrap()
            .records
            .is_empty()
    );
    assert!(
        store
            .time_range(shard, TimeKind::Producer, 0, i64::MAX, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Appends carry on from the old tail, in a fresh segment.
    assert_eq!(
        store
            .append(shard, vec![fragment(9, 2)])
            .await
            .unwrap()
            .first_offset,
        5
    );
    store.close();
    drop(store);
    let store = open(dir.path(), small_segments(&clock, None));
    let stats = store.shard_stats(shard).unwrap();
    assert_eq!((stats.trim_horizon, stats.next_offset), (5, 6));
}

#[tokio::test]
async fn byte_budget_removes_oldest_segments_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut opts = small_segments(&clock, None);
    opts.segment_max_bytes = 1 << 20;
    let store = open(dir.path(), opts);
    let mut new = new_stream("b", StreamKind::Data, 2, 1_000 * HOUR as u64);
    new.byte_budget = Some(64 << 10);
    let info = store.create_stream(new).await.unwrap();
    let (a, b) = (info.shards[0].uid, info.shards[1].uid);
    for i in 0..200u64 {
        let shard = if i % 2 == 0 { a } else { b };
        store
            .append(
                shard,
                vec![NewRecord {
                    payload: payload(i, 1000),
                    ..Default::default()
                }],
            )
            .await
            .unwrap();
        clock.advance_ms(10);
    }
    let total = |s: &timeshard_storage::Store| {
        s.shard_stats(a).unwrap().bytes + s.shard_stats(b).unwrap().bytes
    };
    assert!(total(&store) > 64 << 10);
    store.enforce_retention().await.unwrap();
    let kept = total(&store);
    assert!(kept <= 64 << 10, "kept {kept} bytes");
    // Segments roll at a quarter of the budget, so at least half of it is still held.
    assert!(kept >= 32 << 10, "kept only {kept} bytes");
    // Oldest first: both shards lost their early records, and the newest are all there.
    for s in [a, b] {
        let st = store.shard_stats(s).unwrap();
        assert!(st.trim_horizon > 0);
        assert_eq!(st.next_offset, 100);
        let r = store
            .read(s, Position::Oldest, ReadLimits::default())
            .await
            .unwrap();
        assert_eq!(r.records.len() as u64, 100 - st.trim_horizon);
    }
}
