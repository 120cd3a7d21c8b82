//! The sync stage behind the writer thread.
//!
//! The writer appends a group to the page cache and hands it here as a [`Batch`], then goes on
//! staging and writing the next group while this thread makes the files durable. Batches that
//! queue while a sync runs share the next one, so the disk sees one fdatasync per touched file
//! per round however fast appends arrive. Once a round's files are synced the thread, in the
//! order the writer sent the batches, publishes their records to readers (extent, sparse index,
//! tail), commits their time-index entries and resolves the appenders.
//!
//! A failed sync fails the shard's share of the round and every later share written before the
//! writer heard of it: their bytes follow ones the kernel may have dropped. The shard's epoch
//! tells them apart; the writer cuts the file back and starts a new epoch
//! (`Writer::apply_failures`).
//!
//! The catalog's periodic durable commit also runs here, after the round's appenders have their
//! answers, so the writer never waits on the disk for the index either.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, Durability};

use crate::catalog::{SEGMENTS, TIME_BY_OFFSET, TIME_BY_PRODUCER, TIME_BY_SERVER};
use crate::error::StoreError;
use crate::format::{IndexEntry, SegmentRow};
use crate::fs::StoreFile;
use crate::options::{StoreOptions, SyncPolicy};
use crate::segment::SegmentView;
use crate::seqno::ShardUid;
use crate::shard::{OpenRecordView, OpenStatus, ShardShared};
use crate::store::{Appended, StoreShared};
use crate::writer::{Command, Reply};

/// Catalog commits are non-durable between these (the segments are the durable truth, and
/// recovery re-indexes past the last durable high-water mark).
const DURABLE_CATALOG_EVERY: Duration = Duration::from_secs(1);
/// A shard's high-water mark is committed once this many bytes were appended since its last
/// commit (or after `DURABLE_CATALOG_EVERY`, or with any time-index entry). Recovery scans at most
/// this far past the mark, and appends without time entries skip the catalog entirely.
const HWM_EVERY_BYTES: u64 = 8 << 20;
/// The shortest time between sync rounds while `PACE_FROM_SHARDS` or more shards were synced
/// in the last second (see `Syncer::round_due`).
const ROUND_EVERY: Duration = Duration::from_millis(5);
const PACE_FROM_SHARDS: usize = 8;

/// A time-index entry to commit: offset, server ts, producer ts, encoded value.
pub(crate) type TimeEntry = (u64, i64, i64, Vec<u8>);

/// Where a shard's log ends: the segment's length and the next record's offset and timestamps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    pub len: u64,
    pub idx_len: u64,
    pub next_offset: u64,
    pub last_ts_ms: i64,
    /// Server time of the segment's first record (`i64::MAX` while empty).
    pub first_ts_ms: i64,
    pub last_idx_pos: Option<u64>,
}

/// One shard's share of a batch: written to the page cache, not yet durable or visible.
pub(crate) struct Share {
    pub shard: ShardUid,
    /// The shard's epoch when written (see the module comment).
    pub epoch: u64,
    pub shared: Arc<ShardShared>,
    pub view: Arc<SegmentView>,
    pub file: Arc<dyn StoreFile>,
    pub start: Cursor,
    pub end: Cursor,
    pub idx_entries: Vec<IndexEntry>,
    pub time_entries: Vec<TimeEntry>,
    pub records: u64,
    /// Open records this share commits, in order.
    pub commits_open: Vec<Arc<OpenRecordView>>,
}

/// An appender waiting for its records to be durable and visible.
pub(crate) struct Waiter {
    pub shard: ShardUid,
    pub appended: Appended,
    pub reply: Reply<Appended>,
}

/// What one writer group produced.
#[derive(Default)]
pub(crate) struct Batch {
    pub shares: Vec<Share>,
    /// Shards whose write already failed; their waiters get the error.
    pub failed: HashMap<ShardUid, StoreError>,
    pub waiters: Vec<Waiter>,
}

pub(crate) enum Job {
    Batch(Batch),
    /// Answered once every batch sent before it is resolved and the index rows it touched are
    /// committed: the writer may then seal, remove or rewrite segments.
    Barrier(std::sync::mpsc::SyncSender<()>),
    /// The last job: sync what the batch policy deferred, commit the catalog durably, exit.
    Close,
}

/// What the writer must undo, learned here.
pub(crate) enum Failure {
    /// The shard's share starting at `start` (and all after it in `epoch`) did not sync.
    Sync {
        shard: ShardUid,
        epoch: u64,
        view: Arc<SegmentView>,
        start: Cursor,
    },
    /// A deferred sync failed after the appends were acknowledged (batch policy).
    Poison(ShardUid),
}

pub(crate) type Failures = Arc<Mutex<Vec<Failure>>>;

pub(crate) fn lock_failures(f: &Failures) -> std::sync::MutexGuard<'_, Vec<Failure>> {
    f.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct Syncer {
    db: Arc<Database>,
    opts: StoreOptions,
    shared: Arc<StoreShared>,
    failures: Failures,
    /// The writer's queue, to have a failure undone without waiting for the next command.
    wake: flume::WeakSender<Command>,
    /// The newest epoch per shard whose shares must fail (reported, not yet undone).
    failed_epochs: HashMap<ShardUid, u64>,
    /// Active segments grown since their row was last committed.
    stale: HashMap<ShardUid, Arc<SegmentView>>,
    stale_bytes: u64,
    last_index_commit: Instant,
    last_durable: Instant,
    catalog_dirty: bool,
    /// Files written but not yet synced (batch policy).
    unsynced: Vec<(ShardUid, Arc<dyn StoreFile>)>,
    unsynced_since: Option<Instant>,
    last_round: Option<Instant>,
    /// Distinct shards synced in the last whole second, and those of the current one.
    busy_shards: usize,
    this_second: (Instant, std::collections::HashSet<ShardUid>),
}

impl Syncer {
    pub fn new(
        db: Arc<Database>,
        opts: StoreOptions,
        shared: Arc<StoreShared>,
        failures: Failures,
        wake: flume::WeakSender<Command>,
    ) -> Self {
        Syncer {
            db,
            opts,
            shared,
            failures,
            wake,
            failed_epochs: HashMap::new(),
            stale: HashMap::new(),
            stale_bytes: 0,
            last_index_commit: Instant::now(),
            last_durable: Instant::now(),
            catalog_dirty: false,
            unsynced: Vec::new(),
            unsynced_since: None,
            last_round: None,
            busy_shards: 0,
            this_second: (Instant::now(), Default::default()),
        }
    }

    pub fn run(mut self, rx: &flume::Receiver<Job>) {
        loop {
            let first = match self.next_deadline() {
                None => rx.recv().ok(),
                Some(deadline) => match rx.recv_deadline(deadline) {
                    Ok(job) => Some(job),
                    Err(flume::RecvTimeoutError::Timeout) => {
                        self.on_timer();
                        continue;
                    }
                    Err(flume::RecvTimeoutError::Disconnected) => None,
                },
            };
            let Some(first) = first else { break };
            let mut round = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next {
                match job {
                    Job::Batch(b) => round.push(b),
                    Job::Barrier(done) => {
                        self.complete(std::mem::take(&mut round));
                        self.settle_index();
                        let _ = done.send(());
                    }
                    Job::Close => {
                        self.complete(round);
                        self.close();
                        return;
                    }
                }
                next = rx.try_recv().ok();
                if next.is_none() && !round.is_empty() {
                    // Gather what arrives until this round may start (see `pace`).
                    if let Some(at) = self.round_due() {
                        next = rx.recv_deadline(at).ok();
                    }
                }
            }
            self.complete(round);
            self.on_timer();
        }
        self.close();
    }

    /// When the next round may start, if not at once. Many streams each committing on their
    /// own make many small rounds, and on a virtual disk a stream of back-to-back fdatasyncs
    /// (each a journal commit and a device cache flush) stalls for hundreds of milliseconds
    /// where one every few milliseconds does not (docs/BENCHMARKS.md): while many shards are
    /// busy, rounds start at most every `ROUND_EVERY`, so a commit waits at most that long to
    /// share a sync. A single writer (a client waiting on each ack) never waits.
    fn round_due(&self) -> Option<Instant> {
        if self.opts.sync != SyncPolicy::Always || self.busy_shards < PACE_FROM_SHARDS {
            return None;
        }
        let at = self.last_round? + ROUND_EVERY;
        (at > Instant::now()).then_some(at)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let sync = self.unsynced_since.and_then(|t| match self.opts.sync {
            SyncPolicy::Batch(d) => Some(t + d),
            _ => None,
        });
        // Exactly the conditions `on_timer` acts on, so a wake-up always has work to do.
        let stale =
            (!self.stale.is_empty()).then_some(self.last_index_commit + DURABLE_CATALOG_EVERY);
        let dirty = self
            .catalog_dirty
            .then_some(self.last_durable + DURABLE_CATALOG_EVERY);
        [sync, stale, dirty].into_iter().flatten().min()
    }

    /// Deferred work: the batch policy's sync, and a durable catalog commit after non-durable ones.
    fn on_timer(&mut self) {
        let now = Instant::now();
        if let (SyncPolicy::Batch(d), Some(since)) = (self.opts.sync, self.unsynced_since)
            && now >= since + d
        {
            self.sync_unsynced();
        }
        let stale = !self.stale.is_empty() && now >= self.last_index_commit + DURABLE_CATALOG_EVERY;
        if stale || (self.catalog_dirty && now >= self.last_durable + DURABLE_CATALOG_EVERY) {
            let r = self.commit_index(&[], true);
            self.note_catalog_commit(r, true);
        }
    }

    fn close(&mut self) {
        self.sync_unsynced();
        let r = self.commit_index(&[], true);
        self.note_catalog_commit(r, true);
    }

    /// Commits the rows of segments grown so far, so the writer can seal or remove them next.
    fn settle_index(&mut self) {
        if !self.stale.is_empty() {
            let r = self.commit_index(&[], false);
            self.note_catalog_commit(r, false);
            // A failed commit leaves the rows to recovery; they must not be written later over
            // whatever the writer does now.
            self.stale.clear();
            self.stale_bytes = 0;
        }
    }

    /// Syncs the round's files, then publishes, indexes and resolves its batches in order.
    fn complete(&mut self, mut round: Vec<Batch>) {
        if round.is_empty() {
            return;
        }
        let mut files: Vec<(ShardUid, Arc<dyn StoreFile>)> = Vec::new();
        for share in round.iter().flat_map(|b| &b.shares) {
            if !files
                .iter()
                .any(|(u, f)| *u == share.shard && Arc::ptr_eq(f, &share.file))
            {
                files.push((share.shard, share.file.clone()));
            }
        }
        let now = Instant::now();
        self.last_round = Some(now);
        if now.duration_since(self.this_second.0) >= Duration::from_secs(1) {
            self.busy_shards = self.this_second.1.len();
            self.this_second = (now, Default::default());
        }
        self.this_second.1.extend(files.iter().map(|(u, _)| *u));
        let mut sync_errors: HashMap<ShardUid, std::io::Error> = HashMap::new();
        match self.opts.sync {
            SyncPolicy::Always => {
                for (uid, r) in sync_files(&files, &self.shared) {
                    if let Err(e) = r {
                        tracing::error!(shard = %uid, error = %e, "fdatasync failed; failing the shard's unsynced appends");
                        sync_errors.insert(uid, e);
                    }
                }
            }
            SyncPolicy::Batch(_) => {
                for (uid, file) in files {
                    if !self
                        .unsynced
                        .iter()
                        .any(|(u, f)| *u == uid && Arc::ptr_eq(f, &file))
                    {
                        self.unsynced.push((uid, file));
                    }
                }
                if self.unsynced_since.is_none() && !self.unsynced.is_empty() {
                    self.unsynced_since = Some(Instant::now());
                }
            }
            SyncPolicy::Never => {}
        }

        let mut time_entries: Vec<(ShardUid, Vec<TimeEntry>)> = Vec::new();
        let mut published = false;
        for batch in &mut round {
            for share in std::mem::take(&mut batch.shares) {
                let uid = share.shard;
                let earlier_failed = self
                    .failed_epochs
                    .get(&uid)
                    .is_some_and(|e| share.epoch <= *e);
                if !earlier_failed && !sync_errors.contains_key(&uid) {
                    self.publish(&share);
                    published = true;
                    if !share.time_entries.is_empty() {
                        time_entries.push((uid, share.time_entries));
                    }
                    continue;
                }
                let error = if earlier_failed {
                    std::io::Error::other("an earlier append to the shard failed to sync")
                } else {
                    // The first share of the shard to fail in this epoch: the writer cuts the
                    // file back to where it starts.
                    self.failed_epochs.insert(uid, share.epoch);
                    self.report(Failure::Sync {
                        shard: uid,
                        epoch: share.epoch,
                        view: share.view.clone(),
                        start: share.start,
                    });
                    let e = &sync_errors[&uid];
                    std::io::Error::new(e.kind(), e.to_string())
                };
                abort_commits(&share.shared, &share.commits_open);
                batch.failed.insert(
                    uid,
                    StoreError::Io {
                        context: format!("syncing shard {uid}"),
                        source: error,
                    },
                );
            }
        }
        if !time_entries.is_empty()
            || self.stale_bytes >= HWM_EVERY_BYTES
            || (published && self.last_index_commit.elapsed() >= DURABLE_CATALOG_EVERY)
        {
            let r = self.commit_index(&time_entries, false);
            self.note_catalog_commit(r, false);
        }
        for batch in round {
            resolve(&self.shared, batch);
        }
        // After the answers, so an ack never waits on the catalog's fsync.
        if self.catalog_dirty && self.last_durable.elapsed() >= DURABLE_CATALOG_EVERY {
            let r = self.commit_index(&[], true);
            self.note_catalog_commit(r, true);
        }
    }

    /// Makes a share's records visible: extent, sparse index, tail.
    fn report(&self, failure: Failure) {
        lock_failures(&self.failures).push(failure);
        // A full queue wakes the writer anyway.
        if let Some(tx) = self.wake.upgrade() {
            let _ = tx.try_send(Command::Wake);
        }
    }

    fn publish(&mut self, share: &Share) {
        let view = &share.view;
        view.push_index(&share.idx_entries);
        view.first_ts_ms
            .store(share.end.first_ts_ms, Ordering::Release);
        view.last_ts_ms
            .store(share.end.last_ts_ms, Ordering::Release);
        view.end_pos.store(share.end.len, Ordering::Release);
        view.end_offset
            .store(share.end.next_offset, Ordering::Release);
        share.shared.tail.send_modify(|t| {
            t.next_offset = share.end.next_offset;
            t.last_server_ts_ms = share.end.last_ts_ms;
            // A committed record stops being the open one, unless the next record has already
            // replaced it.
            if t.open
                .as_ref()
                .is_some_and(|o| share.commits_open.iter().any(|v| Arc::ptr_eq(o, v)))
            {
                t.open = None;
            }
        });
        // Followers learn of the commit only after the record is readable in the log.
        for v in &share.commits_open {
            v.finish(OpenStatus::Committed);
        }
        let bytes = share.end.len - share.start.len;
        self.stale.insert(share.shard, view.clone());
        self.stale_bytes += bytes;
        let m = &self.shared.metrics;
        m.appended_records
            .fetch_add(share.records, Ordering::Relaxed);
        m.appended_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Commits the rows of active segments that grew since their last commit (their published
    /// high-water marks) together with new time-index entries.
    fn commit_index(
        &mut self,
        time_entries: &[(ShardUid, Vec<TimeEntry>)],
        durable: bool,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        {
            let mut segments = txn.open_table(SEGMENTS)?;
            for (uid, view) in &self.stale {
                let row = SegmentRow {
                    sealed: false,
                    end_offset: view.end_offset(),
                    end_pos: view.end_pos(),
                    first_ts_ms: view.first_ts_ms.load(Ordering::Acquire),
                    last_ts_ms: view.last_ts_ms.load(Ordering::Acquire),
                };
                segments.insert((uid.0, view.base), row.encode().as_slice())?;
            }
            let mut by_offset = txn.open_table(TIME_BY_OFFSET)?;
            let mut by_producer = txn.open_table(TIME_BY_PRODUCER)?;
            let mut by_server = txn.open_table(TIME_BY_SERVER)?;
            for (uid, entries) in time_entries {
                for (offset, sts, pts, entry) in entries {
                    by_offset.insert((uid.0, *offset), entry.as_slice())?;
                    by_producer.insert((uid.0, *pts, *offset), entry.as_slice())?;
                    by_server.insert((uid.0, *sts, *offset), entry.as_slice())?;
                }
            }
        }
        txn.commit()?;
        self.stale.clear();
        self.stale_bytes = 0;
        self.last_index_commit = Instant::now();
        Ok(())
    }

    fn note_catalog_commit(&mut self, r: Result<(), StoreError>, durable: bool) {
        match r {
            Ok(()) if durable => {
                self.catalog_dirty = false;
                self.last_durable = Instant::now();
            }
            Ok(()) => self.catalog_dirty = true,
            Err(e) => {
                // Try again in a while, not in a tight loop.
                self.last_durable = Instant::now();
                self.last_index_commit = Instant::now();
                // The segments stay the truth and recovery rebuilds the index at the next open,
                // but until then reads through the index would miss records: report unhealthy.
                tracing::error!(error = %e, "catalog commit failed");
                self.shared.healthy.store(false, Ordering::SeqCst);
            }
        }
    }

    /// The batch policy's deferred fdatasync.
    fn sync_unsynced(&mut self) {
        let files = std::mem::take(&mut self.unsynced);
        self.unsynced_since = None;
        for (uid, r) in sync_files(&files, &self.shared) {
            if let Err(e) = r {
                // Already acknowledged under this policy: all we can do is stop the shard.
                tracing::error!(shard = %uid, error = %e, "deferred fsync failed; shard stops taking appends");
                self.report(Failure::Poison(uid));
            }
        }
    }
}

/// The records of a failed share are gone, not half there: the open records it committed end
/// aborted.
pub(crate) fn abort_commits(shared: &ShardShared, commits: &[Arc<OpenRecordView>]) {
    for view in commits {
        view.finish(OpenStatus::Aborted);
    }
    // (Readers are woken only if something they see changed.)
    shared.tail.send_if_modified(|t| {
        let stale = t
            .open
            .as_ref()
            .is_some_and(|o| commits.iter().any(|v| Arc::ptr_eq(o, v)));
        if stale {
            t.open = None;
        }
        stale
    });
}

/// Answers a batch's appenders.
pub(crate) fn resolve(shared: &StoreShared, batch: Batch) {
    let m = &shared.metrics;
    for w in batch.waiters {
        match batch.failed.get(&w.shard) {
            None => {
                m.appends.fetch_add(1, Ordering::Relaxed);
                let _ = w.reply.send(Ok(w.appended));
            }
            Some(e) => {
                m.append_errors.fetch_add(1, Ordering::Relaxed);
                let _ = w.reply.send(Err(copy_error(e)));
            }
        }
    }
}

/// fdatasyncs files, in parallel when there are several (the device queues them together).
fn sync_files(
    files: &[(ShardUid, Arc<dyn StoreFile>)],
    shared: &StoreShared,
) -> Vec<(ShardUid, std::io::Result<()>)> {
    let timed = |f: &dyn StoreFile| {
        let t = Instant::now();
        let r = f.sync_data();
        shared.metrics.fsync.observe(t.elapsed());
        r
    };
    if files.len() <= 1 {
        return files.iter().map(|(u, f)| (*u, timed(f.as_ref()))).collect();
    }
    let lanes = files.len().min(8);
    let per = files.len().div_ceil(lanes);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|(u, f)| (*u, timed(f.as_ref())))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|_| vec![]))
            .collect()
    })
}

pub(crate) fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Io { context, source } => StoreError::Io {
            context: context.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        StoreError::Poisoned(u) => StoreError::Poisoned(*u),
        other => StoreError::Catalog(other.to_string()),
    }
}
