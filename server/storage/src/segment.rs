//! A segment as readers see it, its sparse position index, and a cursor that walks its records
//! with positional reads.
//!
//! The writer publishes a segment's readable extent (`end_pos`, `end_offset`) only once its bytes
//! are acknowledged, so readers never see a record that could still be rolled back.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;

use crate::error::StoreError;
use crate::format::{
    INDEX_ENTRY_LEN, INDEX_HEADER_LEN, INDEX_MAGIC, IndexEntry, RECORD_HEADER_LEN, RecordHeader,
    SEGMENT_HEADER_LEN,
};
use crate::fs::{Fs, StoreFile, read_full_at};

/// Smallest read issued by a cursor.
const READ_CHUNK: usize = 256 << 10;
/// Largest read issued by a cursor; larger records are read on their own.
const MAX_READ_CHUNK: usize = 1 << 20;

#[derive(Debug)]
pub(crate) struct SegmentView {
    pub base: u64,
    pub path: PathBuf,
    pub idx_path: PathBuf,
    /// Bytes between sparse index entries, used when the index must be rebuilt.
    index_interval: u64,
    file: OnceLock<Arc<dyn StoreFile>>,
    /// Offset after the last readable record.
    pub end_offset: AtomicU64,
    /// File length covered by readable records.
    pub end_pos: AtomicU64,
    pub first_ts_ms: AtomicI64,
    pub last_ts_ms: AtomicI64,
    /// Sparse index; `None` until a reader needs it (sealed segments load lazily).
    index: RwLock<Option<Vec<IndexEntry>>>,
}

impl SegmentView {
    pub fn new(base: u64, path: PathBuf, idx_path: PathBuf, index_interval: u64) -> Self {
        SegmentView {
            base,
            path,
            idx_path,
            index_interval,
            file: OnceLock::new(),
            end_offset: AtomicU64::new(base),
            end_pos: AtomicU64::new(SEGMENT_HEADER_LEN),
            first_ts_ms: AtomicI64::new(i64::MAX),
            last_ts_ms: AtomicI64::new(i64::MIN),
            index: RwLock::new(None),
        }
    }

    pub fn set_file(&self, file: Arc<dyn StoreFile>) {
        let _ = self.file.set(file);
    }

    pub fn file(&self, fs: &dyn Fs) -> Result<Arc<dyn StoreFile>, StoreError> {
        if let Some(f) = self.file.get() {
            return Ok(f.clone());
        }
        let f = fs
            .open(&self.path, false)
            .map_err(StoreError::io(format!("opening {}", self.path.display())))?;
        Ok(self.file.get_or_init(|| f).clone())
    }

    pub fn end_offset(&self) -> u64 {
        self.end_offset.load(Ordering::Acquire)
    }

    pub fn end_pos(&self) -> u64 {
        self.end_pos.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.end_offset() == self.base
    }

    pub fn bytes(&self) -> u64 {
        self.end_pos()
    }

    /// Installs a fully known index (the writer's, for the active segment, or recovery's).
    pub fn set_index(&self, entries: Vec<IndexEntry>) {
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Some(entries);
    }

    /// Appends entries the writer has just made readable.
    pub fn push_index(&self, entries: &[IndexEntry]) {
        let mut guard = self.index.write().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = guard.as_mut() {
            v.extend_from_slice(entries);
        }
    }

    /// The position to start scanning from to find `offset`: the last index entry at or before it.
    pub fn position_for_offset(&self, fs: &dyn Fs, offset: u64) -> Result<(u64, u64), StoreError> {
        self.with_index(fs, |entries| {
            let i = entries.partition_point(|e| e.offset <= offset);
            match i {
                0 => (SEGMENT_HEADER_LEN, self.base),
                _ => (entries[i - 1].pos, entries[i - 1].offset),
            }
        })
    }

    /// The position to start scanning from to find the first record at or after `ts_ms`.
    pub fn position_for_time(&self, fs: &dyn Fs, ts_ms: i64) -> Result<(u64, u64), StoreError> {
        self.with_index(fs, |entries| {
            let i = entries.partition_point(|e| e.server_ts_ms < ts_ms);
            match i {
                0 => (SEGMENT_HEADER_LEN, self.base),
                _ => (entries[i - 1].pos, entries[i - 1].offset),
            }
        })
    }

    fn with_index<T>(
        &self,
        fs: &dyn Fs,
        f: impl FnOnce(&[IndexEntry]) -> T,
    ) -> Result<T, StoreError> {
        {
            let guard = self.index.read().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = guard.as_ref() {
                return Ok(f(v));
            }
        }
        let loaded = self.load_index(fs)?;
        let mut guard = self.index.write().unwrap_or_else(|e| e.into_inner());
        let v = guard.get_or_insert(loaded);
        Ok(f(v))
    }

    /// Reads the `.idx` file of a sealed segment; if it is missing or damaged, rebuilds the
    /// index in memory by scanning the segment.
    fn load_index(&self, fs: &dyn Fs) -> Result<Vec<IndexEntry>, StoreError> {
        let end_pos = self.end_pos();
        // A sealed segment's index was fsynced when it was sealed: any entry that does not
        // check out means damage, and the index is rebuilt rather than trusted in part.
        if let Ok(file) = fs.open(&self.idx_path, false) {
            let read = read_index_file(file.as_ref(), end_pos)?;
            if read.header_ok && read.all_valid && (self.is_empty() || !read.entries.is_empty()) {
                return Ok(read.entries);
            }
        }
        tracing::warn!(path = %self.idx_path.display(), "sparse index missing or damaged; rebuilding it from the segment");
        let file = self.file(fs)?;
        let mut cursor = Cursor::new(file, self.path.clone(), SEGMENT_HEADER_LEN, end_pos);
        let mut entries = Vec::new();
        let mut last_pos: Option<u64> = None;
        while let Some((pos, h, _)) = cursor.next_header()? {
            if last_pos.is_none_or(|p| pos - p >= self.index_interval) {
                entries.push(IndexEntry {
                    offset: h.offset,
                    pos,
                    server_ts_ms: h.server_ts_ms,
                });
                last_pos = Some(pos);
            }
        }
        Ok(entries)
    }
}

/// A sparse index file as read back.
pub(crate) struct IndexRead {
    /// The valid entries up to the first that is not.
    pub entries: Vec<IndexEntry>,
    pub header_ok: bool,
    /// Every byte after the header was a valid entry.
    pub all_valid: bool,
}

/// Reads and validates a sparse index file. Entries must have good CRCs, strictly increasing
/// offsets and positions, and positions below `end_pos`; reading stops at the first that does
/// not (a torn last entry is expected after a crash).
pub(crate) fn read_index_file(file: &dyn StoreFile, end_pos: u64) -> Result<IndexRead, StoreError> {
    let len = file
        .len()
        .map_err(StoreError::io("reading a sparse index"))?;
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
    let n = read_full_at(file, &mut buf, 0).map_err(StoreError::io("reading a sparse index"))?;
    buf.truncate(n);
    if buf.len() < INDEX_HEADER_LEN as usize || buf[0..8] != INDEX_MAGIC {
        return Ok(IndexRead {
            entries: Vec::new(),
            header_ok: false,
            all_valid: false,
        });
    }
    let body = &buf[INDEX_HEADER_LEN as usize..];
    let mut entries: Vec<IndexEntry> = Vec::with_capacity(body.len() / INDEX_ENTRY_LEN);
    for chunk in body.chunks_exact(INDEX_ENTRY_LEN) {
        let Some(e) = IndexEntry::decode(chunk) else {
            break;
        };
        let ordered = entries
            .last()
            .is_none_or(|p| e.offset > p.offset && e.pos > p.pos);
        if !ordered || e.pos < SEGMENT_HEADER_LEN || e.pos >= end_pos {
            break;
        }
        entries.push(e);
    }
    let all_valid = body.len() == entries.len() * INDEX_ENTRY_LEN;
    Ok(IndexRead {
        entries,
        header_ok: true,
        all_valid,
    })
}

/// Walks records of one segment between two positions with large positional reads into one
/// reusable buffer.
///
/// Records handed out are copied out of that buffer into their own allocation (records larger
/// than the buffer are read straight into one of their exact size). Handing out slices of the
/// read buffer instead would keep every buffer alive as long as any record in it, so each read
/// would need fresh memory, and fresh multi-megabyte buffers page-fault on first touch: that cost
/// more than the copy.
#[derive(Debug)]
pub(crate) struct Cursor {
    file: Arc<dyn StoreFile>,
    path: PathBuf,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`; `buf` holds valid bytes up to its length.
    buf_start: u64,
    /// Bytes the caller expects to read; sizes the buffer.
    pub read_hint: usize,
}

/// Where the bytes of the record just validated are.
enum Located {
    /// At this index in the cursor's buffer.
    Buffered(usize),
    /// Read on their own (a record larger than the buffer).
    Owned(Bytes),
}

impl Cursor {
    pub fn new(file: Arc<dyn StoreFile>, path: PathBuf, pos: u64, end: u64) -> Self {
        Cursor {
            file,
            path,
            pos,
            end,
            buf: Vec::new(),
            buf_start: pos,
            read_hint: READ_CHUNK,
        }
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    fn corrupt(&self, what: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            pos: self.pos,
            what: what.into(),
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> Result<(), StoreError> {
        let n = read_full_at(self.file.as_ref(), buf, pos)
            .map_err(StoreError::io(format!("reading {}", self.path.display())))?;
        if n < buf.len() {
            return Err(self.corrupt(format!(
                "file ends {n} bytes into a record that needs {}",
                buf.len()
            )));
        }
        Ok(())
    }

    /// Makes sure `[pos, pos + need)` is in the buffer (`need` at most the buffer size).
    fn ensure(&mut self, need: usize) -> Result<(), StoreError> {
        let buffered_end = self.buf_start + self.buf.len() as u64;
        if self.pos >= self.buf_start && self.pos + need as u64 <= buffered_end {
            return Ok(());
        }
        let size = self.read_hint.clamp(READ_CHUNK, MAX_READ_CHUNK).max(need);
        let len = (size as u64).min(self.end - self.pos) as usize;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(len, 0);
        let r = self
            .read_exact_at(&mut buf[..need], self.pos)
            .and_then(|()| {
                // The rest is read-ahead: a short read there just means a shorter buffer.
                let more =
                    read_full_at(self.file.as_ref(), &mut buf[need..], self.pos + need as u64)
                        .map_err(StoreError::io(format!("reading {}", self.path.display())))?;
                Ok(need + more)
            });
        match r {
            Ok(n) => buf.truncate(n),
            Err(e) => {
                buf.clear();
                self.buf = buf;
                return Err(e);
            }
        }
        self.buf = buf;
        self.buf_start = self.pos;
        Ok(())
    }

    /// Validates the next record (header, extent, CRC) and moves past it.
    fn advance(&mut self) -> Result<Option<(u64, RecordHeader, Located)>, StoreError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        if self.end - self.pos < RECORD_HEADER_LEN as u64 {
            return Err(self.corrupt("a record header is cut off"));
        }
        self.ensure(RECORD_HEADER_LEN)?;
        let at = (self.pos - self.buf_start) as usize;
        let h = RecordHeader::decode(&self.buf[at..])
            .ok_or_else(|| self.corrupt("invalid record header"))?;
        let len = h.len as usize;
        if self.pos + len as u64 > self.end {
            return Err(self.corrupt("record extends past the readable end"));
        }
        let located = if len <= MAX_READ_CHUNK {
            self.ensure(len)?;
            let at = (self.pos - self.buf_start) as usize;
            if !h.body_ok(&self.buf[at..at + len]) {
                return Err(self.corrupt(format!("checksum mismatch in record {}", h.offset)));
            }
            Located::Buffered(at)
        } else {
            let mut own = vec![0u8; len];
            self.read_exact_at(&mut own, self.pos)?;
            if !h.body_ok(&own) {
                return Err(self.corrupt(format!("checksum mismatch in record {}", h.offset)));
            }
            Located::Owned(Bytes::from(own))
        };
        let pos = self.pos;
        self.pos += len as u64;
        Ok(Some((pos, h, located)))
    }

    /// The next record with its position, header and whole bytes (header, key, payload),
    /// CRC-checked. `None` at the end.
    pub fn next(&mut self) -> Result<Option<(u64, RecordHeader, Bytes)>, StoreError> {
        Ok(self.advance()?.map(|(pos, h, located)| {
            let rec = match located {
                Located::Buffered(at) => Bytes::copy_from_slice(&self.buf[at..at + h.len as usize]),
                Located::Owned(b) => b,
            };
            (pos, h, rec)
        }))
    }

    /// The next record's header, key and payload (the latter two sharing one allocation).
    pub fn next_split(&mut self) -> Result<Option<(RecordHeader, Bytes, Bytes)>, StoreError> {
        Ok(self.advance()?.map(|(_, h, located)| {
            let body = match located {
                Located::Buffered(at) => {
                    Bytes::copy_from_slice(&self.buf[at + RECORD_HEADER_LEN..at + h.len as usize])
                }
                Located::Owned(b) => b.slice(RECORD_HEADER_LEN..),
            };
            let key_len = h.key_len as usize;
            (h, body.slice(..key_len), body.slice(key_len..))
        }))
    }

    /// Like [`Cursor::next`] but without the record bytes.
    pub fn next_header(&mut self) -> Result<Option<(u64, RecordHeader, ())>, StoreError> {
        Ok(self.advance()?.map(|(p, h, _)| (p, h, ())))
    }
}

/// Splits a record's bytes into key and payload.
pub(crate) fn split_record(h: &RecordHeader, rec: &Bytes) -> (Bytes, Bytes) {
    let key_end = RECORD_HEADER_LEN + h.key_len as usize;
    (rec.slice(RECORD_HEADER_LEN..key_end), rec.slice(key_end..))
}
