//! Appends, reads by every position kind, open records, the time index and reopen.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use timeshard_storage::clock::ManualClock;
use timeshard_storage::{
    FollowEvent, NewRecord, Position, ReadLimits, SequenceNumber, ShardState, StoreError,
    StreamKind, TimeKind,
};

fn rec(key: &str, payload: &str) -> NewRecord {
    NewRecord {
        key: Bytes::copy_from_slice(key.as_bytes()),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        ..Default::default()
    }
}

#[tokio::test]
async fn append_read_every_position_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = open(dir.path(), small_segments(&clock, None));
    let info = create(&store, "s1", 2).await;
    assert_eq!(info.shards.len(), 2);
    let shard = info.shards[0].uid;

    let a = store.append(shard, vec![rec("k", "zero")]).await.unwrap();
    assert_eq!((a.first_offset, a.count, a.server_ts_ms), (0, 1, 1_000_000));
    clock.advance_ms(10);
    let b = store
        .append(
            shard,
            (1..=200)
                .map(|i| rec("k", &format!("record {i} {}", "x".repeat(i))))
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!((b.first_offset, b.count), (1, 200));
    // The clock going back does not make server time go back.
    clock.advance_ms(-5);
    let c = store.append(shard, vec![rec("k", "late")]).await.unwrap();
    assert_eq!(c.server_ts_ms, 1_000_010);
    assert!(
        store.shard_stats(shard).unwrap().segments > 1,
        "small segments roll"
    );

    let all = store
        .read(shard, Position::Oldest, ReadLimits::default())
        .await
        .unwrap();
    assert_eq!(all.records.len(), 202);
    assert_eq!(all.next_offset, 202);
    assert_eq!(all.tail_offset, 202);
    assert_eq!(&all.records[0].payload[..], b"zero");
    assert_eq!(
        &all.records[37].payload[..],
        format!("record 37 {}", "x".repeat(37)).as_bytes()
    );
    for (i, r) in all.records.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
    }
    let at = store
        .read(shard, Position::At(150), ReadLimits::new(3, 1 << 20))
        .await
        .unwrap();
    assert_eq!(
        at.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![150, 151, 152]
    );
    assert_eq!(at.next_offset, 153);
    let after = store
        .read(shard, Position::After(150), ReadLimits::new(1, 1))
        .await
        .unwrap();
    assert_eq!(after.records[0].offset, 151);
    let latest = store
        .read(shard, Position::Latest, ReadLimits::default())
        .await
        .unwrap();
    assert!(latest.records.is_empty());
    assert_eq!(latest.next_offset, 202);
    let by_time = store
        .read(
            shard,
            Position::AtServerTime(1_000_005),
            ReadLimits::new(1, 1 << 20),
        )
        .await
        .unwrap();
    assert_eq!(by_time.records[0].offset, 1);
    assert_eq!(
        store
            .resolve(shard, Position::AtServerTime(2_000_000))
            .await
            .unwrap(),
        202
    );
    // Bytes bound: at least one record, then stop before exceeding.
    let bounded = store
        .read(shard, Position::At(100), ReadLimits::new(100, 300))
        .await
        .unwrap();
    let sum: usize = bounded
        .records
        .iter()
        .map(|r| r.payload.len() + r.key.len())
        .sum();
    assert!(!bounded.records.is_empty() && sum <= 300, "{sum}");

    let seq = SequenceNumber::of_record(shard, 5).to_string();
    assert_eq!(seq.parse::<SequenceNumber>().unwrap().shard, shard);

    store.close();
    drop(store);
    let store = open(dir.path(), small_segments(&clock, None));
    let again = store
        .read(shard, Position::Oldest, ReadLimits::default())
        .await
        .unwrap();
    assert_eq!(again.records, all.records);
    let d = store
        .append(shard, vec![rec("k", "after reopen")])
        .await
        .unwrap();
    assert_eq!(d.first_offset, 202);
    assert!(d.server_ts_ms >= 1_000_010);
}

#[tokio::test]
async fn open_record_is_followed_then_committed_or_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(5_000));
    let store = open(dir.path(), small_segments(&clock, None));
    let info = store
        .create_stream(new_stream("cam", StreamKind::Video, 1, 3_600_000))
        .await
        .unwrap();
    let shard = info.shards[0].uid;
    let mut tail = store.watch(shard).unwrap();

    let open = store
        .begin_record(shard, Some(42_000), Bytes::from_static(b"meta"), 1)
        .await
        .unwrap();
    assert_eq!(open.offset(), 0);
    tail.changed().await.unwrap();
    let view = tail
        .borrow_and_update()
        .open
        .clone()
        .expect("tail shows the open record");
    let mut follower = view.follow();
    open.push(Bytes::from_static(b"frame1")).unwrap();
    assert_eq!(
        follower.next().await,
        FollowEvent::Chunk(Bytes::from_static(b"frame1"))
    );
    // Other appends wait their turn.
    assert!(matches!(
        store.append(shard, vec![rec("x", "y")]).await,
        Err(StoreError::ShardBusy(_))
    ));
    open.push(Bytes::from_static(b"frame2")).unwrap();
    let appended = open.commit().await.unwrap();
    assert_eq!(appended.first_offset, 0);
    assert_eq!(
        follower.next().await,
        FollowEvent::Chunk(Bytes::from_static(b"frame2"))
    );
    assert_eq!(follower.next().await, FollowEvent::Committed);
    let r = store
        .read(shard, Position::At(0), ReadLimits::default())
        .await
        .unwrap();
    assert_eq!(&r.records[0].payload[..], b"frame1frame2");
    assert_eq!(r.records[0].producer_ts_ms, Some(42_000));
    assert_eq!(r.records[0].flags, 1);

    // Aborted by drop: the offset is reused and the follower is told.
    let open = store
        .begin_record(shard, Some(43_000), Bytes::new(), 0)
        .await
        .unwrap();
    let mut follower = open.view().follow();
    open.push(Bytes::from_static(b"partial")).unwrap();
    drop(open);
    assert_eq!(
        follower.next().await,
        FollowEvent::Chunk(Bytes::from_static(b"partial"))
    );
    assert_eq!(follower.next().await, FollowEvent::Aborted);
    let next = store
        .append(
            shard,
            vec![NewRecord {
                producer_ts_ms: Some(44_000),
                ..rec("k", "whole")
            }],
        )
        .await
        .unwrap();
    assert_eq!(next.first_offset, 1);

    let found = store
        .time_range(shard, TimeKind::Producer, 0, i64::MAX, None, 10)
        .await
        .unwrap();
    assert_eq!(
        found
            .iter()
            .map(|r| (r.offset, r.producer_ts_ms))
            .collect::<Vec<_>>(),
        vec![(0, 42_000), (1, 44_000)]
    );
    assert_eq!(&found[0].key[..], b"meta");
    assert_eq!(found[0].payload_len, 12);
    let page = store
        .time_range(
            shard,
            TimeKind::Producer,
            0,
            i64::MAX,
            Some((42_000, 0)),
            10,
        )
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    let by_server = store
        .time_range(shard, TimeKind::Server, 5_000, 5_000, None, 10)
        .await
        .unwrap();
    assert_eq!(by_server.len(), 2);
    assert!(store.indexed_record_blocking(shard, 1).unwrap().is_some());
}

#[tokio::test]
async fn reshard_update_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let store = open(dir.path(), small_segments(&clock, None));
    let info = create(&store, "d", 1).await;
    let parent = info.shards[0].uid;
    store
        .append(parent, vec![rec("a", "1"), rec("b", "2")])
        .await
        .unwrap();
    let mut tail = store.watch(parent).unwrap();
    let mid = u128::MAX / 2;
    let after = store
        .reshard(
            "d",
            vec![0],
            vec![
                timeshard_storage::NewShard {
                    hash_start: 0,
                    hash_end: mid,
                    parent: Some(0),
                    adjacent_parent: None,
                    closed: false,
                },
                timeshard_storage::NewShard {
                    hash_start: mid + 1,
                    hash_end: u128::MAX,
                    parent: Some(0),
                    adjacent_parent: None,
                    closed: false,
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        after.shards.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(after.shards[0].closed_at, Some(2));
    assert_eq!(
        after.shards[0].ending_sequence(),
        Some(SequenceNumber::of_record(parent, 1))
    );
    assert_eq!(
        after.shards[0].starting_sequence(),
        SequenceNumber::shard_start(parent)
    );
    assert_eq!(after.shards[1].ending_sequence(), None);
    tail.changed().await.unwrap();
    assert_eq!(tail.borrow().state, ShardState::Closed);
    assert!(matches!(
        store.append(parent, vec![rec("a", "3")]).await,
        Err(StoreError::ShardClosed(_))
    ));
    assert_eq!(
        store
            .read(parent, Position::Oldest, ReadLimits::default())
            .await
            .unwrap()
            .records
            .len(),
        2
    );

    let v = store.stream("d").unwrap().meta.version;
    let m = store
        .update_stream("d", Some(v), |m| {
            m.tags.insert("k".into(), "v".into());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(m.version, v + 1);
    assert!(matches!(
        store.update_stream("d", Some(v), |_| Ok(())).await,
        Err(StoreError::VersionMismatch { .. })
    ));
    assert!(matches!(
        store
            .create_stream(new_stream("d", StreamKind::Data, 1, 1))
            .await,
        Err(StoreError::StreamExists(_))
    ));

    store.close();
    drop(store);
    let store = open(dir.path(), small_segments(&clock, None));
    let info = store.stream("d").unwrap();
    assert_eq!(info.meta.tags.get("k").map(String::as_str), Some("v"));
    assert_eq!(info.shards.len(), 3);
    assert!(matches!(
        store.append(parent, vec![rec("a", "3")]).await,
        Err(StoreError::ShardClosed(_))
    ));
    let child = info.shards[1].uid;
    store.append(child, vec![rec("a", "child")]).await.unwrap();

    store.delete_stream("d").await.unwrap();
    assert!(store.stream("d").is_none());
    assert!(matches!(
        store.append(child, vec![rec("a", "x")]).await,
        Err(StoreError::ShardNotFound(_))
    ));
    let shard_dirs = std::fs::read_dir(dir.path().join("shards"))
        .unwrap()
        .count();
    assert_eq!(shard_dirs, 0);
    // A new stream of the same name starts empty with new shard uids.
    let again = create(&store, "d", 1).await;
    assert!(again.shards[0].uid.0 > child.0);
}

#[tokio::test]
async fn secrets_are_random_named_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let store = open(dir.path(), small_segments(&clock, None));
    let a = store.secret("iterators").await.unwrap();
    let b = store.secret("other").await.unwrap();
    assert_ne!(a, b);
    assert_ne!(a, [0u8; 32]);
    assert_eq!(store.secret("iterators").await.unwrap(), a);
    store.close();
    drop(store);
    let store = open(dir.path(), small_segments(&clock, None));
    assert_eq!(store.secret("iterators").await.unwrap(), a);
}

#[tokio::test]
async fn stream_blobs_are_numbered_per_stream_pruned_and_deleted_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let store = open(dir.path(), small_segments(&clock, None));
    let a = create(&store, "a", 1).await.meta.id;
    let b = create(&store, "b", 1).await.meta.id;
    assert_eq!(store.latest_blob_blocking(a).unwrap(), None);
    assert_eq!(
        store.put_blob(a, Bytes::from_static(b"one")).await.unwrap(),
        1
    );
    assert_eq!(
        store.put_blob(a, Bytes::from_static(b"two")).await.unwrap(),
        2
    );
    assert_eq!(
        store.put_blob(b, Bytes::from_static(b"b1")).await.unwrap(),
        1
    );
    assert_eq!(
        store.latest_blob_blocking(a).unwrap(),
        Some((2, Bytes::from_static(b"two")))
    );
    assert!(store.put_blob(9999, Bytes::new()).await.is_err());

    // Durable: they survive a reopen.
    store.close();
    drop(store);
    let store = open(dir.path(), small_segments(&clock, None));
    assert_eq!(
        store.blob_blocking(a, 1).unwrap(),
        Some(Bytes::from_static(b"one"))
    );
    assert_eq!(store.prune_blobs(a, 2).await.unwrap(), 1);
    assert_eq!(store.blob_blocking(a, 1).unwrap(), None);
    assert_eq!(
        store.blob_blocking(a, 2).unwrap(),
        Some(Bytes::from_static(b"two"))
    );
    // Ids keep growing after pruning.
    assert_eq!(
        store.put_blob(a, Bytes::from_static(b"3")).await.unwrap(),
        3
    );

    store.delete_stream("a").await.unwrap();
    assert_eq!(store.blob_blocking(a, 2).unwrap(), None);
    assert_eq!(store.latest_blob_blocking(a).unwrap(), None);
    assert_eq!(
        store.blob_blocking(b, 1).unwrap(),
        Some(Bytes::from_static(b"b1")),
        "another stream's blobs stay"
    );
}

#[tokio::test]
async fn an_open_record_can_be_committed_under_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(5_000));
    let store = open(dir.path(), small_segments(&clock, None));
    let shard = create(&store, "v", 1).await.shards[0].uid;
    let open_rec = store
        .begin_record(shard, Some(1_234), Bytes::from_static(b"draft"), 0)
        .await
        .unwrap();
    assert_eq!(open_rec.view().key, Bytes::from_static(b"draft"));
    open_rec.push(Bytes::from_static(b"body")).unwrap();
    let appended = open_rec
        .commit_with_key(Bytes::from_static(b"final summary"))
        .await
        .unwrap();
    let read = store
        .read(
            shard,
            Position::At(appended.first_offset),
            ReadLimits::default(),
        )
        .await
        .unwrap();
    assert_eq!(read.records[0].key, Bytes::from_static(b"final summary"));
    assert_eq!(read.records[0].payload, Bytes::from_static(b"body"));
    let indexed = store
        .time_range(shard, TimeKind::Producer, 0, 10_000, None, 10)
        .await
        .unwrap();
    assert_eq!(indexed.len(), 1);
    assert_eq!(indexed[0].key, Bytes::from_static(b"final summary"));
}

#[tokio::test]
async fn the_next_record_opens_while_the_previous_commit_is_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let store = open(dir.path(), small_segments(&clock, None));
    let shard = create(&store, "v", 1).await.shards[0].uid;
    let mut tail = store.watch(shard).unwrap();
    let mut offsets = Vec::new();
    let mut commits = Vec::new();
    for i in 0..20u8 {
        let rec = store
            .begin_record(shard, Some(i64::from(i)), Bytes::from_static(b"k"), 0)
            .await
            .unwrap();
        offsets.push(rec.offset());
        let follower = rec.view().follow();
        rec.push(Bytes::from(vec![i; 700])).unwrap();
        // Queued at once; durability is awaited later, while the next record is open.
        commits.push((follower, tokio::spawn(rec.commit())));
    }
    assert_eq!(
        offsets,
        (0..20).collect::<Vec<u64>>(),
        "offsets follow the staged commits"
    );
    for (i, (mut follower, commit)) in commits.into_iter().enumerate() {
        let appended = commit.await.unwrap().unwrap();
        assert_eq!(appended.first_offset, i as u64);
        assert_eq!(
            follower.next().await,
            FollowEvent::Chunk(Bytes::from(vec![i as u8; 700]))
        );
        assert_eq!(follower.next().await, FollowEvent::Committed);
    }
    tail.borrow_and_update();
    let t = store.tail(shard).unwrap();
    assert_eq!(t.next_offset, 20);
    assert!(t.open.is_none(), "no record is open once all are committed");
    let all = store
        .read(shard, Position::Oldest, ReadLimits::default())
        .await
        .unwrap();
    assert_eq!(all.records.len(), 20);
    for (i, r) in all.records.iter().enumerate() {
        assert_eq!(r.payload, Bytes::from(vec![i as u8; 700]));
    }
}
