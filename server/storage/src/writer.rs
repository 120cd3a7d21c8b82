//! The single writer thread of a data directory.
//!
//! Every mutation arrives here as a [`Command`]. The thread drains what is queued into a group,
//! writes each shard's share with one vectored append, makes the files durable with one
//! fdatasync per touched file (in parallel when several), records the new high-water marks and
//! time index entries in one catalog transaction, and only then publishes the records to readers
//! and resolves the appenders. Appends that queue while a sync runs share the next one: that is
//! the group commit. Catalog commands flush the group first, so they see a settled log.

use std::collections::{BTreeMap, HashMap};
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, WriteTransaction};
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

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
pub(crate) type StreamUpdate = Box<dyn FnOnce(&mut StreamMeta) -> Result<(), StoreError> + Send>;

/// Catalog commits are non-durable between these (the segments are the durable truth, and
/// recovery re-indexes past the last durable high-water mark).
const DURABLE_CATALOG_EVERY: Duration = Duration::from_secs(1);
/// A shard's high-water mark is committed once this many bytes were appended since its last
/// commit (or after `DURABLE_CATALOG_EVERY`, or with any time-index entry). Recovery scans at most
/// this far past the mark, and appends without time entries skip the catalog entirely.
const HWM_EVERY_BYTES: u64 = 8 << 20;
/// Most commands folded into one group.
const MAX_GROUP: usize = 4096;

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
    Shutdown,
}

/// The segment a shard appends to.
#[derive(Debug)]
pub(crate) struct Active {
    pub view: Arc<SegmentView>,
    pub file: Arc<dyn StoreFile>,
    pub idx: Arc<dyn StoreFile>,
    /// Bytes written and acknowledged.
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
    pub next_offset: u64,
    pub last_ts_ms: i64,
    pub closed: bool,
    pub poisoned: bool,
    pub open: Option<Arc<OpenRecordView>>,
    pub active: Option<Active>,
}

/// A time-index entry to commit: offset, server ts, producer ts, encoded value.
type TimeEntry = (u64, i64, i64, Vec<u8>);

/// One shard's share of a group, not yet written.
struct Pending {
    start_len: u64,
    start_idx_len: u64,
    bytes: u64,
    next_offset: u64,
    last_ts_ms: i64,
    first_ts_ms: i64,
    last_idx_pos: Option<u64>,
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

/// An appender waiting for its staged records to be flushed.
struct Waiter {
    shard: ShardUid,
    appended: Appended,
    reply: Reply<Appended>,
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
    last_durable: Instant,
    catalog_dirty: bool,
    /// Shards whose active segment grew since its row was last committed.
    stale_hwm: std::collections::BTreeSet<ShardUid>,
    stale_bytes: u64,
    last_index_commit: Instant,
    /// Shards written but not yet synced (batch policy).
    unsynced: Vec<ShardUid>,
    unsynced_since: Option<Instant>,
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

fn io_copy(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}

impl Writer {
    pub fn new(
        db: Arc<Database>,
        root: PathBuf,
        opts: StoreOptions,
        shared: Arc<StoreShared>,
        shards: HashMap<ShardUid, ShardWriter>,
    ) -> Self {
        Writer {
            db,
            root,
            opts,
            shared,
            shards,
            last_durable: Instant::now(),
            catalog_dirty: false,
            stale_hwm: std::collections::BTreeSet::new(),
            stale_bytes: 0,
            last_index_commit: Instant::now(),
            unsynced: Vec::new(),
            unsynced_since: None,
        }
    }

    pub fn run(mut self, rx: &flume::Receiver<Command>) {
        loop {
            let first = match self.next_deadline() {
                None => rx.recv().map_err(|_| ()),
                Some(deadline) => match rx.recv_deadline(deadline) {
                    Ok(cmd) => Ok(cmd),
                    Err(flume::RecvTimeoutError::Timeout) => {
                        self.on_timer();
                        continue;
                    }
                    Err(flume::RecvTimeoutError::Disconnected) => Err(()),
                },
            };
            let Ok(first) = first else { break };
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
            self.on_timer();
        }
        self.shutdown();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let sync = self.unsynced_since.and_then(|t| match self.opts.sync {
            SyncPolicy::Batch(d) => Some(t + d),
            _ => None,
        });
        // Exactly the conditions `on_timer` acts on, so a wake-up always has work to do.
        let stale =
            (!self.stale_hwm.is_empty()).then_some(self.last_index_commit + DURABLE_CATALOG_EVERY);
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
        let stale =
            !self.stale_hwm.is_empty() && now >= self.last_index_commit + DURABLE_CATALOG_EVERY;
        if stale || (self.catalog_dirty && now >= self.last_durable + DURABLE_CATALOG_EVERY) {
            let r = self.commit_index(&[], true);
            self.note_catalog_commit(r, true);
        }
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

    fn shutdown(&mut self) {
        self.sync_unsynced();
        for sw in self.shards.values_mut() {
            if let Some(open) = sw.open.take() {
                open.finish(OpenStatus::Aborted);
            }
        }
        let r = self.commit_index(&[], true);
        self.note_catalog_commit(r, true);
    }

    /// Runs a batch of commands. Returns false on shutdown.
    fn process(&mut self, cmds: Vec<Command>) -> bool {
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
                    self.flush(&mut group);
                    let _ = reply.send(self.create_stream(new));
                }
                Command::UpdateStream {
                    name,
                    expected_version,
                    update,
                    reply,
                } => {
                    self.flush(&mut group);
                    let _ = reply.send(self.update_stream(&name, expected_version, update));
                }
                Command::Reshard {
                    name,
                    close,
                    open,
                    reply,
                } => {
                    self.flush(&mut group);
                    let _ = reply.send(self.reshard(&name, &close, open));
                }
                Command::DeleteStream { name, reply } => {
                    self.flush(&mut group);
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
                    self.flush(&mut group);
                    let _ = reply.send(self.retention());
                }
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
            .map(|p| (p.next_offset, p.last_ts_ms));
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
                    let pending = group.pending.get(&shard).map_or(0, |p| p.bytes);
                    let has_records = a.first_ts_ms != i64::MAX || pending > 0;
                    has_records
                        && (a.len + pending + total > roll_bytes
                            || now.saturating_sub(a.first_ts_ms.min(now)) >= max_age_ms)
                }
            }
        };
        if needs_roll {
            if group.pending.contains_key(&shard) {
                self.flush(group);
            }
            self.roll(shard, now)?;
        }
        let interval = self.opts.index_interval_bytes;
        let sw = self
            .shards
            .get_mut(&shard)
            .ok_or(StoreError::ShardNotFound(shard))?;
        let active = sw.active.as_ref().ok_or(StoreError::ShardNotFound(shard))?;
        let p = group.pending.entry(shard).or_insert_with(|| Pending {
            start_len: active.len,
            start_idx_len: active.idx_len,
            bytes: 0,
            next_offset: sw.next_offset,
            last_ts_ms: sw.last_ts_ms,
            first_ts_ms: active.first_ts_ms,
            last_idx_pos: active.last_idx_pos,
            headers: Vec::with_capacity(records.len()),
            pieces: Vec::with_capacity(records.len() * 3),
            idx_entries: Vec::new(),
            time_entries: Vec::new(),
            records: 0,
            commits_open: Vec::new(),
        });
        let ts = match &commits_open {
            Some(view) => {
                if view.offset != p.next_offset {
                    return Err(StoreError::InvalidArgument(
                        "open record offset is out of step with the shard".into(),
                    ));
                }
                view.server_ts_ms
            }
            None => now.max(p.last_ts_ms),
        };
        let first_offset = p.next_offset;
        let count = records.len() as u32;
        for Incoming {
            body,
            producer_ts_ms,
            flags,
        } in records
        {
            let offset = p.next_offset;
            let header = RecordHeader::build(offset, ts, producer_ts_ms, flags, &body);
            let pos = p.start_len + p.bytes;
            if p.last_idx_pos.is_none_or(|last| pos - last >= interval) {
                p.idx_entries.push(IndexEntry {
                    offset,
                    pos,
                    server_ts_ms: ts,
                });
                p.last_idx_pos = Some(pos);
            }
            if let Some(pts) = producer_ts_ms {
                let entry = encode_time_entry(ts, pts, body.payload_len() as u32, flags, &body.key);
                p.time_entries.push((offset, ts, pts, entry));
            }
            p.push(header, &body);
            p.bytes += (RECORD_HEADER_LEN + body.len) as u64;
            p.next_offset += 1;
            p.records += 1;
        }
        p.last_ts_ms = ts;
        p.first_ts_ms = p.first_ts_ms.min(ts);
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

    /// Writes, syncs, indexes and publishes everything staged, then resolves the waiters.
    fn flush(&mut self, group: &mut Group) {
        if group.pending.is_empty() && group.waiters.is_empty() {
            return;
        }
        let mut failed: HashMap<ShardUid, StoreError> = HashMap::new();
        let mut written: Vec<ShardUid> = Vec::new();
        for (uid, p) in group.pending.iter_mut() {
            let Some(active) = self.shards.get(uid).and_then(|s| s.active.as_ref()) else {
                continue;
            };
            let slices = p.slices();
            let idx_bytes: Vec<u8> = p.idx_entries.iter().flat_map(|e| e.encode()).collect();
            let r = active.file.append(&slices).and_then(|()| {
                if idx_bytes.is_empty() {
                    Ok(())
                } else {
                    active.idx.append(&[IoSlice::new(&idx_bytes)])
                }
            });
            match r {
                Ok(()) => written.push(*uid),
                Err(e) => {
                    tracing::error!(shard = %uid, error = %e, "segment append failed; rolling back the group's share");
                    // Undo a partial write so the next record starts where readers expect.
                    let _ = active.file.truncate(p.start_len);
                    let _ = active.idx.truncate(p.start_idx_len);
                    failed.insert(
                        *uid,
                        StoreError::Io {
                            context: format!("appending to shard {uid}"),
                            source: e,
                        },
                    );
                }
            }
        }
        match self.opts.sync {
            SyncPolicy::Always => {
                let files: Vec<(ShardUid, Arc<dyn StoreFile>)> = written
                    .iter()
                    .filter_map(|uid| {
                        Some((*uid, self.shards.get(uid)?.active.as_ref()?.file.clone()))
                    })
                    .collect();
                for (uid, r) in sync_files(&files, &self.shared) {
                    if let Err(e) = r {
                        let p = &group.pending[&uid];
                        failed.insert(
                            uid,
                            StoreError::Io {
                                context: format!("syncing shard {uid}"),
                                source: e,
                            },
                        );
                        self.fail_sync(uid, p.start_len, p.start_idx_len);
                    }
                }
            }
            SyncPolicy::Batch(_) => {
                for uid in &written {
                    if !self.unsynced.contains(uid) {
                        self.unsynced.push(*uid);
                    }
                }
                if !written.is_empty() && self.unsynced_since.is_none() {
                    self.unsynced_since = Some(Instant::now());
                }
            }
            SyncPolicy::Never => {}
        }
        // Publish to readers, then index: high-water marks (when due) and time entries in one
        // transaction. Appenders hear back only after both.
        let ok: Vec<ShardUid> = written
            .into_iter()
            .filter(|u| !failed.contains_key(u))
            .collect();
        let mut time_entries: Vec<(ShardUid, &[TimeEntry])> = Vec::new();
        for uid in &ok {
            let Some(p) = group.pending.get(uid) else {
                continue;
            };
            let Some(sw) = self.shards.get_mut(uid) else {
                continue;
            };
            publish(sw, p);
            self.stale_hwm.insert(*uid);
            self.stale_bytes += p.bytes;
            if !p.time_entries.is_empty() {
                time_entries.push((*uid, &p.time_entries));
            }
            let m = &self.shared.metrics;
            m.appended_records.fetch_add(p.records, Ordering::Relaxed);
            m.appended_bytes.fetch_add(p.bytes, Ordering::Relaxed);
        }
        if !time_entries.is_empty()
            || self.stale_bytes >= HWM_EVERY_BYTES
            || (!ok.is_empty() && self.last_index_commit.elapsed() >= DURABLE_CATALOG_EVERY)
        {
            let durable = self.last_durable.elapsed() >= DURABLE_CATALOG_EVERY;
            let r = self.commit_index(&time_entries, durable);
            self.note_catalog_commit(r, durable);
        }
        for w in group.waiters.drain(..) {
            let Waiter {
                shard,
                appended,
                reply,
            } = w;
            match failed.get(&shard) {
                None => {
                    self.shared.metrics.appends.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Ok(appended));
                }
                Some(e) => {
                    self.shared
                        .metrics
                        .append_errors
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(copy_error(e)));
                }
            }
        }
        for (uid, p) in std::mem::take(&mut group.pending) {
            if failed.contains_key(&uid)
                && let Some(sw) = self.shards.get_mut(&uid)
            {
                // The fragments' bytes did not make it; the records are gone, not half there.
                for view in &p.commits_open {
                    view.finish(OpenStatus::Aborted);
                }
                // (Readers are woken only if something they see changed.)
                sw.shared.tail.send_if_modified(|t| {
                    let stale = t
                        .open
                        .as_ref()
                        .is_some_and(|o| p.commits_open.iter().any(|v| Arc::ptr_eq(o, v)));
                    if stale {
                        t.open = None;
                    }
                    stale
                });
                // A record opened after them took an offset past theirs, which is now wrong.
                if sw.open.as_ref().is_some_and(|o| o.offset != sw.next_offset) {
                    clear_open(sw, OpenStatus::Aborted);
                }
            }
        }
    }

    /// After a failed fdatasync the page cache can no longer be trusted to hold what was written
    /// (the kernel may have dropped the dirty pages). Cut the file back to what is known durable
    /// and sync again; if that fails too, stop appending to the shard until a restart recovers it.
    fn fail_sync(&mut self, uid: ShardUid, durable_len: u64, idx_len: u64) {
        let Some(sw) = self.shards.get_mut(&uid) else {
            return;
        };
        let Some(active) = sw.active.as_ref() else {
            return;
        };
        let retry = active
            .file
            .truncate(durable_len)
            .and_then(|()| active.file.sync_data());
        let _ = active.idx.truncate(idx_len);
        if let Err(e) = retry {
            tracing::error!(shard = %uid, error = %e, "segment cannot be made durable; shard stops taking appends");
            sw.poisoned = true;
        } else {
            tracing::error!(shard = %uid, "fsync failed; the unacknowledged appends were removed");
        }
    }

    /// Commits the rows of active segments that grew since their last commit (their high-water
    /// marks, read from the published state) together with new time-index entries.
    fn commit_index(
        &mut self,
        time_entries: &[(ShardUid, &[TimeEntry])],
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
            for uid in &self.stale_hwm {
                // Sealed, expired or deleted since: nothing active to describe.
                let Some(active) = self.shards.get(uid).and_then(|s| s.active.as_ref()) else {
                    continue;
                };
                let row = SegmentRow {
                    sealed: false,
                    end_offset: active.view.end_offset(),
                    end_pos: active.len,
                    first_ts_ms: active.first_ts_ms,
                    last_ts_ms: active.view.last_ts_ms.load(Ordering::Acquire),
                };
                segments.insert((uid.0, active.view.base), row.encode().as_slice())?;
            }
            let mut by_offset = txn.open_table(TIME_BY_OFFSET)?;
            let mut by_producer = txn.open_table(TIME_BY_PRODUCER)?;
            let mut by_server = txn.open_table(TIME_BY_SERVER)?;
            for (uid, entries) in time_entries {
                for (offset, sts, pts, entry) in *entries {
                    by_offset.insert((uid.0, *offset), entry.as_slice())?;
                    by_producer.insert((uid.0, *pts, *offset), entry.as_slice())?;
                    by_server.insert((uid.0, *sts, *offset), entry.as_slice())?;
                }
            }
        }
        txn.commit()?;
        self.stale_hwm.clear();
        self.stale_bytes = 0;
        self.last_index_commit = Instant::now();
        Ok(())
    }

    /// The batch policy's deferred fdatasync.
    fn sync_unsynced(&mut self) {
        let uids = std::mem::take(&mut self.unsynced);
        self.unsynced_since = None;
        let files: Vec<(ShardUid, Arc<dyn StoreFile>)> = uids
            .iter()
            .filter_map(|uid| Some((*uid, self.shards.get(uid)?.active.as_ref()?.file.clone())))
            .collect();
        for (uid, r) in sync_files(&files, &self.shared) {
            if let Err(e) = r {
                // Already acknowledged under this policy: all we can do is stop the shard.
                tracing::error!(shard = %uid, error = %e, "deferred fsync failed; shard stops taking appends");
                if let Some(sw) = self.shards.get_mut(&uid) {
                    sw.poisoned = true;
                }
            }
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
    fn roll(&mut self, shard: ShardUid, now_ms: i64) -> Result<(), StoreError> {
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
        self.catalog_dirty = false;
        self.last_durable = Instant::now();
        if let Some(sw) = self.shards.get_mut(&shard) {
            sw.active = None;
            self.unsynced.retain(|u| *u != shard);
        }
        Ok(())
    }

    // ---- catalog commands ----

    fn durable_txn(&self) -> Result<WriteTransaction, StoreError> {
        Ok(self.db.begin_write()?)
    }

    fn committed_durably(&mut self) {
        self.catalog_dirty = false;
        self.last_durable = Instant::now();
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
        self.committed_durably();
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
        self.committed_durably();
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
        self.committed_durably();
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
        self.committed_durably();
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
                self.unsynced.retain(|u| *u != s.uid);
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
        self.committed_durably();
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
        self.committed_durably();
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
        self.committed_durably();
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
        self.committed_durably();
        for (uid, seg) in &doomed {
            if let Some(w) = self.shards.get_mut(uid) {
                w.shared.segments_mut().retain(|s| !Arc::ptr_eq(s, seg));
                if w.active.as_ref().is_some_and(|a| Arc::ptr_eq(&a.view, seg)) {
                    w.active = None;
                    self.unsynced.retain(|u| u != uid);
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

/// Makes a shard's staged records visible: extent, sparse index, tail.
fn publish(sw: &mut ShardWriter, p: &Pending) {
    let Some(active) = sw.active.as_mut() else {
        return;
    };
    active.len = p.start_len + p.bytes;
    active.idx_len = p.start_idx_len + (p.idx_entries.len() * INDEX_ENTRY_LEN) as u64;
    active.first_ts_ms = p.first_ts_ms;
    active.last_idx_pos = p.last_idx_pos;
    let view = &active.view;
    view.push_index(&p.idx_entries);
    view.first_ts_ms.store(p.first_ts_ms, Ordering::Release);
    view.last_ts_ms.store(p.last_ts_ms, Ordering::Release);
    view.end_pos.store(active.len, Ordering::Release);
    view.end_offset.store(p.next_offset, Ordering::Release);
    sw.next_offset = p.next_offset;
    sw.last_ts_ms = p.last_ts_ms;
    sw.shared.tail.send_modify(|t| {
        t.next_offset = p.next_offset;
        t.last_server_ts_ms = p.last_ts_ms;
        // A committed record stops being the open one, unless the next record has already
        // replaced it.
        if t.open
            .as_ref()
            .is_some_and(|o| p.commits_open.iter().any(|v| Arc::ptr_eq(o, v)))
        {
            t.open = None;
        }
    });
    // Followers learn of the commit only after the record is readable in the log.
    for v in &p.commits_open {
        v.finish(OpenStatus::Committed);
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

fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Io { context, source } => StoreError::Io {
            context: context.clone(),
            source: io_copy(source),
        },
        StoreError::Poisoned(u) => StoreError::Poisoned(*u),
        other => StoreError::Catalog(other.to_string()),
    }
}
