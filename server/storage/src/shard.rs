//! Per-shard state shared between the writer thread and readers: the segment list and the live
//! tail that readers follow through a `watch`, plus the record in progress ("open record").

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::watch;

use crate::segment::SegmentView;

/// Whether a shard still takes appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardState {
    Open,
    /// Closed by a reshard: readable, no more appends.
    Closed,
    /// The stream was deleted: followers should stop.
    Deleted,
}

/// What a live reader follows: published after every acknowledged append.
#[derive(Debug, Clone)]
pub struct Tail {
    /// Offset the next record will get; everything below it (and at or above the trim horizon)
    /// is readable.
    pub next_offset: u64,
    pub last_server_ts_ms: i64,
    /// The record being appended piece by piece, if any.
    pub open: Option<Arc<OpenRecordView>>,
    pub state: ShardState,
}

#[derive(Debug)]
pub(crate) struct ShardShared {
    pub dir: PathBuf,
    /// Ordered by base offset; the last one is the active segment.
    pub segments: RwLock<Vec<Arc<SegmentView>>>,
    pub tail: watch::Sender<Tail>,
}

impl ShardShared {
    pub fn new(dir: PathBuf, segments: Vec<Arc<SegmentView>>, tail: Tail) -> Self {
        ShardShared {
            dir,
            segments: RwLock::new(segments),
            tail: watch::Sender::new(tail),
        }
    }

    pub fn segments(&self) -> Vec<Arc<SegmentView>> {
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn segments_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<SegmentView>>> {
        self.segments.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The first offset still stored.
    pub fn trim_horizon(&self) -> u64 {
        let segs = self.segments.read().unwrap_or_else(|e| e.into_inner());
        match segs.iter().find(|s| !s.is_empty()) {
            Some(s) => s.base,
            None => self.tail.borrow().next_offset,
        }
    }
}

/// How far an open record has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenStatus {
    Open,
    /// Durable in the log at the view's offset.
    Committed,
    Aborted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    chunks: usize,
    status: OpenStatus,
}

/// A record being appended piece by piece (a video fragment in progress). Readers follow it
/// chunk by chunk while it grows; it then becomes a normal record at `offset`, or is aborted.
#[derive(Debug)]
pub struct OpenRecordView {
    pub offset: u64,
    pub server_ts_ms: i64,
    pub producer_ts_ms: Option<i64>,
    pub flags: u16,
    pub key: Bytes,
    chunks: Mutex<Vec<Bytes>>,
    progress: watch::Sender<Progress>,
}

impl OpenRecordView {
    pub(crate) fn new(
        offset: u64,
        server_ts_ms: i64,
        producer_ts_ms: Option<i64>,
        flags: u16,
        key: Bytes,
    ) -> Self {
        OpenRecordView {
            offset,
            server_ts_ms,
            producer_ts_ms,
            flags,
            key,
            chunks: Mutex::new(Vec::new()),
            progress: watch::Sender::new(Progress {
                chunks: 0,
                status: OpenStatus::Open,
            }),
        }
    }

    fn lock_chunks(&self) -> std::sync::MutexGuard<'_, Vec<Bytes>> {
        self.chunks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, chunk: Bytes) {
        let n = {
            let mut chunks = self.lock_chunks();
            chunks.push(chunk);
            chunks.len()
        };
        self.progress.send_modify(|p| p.chunks = n);
    }

    pub(crate) fn all_chunks(&self) -> Vec<Bytes> {
        self.lock_chunks().clone()
    }

    pub(crate) fn finish(&self, status: OpenStatus) {
        self.progress.send_modify(|p| p.status = status);
    }

    pub fn status(&self) -> OpenStatus {
        self.progress.borrow().status
    }

    /// Bytes pushed so far.
    pub fn len(&self) -> usize {
        self.lock_chunks().iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Follows the record from its first chunk.
    pub fn follow(self: &Arc<Self>) -> OpenRecordFollower {
        OpenRecordFollower {
            view: self.clone(),
            next: 0,
            rx: self.progress.subscribe(),
        }
    }
}

/// What a follower sees next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    Chunk(Bytes),
    /// All chunks were delivered and the record is durable.
    Committed,
    /// The record was dropped; discard what was delivered.
    Aborted,
}

#[derive(Debug)]
pub struct OpenRecordFollower {
    view: Arc<OpenRecordView>,
    next: usize,
    rx: watch::Receiver<Progress>,
}

impl OpenRecordFollower {
    pub fn view(&self) -> &Arc<OpenRecordView> {
        &self.view
    }

    /// The next chunk, or how the record ended. Waits without polling.
    pub async fn next(&mut self) -> FollowEvent {
        loop {
            let progress = *self.rx.borrow_and_update();
            if self.next < progress.chunks {
                let chunk = self.view.lock_chunks()[self.next].clone();
                self.next += 1;
                return FollowEvent::Chunk(chunk);
            }
            match progress.status {
                OpenStatus::Committed => return FollowEvent::Committed,
                OpenStatus::Aborted => return FollowEvent::Aborted,
                OpenStatus::Open => {}
            }
            if self.rx.changed().await.is_err() {
                return FollowEvent::Aborted;
            }
        }
    }
}
