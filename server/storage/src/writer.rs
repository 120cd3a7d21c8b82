//! The single writer thread of a data directory.
//!
//! Every mutation arrives here as a [`Command`]. The thread drains what is queued into a group,
//! writes each shard's share with one vectored append to the page cache and hands the group to
//! the sync stage ([`crate::syncer`]), which makes the files durable, publishes the records and
//! resolves the appenders while this thread writes the next group. The thread never waits on the
//! disk for appends; it waits for the sync stage to catch up (a barrier) only before it seals,
//! removes or rewrites segments, and before catalog commands, so those see a settled log.
//!
//! Each shard has two ends: the written end, kept here in [`ShardWriter`] and [`Active`], where
//! the next record goes; and the published end, in the segment view and tail, which readers see
//! and which only the sync stage moves.

use std::collections::{BTreeMap, HashMap};
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use redb::{Database, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use crate::catalog::{
    KEY_NEXT_SHARD_UID, KEY_NEXT_STREAM_ID, META, SEGMENTS, SHARDS, STREAM_BLOBS, STREAMS,
    ShardMeta, StreamMeta, TIME_BY_OFFSET, TIME_BY_PRODUCER, TIME_BY_SERVER, read_u64,
};
use crate::error::StoreError;
use crate::format::{
    INDEX_ENTRY_LEN, INDEX_HEADER_LEN, IndexEntry, RECORD_HEADER_LEN, RecordBody, RecordHeader,
    SEGMENT_HEADER_LEN, SegmentHeader, SegmentRow, decode_time_entry, encode_time_entry,
    index_file_header,
};
use crate::fs::StoreFile;
use crate::options::{StoreOptions, SyncPolicy};
use crate::segment::SegmentView;
use crate::seqno::ShardUid;
use crate::shard::{OpenRecordView, OpenStatus, ShardShared, ShardState, Tail};
use crate::store::{Appended, NewShard, NewStream, RetentionReport, StoreShared, StreamInfo};
use crate::syncer::{
    Batch, Cursor, Failure, Failures, Job, Share, Syncer, TimeEntry, Waiter, abort_commits,
    lock_failures,
};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
pub(crate) type StreamUpdate = Box<dyn FnOnce(&mut StreamMeta) -> Result<(), StoreError> + Send>;

/// Most commands folded into one group.
const MAX_GROUP: usize = 4096;
/// Groups written but not yet synced before the writer waits for the sync stage. A written
/// group holds only its index entries and answers (the payloads are in the page cache, which
/// the kernel throttles), and under many streams groups are small and frequent: the bound is
/// high so a disk stall of a second does not stop the writer, which would stop new records
/// from opening.
const MAX_IN_FLIGHT: usize = 1024;

/// A record on its way to the writer, checksummed by the appender.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub body: RecordBody,
    pub producer_ts_ms: Option<i64>,
    pub flags: u16,
}

pub(crate) enum Command {
    Append {
        shard: ShardUid,
        records: Vec<Incoming>,
        reply: Reply<Appended>,
    },
    Begin {
        shard: ShardUid,
        producer_ts_ms: Option<i64>,
        key: Bytes,
        flags: u16,
        reply: Reply<Arc<OpenRecordView>>,
    },
    Commit {
        shard: ShardUid,
        view: Arc<OpenRecordView>,
        body: RecordBody,
        reply: Reply<Appended>,
    },
    Abort {
        shard: ShardUid,
        view: Arc<OpenRecordView>,
    },
    CreateStream {
        new: NewStream,
        reply: Reply<StreamInfo>,
    },
    UpdateStream {
        name: String,
        expected_version: Option<u64>,
        update: StreamUpdate,
        reply: Reply<StreamMeta>,
    },
    Reshard {
        name: String,
        close: Vec<u32>,
        open: Vec<NewShard>,
        reply: Reply<StreamInfo>,
    },
    DeleteStream {
        name: String,
        reply: Reply<()>,
    },
    Retention {
        reply: Reply<RetentionReport>,
    },
    Secret {
        name: String,
        reply: Reply<[u8; 32]>,
    },
    PutBlob {
        stream_id: u64,
        data: Bytes,
        reply: Reply<u64>,
    },
    PruneBlobs {
        stream_id: u64,
        below: u64,
        reply: Reply<u64>,
    },
    /// From the sync stage: a sync failed, undo it now (open records wait on it).
    Wake,
    Shutdown,
}

/// The segment a shard appends to.
#[derive(Debug)]
pub(crate) struct Active {
    pub view: Arc<SegmentView>,
    pub file: Arc<dyn StoreFile>,
    pub idx: Arc<dyn StoreFile>,
    /// Bytes written (the sync stage publishes them once durable).
    pub len: u64,
    pub idx_len: u64,
    /// Server time of the segment's first record (`i64::MAX` while empty).
    pub first_ts_ms: i64,
    pub last_idx_pos: Option<u64>,
}

/// The writer's view of one shard.
#[derive(Debug)]
pub(crate) struct ShardWriter {
    pub shared: Arc<ShardShared>,
    pub stream_id: u64,
    /// The offset after the last record written.
    pub next_offset: u64,
    pub last_ts_ms: i64,
    pub closed: bool,
    pub poisoned: bool,
    pub open: Option<Arc<OpenRecordView>>,
    pub active: Option<Active>,
    /// Bumped when a failed sync cuts the shard back: shares written before it fail too.
    pub epoch: u64,
}

impl ShardWriter {
    /// The written end of the active segment.
    fn cursor(&self, active: &Active) -> Cursor {
        Cursor {
            len: active.len,
            idx_len: active.idx_len,
            next_offset: self.next_offset,
            last_ts_ms: self.last_ts_ms,
            first_ts_ms: active.first_ts_ms,
            last_idx_pos: active.last_idx_pos,
        }
    }

    /// Moves the written end (after a write, or back after a failed sync).
    fn set_cursor(&mut self, c: &Cursor) {
        self.next_offset = c.next_offset;
        self.last_ts_ms = c.last_ts_ms;
        if let Some(active) = self.active.as_mut() {
            active.len = c.len;
            active.idx_len = c.idx_len;
            active.first_ts_ms = c.first_ts_ms;
            active.last_idx_pos = c.last_idx_pos;
        }
    }
}

/// One shard's share of a group, not yet written.
struct Pending {
    start: Cursor,
    /// Where the share ends (`idx_len` is settled when written).
    end: Cursor,
    /// Record headers; `pieces` refers to them by index.
    headers: Vec<[u8; RECORD_HEADER_LEN]>,
    /// What to write, in order: headers, keys and payload pieces, none copied.
    pieces: Vec<Piece>,
    idx_entries: Vec<IndexEntry>,
    time_entries: Vec<TimeEntry>,
    records: u64,
    /// Open records this group commits, in order (a fast producer can commit one, begin the
    /// next and commit that within one group).
    commits_open: Vec<Arc<OpenRecordView>>,
}

enum Piece {
    Header(usize),
    Data(Bytes),
}

impl Pending {
    fn push(&mut self, header: [u8; RECORD_HEADER_LEN], body: &RecordBody) {
        self.pieces.push(Piece::Header(self.headers.len()));
        self.headers.push(header);
        for data in std::iter::once(&body.key).chain(&body.payload) {
            if !data.is_empty() {
                self.pieces.push(Piece::Data(data.clone()));
            }
        }
    }

    fn slices(&self) -> Vec<IoSlice<'_>> {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Header(i) => IoSlice::new(&self.headers[*i]),
                Piece::Data(b) => IoSlice::new(b),
            })
            .collect()
    }
}

#[derive(Default)]
struct Group {
    pending: BTreeMap<ShardUid, Pending>,
    waiters: Vec<Waiter>,
}

impl Group {
    /// Queues the appender until the flush, or answers it now if staging failed.
    fn wait(
        &mut self,
        shard: ShardUid,
        staged: Result<Appended, StoreError>,
        reply: Reply<Appended>,
    ) {
        match staged {
            Ok(appended) => self.waiters.push(Waiter {
                shard,
                appended,
                reply,
            }),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

pub(crate) struct Writer {
    db: Arc<Database>,
    root: PathBuf,
    opts: StoreOptions,
    shared: Arc<StoreShared>,
    shards: HashMap<ShardUid, ShardWriter>,
    /// To the sync stage; `None` once it was told to close.
    jobs: Option<flume::Sender<Job>>,
    syncer: Option<JoinHandle<()>>,
    /// Failed syncs the sync stage reported, for `apply_failures`.
    failures: Failures,
    /// Batches sent since the last barrier.
    in_flight: bool,
}

/// Where a shard's files live.
pub(crate) fn shard_dir(root: &Path, uid: ShardUid) -> PathBuf {
    root.join("shards").join(format!("{:020}", uid.0))
}

pub(crate) fn segment_paths(dir: &Path, base: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{base:020}.seg")),
        dir.join(format!("{base:020}.idx")),
    )
}

impl Writer {
    /// Starts the sync stage's thread too.
    pub fn new(
        db: Arc<Database>,
        root: PathBuf,
        opts: StoreOptions,
        shared: Arc<StoreShared>,
        shards: HashMap<ShardUid, ShardWriter>,
        wake: flume::WeakSender<Command>,
    ) -> Result<Self, StoreError> {
        let failures = Failures::default();
        let syncer = Syncer::new(
            db.clone(),
            opts.clone(),
            shared.clone(),
            failures.clone(),
            wake,
        );
        let (jobs, rx) = flume::bounded(MAX_IN_FLIGHT);
        let handle = std::thread::Builder::new()
            .name("timeshard-sync".into())
            .spawn(move || syncer.run(&rx))
            .map_err(StoreError::io("starting the sync thread"))?;
        Ok(Writer {
            db,
            root,
            opts,
            shared,
            shards,
            jobs: Some(jobs),
            syncer: Some(handle),
            failures,
            in_flight: false,
        })
    }

    pub fn run(mut self, rx: &flume::Receiver<Command>) {
        while let Ok(first) = rx.recv() {
            let mut cmds = vec![first];
            while cmds.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            if !self.process(cmds) {
                break;
            }
        }
        self.shutdown();
    }

    /// Waits for the sync stage to resolve everything sent so far, then undoes failed syncs.
    fn drain(&mut self) {
        if self.in_flight
            && let Some(jobs) = &self.jobs
        {
            let (done, wait) = std::sync::mpsc::sync_channel(1);
            if jobs.send(Job::Barrier(done)).is_ok() {
                let _ = wait.recv();
            }
            self.in_flight = false;
        }
        self.apply_failures();
    }

    /// Writes what is staged and waits for the sync stage: the log is settled.
    fn settle(&mut self, group: &mut Group) {
        self.flush(group);
        self.drain();
    }

    /// Cuts shards whose sync failed back to their durable end and starts a new epoch, so the
    /// shares written meanwhile fail too. If the cut cannot be made durable either, the shard
    /// stops taking appends until a restart recovers it.
    fn apply_failures(&mut self) {
        let failures = std::mem::take(&mut *lock_failures(&self.failures));
        for failure in failures {
            match failure {
                Failure::Poison(uid) => {
                    if let Some(sw) = self.shards.get_mut(&uid) {
                        sw.poisoned = true;
                    }
                }
                Failure::Sync {
                    shard,
                    epoch,
                    view,
                    start,
                } => {
                    let Some(sw) = self.shards.get_mut(&shard) else {
                        continue;
                    };
                    if sw.epoch != epoch {
                        continue; // a later share of an epoch already cut back
                    }
                    sw.epoch += 1;
                    let Some(active) = sw.active.as_ref().filter(|a| Arc::ptr_eq(&a.view, &view))
                    else {
                        continue;
                    };
                    // After a failed fdatasync the page cache can no longer be trusted to hold
                    // what was written (the kernel may have dropped the dirty pages).
                    let retry = active
                        .file
                        .truncate(start.len)
                        .and_then(|()| active.file.sync_data());
                    let _ = active.idx.truncate(start.idx_len);
                    if let Err(e) = retry {
                        tracing::error!(shard = %shard, error = %e, "segment cannot be made durable; shard stops taking appends");
                        sw.poisoned = true;
                    } else {
                        tracing::error!(shard = %shard, "fsync failed; the unacknowledged appends were removed");
                    }
                    sw.set_cursor(&start);
                    // A record opened since took an offset past the cut.
                    if sw.open.as_ref().is_some_and(|o| o.offset != sw.next_offset) {
                        clear_open(sw, OpenStatus::Aborted);
                    }
                }
            }
        }
    }

    /// Settles the log, aborts open records and closes the sync stage (which syncs what the
    /// batch policy deferred and commits the catalog durably).
    fn shutdown(&mut self) {
        self.drain();
        for sw in self.shards.values_mut() {
            if let Some(open) = sw.open.take() {
                open.finish(OpenStatus::Aborted);
            }
        }
        if let Some(jobs) = self.jobs.take() {
            let _ = jobs.send(Job::Close);
        }
        if let Some(handle) = self.syncer.take() {
            let _ = handle.join();
        }
    }

    /// Runs a batch of commands. Returns false on shutdown.
    fn process(&mut self, cmds: Vec<Command>) -> bool {
        self.apply_failures();
        let mut group = Group::default();
        for cmd in cmds {
            match cmd {
                Command::Append {
                    shard,
                    records,
                    reply,
                } => {
                    let staged = self.stage(&mut group, shard, records, None);
                    group.wait(shard, staged, reply);
                }
                Command::Commit {
                    shard,
                    view,
                    body,
                    reply,
                } => {
                    let staged = self.check_open(shard, &view).and_then(|()| {
                        let record = Incoming {
                            body,
                            producer_ts_ms: view.producer_ts_ms,
                            flags: view.flags,
                        };
                        self.stage(&mut group, shard, vec![record], Some(view.clone()))
                    });
                    group.wait(shard, staged, reply);
                }
                Command::Abort { shard, view } => {
                    // A record whose commit is staged is no longer the shard's open record, so
                    // a late abort of it is a no-op.
                    if let Some(sw) = self.shards.get_mut(&shard)
                        && sw.open.as_ref().is_some_and(|o| Arc::ptr_eq(o, &view))
                    {
                        clear_open(sw, OpenStatus::Aborted);
                    }
                }
                Command::Begin {
                    shard,
                    producer_ts_ms,
                    key,
                    flags,
                    reply,
                } => {
                    // No flush: a commit of the previous record staged in this group already
                    // freed the open slot, and the new record's offset follows the group's.
                    let _ = reply.send(self.begin(&group, shard, producer_ts_ms, key, flags));
                }
                Command::CreateStream { new, reply } => {
                    self.settle(&mut group);
                    let _ = reply.send(self.create_stream(new));
                }
                Command::UpdateStream {
                    name,
                    expected_version,
                    update,
                    reply,
                } => {
                    self.settle(&mut group);
                    let _ = reply.send(self.update_stream(&name, expected_version, update));
                }
                Command::Reshard {
                    name,
                    close,
                    open,
                    reply,
                } => {
                    self.settle(&mut group);
                    let _ = reply.send(self.reshard(&name, &close, open));
                }
                Command::DeleteStream { name, reply } => {
                    self.settle(&mut group);
                    let _ = reply.send(self.delete_stream(&name));
                }
                Command::Secret { name, reply } => {
                    let _ = reply.send(self.secret(&name));
                }
                Command::PutBlob {
                    stream_id,
                    data,
                    reply,
                } => {
                    let _ = reply.send(self.put_blob(stream_id, &data));
                }
                Command::PruneBlobs {
                    stream_id,
                    below,
                    reply,
                } => {
                    let _ = reply.send(self.prune_blobs(stream_id, below));
                }
                Command::Retention { reply } => {
                    self.settle(&mut group);
                    let _ = reply.send(self.retention());
                }
                // `apply_failures` above did the work.
                Command::Wake => {}
                Command::Shutdown => {
                    self.flush(&mut group);
                    return false;
                }
            }
        }
        self.flush(&mut group);
        true
    }

    fn check_open(
        &mut self,
        shard: ShardUid,
        view: &Arc<OpenRecordView>,
    ) -> Result<(), StoreError> {
        let sw = self
            .shards
            .get_mut(&shard)
            .ok_or(StoreError::ShardNotFound(shard))?;
        match &sw.open {
            Some(o) if Arc::ptr_eq(o, view) && o.status() == OpenStatus::Open => Ok(()),
            _ => Err(StoreError::InvalidArgument(
                "the record was aborted or replaced before its commit".into(),
            )),
        }
    }

    fn shard_writer(&mut self, shard: ShardUid) -> Result<&mut ShardWriter, StoreError> {
        let sw = self
            .shards
            .get_mut(&shard)
            .ok_or(StoreError::ShardNotFound(shard))?;
        if sw
            .open
            .as_ref()
            .is_some_and(|o| o.status() == OpenStatus::Aborted)
        {
            clear_open(sw, OpenStatus::Aborted);
        }
        if sw.poisoned {
            return Err(StoreError::Poisoned(shard));
        }
        if sw.closed {
            return Err(StoreError::ShardClosed(shard));
        }
        Ok(sw)
    }

    /// Opens a record at the shard's next offset: after the records staged in `group`, which
    /// are not written yet. Should they fail, the record is aborted with them (`flush`).
    fn begin(
        &mut self,
        group: &Group,
        shard: ShardUid,
        producer_ts_ms: Option<i64>,
        key: Bytes,
        flags: u16,
    ) -> Result<Arc<OpenRecordView>, StoreError> {
        check_key(&key)?;
        let now = self.opts.clock.now_ms();
        let staged = group
            .pending
            .get(&shard)
            .map(|p| (p.end.next_offset, p.end.last_ts_ms));
        let sw = self.shard_writer(shard)?;
        if sw.open.is_some() {
            return Err(StoreError::ShardBusy(shard));
        }
        let (next_offset, last_ts_ms) = staged.unwrap_or((sw.next_offset, sw.last_ts_ms));
        let ts = now.max(last_ts_ms);
        let view = Arc::new(OpenRecordView::new(
            next_offset,
            ts,
            producer_ts_ms,
            flags,
            key,
        ));
        sw.open = Some(view.clone());
        sw.shared.tail.send_modify(|t| t.open = Some(view.clone()));
        Ok(view)
    }

    /// Encodes records into the shard's pending share of the group, rolling the segment first if
    /// it is full or old. Nothing is written yet.
    fn stage(
        &mut self,
        group: &mut Group,
        shard: ShardUid,
        records: Vec<Incoming>,
        commits_open: Option<Arc<OpenRecordView>>,
    ) -> Result<Appended, StoreError> {
        let max = u64::from(self.opts.max_record_bytes);
        let mut total: u64 = 0;
        for r in &records {
            check_key(&r.body.key)?;
            let len = r.body.payload_len() as u64;
            if len > max {
                return Err(StoreError::RecordTooLarge { len, max });
            }
            total += (RECORD_HEADER_LEN + r.body.len) as u64;
        }
        let now = self.opts.clock.now_ms();
        let roll_bytes = self.roll_bytes(shard);
        let max_age_ms = i64::try_from(self.opts.segment_max_age.as_millis()).unwrap_or(i64::MAX);
        {
            let sw = self.shard_writer(shard)?;
            if commits_open.is_none() && sw.open.is_some() {
                return Err(StoreError::ShardBusy(shard));
            }
        }
        let needs_roll = {
            let sw = &self.shards[&shard];
            match &sw.active {
                None => true,
                Some(a) => {
                    let pending = group
                        .pending
                        .get(&shard)
                        .map_or(0, |p| p.end.len - p.start.len);
                    let has_records = a.first_ts_ms != i64::MAX || pending > 0;
                    has_records
                        && (a.len + pending + total > roll_bytes
                            || now.saturating_sub(a.first_ts_ms.min(now)) >= max_age_ms)
                }
            }
        };
        if needs_roll {
            // Rolling waits for the sync stage, which may cut shards back: nothing may stay
            // staged against the old ends.
            self.flush(group);
            self.roll(shard, now)?;
            // The sync stage may have reported a failure that stopped the shard meanwhile.
            self.shard_writer(shard)?;
        }
        let interval = self.opts.index_interval_bytes;
        let sw = self
            .shards
            .get_mut(&shard)
            .ok_or(StoreError::ShardNotFound(shard))?;
        let active = sw.active.as_ref().ok_or(StoreError::ShardNotFound(shard))?;
        let start = sw.cursor(active);
        let p = group.pending.entry(shard).or_insert_with(|| Pending {
            start,
            end: start,
            headers: Vec::with_capacity(records.len()),
            pieces: Vec::with_capacity(records.len() * 3),
            idx_entries: Vec::new(),
            time_entries: Vec::new(),
            records: 0,
            commits_open: Vec::new(),
        });
        let ts = match &commits_open {
            Some(view) => {
                if view.offset != p.end.next_offset {
                    return Err(StoreError::InvalidArgument(
                        "open record offset is out of step with the shard".into(),
                    ));
                }
                view.server_ts_ms
            }
            None => now.max(p.end.last_ts_ms),
        };
        let first_offset = p.end.next_offset;
        let count = records.len() as u32;
        for Incoming {
            body,
            producer_ts_ms,
            flags,
        } in records
        {
            let offset = p.end.next_offset;
            let header = RecordHeader::build(offset, ts, producer_ts_ms, flags, &body);
            let pos = p.end.len;
            if p.end.last_idx_pos.is_none_or(|last| pos - last >= interval) {
                p.idx_entries.push(IndexEntry {
                    offset,
                    pos,
                    server_ts_ms: ts,
                });
                p.end.last_idx_pos = Some(pos);
            }
            if let Some(pts) = producer_ts_ms {
                let entry = encode_time_entry(ts, pts, body.payload_len() as u32, flags, &body.key);
                p.time_entries.push((offset, ts, pts, entry));
            }
            p.push(header, &body);
            p.end.len += (RECORD_HEADER_LEN + body.len) as u64;
            p.end.next_offset += 1;
            p.records += 1;
        }
        p.end.last_ts_ms = ts;
        p.end.first_ts_ms = p.end.first_ts_ms.min(ts);
        if let Some(view) = commits_open {
            p.commits_open.push(view);
            // Staged: the shard is free for the next open record, which takes the offset after
            // this one. Readers still see this record as open until it is published.
            if let Some(sw) = self.shards.get_mut(&shard) {
                sw.open = None;
            }
        }
        Ok(Appended {
            first_offset,
            count,
            server_ts_ms: ts,
        })
    }

    /// The size at which the shard's segment rolls: the configured size, or a quarter of the
    /// stream's byte budget if that is smaller, so the budget can be kept by removing segments.
    fn roll_bytes(&self, shard: ShardUid) -> u64 {
        let mut max = self.opts.segment_max_bytes;
        if let Some(sw) = self.shards.get(&shard) {
            let catalog = self.shared.catalog();
            if let Some(budget) = catalog
                .streams
                .values()
                .find(|s| s.id == sw.stream_id)
                .and_then(|s| s.byte_budget)
            {
                max = max.min((budget / 4).max(64 << 10));
            }
        }
        max
    }

    /// Writes everything staged to the page cache and hands it to the sync stage, which
    /// resolves the waiters once it is durable. A shard whose write fails is cut back at once;
    /// its waiters get the error through the sync stage, in order with earlier groups.
    fn flush(&mut self, group: &mut Group) {
        if group.pending.is_empty() && group.waiters.is_empty() {
            return;
        }
        let mut batch = Batch {
            shares: Vec::with_capacity(group.pending.len()),
            failed: HashMap::new(),
            waiters: std::mem::take(&mut group.waiters),
        };
        for (uid, p) in std::mem::take(&mut group.pending) {
            let Some(sw) = self.shards.get_mut(&uid) else {
                continue;
            };
            let Some(active) = sw.active.as_ref() else {
                continue;
            };
            let idx_bytes: Vec<u8> = p.idx_entries.iter().flat_map(|e| e.encode()).collect();
            let r = active.file.append(&p.slices()).and_then(|()| {
                if idx_bytes.is_empty() {
                    Ok(())
                } else {
                    active.idx.append(&[IoSlice::new(&idx_bytes)])
                }
            });
            if let Err(e) = r {
                tracing::error!(shard = %uid, error = %e, "segment append failed; rolling back the group's share");
                // Undo a partial write so the next record starts where readers expect.
                let _ = active.file.truncate(p.start.len);
                let _ = active.idx.truncate(p.start.idx_len);
                batch.failed.insert(
                    uid,
                    StoreError::Io {
                        context: format!("appending to shard {uid}"),
                        source: e,
                    },
                );
                abort_commits(&sw.shared, &p.commits_open);
                // A record opened after them took an offset past theirs, which is now wrong.
                if sw.open.as_ref().is_some_and(|o| o.offset != sw.next_offset) {
                    clear_open(sw, OpenStatus::Aborted);
                }
                continue;
            }
            let mut end = p.end;
            end.idx_len = p.start.idx_len + (p.idx_entries.len() * INDEX_ENTRY_LEN) as u64;
            let share = Share {
                shard: uid,
                epoch: sw.epoch,
                shared: sw.shared.clone(),
                view: active.view.clone(),
                file: active.file.clone(),
                start: p.start,
                end,
                idx_entries: p.idx_entries,
                time_entries: p.time_entries,
                records: p.records,
                commits_open: p.commits_open,
            };
            sw.set_cursor(&end);
            batch.shares.push(share);
        }
        match &self.jobs {
            Some(jobs) => {
                // Blocks only when the sync stage is MAX_IN_FLIGHT groups behind.
                if let Err(flume::SendError(Job::Batch(batch))) = jobs.send(Job::Batch(batch)) {
                    fail_batch(&self.shared, batch);
                } else {
                    self.in_flight = true;
                }
            }
            None => fail_batch(&self.shared, batch),
        }
    }

    fn sync_file(&self, file: &dyn StoreFile) -> std::io::Result<()> {
        if self.opts.sync == SyncPolicy::Never {
            return Ok(());
        }
        let t = Instant::now();
        let r = file.sync_data();
        self.shared.metrics.fsync.observe(t.elapsed());
        r
    }

    fn sync_dir(&self, dir: &Path) -> Result<(), StoreError> {
        if self.opts.sync == SyncPolicy::Never {
            return Ok(());
        }
        self.opts.fs.sync_dir(dir).map_err(StoreError::io(format!(
            "syncing directory {}",
            dir.display()
        )))
    }

    /// Seals the active segment (if any) and starts a new one at the shard's next offset.
    /// The group must be flushed: rolling drains the sync stage.
    fn roll(&mut self, shard: ShardUid, now_ms: i64) -> Result<(), StoreError> {
        if self.shards.get(&shard).is_some_and(|s| s.active.is_some()) {
            self.drain();
        }
        self.seal(shard)?;
        let fs = self.opts.fs.clone();
        let interval = self.opts.index_interval_bytes;
        let sw = self
            .shards
            .get(&shard)
            .ok_or(StoreError::ShardNotFound(shard))?;
        let base = sw.next_offset;
        let dir = sw.shared.dir.clone();
        let (path, idx_path) = segment_paths(&dir, base);
        let ctx = format!("creating segment {}", path.display());
        let file = fs.open(&path, true).map_err(StoreError::io(ctx.clone()))?;
        // A leftover file at this base holds no acknowledged record (it would have a later base
        // otherwise); start it afresh.
        file.truncate(0).map_err(StoreError::io(ctx.clone()))?;
        let header = SegmentHeader {
            shard_uid: shard.0,
            base_offset: base,
            created_ms: now_ms,
        }
        .encode();
        file.append(&[IoSlice::new(&header)])
            .map_err(StoreError::io(ctx.clone()))?;
        self.sync_file(file.as_ref())
            .map_err(StoreError::io(ctx.clone()))?;
        let idx = fs
            .open(&idx_path, true)
            .map_err(StoreError::io(ctx.clone()))?;
        idx.truncate(0).map_err(StoreError::io(ctx.clone()))?;
        idx.append(&[IoSlice::new(&index_file_header())])
            .map_err(StoreError::io(ctx))?;
        self.sync_dir(&dir)?;
        let view = Arc::new(SegmentView::new(base, path, idx_path, interval));
        view.set_file(file.clone());
        view.set_index(Vec::new());
        let sw = self
            .shards
            .get_mut(&shard)
            .ok_or(StoreError::ShardNotFound(shard))?;
        sw.shared.segments_mut().push(view.clone());
        sw.active = Some(Active {
            view,
            file,
            idx,
            len: SEGMENT_HEADER_LEN,
            idx_len: INDEX_HEADER_LEN,
            first_ts_ms: i64::MAX,
            last_idx_pos: None,
        });
        Ok(())
    }

    /// Makes the active segment and its sparse index durable and marks it sealed in the catalog.
    fn seal(&mut self, shard: ShardUid) -> Result<(), StoreError> {
        let Some(active) = self.shards.get(&shard).and_then(|s| s.active.as_ref()) else {
            return Ok(());
        };
        let ctx = format!("sealing {}", active.view.path.display());
        self.sync_file(active.file.as_ref())
            .map_err(StoreError::io(ctx.clone()))?;
        self.sync_file(active.idx.as_ref())
            .map_err(StoreError::io(ctx))?;
        let row = SegmentRow {
            sealed: true,
            end_offset: active.view.end_offset(),
            end_pos: active.len,
            first_ts_ms: active.first_ts_ms,
            last_ts_ms: active.view.last_ts_ms.load(Ordering::Acquire),
        };
        let base = active.view.base;
        let txn = self.db.begin_write()?;
        txn.open_table(SEGMENTS)?
            .insert((shard.0, base), row.encode().as_slice())?;
        txn.commit()?;
        if let Some(sw) = self.shards.get_mut(&shard) {
            sw.active = None;
        }
        Ok(())
    }

    // ---- catalog commands ----

    fn durable_txn(&self) -> Result<WriteTransaction, StoreError> {
        Ok(self.db.begin_write()?)
    }

    /// Allocates shard uids and writes shard rows; creates their directories.
    fn add_shards(
        &self,
        txn: &WriteTransaction,
        stream_id: u64,
        first_index: u32,
        shards: Vec<NewShard>,
        now_ms: i64,
    ) -> Result<Vec<ShardMeta>, StoreError> {
        let mut meta = txn.open_table(META)?;
        let mut next_uid = read_u64(&meta, KEY_NEXT_SHARD_UID)?.unwrap_or(1);
        let mut table = txn.open_table(SHARDS)?;
        let mut out = Vec::new();
        for (i, s) in shards.into_iter().enumerate() {
            if s.hash_start > s.hash_end {
                return Err(StoreError::InvalidArgument(format!(
                    "shard hash range starts at {} after it ends at {}",
                    s.hash_start, s.hash_end
                )));
            }
            let m = ShardMeta {
                uid: ShardUid(next_uid),
                stream_id,
                index: first_index + i as u32,
                hash_start: s.hash_start,
                hash_end: s.hash_end,
                parent: s.parent,
                adjacent_parent: s.adjacent_parent,
                closed_at: s.closed.then_some(0),
                closed_ms: s.closed.then_some(now_ms),
                trim_offset: 0,
                created_ms: now_ms,
            };
            next_uid += 1;
            let dir = shard_dir(&self.root, m.uid);
            self.opts
                .fs
                .create_dir_all(&dir)
                .map_err(StoreError::io(format!("creating {}", dir.display())))?;
            table.insert(m.uid.0, serde_json::to_vec(&m)?.as_slice())?;
            out.push(m);
        }
        meta.insert(KEY_NEXT_SHARD_UID, next_uid.to_le_bytes().as_slice())?;
        self.sync_dir(&self.root.join("shards"))?;
        Ok(out)
    }

    fn install_shards(&mut self, shards: &[ShardMeta]) {
        let mut map = self.shared.shards_mut();
        for m in shards {
            let shared = Arc::new(ShardShared::new(
                shard_dir(&self.root, m.uid),
                Vec::new(),
                Tail {
                    next_offset: 0,
                    last_server_ts_ms: i64::MIN,
                    open: None,
                    state: if m.is_open() {
                        ShardState::Open
                    } else {
                        ShardState::Closed
                    },
                },
            ));
            map.insert(m.uid, shared.clone());
            self.shards.insert(
                m.uid,
                ShardWriter {
                    shared,
                    stream_id: m.stream_id,
                    next_offset: 0,
                    last_ts_ms: i64::MIN,
                    closed: !m.is_open(),
                    poisoned: false,
                    open: None,
                    active: None,
                    epoch: 0,
                },
            );
        }
    }

    fn create_stream(&mut self, new: NewStream) -> Result<StreamInfo, StoreError> {
        if new.name.is_empty() {
            return Err(StoreError::InvalidArgument("a stream needs a name".into()));
        }
        if self.shared.catalog().streams.contains_key(&new.name) {
            return Err(StoreError::StreamExists(new.name));
        }
        let now = self.opts.clock.now_ms();
        let txn = self.durable_txn()?;
        let id = {
            let mut meta = txn.open_table(META)?;
            let id = read_u64(&meta, KEY_NEXT_STREAM_ID)?.unwrap_or(1);
            meta.insert(KEY_NEXT_STREAM_ID, (id + 1).to_le_bytes().as_slice())?;
            id
        };
        let meta = StreamMeta {
            name: new.name.clone(),
            id,
            kind: new.kind,
            retention_ms: new.retention_ms,
            byte_budget: new.byte_budget,
            version: 1,
            tags: new.tags,
            attributes: new.attributes,
            created_ms: now,
            status: new.status,
        };
        txn.open_table(STREAMS)?
            .insert(meta.name.as_str(), serde_json::to_vec(&meta)?.as_slice())?;
        let shards = self.add_shards(&txn, id, 0, new.shards, now)?;
        txn.commit()?;
        self.install_shards(&shards);
        let mut catalog = self.shared.catalog_mut();
        catalog.streams.insert(meta.name.clone(), meta.clone());
        for s in &shards {
            catalog.insert_shard(s.clone());
        }
        Ok(StreamInfo { meta, shards })
    }

    fn update_stream(
        &mut self,
        name: &str,
        expected: Option<u64>,
        update: StreamUpdate,
    ) -> Result<StreamMeta, StoreError> {
        let old = self
            .shared
            .catalog()
            .streams
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::StreamNotFound(name.into()))?;
        if let Some(expected) = expected
            && expected != old.version
        {
            return Err(StoreError::VersionMismatch {
                stream: name.into(),
                expected,
                actual: old.version,
            });
        }
        let mut meta = old.clone();
        update(&mut meta)?;
        meta.name = old.name;
        meta.id = old.id;
        meta.kind = old.kind;
        meta.created_ms = old.created_ms;
        meta.version = old.version + 1;
        let txn = self.durable_txn()?;
        txn.open_table(STREAMS)?
            .insert(name, serde_json::to_vec(&meta)?.as_slice())?;
        txn.commit()?;
        self.shared
            .catalog_mut()
            .streams
            .insert(name.to_string(), meta.clone());
        Ok(meta)
    }

    fn reshard(
        &mut self,
        name: &str,
        close: &[u32],
        open: Vec<NewShard>,
    ) -> Result<StreamInfo, StoreError> {
        let info = self
            .shared
            .catalog()
            .stream_info(name)
            .ok_or_else(|| StoreError::StreamNotFound(name.into()))?;
        let mut closing = Vec::new();
        for index in close {
            let m = info
                .shards
                .iter()
                .find(|s| s.index == *index)
                .ok_or_else(|| {
                    StoreError::InvalidArgument(format!("stream {name:?} has no shard {index}"))
                })?;
            if !m.is_open() {
                return Err(StoreError::ShardClosed(m.uid));
            }
            if self.shards.get(&m.uid).is_some_and(|w| {
                w.open
                    .as_ref()
                    .is_some_and(|o| o.status() == OpenStatus::Open)
            }) {
                return Err(StoreError::ShardBusy(m.uid));
            }
            closing.push(m.clone());
        }
        let now = self.opts.clock.now_ms();
        let first_index = info.shards.iter().map(|s| s.index + 1).max().unwrap_or(0);
        for m in &closing {
            self.seal(m.uid)?;
        }
        let txn = self.durable_txn()?;
        let mut closed = Vec::new();
        {
            let mut table = txn.open_table(SHARDS)?;
            for m in closing {
                let mut m = m;
                m.closed_at = Some(self.shards.get(&m.uid).map_or(0, |w| w.next_offset));
                m.closed_ms = Some(now);
                table.insert(m.uid.0, serde_json::to_vec(&m)?.as_slice())?;
                closed.push(m);
            }
        }
        let created = self.add_shards(&txn, info.meta.id, first_index, open, now)?;
        txn.commit()?;
        for m in &closed {
            if let Some(w) = self.shards.get_mut(&m.uid) {
                w.closed = true;
                if let Some(o) = w.open.take() {
                    o.finish(OpenStatus::Aborted);
                }
            }
        }
        self.install_shards(&created);
        let info = {
            let mut catalog = self.shared.catalog_mut();
            for m in closed.iter().cloned().chain(created) {
                catalog.insert_shard(m);
            }
            catalog
                .stream_info(name)
                .ok_or_else(|| StoreError::StreamNotFound(name.into()))?
        };
        // Followers hear of the close only now, when the children they will look up exist.
        for m in &closed {
            if let Some(w) = self.shards.get(&m.uid) {
                w.shared.tail.send_modify(|t| {
                    t.state = ShardState::Closed;
                    t.open = None;
                });
            }
        }
        Ok(info)
    }

    fn delete_stream(&mut self, name: &str) -> Result<(), StoreError> {
        let info = self
            .shared
            .catalog()
            .stream_info(name)
            .ok_or_else(|| StoreError::StreamNotFound(name.into()))?;
        let txn = self.durable_txn()?;
        txn.open_table(STREAMS)?.remove(name)?;
        {
            let mut shards = txn.open_table(SHARDS)?;
            let mut segments = txn.open_table(SEGMENTS)?;
            let mut by_offset = txn.open_table(TIME_BY_OFFSET)?;
            let mut by_producer = txn.open_table(TIME_BY_PRODUCER)?;
            let mut by_server = txn.open_table(TIME_BY_SERVER)?;
            for s in &info.shards {
                let u = s.uid.0;
                shards.remove(u)?;
                segments.retain_in((u, 0)..=(u, u64::MAX), |_, _| false)?;
                by_offset.retain_in((u, 0)..=(u, u64::MAX), |_, _| false)?;
                by_producer.retain_in((u, i64::MIN, 0)..=(u, i64::MAX, u64::MAX), |_, _| false)?;
                by_server.retain_in((u, i64::MIN, 0)..=(u, i64::MAX, u64::MAX), |_, _| false)?;
            }
            let id = info.meta.id;
            txn.open_table(STREAM_BLOBS)?
                .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
        }
        txn.commit()?;
        {
            let mut catalog = self.shared.catalog_mut();
            catalog.streams.remove(name);
            catalog.by_stream.remove(&info.meta.id);
            for s in &info.shards {
                catalog.shards.remove(&s.uid);
            }
        }
        let mut removed = Vec::new();
        {
            let mut map = self.shared.shards_mut();
            for s in &info.shards {
                map.remove(&s.uid);
                if let Some(mut w) = self.shards.remove(&s.uid) {
                    if let Some(o) = w.open.take() {
                        o.finish(OpenStatus::Aborted);
                    }
                    w.shared.tail.send_modify(|t| {
                        t.state = ShardState::Deleted;
                        t.open = None;
                    });
                    removed.push(w.shared.dir.clone());
                }
            }
        }
        // The catalog no longer knows these directories; a crash here leaves orphans that the
        // next open removes.
        for dir in removed {
            if let Err(e) = self.opts.fs.remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted shard's files");
            }
        }
        let _ = self.sync_dir(&self.root.join("shards"));
        Ok(())
    }

    /// A named 32-byte secret, made from the system's random source the first time it is asked
    /// for and kept in the catalog from then on.
    fn secret(&mut self, name: &str) -> Result<[u8; 32], StoreError> {
        let key = format!("secret:{name}");
        let txn = self.durable_txn()?;
        let existing = {
            let meta = txn.open_table(META)?;
            meta.get(key.as_str())?.map(|v| v.value().to_vec())
        };
        if let Some(v) = existing {
            txn.abort()?;
            return v
                .try_into()
                .map_err(|_| StoreError::Catalog(format!("{key} is not 32 bytes")));
        }
        let mut secret = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret))
            .map_err(StoreError::io("reading /dev/urandom"))?;
        txn.open_table(META)?
            .insert(key.as_str(), secret.as_slice())?;
        txn.commit()?;
        Ok(secret)
    }

    /// Stores a stream blob durably under the stream's next blob id.
    fn put_blob(&mut self, stream_id: u64, data: &[u8]) -> Result<u64, StoreError> {
        if !self
            .shared
            .catalog()
            .streams
            .values()
            .any(|m| m.id == stream_id)
        {
            return Err(StoreError::StreamNotFound(format!("id {stream_id}")));
        }
        let txn = self.durable_txn()?;
        let id = {
            let mut blobs = txn.open_table(STREAM_BLOBS)?;
            let last = blobs
                .range((stream_id, 0)..=(stream_id, u64::MAX))?
                .next_back()
                .transpose()?
                .map_or(0, |(k, _)| k.value().1);
            let id = last + 1;
            blobs.insert((stream_id, id), data)?;
            id
        };
        txn.commit()?;
        Ok(id)
    }

    /// Removes a stream's blobs with ids below `below`; returns how many.
    fn prune_blobs(&mut self, stream_id: u64, below: u64) -> Result<u64, StoreError> {
        if below <= 1 {
            return Ok(0);
        }
        let txn = self.durable_txn()?;
        let mut removed = 0;
        txn.open_table(STREAM_BLOBS)?
            .retain_in((stream_id, 0)..(stream_id, below), |_, _| {
                removed += 1;
                false
            })?;
        txn.commit()?;
        Ok(removed)
    }

    fn retention(&mut self) -> Result<RetentionReport, StoreError> {
        let now = self.opts.clock.now_ms();
        let streams: Vec<StreamInfo> = {
            let catalog = self.shared.catalog();
            catalog
                .streams
                .keys()
                .filter_map(|n| catalog.stream_info(n))
                .collect()
        };
        // (shard, segment) pairs to remove, oldest first within each shard.
        let mut doomed: Vec<(ShardUid, Arc<SegmentView>)> = Vec::new();
        for info in &streams {
            let cutoff =
                now.saturating_sub(i64::try_from(info.meta.retention_ms).unwrap_or(i64::MAX));
            let mut queues: Vec<(ShardUid, std::collections::VecDeque<Arc<SegmentView>>)> =
                Vec::new();
            for s in &info.shards {
                let Some(w) = self.shards.get(&s.uid) else {
                    continue;
                };
                let busy = w.open.is_some();
                let segs = w.shared.segments();
                let last = segs.len().saturating_sub(1);
                let mut keep: std::collections::VecDeque<Arc<SegmentView>> =
                    segs.iter().cloned().collect();
                while let Some(seg) = keep.front() {
                    let is_active = keep.len() - 1 == 0 && last == segs.len() - 1;
                    let expired =
                        !seg.is_empty() && seg.last_ts_ms.load(Ordering::Acquire) < cutoff;
                    if !expired || (is_active && busy) {
                        break;
                    }
                    if let Some(seg) = keep.pop_front() {
                        doomed.push((s.uid, seg));
                    }
                }
                queues.push((s.uid, keep));
            }
            if let Some(budget) = info.meta.byte_budget {
                let mut total: u64 = queues
                    .iter()
                    .flat_map(|(_, q)| q.iter())
                    .map(|s| s.bytes())
                    .sum();
                while total > budget {
                    // Oldest first across the stream's shards.
                    let Some(i) = queues
                        .iter()
                        .enumerate()
                        .filter(|(_, (uid, q))| {
                            q.front().is_some_and(|s| !s.is_empty())
                                && !(q.len() == 1
                                    && self.shards.get(uid).is_some_and(|w| w.open.is_some()))
                        })
                        .min_by_key(|(_, (_, q))| {
                            q.front()
                                .map_or(i64::MAX, |s| s.last_ts_ms.load(Ordering::Acquire))
                        })
                        .map(|(i, _)| i)
                    else {
                        break;
                    };
                    let (uid, q) = &mut queues[i];
                    if let Some(seg) = q.pop_front() {
                        total -= seg.bytes();
                        doomed.push((*uid, seg));
                    }
                }
            }
        }
        if doomed.is_empty() {
            return Ok(RetentionReport::default());
        }
        let mut report = RetentionReport::default();
        let txn = self.durable_txn()?;
        let mut trims: BTreeMap<ShardUid, u64> = BTreeMap::new();
        {
            let mut segments = txn.open_table(SEGMENTS)?;
            let mut by_offset = txn.open_table(TIME_BY_OFFSET)?;
            let mut by_producer = txn.open_table(TIME_BY_PRODUCER)?;
            let mut by_server = txn.open_table(TIME_BY_SERVER)?;
            for (uid, seg) in &doomed {
                let u = uid.0;
                segments.remove((u, seg.base))?;
                let end = seg.end_offset();
                let mut entries = Vec::new();
                for row in by_offset.range((u, seg.base)..(u, end))? {
                    let (k, v) = row?;
                    entries.push(decode_time_entry(k.value().1, v.value())?);
                }
                for e in &entries {
                    by_producer.remove((u, e.producer_ts_ms, e.offset))?;
                    by_server.remove((u, e.server_ts_ms, e.offset))?;
                }
                by_offset.retain_in((u, seg.base)..(u, end), |_, _| false)?;
                report.index_entries_deleted += entries.len() as u64;
                report.segments_deleted += 1;
                report.bytes_deleted += seg.bytes();
                let t = trims.entry(*uid).or_insert(0);
                *t = (*t).max(end);
            }
            let mut shards = txn.open_table(SHARDS)?;
            let mut catalog = self.shared.catalog_mut();
            for (uid, trim) in &trims {
                if let Some(m) = catalog.shards.get_mut(uid) {
                    m.trim_offset = m.trim_offset.max(*trim);
                    shards.insert(uid.0, serde_json::to_vec(&*m)?.as_slice())?;
                }
            }
        }
        txn.commit()?;
        for (uid, seg) in &doomed {
            if let Some(w) = self.shards.get_mut(uid) {
                w.shared.segments_mut().retain(|s| !Arc::ptr_eq(s, seg));
                if w.active.as_ref().is_some_and(|a| Arc::ptr_eq(&a.view, seg)) {
                    w.active = None;
                }
                // Readers holding the view keep reading from the open handle; the name goes now.
                for path in [&seg.path, &seg.idx_path] {
                    if let Err(e) = self.opts.fs.remove_file(path) {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove an expired segment file");
                    }
                }
                w.shared.tail.send_modify(|_| {});
            }
        }
        let dirs: std::collections::BTreeSet<PathBuf> = doomed
            .iter()
            .filter_map(|(uid, _)| self.shards.get(uid).map(|w| w.shared.dir.clone()))
            .collect();
        for dir in dirs {
            let _ = self.sync_dir(&dir);
        }
        self.shared
            .metrics
            .segments_deleted
            .fetch_add(report.segments_deleted, Ordering::Relaxed);
        Ok(report)
    }
}

fn check_key(key: &Bytes) -> Result<(), StoreError> {
    if key.len() > usize::from(u16::MAX) {
        return Err(StoreError::InvalidArgument(format!(
            "record key of {} bytes exceeds 65535",
            key.len()
        )));
    }
    Ok(())
}

fn clear_open(sw: &mut ShardWriter, status: OpenStatus) {
    if let Some(o) = sw.open.take() {
        o.finish(status);
    }
    sw.shared.tail.send_modify(|t| t.open = None);
}

/// Answers a batch the sync stage can no longer take (it stops only after the writer, so this
/// is a shutdown race at most).
fn fail_batch(shared: &StoreShared, batch: Batch) {
    for share in &batch.shares {
        abort_commits(&share.shared, &share.commits_open);
    }
    for w in batch.waiters {
        shared.metrics.append_errors.fetch_add(1, Ordering::Relaxed);
        let _ = w.reply.send(Err(StoreError::Closed));
    }
}
