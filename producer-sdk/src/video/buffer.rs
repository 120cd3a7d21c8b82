//! The producer's backlog: every fragment from its first frame until the server acks it
//! PERSISTED (or the bound drops it), in memory and, with a buffer directory, on disk.
//!
//! In memory a fragment is a list of chunks that grows frame by frame, so the upload can send the
//! open fragment as it is built. With a buffer directory each fragment is also written to its
//! own file once complete (write to a temporary name, fdatasync, rename, fsync the directory), and
//! deleted once persisted. A producer that crashes or is killed finds the files on its next start
//! and uploads them before anything new. A fragment still open at a crash is lost, because the
//! source has not finished it yet. Every completed fragment is kept.
//!
//! A deleted file that comes back after a crash, or a persisted fragment whose ack was lost, is
//! uploaded again. The server recognises a resent fragment (same producer timestamp, same bytes)
//! and acks it PERSISTED with the stored fragment's number instead of storing it twice.
//!
//! Bounds: total bytes and age. When the backlog outgrows either (a long outage), the oldest
//! complete fragments are dropped and reported as [`Dropped`]; the fragment being built is never
//! dropped. With a buffer directory only the newest fragments stay in memory
//! (`max_resident_bytes`); older ones are read back from their files when their turn to be sent
//! comes.
//!
//! File format (little-endian), `fragments/<seq, 20 digits>.frag`:
//! `"TSPFRAG1"`, seq u64, cluster timecode ms i64, header id u64, completed-at ms i64,
//! data length u64, the data (the Cluster as uploaded), then CRC-32C of everything before it.
//! `headers/<id, 16 hex digits>.mkvh`: `"TSPHEAD1"`, length u64, the MKV header, CRC-32C.
//! Start-up reads only each file's header and checks its length; a file that does not check out
//! (torn by a crash mid-write) is removed with a warning. The CRC is checked when a fragment is
//! read back to be sent; a mismatch drops it with a `Dropping` event.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use timeshard_parser::{MkvEvent, MkvReader};

use crate::error::Error;
use crate::video::fragmenter::StreamHeader;

const FRAGMENT_MAGIC: &[u8; 8] = b"TSPFRAG1";
const HEADER_MAGIC: &[u8; 8] = b"TSPHEAD1";
const FRAGMENT_FIXED_LEN: usize = 8 + 8 * 5;

/// The backlog's limits.
#[derive(Debug, Clone)]
pub struct BufferConfig {
    /// Where fragments are kept across crashes; `None` keeps them in memory only.
    pub dir: Option<PathBuf>,
    /// The most bytes of unpersisted fragments kept.
    pub max_bytes: u64,
    /// The oldest an unpersisted fragment may get before it is dropped.
    pub max_age: Duration,
    /// With `dir`: how many bytes of the backlog stay in memory.
    pub max_resident_bytes: u64,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            dir: None,
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(3600),
            max_resident_bytes: 64 << 20,
        }
    }
}

/// Fragments the bound dropped, for the `Dropping` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dropped {
    pub fragments: u64,
    pub bytes: u64,
    /// Cluster timecodes of the first and last dropped fragment.
    pub first_timecode_ms: i64,
    pub last_timecode_ms: i64,
}

/// One fragment in the backlog.
#[derive(Debug)]
pub(crate) struct Entry {
    pub seq: u64,
    pub timecode_ms: i64,
    pub header: Arc<StreamHeader>,
    /// The cluster's bytes; empty when the fragment lives only in its file.
    pub chunks: Vec<Bytes>,
    pub len_bytes: u64,
    pub complete: bool,
    /// Wall-clock ms when the fragment was completed (or started, while open).
    pub since_ms: i64,
    pub on_disk: bool,
    pub resident: bool,
}

/// The fragments not yet persisted, oldest first.
#[derive(Debug)]
pub(crate) struct Backlog {
    entries: VecDeque<Entry>,
    next_seq: u64,
    total_bytes: u64,
    resident_bytes: u64,
    config: BufferConfig,
}

impl Backlog {
    pub fn new(config: BufferConfig, next_seq: u64) -> Backlog {
        Backlog {
            entries: VecDeque::new(),
            next_seq,
            total_bytes: 0,
            resident_bytes: 0,
            config,
        }
    }

    pub fn config(&self) -> &BufferConfig {
        &self.config
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Bytes of the backlog held in memory.
    pub fn resident_bytes(&self) -> u64 {
        self.resident_bytes
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn get(&self, seq: u64) -> Option<&Entry> {
        let i = self.index_of(seq)?;
        self.entries.get(i)
    }

    /// The first entry with a sequence number at or after `seq`.
    pub fn first_at_or_after(&self, seq: u64) -> Option<&Entry> {
        let i = self.entries.partition_point(|e| e.seq < seq);
        self.entries.get(i)
    }

    fn index_of(&self, seq: u64) -> Option<usize> {
        let i = self.entries.partition_point(|e| e.seq < seq);
        (self.entries.get(i)?.seq == seq).then_some(i)
    }

    /// Adds a recovered fragment (complete, on disk, not resident).
    pub fn push_recovered(&mut self, r: &Recovered) {
        self.next_seq = self.next_seq.max(r.seq + 1);
        self.total_bytes += r.len_bytes;
        self.entries.push_back(Entry {
            seq: r.seq,
            timecode_ms: r.timecode_ms,
            header: r.header.clone(),
            chunks: Vec::new(),
            len_bytes: r.len_bytes,
            complete: true,
            since_ms: r.completed_ms,
            on_disk: true,
            resident: false,
        });
    }

    /// Completes the open fragment, if any; returns its sequence number.
    pub fn complete_open(&mut self, now_ms: i64) -> Option<u64> {
        let last = self.entries.back_mut()?;
        if last.complete {
            return None;
        }
        last.complete = true;
        last.since_ms = now_ms;
        Some(last.seq)
    }

    /// Starts a fragment with its first chunk; returns its sequence number.
    pub fn start(
        &mut self,
        timecode_ms: i64,
        header: Arc<StreamHeader>,
        chunk: Bytes,
        now_ms: i64,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let len = chunk.len() as u64;
        self.total_bytes += len;
        self.resident_bytes += len;
        self.entries.push_back(Entry {
            seq,
            timecode_ms,
            header,
            chunks: vec![chunk],
            len_bytes: len,
            complete: false,
            since_ms: now_ms,
            on_disk: false,
            resident: true,
        });
        seq
    }

    /// Appends to the open fragment. Returns false when no fragment is open.
    pub fn append(&mut self, chunk: Bytes) -> bool {
        let Some(last) = self.entries.back_mut() else {
            return false;
        };
        if last.complete {
            return false;
        }
        let len = chunk.len() as u64;
        last.len_bytes += len;
        last.chunks.push(chunk);
        self.total_bytes += len;
        self.resident_bytes += len;
        true
    }

    /// Removes a fragment (persisted, or refused by the server). Returns it.
    pub fn remove(&mut self, seq: u64) -> Option<Entry> {
        let i = self.index_of(seq)?;
        let e = self.entries.remove(i)?;
        self.total_bytes -= e.len_bytes;
        if e.resident {
            self.resident_bytes -= e.len_bytes;
        }
        Some(e)
    }

    /// The fragment whose cluster timecode an ack names: the oldest one with that timecode.
    pub fn find_by_timecode(&self, timecode_ms: i64) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| e.timecode_ms == timecode_ms)
            .map(|e| e.seq)
    }

    /// Marks a fragment as safely in its file; it may now leave memory.
    pub fn mark_on_disk(&mut self, seq: u64) {
        if let Some(i) = self.index_of(seq) {
            self.entries[i].on_disk = true;
        }
    }

    /// Drops fragments beyond the bounds, oldest first, never the open one. Returns the
    /// sequence numbers dropped and a summary.
    pub fn enforce_bounds(&mut self, now_ms: i64) -> (Vec<u64>, Dropped) {
        let max_age_ms = i64::try_from(self.config.max_age.as_millis()).unwrap_or(i64::MAX);
        let mut seqs = Vec::new();
        let mut dropped = Dropped::default();
        while let Some(first) = self.entries.front() {
            let over_bytes = self.total_bytes > self.config.max_bytes;
            let too_old = now_ms.saturating_sub(first.since_ms) > max_age_ms;
            if !first.complete || !(over_bytes || too_old) {
                break;
            }
            let seq = first.seq;
            let Some(e) = self.remove(seq) else { break };
            if dropped.fragments == 0 {
                dropped.first_timecode_ms = e.timecode_ms;
            }
            dropped.fragments += 1;
            dropped.bytes += e.len_bytes;
            dropped.last_timecode_ms = e.timecode_ms;
            seqs.push(seq);
        }
        (seqs, dropped)
    }

    /// Frees memory held by fragments that are safe in their files, oldest first, keeping the
    /// oldest one (next to be sent) and the newest (live), until under `max_resident_bytes`.
    pub fn evict(&mut self) {
        if self.resident_bytes <= self.config.max_resident_bytes {
            return;
        }
        let n = self.entries.len();
        for i in 1..n.saturating_sub(1) {
            if self.resident_bytes <= self.config.max_resident_bytes {
                break;
            }
            let e = &mut self.entries[i];
            if !e.on_disk || !e.resident {
                continue;
            }
            e.chunks = Vec::new();
            e.resident = false;
            self.resident_bytes -= e.len_bytes;
        }
    }
}

/// A fragment found in the buffer directory at start-up.
#[derive(Debug, Clone)]
pub(crate) struct Recovered {
    pub seq: u64,
    pub timecode_ms: i64,
    pub header: Arc<StreamHeader>,
    pub len_bytes: u64,
    pub completed_ms: i64,
}

/// The buffer directory.
#[derive(Debug, Clone)]
pub(crate) struct DiskBuffer {
    fragments: PathBuf,
    headers: PathBuf,
}

impl DiskBuffer {
    /// Opens (creating) the directory and returns the fragments it holds, oldest first, with
    /// warnings about files it removed.
    pub fn open(dir: &Path) -> Result<(DiskBuffer, Vec<Recovered>, Vec<String>), Error> {
        let fragments = dir.join("fragments");
        let headers = dir.join("headers");
        for d in [dir, &fragments, &headers] {
            fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("creating buffer directory {}", d.display()), e))?;
        }
        let disk = DiskBuffer { fragments, headers };
        let mut warnings = Vec::new();
        let mut loaded_headers: HashMap<u64, Arc<StreamHeader>> = HashMap::new();
        let mut recovered = Vec::new();
        let listing = fs::read_dir(&disk.fragments)
            .map_err(|e| Error::io(format!("listing {}", disk.fragments.display()), e))?;
        for item in listing {
            let item = item.map_err(|e| Error::io("listing the buffer directory", e))?;
            let path = item.path();
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".frag") {
                continue;
            }
            match read_fragment_file(&path, false) {
                Ok((meta, _)) => {
                    let header = match loaded_headers.get(&meta.header_id) {
                        Some(h) => h.clone(),
                        None => match disk.read_header(meta.header_id) {
                            Ok(h) => {
                                let h = Arc::new(h);
                                loaded_headers.insert(meta.header_id, h.clone());
                                h
                            }
                            Err(e) => {
                                warnings.push(format!(
                                    "removing {}: its MKV header is unreadable ({e})",
                                    path.display()
                                ));
                                let _ = fs::remove_file(&path);
                                continue;
                            }
                        },
                    };
                    recovered.push(Recovered {
                        seq: meta.seq,
                        timecode_ms: meta.timecode_ms,
                        header,
                        len_bytes: meta.len_bytes,
                        completed_ms: meta.completed_ms,
                    });
                }
                Err(e) => {
                    warnings.push(format!("removing {}: {e}", path.display()));
                    let _ = fs::remove_file(&path);
                }
            }
        }
        recovered.sort_by_key(|r| r.seq);
        // Headers no fragment refers to any more.
        if let Ok(listing) = fs::read_dir(&disk.headers) {
            for item in listing.flatten() {
                let name = item.file_name().to_string_lossy().into_owned();
                let used = name
                    .strip_suffix(".mkvh")
                    .and_then(|id| u64::from_str_radix(id, 16).ok())
                    .is_some_and(|id| loaded_headers.contains_key(&id));
                if !used {
                    let _ = fs::remove_file(item.path());
                }
            }
        }
        Ok((disk, recovered, warnings))
    }

    fn fragment_path(&self, seq: u64) -> PathBuf {
        self.fragments.join(format!("{seq:020}.frag"))
    }

    fn header_path(&self, id: u64) -> PathBuf {
        self.headers.join(format!("{id:016x}.mkvh"))
    }

    fn read_header(&self, id: u64) -> Result<StreamHeader, String> {
        let raw = fs::read(self.header_path(id)).map_err(|e| e.to_string())?;
        if raw.len() < 20 || &raw[..8] != HEADER_MAGIC {
            return Err("not a header file".to_owned());
        }
        let (body, crc) = raw.split_at(raw.len() - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("checksum mismatch".to_owned());
        }
        let len = u64::from_le_bytes(body[8..16].try_into().map_err(|_| "short")?);
        let bytes = &body[16..];
        if bytes.len() as u64 != len {
            return Err("length mismatch".to_owned());
        }
        let mut reader = MkvReader::new();
        reader.push(bytes);
        loop {
            match reader.next_event().map_err(|e| e.to_string())? {
                Some(MkvEvent::Tracks(tracks)) => {
                    let header = StreamHeader::new(tracks).map_err(|e| e.to_string())?;
                    if header.bytes != bytes {
                        return Err("the header does not re-encode to the same bytes".to_owned());
                    }
                    return Ok(header);
                }
                Some(_) => {}
                None => return Err("no Tracks element".to_owned()),
            }
        }
    }

    /// Writes a completed fragment (and its header, the first time) durably.
    pub fn write(
        &self,
        entry_seq: u64,
        timecode_ms: i64,
        header: &StreamHeader,
        chunks: &[Bytes],
        completed_ms: i64,
    ) -> Result<(), Error> {
        let header_path = self.header_path(header.id);
        if !header_path.exists() {
            let mut buf = Vec::with_capacity(header.bytes.len() + 20);
            buf.extend_from_slice(HEADER_MAGIC);
            buf.extend_from_slice(&(header.bytes.len() as u64).to_le_bytes());
            buf.extend_from_slice(&header.bytes);
            let crc = crc32c::crc32c(&buf);
            buf.extend_from_slice(&crc.to_le_bytes());
            write_durably(&self.headers, &header_path, &[Bytes::from(buf)])?;
        }
        let data_len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let mut head = Vec::with_capacity(FRAGMENT_FIXED_LEN);
        head.extend_from_slice(FRAGMENT_MAGIC);
        head.extend_from_slice(&entry_seq.to_le_bytes());
        head.extend_from_slice(&timecode_ms.to_le_bytes());
        head.extend_from_slice(&header.id.to_le_bytes());
        head.extend_from_slice(&completed_ms.to_le_bytes());
        head.extend_from_slice(&data_len.to_le_bytes());
        let mut crc = crc32c::crc32c(&head);
        for c in chunks {
            crc = crc32c::crc32c_append(crc, c);
        }
        let mut parts = Vec::with_capacity(chunks.len() + 2);
        parts.push(Bytes::from(head));
        parts.extend(chunks.iter().cloned());
        parts.push(Bytes::copy_from_slice(&crc.to_le_bytes()));
        write_durably(&self.fragments, &self.fragment_path(entry_seq), &parts)
    }

    /// Reads a fragment's data back.
    pub fn read(&self, seq: u64) -> Result<Bytes, Error> {
        let path = self.fragment_path(seq);
        read_fragment_file(&path, true)
            .map(|(_, data)| data)
            .map_err(|e| Error::Input(format!("buffered fragment {}: {e}", path.display())))
    }

    /// Deletes a fragment's file (persisted or dropped). Not synced: a file that comes back
    /// after a crash is only uploaded again, and the server knows it.
    pub fn delete(&self, seq: u64) {
        let _ = fs::remove_file(self.fragment_path(seq));
    }
}

struct FragmentMeta {
    seq: u64,
    timecode_ms: i64,
    header_id: u64,
    completed_ms: i64,
    len_bytes: u64,
}

/// Reads a fragment file. With `with_data`, the whole file, checked against its CRC; without,
/// only the fixed header and the file's length (start-up must not read a whole backlog; the
/// checksum is checked when the fragment is read to be sent).
fn read_fragment_file(path: &Path, with_data: bool) -> Result<(FragmentMeta, Bytes), String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    if with_data {
        file.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    } else {
        raw.resize(FRAGMENT_FIXED_LEN, 0);
        file.read_exact(&mut raw)
            .map_err(|_| "shorter than its header (torn by a crash?)".to_owned())?;
    }
    if raw.len() < FRAGMENT_FIXED_LEN || &raw[..8] != FRAGMENT_MAGIC {
        return Err("not a fragment file (torn or foreign)".to_owned());
    }
    let field = |i: usize| {
        let at = 8 + i * 8;
        u64::from_le_bytes(raw[at..at + 8].try_into().unwrap_or([0; 8]))
    };
    let meta = FragmentMeta {
        seq: field(0),
        timecode_ms: field(1) as i64,
        header_id: field(2),
        completed_ms: field(3) as i64,
        len_bytes: field(4),
    };
    let file_len = if with_data {
        raw.len() as u64
    } else {
        file.metadata().map_err(|e| e.to_string())?.len()
    };
    if file_len != FRAGMENT_FIXED_LEN as u64 + meta.len_bytes + 4 {
        return Err("length mismatch (torn by a crash?)".to_owned());
    }
    if !with_data {
        return Ok((meta, Bytes::new()));
    }
    let (body, crc) = raw.split_at(raw.len() - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err("checksum mismatch (torn by a crash?)".to_owned());
    }
    Ok((meta, Bytes::copy_from_slice(&body[FRAGMENT_FIXED_LEN..])))
}

/// Writes `parts` to `path` so that after a crash the file is either absent or complete:
/// temporary file, fdatasync, rename, fsync of the directory.
fn write_durably(dir: &Path, path: &Path, parts: &[Bytes]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let context = || format!("writing {}", path.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io(context(), e))?;
    for p in parts {
        file.write_all(p).map_err(|e| Error::io(context(), e))?;
    }
    file.sync_data().map_err(|e| Error::io(context(), e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| Error::io(context(), e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use timeshard_parser::Track;

    fn header() -> Arc<StreamHeader> {
        Arc::new(
            StreamHeader::new(vec![Track {
                number: 1,
                uid: Some(1),
                track_type: 1,
                codec_id: "V_MPEG4/ISO/AVC".to_owned(),
                codec_private: Some(Bytes::from_static(&[1, 2, 3])),
                name: None,
                default_duration: None,
                video: None,
                audio: None,
            }])
            .expect("header"),
        )
    }

    #[test]
    fn files_survive_and_torn_ones_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (disk, recovered, _) = DiskBuffer::open(dir.path()).expect("open");
        assert!(recovered.is_empty());
        let h = header();
        let chunks = vec![
            Bytes::from_static(b"cluster-"),
            Bytes::from_static(b"blocks"),
        ];
        disk.write(7, 1000, &h, &chunks, 5).expect("write");
        disk.write(8, 2000, &h, &chunks, 6).expect("write");
        disk.write(9, 3000, &h, &chunks, 7).expect("write");
        disk.delete(8);
        // Tear the last one.
        let p = disk.fragment_path(9);
        let len = fs::metadata(&p).expect("meta").len();
        OpenOptions::new()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_len(len - 3))
            .expect("truncate");
        fs::write(dir.path().join("fragments/00000000000000000010.tmp"), b"x").expect("tmp");

        let (disk, recovered, warnings) = DiskBuffer::open(dir.path()).expect("reopen");
        assert_eq!(recovered.len(), 1, "{warnings:?}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let r = &recovered[0];
        assert_eq!((r.seq, r.timecode_ms, r.completed_ms), (7, 1000, 5));
        assert_eq!(r.header.bytes, h.bytes);
        assert_eq!(&disk.read(7).expect("read")[..], b"cluster-blocks");
        // A flipped bit passes the start-up check but not the read before sending.
        let p = disk.fragment_path(7);
        let mut raw = fs::read(&p).expect("read");
        raw[FRAGMENT_FIXED_LEN + 2] ^= 1;
        fs::write(&p, raw).expect("write");
        let err = disk.read(7).expect_err("checksum");
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(
            !dir.path()
                .join("fragments/00000000000000000010.tmp")
                .exists()
        );
    }

    #[test]
    fn bounds_drop_the_oldest_complete_fragments() {
        let config = BufferConfig {
            max_bytes: 25,
            max_age: Duration::from_secs(10),
            ..BufferConfig::default()
        };
        let mut b = Backlog::new(config, 0);
        let h = header();
        for i in 0..3 {
            b.complete_open(i * 1000);
            b.start(i * 1000, h.clone(), Bytes::from(vec![0; 10]), i * 1000);
        }
        // 30 bytes, the last one open: the first goes.
        let (seqs, dropped) = b.enforce_bounds(2000);
        assert_eq!(seqs, vec![0]);
        assert_eq!((dropped.fragments, dropped.bytes), (1, 10));
        // Age: 20 s later the complete one goes, the open one stays.
        let (seqs, _) = b.enforce_bounds(22_000);
        assert_eq!(seqs, vec![1]);
        assert_eq!(b.len(), 1);
        assert!(b.append(Bytes::from_static(b"more")));
        assert_eq!(b.total_bytes(), 14);
        assert_eq!(b.find_by_timecode(2000), Some(2));
    }
}
