//! Crash tests with the fault-injecting file backend: torn writes, ENOSPC and failed fsyncs
//! fail exactly the appends they hit, leave nothing half-written behind, and the store keeps
//! working (or, after an fsync it cannot repair, refuses appends to that shard until reopened).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use timeshard_storage::clock::ManualClock;
use timeshard_storage::fs::{Fault, FaultyFs, Fs};
use timeshard_storage::{
    FollowEvent, NewRecord, Position, ReadLimits, ShardUid, Store, StoreError,
};

fn rec(i: u64) -> NewRecord {
    NewRecord {
        key: Bytes::from(format!("k{i}")),
        payload: payload(i, 100 + (i as usize % 700)),
        ..Default::default()
    }
}

async fn all(store: &Store, shard: ShardUid) -> Vec<(u64, Bytes)> {
    let b = store
        .read(shard, Position::Oldest, ReadLimits::UNBOUNDED)
        .await
        .unwrap();
    b.records
        .into_iter()
        .map(|r| (r.offset, r.payload))
        .collect()
}

fn expected(seeds: &[u64]) -> Vec<(u64, Bytes)> {
    seeds
        .iter()
        .enumerate()
        .map(|(o, s)| (o as u64, rec(*s).payload))
        .collect()
}

fn setup() -> (tempfile::TempDir, Arc<ManualClock>, Arc<FaultyFs>) {
    (
        tempfile::tempdir().unwrap(),
        Arc::new(ManualClock::new(1_000)),
        Arc::new(FaultyFs::new()),
    )
}

fn opts(clock: &Arc<ManualClock>, fs: &Arc<FaultyFs>) -> timeshard_storage::options::StoreOptions {
    small_segments(clock, Some(fs.clone() as Arc<dyn Fs>))
}

/// A one-shard store holding `n` records, one per append (so small segments roll), closed.
/// Returns the shard, the records' seeds and the shard's directory.
async fn filled_then_closed(
    dir: &tempfile::TempDir,
    clock: &Arc<ManualClock>,
    fs: &Arc<FaultyFs>,
    n: u64,
) -> (ShardUid, Vec<u64>, std::path::PathBuf) {
    let store = open(dir.path(), opts(clock, fs));
    let shard = create(&store, "s", 1).await.shards[0].uid;
    let seeds: Vec<u64> = (0..n).collect();
    for s in &seeds {
        store.append(shard, vec![rec(*s)]).await.unwrap();
    }
    store.close();
    let shard_dir = dir.path().join("shards").join(format!("{:020}", shard.0));
    (shard, seeds, shard_dir)
}

#[tokio::test]
async fn torn_write_and_enospc_fail_only_their_append() {
    let (dir, clock, fs) = setup();
    let store = open(dir.path(), opts(&clock, &fs));
    let info = create(&store, "s", 2).await;
    let (a, b) = (info.shards[0].uid, info.shards[1].uid);
    let mut acked_a = Vec::new();
    for i in 0..5 {
        store.append(a, vec![rec(i)]).await.unwrap();
        acked_a.push(i);
    }
    fs.inject(&format!("{:020}", a.0), Fault::TornWrite { keep_bytes: 57 });
    let err = store.append(a, vec![rec(100), rec(101)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    // The other shard is untouched by the fault.
    store.append(b, vec![rec(7)]).await.unwrap();
    // The torn bytes were removed: the next append lands right after the last good record.
    let next = store.append(a, vec![rec(5)]).await.unwrap();
    assert_eq!(next.first_offset, 5);
    acked_a.push(5);

    fs.inject(&format!("{:020}", a.0), Fault::NoSpace);
    let err = store.append(a, vec![rec(200)]).await.unwrap_err();
    match &err {
        StoreError::Io { source, .. } => assert_eq!(source.kind(), std::io::ErrorKind::StorageFull),
        other => panic!("{other}"),
    }
    assert_eq!(store.append(a, vec![rec(6)]).await.unwrap().first_offset, 6);
    acked_a.push(6);
    assert_eq!(all(&store, a).await, expected(&acked_a));
    assert_eq!(all(&store, b).await, vec![(0, rec(7).payload)]);
    assert!(store.is_healthy());

    store.close();
    drop(store);
    let store = open(dir.path(), opts(&clock, &fs));
    assert_eq!(all(&store, a).await, expected(&acked_a));
}

#[tokio::test]
async fn failed_fsync_is_not_acknowledged_and_is_rolled_back() {
    let (dir, clock, fs) = setup();
    let store = open(dir.path(), opts(&clock, &fs));
    let shard = create(&store, "s", 1).await.shards[0].uid;
    store.append(shard, vec![rec(0), rec(1)]).await.unwrap();
    let mut tail = store.watch(shard).unwrap();
    tail.borrow_and_update();

    fs.inject(".seg", Fault::FailSync);
    let err = store.append(shard, vec![rec(50)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    assert!(
        !tail.has_changed().unwrap(),
        "readers were never shown the unsynced record"
    );
    assert_eq!(all(&store, shard).await, expected(&[0, 1]));
    // The retry sync worked, so the shard carries on.
    assert_eq!(
        store
            .append(shard, vec![rec(2)])
            .await
            .unwrap()
            .first_offset,
        2
    );

    // Two failures in a row: the shard stops taking appends, reads still work.
    fs.inject(".seg", Fault::FailSync);
    fs.inject(".seg", Fault::FailSync);
    assert!(store.append(shard, vec![rec(60)]).await.is_err());
    assert!(matches!(
        store.append(shard, vec![rec(61)]).await,
        Err(StoreError::Poisoned(_))
    ));
    assert_eq!(all(&store, shard).await, expected(&[0, 1, 2]));

    // A restart recovers the shard; nothing unacknowledged reads back.
    store.close();
    drop(store);
    let store = open(dir.path(), opts(&clock, &fs));
    assert_eq!(all(&store, shard).await, expected(&[0, 1, 2]));
    assert_eq!(
        store
            .append(shard, vec![rec(3)])
            .await
            .unwrap()
            .first_offset,
        3
    );
    assert_eq!(all(&store, shard).await, expected(&[0, 1, 2, 3]));
}

#[tokio::test]
async fn torn_and_zeroed_tails_are_truncated_on_open() {
    let (dir, clock, fs) = setup();
    let (shard, seeds, shard_dir) = filled_then_closed(&dir, &clock, &fs, 30).await;
    let last = segment_files(&shard_dir).last().unwrap().clone();

    for damage in [&[0x55u8; 37][..], &[0u8; 4096][..], &rec(999).payload[..]] {
        let before = std::fs::metadata(&last).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap()
            .write_all(damage)
            .unwrap();
        let store = open(dir.path(), opts(&clock, &fs));
        assert_eq!(all(&store, shard).await, expected(&seeds));
        store.close();
        drop(store);
        assert_eq!(
            std::fs::metadata(&last).unwrap().len(),
            before,
            "the damage was cut off"
        );
    }

    // A record cut in half (a torn write the process did not live to undo).
    let len = std::fs::metadata(&last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);
    let store = open(dir.path(), opts(&clock, &fs));
    let got = all(&store, shard).await;
    assert_eq!(got, expected(&seeds[..seeds.len() - 1]));
    // The offset of the lost record is reused by the next append.
    assert_eq!(
        store
            .append(shard, vec![rec(1000)])
            .await
            .unwrap()
            .first_offset,
        29
    );
}

#[tokio::test]
async fn damaged_sparse_index_is_rebuilt() {
    let (dir, clock, fs) = setup();
    let (shard, seeds, shard_dir) = filled_then_closed(&dir, &clock, &fs, 60).await;
    for e in std::fs::read_dir(&shard_dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "idx") {
            let mut bytes = std::fs::read(&p).unwrap();
            for b in bytes.iter_mut().skip(20) {
                *b ^= 0xA5;
            }
            std::fs::write(&p, bytes).unwrap();
        }
    }
    let store = open(dir.path(), opts(&clock, &fs));
    assert_eq!(all(&store, shard).await, expected(&seeds));
    assert!(
        store.shard_stats(shard).unwrap().segments > 2,
        "the test needs sealed segments"
    );
    for (o, s) in seeds.iter().enumerate().step_by(7) {
        let b = store
            .read(shard, Position::At(o as u64), ReadLimits::new(1, 1))
            .await
            .unwrap();
        assert_eq!(b.records[0].payload, rec(*s).payload);
    }
}

#[tokio::test]
async fn close_releases_the_directory_while_other_handles_live_on() {
    let (dir, clock, fs) = setup();
    let store = open(dir.path(), opts(&clock, &fs));
    let shard = create(&store, "s", 1).await.shards[0].uid;
    store.append(shard, vec![rec(1)]).await.unwrap();
    let lingering = store.clone();
    store.close();
    let reopened = open(dir.path(), opts(&clock, &fs));
    assert_eq!(all(&reopened, shard).await, vec![(0, rec(1).payload)]);
    assert!(matches!(
        lingering.append(shard, vec![rec(2)]).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        lingering.indexed_record_blocking(shard, 0),
        Err(StoreError::Closed)
    ));
}

#[tokio::test]
async fn a_directory_cannot_be_opened_twice() {
    let (dir, clock, fs) = setup();
    let _store = open(dir.path(), opts(&clock, &fs));
    assert!(matches!(
        Store::open(dir.path(), opts(&clock, &fs)),
        Err(StoreError::Locked(_))
    ));
}

fn segment_files(shard_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs
}

#[tokio::test]
async fn damaged_bytes_in_a_sealed_segment_read_back_as_an_error_not_as_data() {
    let (dir, clock, fs) = setup();
    let (shard, _, shard_dir) = filled_then_closed(&dir, &clock, &fs, 60).await;
    let segs = segment_files(&shard_dir);
    assert!(segs.len() >= 3, "the test needs sealed segments");
    // Flip one byte in the payload of the first record of the first (sealed) segment.
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[64 + 48 + 10] ^= 0x01;
    std::fs::write(&segs[0], bytes).unwrap();
    let store = open(dir.path(), opts(&clock, &fs));
    let err = store
        .read(shard, Position::At(0), ReadLimits::new(1, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    // Records in other segments are unaffected.
    let later = store
        .read(shard, Position::At(59), ReadLimits::new(1, 1))
        .await
        .unwrap();
    assert_eq!(later.records[0].payload, rec(59).payload);
}

#[tokio::test]
async fn an_active_segment_with_a_damaged_header_is_moved_aside_and_the_store_opens() {
    let (dir, clock, fs) = setup();
    let (shard, _, shard_dir) = filled_then_closed(&dir, &clock, &fs, 60).await;
    let segs = segment_files(&shard_dir);
    let last = segs.last().unwrap().clone();
    let first_in_last: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    bytes[3] ^= 0xFF;
    std::fs::write(&last, bytes).unwrap();

    let store = open(dir.path(), opts(&clock, &fs));
    let mut aside = last.as_os_str().to_owned();
    aside.push(".corrupt");
    assert!(
        std::path::Path::new(&aside).exists(),
        "the damaged segment is kept for inspection"
    );
    assert!(!last.exists());
    // The shard carries on from the end of the last intact segment.
    let kept = all(&store, shard).await;
    assert_eq!(kept.len() as u64, first_in_last);
    let next = store.append(shard, vec![rec(1000)]).await.unwrap();
    assert_eq!(next.first_offset, first_in_last);
    let read_back = store
        .read(
            shard,
            Position::At(next.first_offset),
            ReadLimits::new(1, 1),
        )
        .await
        .unwrap();
    assert_eq!(read_back.records[0].payload, rec(1000).payload);
}

#[tokio::test]
async fn a_failed_commit_takes_the_record_opened_after_it_along() {
    let (dir, clock, fs) = setup();
    let store = open(dir.path(), opts(&clock, &fs));
    let shard = create(&store, "v", 1).await.shards[0].uid;
    store.append(shard, vec![rec(0)]).await.unwrap();
    fs.inject(&format!("{:020}", shard.0), Fault::NoSpace);
    let a = store
        .begin_record(shard, Some(1), Bytes::from_static(b"a"), 0)
        .await
        .unwrap();
    assert_eq!(a.offset(), 1);
    a.push(rec(1).payload).unwrap();
    let a_commit = tokio::spawn(a.commit());
    // Opened while A's commit may still be staged: whatever the timing, B must not keep an
    // offset that A's failure invalidated.
    let b = store
        .begin_record(shard, Some(2), Bytes::from_static(b"b"), 0)
        .await
        .unwrap();
    let b_offset = b.offset();
    b.push(rec(2).payload).unwrap();
    let mut b_follower = b.view().follow();
    let b_commit = b.commit().await;
    assert!(
        a_commit.await.unwrap().is_err(),
        "the injected fault fails A"
    );
    let mut acked = vec![(0u64, rec(0).payload)];
    match b_commit {
        Ok(appended) => {
            // B was opened after A's failure was known: it took A's offset.
            assert_eq!((b_offset, appended.first_offset), (1, 1));
            acked.push((1, rec(2).payload));
        }
        Err(_) => {
            assert_eq!(b_offset, 2, "B was opened behind A's staged commit");
            loop {
                match b_follower.next().await {
                    FollowEvent::Chunk(_) => {}
                    end => {
                        assert_eq!(end, FollowEvent::Aborted);
                        break;
                    }
                }
            }
        }
    }
    // The shard goes on from the last good record.
    let c = store.append(shard, vec![rec(3)]).await.unwrap();
    assert_eq!(c.first_offset, acked.len() as u64);
    acked.push((c.first_offset, rec(3).payload));
    assert_eq!(all(&store, shard).await, acked);
    assert!(store.tail(shard).unwrap().open.is_none());
}

/// Waits until `n` returns more than `before` (an operation reached the file system).
async fn reached(n: impl Fn() -> u64, before: u64) {
    while n() <= before {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_failed_sync_fails_the_appends_written_behind_it() {
    let (dir, clock, fs) = setup();
    let store = open(dir.path(), opts(&clock, &fs));
    let shard = create(&store, "s", 1).await.shards[0].uid;
    store.append(shard, vec![rec(0)]).await.unwrap();
    fs.inject(
        ".seg",
        Fault::SlowFailSync(std::time::Duration::from_secs(1)),
    );
    let syncs = fs.syncs();
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.append(shard, vec![rec(50)]).await }
    });
    reached(|| fs.syncs(), syncs).await;
    // While that sync hangs, the writer goes on writing behind it, group after group.
    let mut behind = Vec::new();
    for i in 51..54 {
        let appends = fs.appends();
        let store = store.clone();
        behind.push(tokio::spawn(async move {
            store.append(shard, vec![rec(i)]).await
        }));
        reached(|| fs.appends(), appends).await;
    }
    let record = store
        .begin_record(shard, Some(7), Bytes::from_static(b"o"), 0)
        .await
        .unwrap();
    record.push(rec(55).payload).unwrap();
    let mut follower = record.view().follow();
    assert!(!first.is_finished(), "the failing sync is still running");

    assert!(matches!(first.await.unwrap(), Err(StoreError::Io { .. })));
    for b in behind {
        let err = b.await.unwrap().unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
    }
    loop {
        match follower.next().await {
            FollowEvent::Chunk(_) => {}
            end => {
                assert_eq!(end, FollowEvent::Aborted, "the open record followed them");
                break;
            }
        }
    }
    assert!(record.commit().await.is_err());
    let seen = store.tail(shard).unwrap();
    assert_eq!(
        (seen.next_offset, seen.open.is_none()),
        (1, true),
        "readers were never shown an unsynced record"
    );
    // The shard goes on from the last durable record, and a restart agrees.
    assert_eq!(
        store
            .append(shard, vec![rec(1)])
            .await
            .unwrap()
            .first_offset,
        1
    );
    assert_eq!(all(&store, shard).await, expected(&[0, 1]));
    store.close();
    drop(store);
    let store = open(dir.path(), opts(&clock, &fs));
    assert_eq!(all(&store, shard).await, expected(&[0, 1]));
}

#[tokio::test]
async fn the_writer_goes_on_while_a_sync_is_slow() {
    let (dir, clock, fs) = setup();
    let store = open(dir.path(), opts(&clock, &fs));
    let shard = create(&store, "s", 1).await.shards[0].uid;
    store.append(shard, vec![rec(0)]).await.unwrap();

    fs.inject(".seg", Fault::SlowSync(std::time::Duration::from_secs(1)));
    let syncs = fs.syncs();
    let slow = tokio::spawn({
        let store = store.clone();
        async move { store.append(shard, vec![rec(1)]).await }
    });
    reached(|| fs.syncs(), syncs).await;
    // Opening a record needs the writer, not the disk.
    let open = store
        .begin_record(shard, Some(9), Bytes::from_static(b"o"), 0)
        .await
        .unwrap();
    assert!(!slow.is_finished(), "the record opened during the sync");
    assert_eq!(open.offset(), 2);
    open.push(rec(2).payload).unwrap();
    let committed = open.commit().await.unwrap();
    assert_eq!(slow.await.unwrap().unwrap().first_offset, 1);
    assert_eq!(committed.first_offset, 2);
    assert_eq!(all(&store, shard).await, expected(&[0, 1, 2]));
}
