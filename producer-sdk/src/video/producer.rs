//! [`VideoProducer`]: frames in, every fragment PERSISTED out, across crashes and outages.
//!
//! Shape: the caller's thread (or the MKV input task) pushes frames into shared state under a
//! short `std::sync::Mutex`: the [`Fragmenter`] turns them into chunks, the [`Backlog`] keeps
//! them. One upload task owns the PutMedia connection ([`super::upload`]): it sends the backlog
//! from its first fragment, then follows new chunks live, while its ack reader removes
//! PERSISTED fragments. A disk thread writes completed fragments to the buffer directory and
//! deletes persisted ones, in order, so a delete never overtakes its write.
//!
//! On connection loss, server restart, or a retriable ERROR ack, the upload reconnects with
//! exponential backoff (200 ms doubling to `max_backoff`, with jitter) and resends from the first
//! fragment not yet persisted. The server recognises fragments it already stored, so a resend
//! after a lost ack does not store anything twice.
//!
//! The application hears about all of it through [`Event`]s (a callback, called outside the
//! producer's lock) and [`Stats`].

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use timeshard_parser::Track;
use tokio::sync::Notify;

use crate::auth::{self, AuthOptions, CredentialSource};
use crate::client::{Endpoint, HttpClient};
use crate::error::Error;
use crate::video::buffer::{Backlog, BufferConfig, DiskBuffer, Dropped};
use crate::video::control::{CreateOptions, VideoControl};
use crate::video::fragmenter::{Fragmenter, MediaFrame, Repair, StreamHeader};
use crate::video::upload;

/// Receives the producer's [`Event`]s.
pub type EventCallback = Arc<dyn Fn(&Event) + Send + Sync>;

/// How the producer is set up.
#[derive(Clone)]
pub struct ProducerConfig {
    /// The control-plane endpoint, `http://host:port`.
    pub endpoint: String,
    pub stream: String,
    pub auth: AuthOptions,
    /// Create the stream when DescribeStream says it does not exist; `None` makes that an error.
    pub create: Option<CreateOptions>,
    pub buffer: BufferConfig,
    /// The longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// A fragment sent in full but not acked PERSISTED within this time ends the connection, and
    /// the upload resends from it.
    pub ack_timeout: Duration,
    /// Give up (a fatal error) when nothing has been persisted for this long while there is
    /// something to upload. `None`: keep trying as long as the process runs.
    pub give_up_after: Option<Duration>,
    /// Receives every [`Event`]. Called on the producer's threads: keep it quick.
    pub on_event: Option<EventCallback>,
}

impl std::fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("endpoint", &self.endpoint)
            .field("stream", &self.stream)
            .field("auth", &self.auth)
            .field("create", &self.create)
            .field("buffer", &self.buffer)
            .field("max_backoff", &self.max_backoff)
            .field("ack_timeout", &self.ack_timeout)
            .field("give_up_after", &self.give_up_after)
            .field("on_event", &self.on_event.as_ref().map(|_| "<callback>"))
            .finish()
    }
}

impl ProducerConfig {
    pub fn new(endpoint: impl Into<String>, stream: impl Into<String>) -> ProducerConfig {
        ProducerConfig {
            endpoint: endpoint.into(),
            stream: stream.into(),
            auth: AuthOptions::default(),
            create: Some(CreateOptions::default()),
            buffer: BufferConfig::default(),
            max_backoff: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(30),
            give_up_after: None,
            on_event: None,
        }
    }
}

/// What happens to the upload, for the application.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A PutMedia connection is up; `resending` fragments from before it go first.
    Connected { endpoint: String, resending: usize },
    /// The connection is down or not yet up, and fragments wait in the backlog.
    Buffering { fragments: usize, bytes: u64 },
    /// The server stored a fragment durably.
    Persisted {
        timecode_ms: i64,
        fragment_number: String,
    },
    /// Fragments were dropped without being persisted: by the buffer's bounds, or refused by the
    /// server.
    Dropping { dropped: Dropped, reason: String },
    /// Time went back at this frame; from here on timestamps are shifted to keep it moving
    /// forward.
    TimestampRepaired(Repair),
    /// Something failed. With `will_retry` the producer carries on by itself.
    Error { message: String, will_retry: bool },
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub fragments_started: u64,
    /// Fragments sent in full (a resend counts again).
    pub fragments_sent: u64,
    pub fragments_persisted: u64,
    pub fragments_dropped: u64,
    pub bytes_sent: u64,
    /// Frames with no fragment to go in: before the first key frame, or more than 32.7 s
    /// after their fragment's key frame.
    pub frames_dropped_waiting_for_key_frame: u64,
    /// Times the timestamp offset changed ([`Event::TimestampRepaired`]).
    pub timestamp_repairs: u64,
    pub backlog_fragments: u64,
    pub backlog_bytes: u64,
    /// Of `backlog_bytes`, what is in memory (the rest is only in the buffer directory).
    pub backlog_resident_bytes: u64,
    pub connections: u64,
    pub connected: bool,
    /// Fragments found in the buffer directory at start.
    pub recovered_fragments: u64,
}

/// State shared by the pushing side, the upload task and the disk thread.
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Wakes the upload task: new chunks, acks, input end.
    pub(crate) changed: Notify,
    /// Wakes [`VideoProducer::finish`].
    pub(crate) progress: Notify,
    pub(crate) on_event: Option<EventCallback>,
}

pub(crate) struct State {
    pub(crate) backlog: Backlog,
    pub(crate) fragmenter: Option<Fragmenter>,
    pub(crate) input_done: bool,
    pub(crate) fatal: Option<String>,
    pub(crate) stats: Stats,
    pub(crate) disk: Option<std_mpsc::Sender<DiskCommand>>,
    pub(crate) disk_buffer: Option<DiskBuffer>,
}

pub(crate) enum DiskCommand {
    Write {
        seq: u64,
        timecode_ms: i64,
        header: Arc<StreamHeader>,
        chunks: Vec<Bytes>,
        completed_ms: i64,
    },
    Delete(u64),
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn emit(&self, events: &[Event]) {
        if let Some(cb) = &self.on_event {
            for e in events {
                cb(e);
            }
        }
    }
}

impl State {
    /// Removes a fragment from the backlog and its file.
    pub(crate) fn forget(&mut self, seq: u64) -> Option<crate::video::buffer::Entry> {
        let e = self.backlog.remove(seq)?;
        if e.complete
            && let Some(disk) = &self.disk
        {
            let _ = disk.send(DiskCommand::Delete(seq));
        }
        self.refresh_backlog_stats();
        Some(e)
    }

    pub(crate) fn refresh_backlog_stats(&mut self) {
        self.stats.backlog_fragments = self.backlog.len() as u64;
        self.stats.backlog_bytes = self.backlog.total_bytes();
        self.stats.backlog_resident_bytes = self.backlog.resident_bytes();
    }

    /// Completes the open fragment and hands it to the disk thread.
    fn complete_open(&mut self, now_ms: i64) {
        let Some(seq) = self.backlog.complete_open(now_ms) else {
            return;
        };
        if let (Some(disk), Some(e)) = (&self.disk, self.backlog.get(seq)) {
            let _ = disk.send(DiskCommand::Write {
                seq,
                timecode_ms: e.timecode_ms,
                header: e.header.clone(),
                chunks: e.chunks.clone(),
                completed_ms: now_ms,
            });
        }
    }

    /// Applies the bounds; returns the event for what they dropped.
    fn enforce_bounds(&mut self, now_ms: i64) -> Option<Event> {
        let (seqs, dropped) = self.backlog.enforce_bounds(now_ms);
        if seqs.is_empty() {
            return None;
        }
        if let Some(disk) = &self.disk {
            for seq in &seqs {
                let _ = disk.send(DiskCommand::Delete(*seq));
            }
        }
        self.stats.fragments_dropped += dropped.fragments;
        self.refresh_backlog_stats();
        let c = self.backlog.config();
        Some(Event::Dropping {
            dropped,
            reason: format!(
                "the buffer's bound ({} bytes, {} s) was exceeded while fragments could not be uploaded",
                c.max_bytes,
                c.max_age.as_secs()
            ),
        })
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The result of [`VideoProducer::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub stats: Stats,
}

/// Uploads one stream. See the module docs.
#[derive(Debug)]
pub struct VideoProducer {
    shared: Arc<Shared>,
    upload: tokio::task::JoinHandle<()>,
    disk_thread: Option<std::thread::JoinHandle<()>>,
    stream: String,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl VideoProducer {
    /// Resolves credentials, makes sure the stream exists (creating it if allowed), recovers the
    /// buffer directory, and starts the upload. Fails at once on bad credentials, a missing
    /// stream that may not be created, or an unusable buffer directory.
    pub async fn start(config: ProducerConfig) -> Result<VideoProducer, Error> {
        let resolved = auth::resolve(&config.auth)?;
        if resolved.source == CredentialSource::None {
            tracing::warn!(
                "no AWS credentials found (flags, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or ~/.aws profiles): sending unsigned requests"
            );
        }
        let endpoint = Endpoint::parse(&config.endpoint)?;
        let client = HttpClient::new(auth::Signer::new(
            resolved.credentials.clone(),
            resolved.region.clone(),
        ));
        let control = VideoControl::new(client, endpoint);
        // A stream that cannot be reached yet (the server is down, the network is not up) is
        // not an error: frames are buffered and the upload keeps trying. Credentials, a missing
        // stream that may not be created, and other answers that will not change are.
        let stream_ready = match control
            .ensure_stream(&config.stream, config.create.as_ref())
            .await
        {
            Ok((info, created)) => {
                if created {
                    tracing::info!(stream = %info.stream_name, "created the stream");
                }
                true
            }
            Err(e) if e.is_retriable() => {
                tracing::warn!("{e}; buffering until the service can be reached");
                false
            }
            Err(e) => return Err(e),
        };

        let mut backlog = Backlog::new(config.buffer.clone(), 0);
        let mut disk_buffer = None;
        let mut recovered_count = 0;
        if let Some(dir) = &config.buffer.dir {
            // Listing and reading the headers of a large backlog is blocking work.
            let dir = dir.clone();
            let (disk, recovered, warnings) =
                tokio::task::spawn_blocking(move || DiskBuffer::open(&dir))
                    .await
                    .map_err(|e| Error::Closed(format!("opening the buffer directory: {e}")))??;
            for w in warnings {
                tracing::warn!("{w}");
            }
            recovered_count = recovered.len() as u64;
            for r in &recovered {
                backlog.push_recovered(r);
            }
            disk_buffer = Some(disk);
        }
        let mut stats = Stats {
            recovered_fragments: recovered_count,
            ..Stats::default()
        };
        stats.backlog_fragments = backlog.len() as u64;
        stats.backlog_bytes = backlog.total_bytes();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                backlog,
                fragmenter: None,
                input_done: false,
                fatal: None,
                stats,
                disk: None,
                disk_buffer: disk_buffer.clone(),
            }),
            changed: Notify::new(),
            progress: Notify::new(),
            on_event: config.on_event.clone(),
        });
        let disk_thread = match disk_buffer {
            Some(disk) => {
                let (tx, rx) = std_mpsc::channel();
                shared.lock().disk = Some(tx);
                let shared = shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name("timeshard-producer-disk".to_owned())
                        .spawn(move || disk_thread(&shared, &disk, &rx))
                        .map_err(|e| Error::io("starting the buffer thread", e))?,
                )
            }
            None => None,
        };
        let upload = tokio::spawn(upload::run(
            shared.clone(),
            control,
            config.clone(),
            stream_ready,
        ));
        Ok(VideoProducer {
            shared,
            upload,
            disk_thread,
            stream: config.stream,
        })
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Sets the tracks that frames belong to. Needed before the first frame; calling it again
    /// with different tracks (a codec change) ends the current fragment, and the upload starts a
    /// new connection with the new header at the next key frame.
    pub fn set_tracks(&self, tracks: Vec<Track>) -> Result<(), Error> {
        let mut st = self.shared.lock();
        if let Some(f) = &st.fragmenter
            && f.header().tracks == tracks
        {
            return Ok(());
        }
        let header = Arc::new(StreamHeader::new(tracks)?);
        st.complete_open(now_ms());
        match st.fragmenter.as_mut() {
            Some(f) => f.set_header(header),
            None => st.fragmenter = Some(Fragmenter::new(header)),
        }
        drop(st);
        self.shared.changed.notify_one();
        Ok(())
    }

    /// Adds one frame. Never blocks on the network: the backlog takes it (and its bounds drop
    /// the oldest fragments, with an event, when the upload cannot keep up).
    pub fn put_frame(&self, frame: &MediaFrame) -> Result<(), Error> {
        let mut events = Vec::new();
        {
            let mut st = self.shared.lock();
            if let Some(fatal) = &st.fatal {
                return Err(Error::Closed(fatal.clone()));
            }
            if st.input_done {
                return Err(Error::Closed("the producer is finishing".to_owned()));
            }
            let Some(fragmenter) = st.fragmenter.as_mut() else {
                return Err(Error::Input(
                    "set_tracks must come before the first frame".to_owned(),
                ));
            };
            let pushed = fragmenter.push(frame)?;
            let header = fragmenter.header().clone();
            if let Some(repair) = pushed.repair {
                st.stats.timestamp_repairs += 1;
                events.push(Event::TimestampRepaired(repair));
            }
            if pushed.dropped_waiting_for_key {
                st.stats.frames_dropped_waiting_for_key_frame += 1;
            }
            let now = now_ms();
            if let Some(chunk) = pushed.chunk {
                match pushed.started {
                    Some(timecode) => {
                        st.complete_open(now);
                        st.backlog.start(timecode, header, chunk, now);
                        st.stats.fragments_started += 1;
                    }
                    None => {
                        st.backlog.append(chunk);
                    }
                }
            }
            events.extend(st.enforce_bounds(now));
            if st.disk.is_some() {
                st.backlog.evict();
            }
            st.refresh_backlog_stats();
        }
        self.shared.emit(&events);
        self.shared.changed.notify_one();
        Ok(())
    }

    /// Ends the fragment being built (normally the next key frame does); for sources that pause.
    pub fn end_fragment(&self) {
        let mut st = self.shared.lock();
        if let Some(f) = st.fragmenter.as_mut() {
            f.end_fragment();
        }
        st.complete_open(now_ms());
        drop(st);
        self.shared.changed.notify_one();
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// Ends the input and waits until every fragment is persisted (or dropped), or `timeout`.
    /// A fatal error during the upload is returned here.
    pub async fn finish(mut self, timeout: Option<Duration>) -> Result<Summary, Error> {
        {
            let mut st = self.shared.lock();
            st.complete_open(now_ms());
            st.input_done = true;
        }
        self.shared.changed.notify_one();
        let wait = async {
            loop {
                let progressed = self.shared.progress.notified();
                {
                    let st = self.shared.lock();
                    if let Some(fatal) = &st.fatal {
                        return Err(Error::Closed(fatal.clone()));
                    }
                    if st.backlog.is_empty() {
                        return Ok(());
                    }
                }
                if self.upload.is_finished() {
                    return Err(Error::Closed(
                        "the upload stopped with fragments left".to_owned(),
                    ));
                }
                tokio::select! {
                    () = progressed => {}
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        };
        let result = match timeout {
            Some(t) => tokio::time::timeout(t, wait)
                .await
                .map_err(|_| Error::Timeout("uploading the remaining fragments".to_owned(), t))
                .and_then(|r| r),
            None => wait.await,
        };
        self.shutdown();
        result.map(|()| Summary {
            stats: self.shared.lock().stats.clone(),
        })
    }

    fn shutdown(&mut self) {
        self.upload.abort();
        // Dropping the sender ends the disk thread once it has done every write and delete.
        self.shared.lock().disk = None;
        if let Some(t) = self.disk_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for VideoProducer {
    fn drop(&mut self) {
        self.upload.abort();
    }
}

/// The disk thread: writes completed fragments durably, deletes finished ones, in order.
fn disk_thread(shared: &Shared, disk: &DiskBuffer, rx: &std_mpsc::Receiver<DiskCommand>) {
    while let Ok(cmd) = rx.recv() {
        match cmd {
            DiskCommand::Write {
                seq,
                timecode_ms,
                header,
                chunks,
                completed_ms,
            } => {
                let result = disk.write(seq, timecode_ms, &header, &chunks, completed_ms);
                let mut st = shared.lock();
                match result {
                    Ok(()) if st.backlog.get(seq).is_some() => {
                        st.backlog.mark_on_disk(seq);
                        st.backlog.evict();
                        st.refresh_backlog_stats();
                    }
                    // Persisted (or dropped) while being written.
                    Ok(()) => disk.delete(seq),
                    Err(e) => {
                        drop(st);
                        shared.emit(&[Event::Error {
                            message: format!(
                                "{e}; the fragment stays in memory only and is lost if the producer stops before it is persisted"
                            ),
                            will_retry: true,
                        }]);
                    }
                }
            }
            DiskCommand::Delete(seq) => disk.delete(seq),
        }
    }
}
