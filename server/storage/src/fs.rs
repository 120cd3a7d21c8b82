//! The narrow file-access layer under segments and sparse indexes.
//!
//! Everything the engine does to a segment or index file goes through [`Fs`] and [`StoreFile`],
//! so tests can swap in [`FaultyFs`] and inject torn writes, ENOSPC and failed fsyncs at exact
//! moments. The catalog (redb) manages its own file.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// An open file: appends go to the end; reads are positional, so readers and the writer never
/// share a cursor.
#[allow(clippy::len_without_is_empty)] // a file's emptiness is never the question here
pub trait StoreFile: Send + Sync + Debug {
    /// Writes all of `bufs` at the end of the file.
    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<()>;
    /// Reads at `pos`; returns fewer bytes only at the end of the file.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// fdatasync.
    fn sync_data(&self) -> io::Result<()>;
    fn truncate(&self, len: u64) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
}

pub trait Fs: Send + Sync + Debug + 'static {
    /// Opens for reading and appending, creating the file if `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoreFile>>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Names of the entries of a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// fsync of a directory, so created and removed names persist.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// Reads fully at `pos` until `buf` is full or the file ends; returns the bytes read.
pub fn read_full_at(file: &dyn StoreFile, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl StoreFile for RealFile {
    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        let mut owned: Vec<IoSlice<'_>> = bufs.to_vec();
        let mut slices = &mut owned[..];
        // Skip empty slices up front so a fully written vector ends the loop.
        IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            // Linux caps one writev at IOV_MAX (1024) slices.
            let n = slices.len().min(1024);
            match (&self.0).write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
                Ok(written) => IoSlice::advance_slices(&mut slices, written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.read_at(buf, pos)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl Fs for RealFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoreFile>> {
        let f = OpenOptions::new()
            .read(true)
            .append(true)
            .create(create)
            .open(path)?;
        Ok(Arc::new(RealFile(f)))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        match fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
}

/// A fault to inject on a future operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next append writes only this many bytes, then fails with EIO (a torn write).
    TornWrite { keep_bytes: usize },
    /// The next append fails with ENOSPC, writing nothing.
    NoSpace,
    /// The next fdatasync fails with EIO.
    FailSync,
    /// The next fdatasync takes this long, then succeeds (a slow disk).
    SlowSync(std::time::Duration),
    /// The next fdatasync takes this long, then fails with EIO.
    SlowFailSync(std::time::Duration),
}

/// A real file system with faults injected on demand. A fault applies to the next matching
/// operation on any file whose path contains `path_filter` (all files if empty).
#[derive(Debug, Default)]
pub struct FaultyFs {
    state: Arc<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    pending: Mutex<Vec<(String, Fault)>>,
    appends: AtomicU64,
    syncs: AtomicU64,
}

impl FaultyFs {
    pub fn new() -> Self {
        FaultyFs::default()
    }

    /// Arms a fault for the next matching operation.
    pub fn inject(&self, path_filter: &str, fault: Fault) {
        self.state
            .lock_pending()
            .push((path_filter.to_string(), fault));
    }

    /// Faults armed but not yet triggered.
    pub fn pending(&self) -> usize {
        self.state.lock_pending().len()
    }

    pub fn appends(&self) -> u64 {
        self.state.appends.load(Ordering::SeqCst)
    }

    pub fn syncs(&self) -> u64 {
        self.state.syncs.load(Ordering::SeqCst)
    }
}

impl FaultState {
    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<(String, Fault)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, path: &Path, want: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let mut pending = self.lock_pending();
        let path = path.to_string_lossy();
        let i = pending
            .iter()
            .position(|(filter, f)| want(f) && path.contains(filter.as_str()))?;
        Some(pending.remove(i).1)
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: RealFile,
    path: PathBuf,
    state: Arc<FaultState>,
}

impl StoreFile for FaultyFile {
    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        self.state.appends.fetch_add(1, Ordering::SeqCst);
        match self.state.take(&self.path, |f| {
            matches!(f, Fault::TornWrite { .. } | Fault::NoSpace)
        }) {
            Some(Fault::NoSpace) => Err(io::Error::from(io::ErrorKind::StorageFull)),
            Some(Fault::TornWrite { keep_bytes }) => {
                let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
                let keep = keep_bytes.min(all.len());
                self.inner.append(&[IoSlice::new(&all[..keep])])?;
                Err(io::Error::other("injected torn write"))
            }
            _ => self.inner.append(bufs),
        }
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.state.syncs.fetch_add(1, Ordering::SeqCst);
        let fault = self.state.take(&self.path, |f| {
            matches!(
                f,
                Fault::FailSync | Fault::SlowSync(_) | Fault::SlowFailSync(_)
            )
        });
        match fault {
            Some(Fault::FailSync) => Err(io::Error::other("injected fsync failure")),
            Some(Fault::SlowFailSync(d)) => {
                std::thread::sleep(d);
                Err(io::Error::other("injected fsync failure"))
            }
            Some(Fault::SlowSync(d)) => {
                std::thread::sleep(d);
                self.inner.sync_data()
            }
            _ => self.inner.sync_data(),
        }
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl Fs for FaultyFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoreFile>> {
        let f = OpenOptions::new()
            .read(true)
            .append(true)
            .create(create)
            .open(path)?;
        Ok(Arc::new(FaultyFile {
            inner: RealFile(f),
            path: path.to_path_buf(),
            state: self.state.clone(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        RealFs.create_dir_all(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        RealFs.list_dir(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        RealFs.sync_dir(path)
    }
}
