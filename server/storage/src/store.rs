//! The public face of the engine: [`Store`]. Mutations go to the single writer thread as
//! commands and resolve through a oneshot; reads run on the blocking pool with positional reads
//! and never wait for the writer.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use redb::{Database, ReadableDatabase};
use tokio::sync::{oneshot, watch};

use crate::catalog::{
    STREAM_BLOBS, ShardMeta, StreamKind, StreamMeta, StreamStatus, TIME_BY_OFFSET,
    TIME_BY_PRODUCER, TIME_BY_SERVER,
};
use crate::error::StoreError;
use crate::format::RecordBody;
use crate::format::{IndexedRecord, decode_time_entry};
use crate::metrics::StoreMetrics;
use crate::options::StoreOptions;
use crate::read::{self, Position, ReadBatch, ReadLimits};
use crate::seqno::ShardUid;
use crate::shard::{OpenRecordView, ShardShared, Tail};
use crate::writer::{Command, Incoming};

/// A record to append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    /// Small bytes kept with the record and in the time index (a partition key, fragment info).
    pub key: Bytes,
    pub payload: Bytes,
    /// Records with a producer timestamp are entered in the time index.
    pub producer_ts_ms: Option<i64>,
    /// Free for the API layer.
    pub flags: u16,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first_offset: u64,
    pub count: u32,
    /// The server timestamp shared by the records of this append.
    pub server_ts_ms: i64,
}

/// A shard to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewShard {
    pub hash_start: u128,
    pub hash_end: u128,
    pub parent: Option<u32>,
    pub adjacent_parent: Option<u32>,
    /// Created already closed (an intermediate step of a reshard that never takes records).
    pub closed: bool,
}

/// A stream to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStream {
    pub name: String,
    pub kind: StreamKind,
    pub retention_ms: u64,
    pub byte_budget: Option<u64>,
    pub tags: BTreeMap<String, String>,
    pub attributes: BTreeMap<String, String>,
    pub status: StreamStatus,
    pub shards: Vec<NewShard>,
}

impl NewShard {
    /// A shard owning every hash key (the one shard of a video stream, or of a one-shard data
    /// stream).
    pub fn whole_key_range() -> Self {
        NewShard {
            hash_start: 0,
            hash_end: u128::MAX,
            parent: None,
            adjacent_parent: None,
            closed: false,
        }
    }
}

impl NewStream {
    /// An active stream with no tags, attributes or byte budget.
    pub fn new(
        name: impl Into<String>,
        kind: StreamKind,
        retention_ms: u64,
        shards: Vec<NewShard>,
    ) -> Self {
        NewStream {
            name: name.into(),
            kind,
            retention_ms,
            byte_budget: None,
            tags: BTreeMap::new(),
            attributes: BTreeMap::new(),
            status: StreamStatus::Active,
            shards,
        }
    }
}

/// A stream and its shards (ordered by index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub meta: StreamMeta,
    pub shards: Vec<ShardMeta>,
}

/// Which timestamp a time-index query ranges over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeKind {
    Producer,
    Server,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: u64,
    pub bytes_deleted: u64,
    pub index_entries_deleted: u64,
}

/// Size and extent of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardStats {
    pub trim_horizon: u64,
    pub next_offset: u64,
    pub segments: usize,
    pub bytes: u64,
}

pub(crate) struct CatalogState {
    pub streams: BTreeMap<String, StreamMeta>,
    pub shards: BTreeMap<ShardUid, ShardMeta>,
    pub by_stream: HashMap<u64, Vec<ShardUid>>,
}

impl CatalogState {
    pub fn new() -> Self {
        CatalogState {
            streams: BTreeMap::new(),
            shards: BTreeMap::new(),
            by_stream: HashMap::new(),
        }
    }

    pub fn insert_shard(&mut self, meta: ShardMeta) {
        let list = self.by_stream.entry(meta.stream_id).or_default();
        if !list.contains(&meta.uid) {
            list.push(meta.uid);
        }
        self.shards.insert(meta.uid, meta);
    }

    pub fn stream_info(&self, name: &str) -> Option<StreamInfo> {
        let meta = self.streams.get(name)?.clone();
        let mut shards: Vec<ShardMeta> = self
            .by_stream
            .get(&meta.id)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.shards.get(uid).cloned())
            .collect();
        shards.sort_by_key(|s| s.index);
        Some(StreamInfo { meta, shards })
    }
}

/// State shared by the writer thread and every `Store` handle.
pub(crate) struct StoreShared {
    pub catalog: RwLock<CatalogState>,
    pub shards: RwLock<HashMap<ShardUid, Arc<ShardShared>>>,
    pub metrics: StoreMetrics,
    pub healthy: AtomicBool,
}

impl StoreShared {
    pub fn catalog(&self) -> std::sync::RwLockReadGuard<'_, CatalogState> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn catalog_mut(&self) -> std::sync::RwLockWriteGuard<'_, CatalogState> {
        self.catalog.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn shard(&self, uid: ShardUid) -> Option<Arc<ShardShared>> {
        self.shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&uid)
            .cloned()
    }

    pub fn shards_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<ShardUid, Arc<ShardShared>>> {
        self.shards.write().unwrap_or_else(|e| e.into_inner())
    }
}

struct Inner {
    dir: PathBuf,
    /// The catalog; `None` once the store is closed, so closing releases the directory's lock
    /// even while other handles to the store live on.
    db: Mutex<Option<Arc<Database>>>,
    opts: StoreOptions,
    tx: flume::Sender<Command>,
    shared: Arc<StoreShared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_writer();
    }
}

impl Inner {
    fn stop_writer(&self) {
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            // The writer flushes what it has queued, then exits; joining waits for that.
            let _ = self.tx.send(Command::Shutdown);
            let _ = handle.join();
        }
    }
}

/// An open data directory. Cheap to clone; the writer stops when [`Store::close`] is called or
/// the last handle is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`: loads the catalog, recovers every shard (truncating
    /// torn tails, re-indexing records past the index high-water mark) and starts the writer.
    /// Blocking.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        let opened = crate::recovery::open(dir, &opts)?;
        let shared = Arc::new(StoreShared {
            catalog: RwLock::new(opened.catalog),
            shards: RwLock::new(
                opened
                    .shards
                    .iter()
                    .map(|(uid, w)| (*uid, w.shared.clone()))
                    .collect(),
            ),
            metrics: StoreMetrics::default(),
            healthy: AtomicBool::new(true),
        });
        let (tx, rx) = flume::bounded(opts.writer_queue.max(1));
        let writer = crate::writer::Writer::new(
            opened.db.clone(),
            dir.to_path_buf(),
            opts.clone(),
            shared.clone(),
            opened.shards,
            tx.downgrade(),
        )?;
        let handle = std::thread::Builder::new()
            .name("timeshard-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(StoreError::io("starting the writer thread"))?;
        Ok(Store {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                db: Mutex::new(Some(opened.db)),
                opts,
                tx,
                shared,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Flushes, stops the writer, aborts open records and releases the data directory (another
    /// `Store::open` of it may follow at once, even while clones of this handle live on). Later
    /// mutations and catalog reads fail with `Closed`. Blocking.
    pub fn close(&self) {
        self.inner.stop_writer();
        self.inner
            .db
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.inner.shared.healthy.store(false, Ordering::SeqCst);
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.inner
            .db
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Closed)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    pub fn metrics(&self) -> &StoreMetrics {
        &self.inner.shared.metrics
    }

    /// True while the writer runs and the catalog accepts commits.
    pub fn is_healthy(&self) -> bool {
        self.inner.shared.healthy.load(Ordering::SeqCst)
            && self
                .inner
                .writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|h| !h.is_finished())
    }

    pub fn now_ms(&self) -> i64 {
        self.inner.opts.clock.now_ms()
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send_async(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    // ---- catalog ----

    pub async fn create_stream(&self, new: NewStream) -> Result<StreamInfo, StoreError> {
        self.call(|reply| Command::CreateStream { new, reply })
            .await
    }

    /// Changes a stream's metadata in one durable step and bumps its version. With
    /// `expected_version`, fails with `VersionMismatch` if the stream moved on. The name, id,
    /// kind and creation time cannot change.
    pub async fn update_stream(
        &self,
        name: &str,
        expected_version: Option<u64>,
        update: impl FnOnce(&mut StreamMeta) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<StreamMeta, StoreError> {
        let name = name.to_string();
        self.call(|reply| Command::UpdateStream {
            name,
            expected_version,
            update: Box::new(update),
            reply,
        })
        .await
    }

    /// Closes the shards at `close` (by index) and creates `open`, in one durable step.
    pub async fn reshard(
        &self,
        name: &str,
        close: Vec<u32>,
        open: Vec<NewShard>,
    ) -> Result<StreamInfo, StoreError> {
        let name = name.to_string();
        self.call(|reply| Command::Reshard {
            name,
            close,
            open,
            reply,
        })
        .await
    }

    /// Removes the stream, its shards, index entries and files.
    pub async fn delete_stream(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_string();
        self.call(|reply| Command::DeleteStream { name, reply })
            .await
    }

    pub fn stream(&self, name: &str) -> Option<StreamInfo> {
        self.inner.shared.catalog().stream_info(name)
    }

    /// The stream with this id (ids are never reused, so a token naming a deleted stream finds
    /// nothing, not its namesake). Clones only the stream found.
    pub fn stream_by_id(&self, id: u64) -> Option<StreamInfo> {
        let catalog = self.inner.shared.catalog();
        let name = catalog.streams.values().find(|m| m.id == id)?.name.clone();
        catalog.stream_info(&name)
    }

    pub fn list_streams(&self) -> Vec<StreamMeta> {
        self.inner
            .shared
            .catalog()
            .streams
            .values()
            .cloned()
            .collect()
    }

    pub fn shard(&self, uid: ShardUid) -> Option<ShardMeta> {
        self.inner.shared.catalog().shards.get(&uid).cloned()
    }

    // ---- appends ----

    /// Appends records to a shard as one group commit. Resolves once they are durable (under the
    /// default sync policy) and readable.
    pub async fn append(
        &self,
        shard: ShardUid,
        records: Vec<NewRecord>,
    ) -> Result<Appended, StoreError> {
        if records.is_empty() {
            return Err(StoreError::InvalidArgument(
                "an append needs at least one record".into(),
            ));
        }
        let records = checksum(
            records
                .into_iter()
                .map(|r| (r.key, vec![r.payload], r.producer_ts_ms, r.flags))
                .collect(),
        )
        .await?;
        self.call(|reply| Command::Append {
            shard,
            records,
            reply,
        })
        .await
    }

    /// Starts a record that readers can follow while it grows. Until it is committed or aborted,
    /// other appends to the shard fail with `ShardBusy`.
    pub async fn begin_record(
        &self,
        shard: ShardUid,
        producer_ts_ms: Option<i64>,
        key: Bytes,
        flags: u16,
    ) -> Result<OpenRecord, StoreError> {
        let view = self
            .call(|reply| Command::Begin {
                shard,
                producer_ts_ms,
                key,
                flags,
                reply,
            })
            .await?;
        Ok(OpenRecord {
            store: self.clone(),
            shard,
            view,
            payload_crc: std::sync::Mutex::new(0),
            done: false,
        })
    }

    // ---- reads ----

    fn shard_shared(&self, uid: ShardUid) -> Result<Arc<ShardShared>, StoreError> {
        self.inner
            .shared
            .shard(uid)
            .ok_or(StoreError::ShardNotFound(uid))
    }

    /// Reads records from `from`, bounded by `limits`. Blocking; see [`Store::read`].
    pub fn read_blocking(
        &self,
        shard: ShardUid,
        from: Position,
        limits: ReadLimits,
    ) -> Result<ReadBatch, StoreError> {
        let s = self.shard_shared(shard)?;
        let batch = read::read(&s, self.inner.opts.fs.as_ref(), from, limits)?;
        let bytes: usize = batch
            .records
            .iter()
            .map(|r| r.payload.len() + r.key.len())
            .sum();
        self.inner
            .shared
            .metrics
            .read_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(batch)
    }

    /// Reads records from `from` on the blocking pool, bounded by `limits` (at least one record
    /// is returned when one is available, whatever its size).
    pub async fn read(
        &self,
        shard: ShardUid,
        from: Position,
        limits: ReadLimits,
    ) -> Result<ReadBatch, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(shard, from, limits))
            .await
            .map_err(|e| StoreError::Io {
                context: "read task".into(),
                source: std::io::Error::other(e),
            })?
    }

    /// The offset a position refers to now (the tail for `Latest`, the first record at or after
    /// a server time, ...). Blocking.
    pub fn resolve_blocking(&self, shard: ShardUid, at: Position) -> Result<u64, StoreError> {
        let s = self.shard_shared(shard)?;
        read::resolve(&s, self.inner.opts.fs.as_ref(), at)
    }

    pub async fn resolve(&self, shard: ShardUid, at: Position) -> Result<u64, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.resolve_blocking(shard, at))
            .await
            .map_err(|e| StoreError::Io {
                context: "resolve task".into(),
                source: std::io::Error::other(e),
            })?
    }

    /// Follows the shard's tail: changes on every acknowledged append, open record and close.
    pub fn watch(&self, shard: ShardUid) -> Result<watch::Receiver<Tail>, StoreError> {
        Ok(self.shard_shared(shard)?.tail.subscribe())
    }

    pub fn tail(&self, shard: ShardUid) -> Result<Tail, StoreError> {
        Ok(self.shard_shared(shard)?.tail.borrow().clone())
    }

    pub fn shard_stats(&self, shard: ShardUid) -> Result<ShardStats, StoreError> {
        let s = self.shard_shared(shard)?;
        let segments = s.segments();
        Ok(ShardStats {
            trim_horizon: s.trim_horizon(),
            next_offset: s.tail.borrow().next_offset,
            segments: segments.len(),
            bytes: segments.iter().map(|seg| seg.bytes()).sum(),
        })
    }

    // ---- time index ----

    /// Records with a producer timestamp whose `kind` time is in `[start_ms, end_ms]`, in time
    /// order (ties by offset), after the `after` cursor (a `(time, offset)` already returned),
    /// at most `limit`. Blocking: it reads the catalog.
    pub fn time_range_blocking(
        &self,
        shard: ShardUid,
        kind: TimeKind,
        start_ms: i64,
        end_ms: i64,
        after: Option<(i64, u64)>,
        limit: usize,
    ) -> Result<Vec<IndexedRecord>, StoreError> {
        self.shard_shared(shard)?;
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(match kind {
            TimeKind::Producer => TIME_BY_PRODUCER,
            TimeKind::Server => TIME_BY_SERVER,
        })?;
        let lower = match after {
            Some((ts, off)) if ts >= start_ms => Bound::Excluded((shard.0, ts, off)),
            _ => Bound::Included((shard.0, start_ms, 0)),
        };
        let upper = Bound::Included((shard.0, end_ms, u64::MAX));
        let mut out = Vec::new();
        if end_ms < start_ms {
            return Ok(out);
        }
        for row in table.range::<(u64, i64, u64)>((lower, upper))? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = row?;
            let (_, _, offset) = k.value();
            out.push(decode_time_entry(offset, v.value())?);
        }
        Ok(out)
    }

    pub async fn time_range(
        &self,
        shard: ShardUid,
        kind: TimeKind,
        start_ms: i64,
        end_ms: i64,
        after: Option<(i64, u64)>,
        limit: usize,
    ) -> Result<Vec<IndexedRecord>, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            store.time_range_blocking(shard, kind, start_ms, end_ms, after, limit)
        })
        .await
        .map_err(|e| StoreError::Io {
            context: "time index task".into(),
            source: std::io::Error::other(e),
        })?
    }

    /// The time index entry of one record, if it has one. Blocking.
    pub fn indexed_record_blocking(
        &self,
        shard: ShardUid,
        offset: u64,
    ) -> Result<Option<IndexedRecord>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(TIME_BY_OFFSET)?;
        match table.get((shard.0, offset))? {
            None => Ok(None),
            Some(v) => Ok(Some(decode_time_entry(offset, v.value())?)),
        }
    }

    /// A named 32-byte secret that lives as long as the data directory (for example the key
    /// that makes shard iterators tamper-proof across restarts). Created on first use.
    pub async fn secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        let name = name.to_string();
        self.call(|reply| Command::Secret { name, reply }).await
    }

    // ---- stream blobs ----

    /// Stores a small value for a stream durably and returns its id: 1, 2, ... per stream.
    /// Records refer to blobs by id (a video fragment to its ingest session's tracks), so a
    /// value shared by many records is stored once. Deleting the stream deletes its blobs.
    pub async fn put_blob(&self, stream_id: u64, data: Bytes) -> Result<u64, StoreError> {
        self.call(|reply| Command::PutBlob {
            stream_id,
            data,
            reply,
        })
        .await
    }

    /// A stream blob by id. Blocking (one catalog read).
    pub fn blob_blocking(&self, stream_id: u64, id: u64) -> Result<Option<Bytes>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(STREAM_BLOBS)?;
        Ok(table
            .get((stream_id, id))?
            .map(|v| Bytes::copy_from_slice(v.value())))
    }

    /// The stream's newest blob, if any. Blocking.
    pub fn latest_blob_blocking(&self, stream_id: u64) -> Result<Option<(u64, Bytes)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(STREAM_BLOBS)?;
        let newest = table
            .range((stream_id, 0)..=(stream_id, u64::MAX))?
            .next_back()
            .transpose()?;
        Ok(newest.map(|(k, v)| (k.value().1, Bytes::copy_from_slice(v.value()))))
    }

    /// Removes the stream's blobs with ids below `below` (no record refers to them any more);
    /// returns how many went.
    pub async fn prune_blobs(&self, stream_id: u64, below: u64) -> Result<u64, StoreError> {
        self.call(|reply| Command::PruneBlobs {
            stream_id,
            below,
            reply,
        })
        .await
    }

    // ---- retention ----

    /// Removes whole segments past their stream's retention or over its byte budget, with their
    /// index entries. The server runs this periodically; tests run it after moving the clock.
    pub async fn enforce_retention(&self) -> Result<RetentionReport, StoreError> {
        self.call(|reply| Command::Retention { reply }).await
    }
}

/// Bodies at least this large are checksummed on the blocking pool rather than on the async
/// worker that appends them (CRC32C runs at several GB/s, so this is about a millisecond).
const CHECKSUM_INLINE_BELOW: usize = 4 << 20;

/// Checksums records on the appender's side, so the single writer thread does not.
async fn checksum(
    records: Vec<(Bytes, Vec<Bytes>, Option<i64>, u16)>,
) -> Result<Vec<Incoming>, StoreError> {
    let bytes: usize = records
        .iter()
        .map(|(k, p, _, _)| k.len() + p.iter().map(Bytes::len).sum::<usize>())
        .sum();
    let work = move || {
        records
            .into_iter()
            .map(|(key, payload, producer_ts_ms, flags)| Incoming {
                body: RecordBody::new(key, payload),
                producer_ts_ms,
                flags,
            })
            .collect::<Vec<_>>()
    };
    if bytes < CHECKSUM_INLINE_BELOW {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Io {
            context: "checksum task".into(),
            source: std::io::Error::other(e),
        })
}

/// A record being appended piece by piece. Dropping it without [`OpenRecord::commit`] aborts it.
#[derive(Debug)]
pub struct OpenRecord {
    store: Store,
    shard: ShardUid,
    view: Arc<OpenRecordView>,
    /// CRC32C of the payload pushed so far.
    payload_crc: std::sync::Mutex<u32>,
    done: bool,
}

impl OpenRecord {
    pub fn view(&self) -> &Arc<OpenRecordView> {
        &self.view
    }

    pub fn offset(&self) -> u64 {
        self.view.offset
    }

    /// Adds bytes; followers see them at once. Fails if the record would exceed the size limit
    /// (the record stays open; abort it or commit what it has).
    pub fn push(&self, chunk: Bytes) -> Result<(), StoreError> {
        let max = u64::from(self.store.inner.opts.max_record_bytes);
        let len = (self.view.len() + chunk.len()) as u64;
        if len > max {
            return Err(StoreError::RecordTooLarge { len, max });
        }
        // The payload's CRC grows with it, so committing needs no pass over the whole record.
        {
            let mut crc = self.payload_crc.lock().unwrap_or_else(|e| e.into_inner());
            *crc = crc32c::crc32c_append(*crc, &chunk);
        }
        self.view.push(chunk);
        Ok(())
    }

    /// Writes the record durably and makes it an ordinary record at its offset.
    pub fn commit(self) -> impl Future<Output = Result<Appended, StoreError>> + Send + 'static {
        let key = self.view.key.clone();
        self.commit_with_key(key)
    }

    /// Like [`OpenRecord::commit`], with the record's key replaced: a record whose summary is
    /// known only at its end (a fragment's duration) keeps it in the key, where the time index
    /// has it without reading the record. Followers saw the key given at `begin_record`.
    ///
    /// The commit is queued to the writer before this returns, so a `begin_record` made after
    /// it (the next fragment) is ordered after it, even while the returned future (durability)
    /// is still pending, for example in a task of its own.
    pub fn commit_with_key(
        mut self,
        key: Bytes,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send + 'static {
        self.done = true;
        let (shard, view) = (self.shard, self.view.clone());
        let payload = view.all_chunks();
        let payload_len: usize = payload.iter().map(Bytes::len).sum();
        let payload_crc = *self.payload_crc.lock().unwrap_or_else(|e| e.into_inner());
        let body = RecordBody {
            len: key.len() + payload_len,
            crc: crc32c::crc32c_combine(crc32c::crc32c(&key), payload_crc, payload_len),
            key,
            payload,
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        let command = Command::Commit {
            shard,
            view,
            body,
            reply,
        };
        let tx = self.store.inner.tx.clone();
        let queued = match tx.try_send(command) {
            Ok(()) => Ok(()),
            // The writer is a full queue (1024 commands) behind: wait for a slot here, on this
            // thread, to keep the order; the writer thread drains it independently.
            Err(flume::TrySendError::Full(command)) => {
                tx.send(command).map_err(|_| StoreError::Closed)
            }
            Err(flume::TrySendError::Disconnected(_)) => Err(StoreError::Closed),
        };
        async move {
            queued?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    pub fn abort(mut self) {
        self.send_abort();
    }

    fn send_abort(&mut self) {
        if !self.done {
            self.done = true;
            // Marking the view aborted is enough for correctness: the writer clears an aborted
            // open record whenever it next looks at the shard. The command only wakes it sooner,
            // so a full queue is no reason to block here.
            self.view.finish(crate::shard::OpenStatus::Aborted);
            let _ = self.store.inner.tx.try_send(Command::Abort {
                shard: self.shard,
                view: self.view.clone(),
            });
        }
    }
}

impl Drop for OpenRecord {
    fn drop(&mut self) {
        self.send_abort();
    }
}
