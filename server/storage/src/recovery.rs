//! Opening a data directory: load the catalog, then bring every shard's files and indexes back
//! into agreement.
//!
//! The segment files are the truth. Sealed segments are trusted as their catalog row describes
//! them. An unsealed segment is re-validated from its high-water mark (the last indexed
//! position): records are checked one by one (header, offset sequence, CRC32C) and the file is
//! cut at the first that fails, which is the torn tail of a crash. Records found past the mark are
//! re-entered in the sparse and time indexes; index entries pointing past the recovered end are
//! removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IoSlice;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, WriteTransaction};

use crate::catalog::{
    KEY_FORMAT_VERSION, META, SEGMENTS, SHARDS, STREAM_BLOBS, STREAMS, ShardMeta, StreamMeta,
    TIME_BY_OFFSET, TIME_BY_PRODUCER, TIME_BY_SERVER,
};
use crate::error::StoreError;
use crate::format::{
    FORMAT_VERSION, INDEX_ENTRY_LEN, INDEX_HEADER_LEN, IndexEntry, SEGMENT_HEADER_LEN,
    SegmentHeader, SegmentRow, decode_time_entry, encode_time_entry, index_file_header,
};
use crate::fs::{Fs, StoreFile, read_full_at};
use crate::options::{StoreOptions, SyncPolicy};
use crate::segment::{Cursor, SegmentView, read_index_file};
use crate::seqno::ShardUid;
use crate::shard::{ShardShared, ShardState, Tail};
use crate::store::CatalogState;
use crate::writer::{Active, ShardWriter, segment_paths, shard_dir};

pub(crate) struct Opened {
    pub db: Arc<Database>,
    pub catalog: CatalogState,
    pub shards: HashMap<ShardUid, ShardWriter>,
}

pub(crate) fn open(dir: &Path, opts: &StoreOptions) -> Result<Opened, StoreError> {
    let fs = opts.fs.as_ref();
    let shards_dir = dir.join("shards");
    fs.create_dir_all(&shards_dir)
        .map_err(StoreError::io(format!("creating {}", shards_dir.display())))?;
    let db = redb::Builder::new()
        .set_cache_size(opts.catalog_cache_bytes)
        .create(dir.join("catalog.redb"))
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(dir.to_path_buf()),
            e => StoreError::Catalog(format!(
                "opening {}: {e}",
                dir.join("catalog.redb").display()
            )),
        })?;
    let txn = db.begin_write()?;
    check_version(&txn)?;
    // Every table exists from the first open on, so readers never meet a missing one.
    txn.open_table(STREAMS)?;
    txn.open_table(SHARDS)?;
    txn.open_table(SEGMENTS)?;
    txn.open_table(TIME_BY_OFFSET)?;
    txn.open_table(TIME_BY_PRODUCER)?;
    txn.open_table(TIME_BY_SERVER)?;
    txn.open_table(STREAM_BLOBS)?;
    let mut catalog = CatalogState::new();
    for row in txn.open_table(STREAMS)?.iter()? {
        let (_, v) = row?;
        let meta: StreamMeta = serde_json::from_slice(v.value())?;
        catalog.streams.insert(meta.name.clone(), meta);
    }
    for row in txn.open_table(SHARDS)?.iter()? {
        let (_, v) = row?;
        let meta: ShardMeta = serde_json::from_slice(v.value())?;
        catalog.insert_shard(meta);
    }
    let mut rows: BTreeMap<u64, BTreeMap<u64, SegmentRow>> = BTreeMap::new();
    for row in txn.open_table(SEGMENTS)?.iter()? {
        let (k, v) = row?;
        let (uid, base) = k.value();
        let r = SegmentRow::decode(v.value()).ok_or_else(|| {
            StoreError::Catalog(format!("segment row ({uid}, {base}) is malformed"))
        })?;
        rows.entry(uid).or_default().insert(base, r);
    }

    // Shard directories the catalog does not know belong to deleted streams (or to a creation
    // that never committed).
    let known: BTreeSet<u64> = catalog.shards.keys().map(|u| u.0).collect();
    for name in fs
        .list_dir(&shards_dir)
        .map_err(StoreError::io(format!("listing {}", shards_dir.display())))?
    {
        if name.parse::<u64>().is_ok_and(|u| !known.contains(&u)) {
            tracing::info!(dir = %name, "removing files of a deleted shard");
            fs.remove_dir_all(&shards_dir.join(&name))
                .map_err(StoreError::io(format!(
                    "removing {}",
                    shards_dir.join(&name).display()
                )))?;
        }
    }

    let mut shards = HashMap::new();
    let metas: Vec<ShardMeta> = catalog.shards.values().cloned().collect();
    for meta in metas {
        let shard_rows = rows.remove(&meta.uid.0).unwrap_or_default();
        let w = recover_shard(&txn, dir, opts, &meta, &shard_rows)?;
        shards.insert(meta.uid, w);
    }
    // Rows of shards that no longer exist.
    {
        let mut segments = txn.open_table(SEGMENTS)?;
        for uid in rows.keys() {
            segments.retain_in((*uid, 0)..=(*uid, u64::MAX), |_, _| false)?;
        }
    }
    txn.commit()?;
    Ok(Opened {
        db: Arc::new(db),
        catalog,
        shards,
    })
}

fn check_version(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    let stored = meta.get(KEY_FORMAT_VERSION)?.map(|v| v.value().to_vec());
    match stored {
        None => {
            meta.insert(KEY_FORMAT_VERSION, FORMAT_VERSION.to_le_bytes().as_slice())?;
            Ok(())
        }
        Some(v) if v.as_slice() == FORMAT_VERSION.to_le_bytes() => Ok(()),
        Some(v) => Err(StoreError::Catalog(format!(
            "data directory has storage format {:?}, this build reads format {FORMAT_VERSION}",
            v
        ))),
    }
}

fn quarantine(fs: &dyn Fs, path: &Path, why: &str) -> Result<(), StoreError> {
    // Keep the bytes for a human to look at, out of the way of the engine.
    let mut target = path.as_os_str().to_owned();
    target.push(".corrupt");
    tracing::error!(path = %path.display(), why, "moving an unreadable segment aside");
    fs.rename(path, Path::new(&target))
        .map_err(StoreError::io(format!("moving {} aside", path.display())))
}

struct Recovered {
    view: Arc<SegmentView>,
    active: Option<Active>,
}

fn recover_shard(
    txn: &WriteTransaction,
    root: &Path,
    opts: &StoreOptions,
    meta: &ShardMeta,
    rows: &BTreeMap<u64, SegmentRow>,
) -> Result<ShardWriter, StoreError> {
    let fs = opts.fs.as_ref();
    let uid = meta.uid;
    let dir = shard_dir(root, uid);
    fs.create_dir_all(&dir)
        .map_err(StoreError::io(format!("creating {}", dir.display())))?;
    let names = fs
        .list_dir(&dir)
        .map_err(StoreError::io(format!("listing {}", dir.display())))?;
    let mut bases = BTreeSet::new();
    for name in &names {
        if let Some(b) = name
            .strip_suffix(".seg")
            .and_then(|b| b.parse::<u64>().ok())
        {
            bases.insert(b);
        }
    }
    for name in &names {
        let idx_orphan = name
            .strip_suffix(".idx")
            .and_then(|b| b.parse::<u64>().ok())
            .is_some_and(|b| !bases.contains(&b));
        if idx_orphan {
            let _ = fs.remove_file(&dir.join(name));
        }
    }
    // Segments retention removed from the catalog but whose files outlived a crash.
    let expired: Vec<u64> = bases
        .iter()
        .copied()
        .filter(|b| *b < meta.trim_offset && !rows.contains_key(b))
        .collect();
    for base in expired {
        let (seg, idx) = segment_paths(&dir, base);
        fs.remove_file(&seg)
            .map_err(StoreError::io(format!("removing {}", seg.display())))?;
        let _ = fs.remove_file(&idx);
        bases.remove(&base);
    }
    let mut segments_table = txn.open_table(SEGMENTS)?;
    for (base, row) in rows {
        if !bases.contains(base) {
            tracing::warn!(shard = %uid, base, "segment file is missing; dropping it from the catalog");
            segments_table.remove((uid.0, *base))?;
            drop_time_entries(txn, uid, *base, row.end_offset)?;
        }
    }
    drop(segments_table);

    let mut views: Vec<Arc<SegmentView>> = Vec::new();
    let mut active = None;
    let live: Vec<u64> = bases.into_iter().collect();
    for (i, base) in live.iter().enumerate() {
        let is_last = i + 1 == live.len();
        if let Some(r) = recover_segment(
            txn,
            &dir,
            opts,
            uid,
            *base,
            rows.get(base).copied(),
            is_last,
        )? {
            if let Some(prev) = views.last()
                && prev.end_offset() != r.view.base
            {
                tracing::warn!(shard = %uid, expected = prev.end_offset(), found = r.view.base, "offsets jump between segments");
            }
            views.push(r.view);
            active = r.active;
        }
    }
    let next_offset = views
        .last()
        .map_or(meta.trim_offset, |v| v.end_offset())
        .max(meta.trim_offset);
    let last_ts_ms = views
        .iter()
        .map(|v| v.last_ts_ms.load(std::sync::atomic::Ordering::Acquire))
        .max()
        .unwrap_or(i64::MIN);
    // Index entries for records that did not survive (they cannot have been acknowledged).
    drop_time_entries(txn, uid, next_offset, u64::MAX)?;
    let state = if meta.closed_at.is_some() {
        ShardState::Closed
    } else {
        ShardState::Open
    };
    let shared = Arc::new(ShardShared::new(
        dir,
        views,
        Tail {
            next_offset,
            last_server_ts_ms: last_ts_ms,
            open: None,
            state,
        },
    ));
    Ok(ShardWriter {
        shared,
        stream_id: meta.stream_id,
        next_offset,
        last_ts_ms,
        closed: meta.closed_at.is_some(),
        poisoned: false,
        open: None,
        active,
        epoch: 0,
    })
}

/// Removes time index entries for offsets in `[from, to)`.
fn drop_time_entries(
    txn: &WriteTransaction,
    uid: ShardUid,
    from: u64,
    to: u64,
) -> Result<(), StoreError> {
    let u = uid.0;
    let mut by_offset = txn.open_table(TIME_BY_OFFSET)?;
    let mut entries = Vec::new();
    for row in by_offset.range((u, from)..(u, to))? {
        let (k, v) = row?;
        entries.push(decode_time_entry(k.value().1, v.value())?);
    }
    if entries.is_empty() {
        return Ok(());
    }
    tracing::warn!(shard = %uid, count = entries.len(), "removing index entries of records that are not in the log");
    let mut by_producer = txn.open_table(TIME_BY_PRODUCER)?;
    let mut by_server = txn.open_table(TIME_BY_SERVER)?;
    for e in &entries {
        by_producer.remove((u, e.producer_ts_ms, e.offset))?;
        by_server.remove((u, e.server_ts_ms, e.offset))?;
    }
    by_offset.retain_in((u, from)..(u, to), |_, _| false)?;
    Ok(())
}

fn recover_segment(
    txn: &WriteTransaction,
    dir: &Path,
    opts: &StoreOptions,
    uid: ShardUid,
    base: u64,
    row: Option<SegmentRow>,
    is_last: bool,
) -> Result<Option<Recovered>, StoreError> {
    let fs = opts.fs.as_ref();
    let (path, idx_path) = segment_paths(dir, base);
    let ctx = |what: &str| format!("{what} {}", path.display());
    let file = fs
        .open(&path, false)
        .map_err(StoreError::io(ctx("opening")))?;
    let len = file.len().map_err(StoreError::io(ctx("reading")))?;
    let view = Arc::new(SegmentView::new(
        base,
        path.clone(),
        idx_path.clone(),
        opts.index_interval_bytes,
    ));

    if let Some(r) = row.filter(|r| r.sealed && r.end_pos <= len) {
        view.end_offset
            .store(r.end_offset, std::sync::atomic::Ordering::Release);
        view.end_pos
            .store(r.end_pos, std::sync::atomic::Ordering::Release);
        view.first_ts_ms
            .store(r.first_ts_ms, std::sync::atomic::Ordering::Release);
        view.last_ts_ms
            .store(r.last_ts_ms, std::sync::atomic::Ordering::Release);
        view.set_file(file);
        return Ok(Some(Recovered { view, active: None }));
    }

    let mut head = [0u8; SEGMENT_HEADER_LEN as usize];
    let n = read_full_at(file.as_ref(), &mut head, 0).map_err(StoreError::io(ctx("reading")))?;
    let header = SegmentHeader::decode(&head[..n]);
    match header {
        Ok(h) if h.shard_uid == uid.0 && h.base_offset == base => {}
        Ok(_) => {
            quarantine(
                fs,
                &path,
                "segment header names another shard or base offset",
            )?;
            return Ok(None);
        }
        // The header is synced before any record is appended, so a segment with a torn header
        // never held an acknowledged record.
        Err(_) if len <= SEGMENT_HEADER_LEN => {
            fs.remove_file(&path)
                .map_err(StoreError::io(ctx("removing")))?;
            let _ = fs.remove_file(&idx_path);
            return Ok(None);
        }
        Err(why) => {
            quarantine(fs, &path, &why)?;
            return Ok(None);
        }
    }

    let idx = fs
        .open(&idx_path, true)
        .map_err(StoreError::io(format!("opening {}", idx_path.display())))?;
    let read = read_index_file(idx.as_ref(), len)?;
    let (mut entries, idx_ok) = (read.entries, read.header_ok);
    let hwm = row
        .map_or(SEGMENT_HEADER_LEN, |r| r.end_pos)
        .clamp(SEGMENT_HEADER_LEN, len);
    entries.retain(|e| e.pos <= hwm);
    let (start_pos, start_offset) = entries
        .last()
        .map_or((SEGMENT_HEADER_LEN, base), |e| (e.pos, e.offset));
    let kept_entries = entries.len();

    // Walk forward from the last trusted point, validating every record.
    let mut cursor = Cursor::new(file.clone(), path.clone(), start_pos, len);
    let mut expected = start_offset;
    let mut last_idx_pos = entries.last().map(|e| e.pos);
    let mut first_ts = entries.first().map_or(i64::MAX, |e| e.server_ts_ms);
    let mut last_ts = row.map_or(i64::MIN, |r| r.last_ts_ms);
    let mut valid_end = start_pos;
    {
        let mut by_offset = txn.open_table(TIME_BY_OFFSET)?;
        let mut by_producer = txn.open_table(TIME_BY_PRODUCER)?;
        let mut by_server = txn.open_table(TIME_BY_SERVER)?;
        loop {
            let (pos, h, rec) = match cursor.next() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(StoreError::Corrupt { .. }) => break,
                Err(e) => return Err(e),
            };
            if h.offset != expected {
                break;
            }
            if last_idx_pos.is_none_or(|last| pos - last >= opts.index_interval_bytes) {
                entries.push(IndexEntry {
                    offset: h.offset,
                    pos,
                    server_ts_ms: h.server_ts_ms,
                });
                last_idx_pos = Some(pos);
            }
            if let Some(pts) = h.producer_ts_ms {
                let (key, payload) = crate::segment::split_record(&h, &rec);
                let entry = encode_time_entry(
                    h.server_ts_ms,
                    pts,
                    payload.len() as u32,
                    h.user_flags,
                    &key,
                );
                by_offset.insert((uid.0, h.offset), entry.as_slice())?;
                by_producer.insert((uid.0, pts, h.offset), entry.as_slice())?;
                by_server.insert((uid.0, h.server_ts_ms, h.offset), entry.as_slice())?;
            }
            first_ts = first_ts.min(h.server_ts_ms);
            last_ts = h.server_ts_ms;
            expected += 1;
            valid_end = cursor.pos();
        }
    }
    if valid_end < len {
        tracing::warn!(path = %path.display(), dropped_bytes = len - valid_end, "truncating the torn tail of a segment");
        file.truncate(valid_end)
            .map_err(StoreError::io(ctx("truncating")))?;
        if opts.sync != SyncPolicy::Never {
            file.sync_data().map_err(StoreError::io(ctx("syncing")))?;
        }
    }
    if expected == base {
        first_ts = i64::MAX;
        last_ts = i64::MIN;
    }
    // Rewrite the sparse index past what was kept.
    let idx_len = INDEX_HEADER_LEN + (entries.len() * INDEX_ENTRY_LEN) as u64;
    let rebuilt: Vec<u8> = entries[kept_entries..]
        .iter()
        .flat_map(|e| e.encode())
        .collect();
    let idx_ctx = format!("rewriting {}", idx_path.display());
    if idx_ok {
        idx.truncate(INDEX_HEADER_LEN + (kept_entries * INDEX_ENTRY_LEN) as u64)
            .map_err(StoreError::io(idx_ctx.clone()))?;
        idx.append(&[IoSlice::new(&rebuilt)])
            .map_err(StoreError::io(idx_ctx))?;
    } else {
        idx.truncate(0).map_err(StoreError::io(idx_ctx.clone()))?;
        let all: Vec<u8> = entries.iter().flat_map(|e| e.encode()).collect();
        idx.append(&[IoSlice::new(&index_file_header()), IoSlice::new(&all)])
            .map_err(StoreError::io(idx_ctx))?;
    }

    view.end_offset
        .store(expected, std::sync::atomic::Ordering::Release);
    view.end_pos
        .store(valid_end, std::sync::atomic::Ordering::Release);
    view.first_ts_ms
        .store(first_ts, std::sync::atomic::Ordering::Release);
    view.last_ts_ms
        .store(last_ts, std::sync::atomic::Ordering::Release);
    view.set_file(file.clone());
    view.set_index(entries.clone());
    let sealed = !is_last;
    let row = SegmentRow {
        sealed,
        end_offset: expected,
        end_pos: valid_end,
        first_ts_ms: first_ts,
        last_ts_ms: last_ts,
    };
    if sealed && opts.sync != SyncPolicy::Never {
        idx.sync_data()
            .map_err(StoreError::io(format!("syncing {}", idx_path.display())))?;
    }
    txn.open_table(SEGMENTS)?
        .insert((uid.0, base), row.encode().as_slice())?;
    let active = (!sealed).then(|| Active {
        view: view.clone(),
        file,
        idx: idx.clone() as Arc<dyn StoreFile>,
        len: valid_end,
        idx_len,
        first_ts_ms: first_ts,
        last_idx_pos: entries.last().map(|e| e.pos),
    });
    Ok(Some(Recovered { view, active }))
}
