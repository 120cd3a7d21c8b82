//! PutMedia ingest: MKV in, fragments stored, acks out.
//!
//! [`Ingest`] is the whole upload's state machine, free of HTTP: it is fed body bytes
//! ([`Ingest::push`]), told when the body ends ([`Ingest::finish`]), and reports through an
//! [`AckSink`]. The HTTP side (`api/video/put_media.rs`) runs [`run`], which feeds it from the
//! request body while the response streams the acks back (full duplex).
//!
//! How an upload becomes fragments (`shared/reference/aws-protocol.md` A.3, A.4):
//! - Each MKV cluster is one fragment, stored as one record ([`super::fragment`]). The record is
//!   opened at the cluster's first frame and every frame is pushed to it as it is parsed, so live
//!   GetMedia readers get frames while the fragment is still arriving. It is committed at the
//!   cluster's end; PERSISTED is acked once the commit is durable (after fdatasync).
//! - The segment's Info and Tracks are stored once per session as a stream blob, and reused when
//!   a later session sends identical ones (a reconnecting producer).
//! - Producer timestamps: ABSOLUTE timecodes are epoch time in timecode-scale units; RELATIVE
//!   ones are offsets from `x-amzn-producer-start-timestamp`, or from the time the request
//!   arrived when the header is missing. With no `x-amzn-fragment-timecode-type` at all (ffmpeg
//!   sends none), timecodes are taken as RELATIVE to the request's arrival, so an ffmpeg upload
//!   gets real wall-clock timestamps.
//! - A fragment-level error (timecode going back, no key frame first, an undeclared track, too
//!   big, too long) gets an ERROR ack; that fragment is dropped and the upload goes on with the
//!   next cluster. A stream-level error (malformed MKV, too many tracks, a failed write) gets an
//!   ERROR ack and ends the upload: the parser cannot find its footing again.
//! - A fragment resent after a lost ack (same producer timestamp, same content as a stored
//!   fragment) is not stored twice: it is acked PERSISTED with the original fragment number. Such
//!   a candidate is held in memory until its end instead of being streamed to live readers.
//! - Retention 0 (live only): fragments go to live readers and are then dropped; nothing is
//!   written and no PERSISTED ack is sent.
//! - An upload that sends no data gets an IDLE ack every 3 s; after 30 s without data the
//!   response just ends, as AWS documents it (no ErrorId exists for this). A connection past
//!   its time limit (45 min in `--limits aws` mode) ends with an ERROR ack (4003). As with
//!   every early end, the fragment in progress is dropped and the finished ones are persisted.
//!   Both times are [`IngestLimits`], set by the server's configuration.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use timeshard_parser::mkv::{
    self, MkvError, MkvErrorKind, MkvEvent, MkvReader, SegmentInfo, Track,
};
use timeshard_storage::{
    Appended, OpenRecord, Position, ReadLimits, SequenceNumber, ShardUid, Store, StoreError,
    TimeKind,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::fragment::{
    FragmentKey, FrameEntry, Session, StoredTag, TagData, Trailer, duration_ms, fragment_number,
    units_to_ms,
};

// ---------------------------------------------------------------------------------------------
// Acks
// ---------------------------------------------------------------------------------------------

/// The `EventType` of an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckEvent {
    Buffering,
    Received,
    Persisted,
    Error,
    Idle,
}

impl AckEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AckEvent::Buffering => "BUFFERING",
            AckEvent::Received => "RECEIVED",
            AckEvent::Persisted => "PERSISTED",
            AckEvent::Error => "ERROR",
            AckEvent::Idle => "IDLE",
        }
    }
}

/// The PutMedia error ids (`shared/reference/aws-protocol.md` A.4) this server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    StreamReadError,
    FragmentTooLarge,
    FragmentTooLong,
    ConnectionTooLong,
    TimecodeWentBack,
    InvalidMkv,
    InvalidProducerTimestamp,
    StreamNotActive,
    MetadataLimit,
    UndeclaredTrack,
    TrackWithoutFrames,
    TooManyTracks,
    Internal,
    PersistFailed,
    /// A newer PutMedia connection to the same stream took over (AWS allows one per stream).
    ConnectionReplaced,
}

impl AckError {
    pub fn id(self) -> u32 {
        match self {
            AckError::StreamReadError | AckError::ConnectionReplaced => 4000,
            AckError::FragmentTooLarge => 4001,
            AckError::FragmentTooLong => 4002,
            AckError::ConnectionTooLong => 4003,
            AckError::TimecodeWentBack => 4004,
            AckError::InvalidMkv => 4006,
            AckError::InvalidProducerTimestamp => 4007,
            AckError::StreamNotActive => 4008,
            AckError::MetadataLimit => 4009,
            AckError::UndeclaredTrack => 4010,
            AckError::TrackWithoutFrames => 4011,
            AckError::TooManyTracks => 4012,
            AckError::Internal => 5000,
            AckError::PersistFailed => 5001,
        }
    }

    /// The `ErrorCode` string sent beside the id (clients key on the id; this is for people).
    pub fn code(self) -> &'static str {
        match self {
            AckError::StreamReadError => "STREAM_READ_ERROR",
            AckError::FragmentTooLarge => "MAX_FRAGMENT_SIZE_REACHED",
            AckError::FragmentTooLong => "MAX_FRAGMENT_DURATION_REACHED",
            AckError::ConnectionTooLong => "MAX_CONNECTION_DURATION_REACHED",
            AckError::TimecodeWentBack => "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS",
            AckError::InvalidMkv => "INVALID_MKV_DATA",
            AckError::InvalidProducerTimestamp => "INVALID_PRODUCER_TIMESTAMP",
            AckError::StreamNotActive => "STREAM_NOT_ACTIVE",
            AckError::MetadataLimit => "FRAGMENT_METADATA_LIMIT_REACHED",
            AckError::UndeclaredTrack => "TRACK_NUMBER_MISMATCH",
            AckError::TrackWithoutFrames => "FRAMES_MISSING_FOR_TRACK",
            AckError::TooManyTracks => "MORE_THAN_ALLOWED_TRACKS_FOUND",
            AckError::Internal => "INTERNAL_ERROR",
            AckError::PersistFailed => "ARCHIVAL_ERROR",
            AckError::ConnectionReplaced => "CONNECTION_REPLACED",
        }
    }
}

/// One ack, sent as one line of JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub event: AckEvent,
    /// The cluster `Timecode` exactly as the producer wrote it.
    pub timecode: Option<u64>,
    pub fragment_number: Option<String>,
    pub error: Option<AckError>,
}

impl Ack {
    fn new(event: AckEvent, timecode: Option<u64>, fragment_number: Option<String>) -> Ack {
        Ack {
            event,
            timecode,
            fragment_number,
            error: None,
        }
    }

    fn error(error: AckError, timecode: Option<u64>, fragment_number: Option<String>) -> Ack {
        Ack {
            event: AckEvent::Error,
            timecode,
            fragment_number,
            error: Some(error),
        }
    }

    /// `{"EventType":"PERSISTED","FragmentTimecode":1663277247152,"FragmentNumber":"9134..."}`
    /// and a newline: the key names and value types of AWS's acks (`FragmentNumber` a quoted
    /// string, `FragmentTimecode` and `ErrorId` bare integers).
    pub fn to_line(&self) -> Bytes {
        let mut s = format!("{{\"EventType\":\"{}\"", self.event.as_str());
        if let Some(tc) = self.timecode {
            s.push_str(&format!(",\"FragmentTimecode\":{tc}"));
        }
        if let Some(n) = &self.fragment_number {
            s.push_str(&format!(",\"FragmentNumber\":\"{n}\""));
        }
        if let Some(e) = self.error {
            s.push_str(&format!(
                ",\"ErrorId\":{},\"ErrorCode\":\"{}\"",
                e.id(),
                e.code()
            ));
        }
        s.push_str("}\n");
        Bytes::from(s)
    }
}

/// Where acks go. Sending never waits: a client that does not read its acks (ffmpeg) must not
/// stall ingest, so when the client is that far behind, acks are dropped (and counted).
pub trait AckSink: Send {
    fn send(&mut self, ack: Ack);
}

/// Collects acks in memory (tests).
impl AckSink for Vec<Ack> {
    fn send(&mut self, ack: Ack) {
        self.push(ack);
    }
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// `x-amzn-fragment-timecode-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimecodeType {
    Absolute,
    Relative,
}

/// What the request's headers say about timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub timecode_type: TimecodeType,
    /// Epoch ms that RELATIVE timecodes count from.
    pub start_ms: i64,
}

/// Per-fragment and per-connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestLimits {
    pub max_fragment_bytes: u64,
    pub max_fragment_duration_ms: u64,
    pub max_tracks: usize,
    pub max_tags: usize,
    pub max_tag_name_bytes: usize,
    pub max_tag_value_bytes: usize,
    /// Every declared track must have a frame in every fragment (4011).
    pub every_track_needs_frames: bool,
    /// How long one connection may last; it then ends with an ERROR ack (4003).
    pub max_connection: Option<Duration>,
    /// How long an upload may go without body data before the server ends it: the response
    /// simply ends, as AWS documents it (no ERROR ack), the fragment in progress is dropped and
    /// finished ones are kept.
    pub idle_timeout: Duration,
    /// How often an IDLE ack is sent while no body data arrives.
    pub idle_ack_every: Duration,
}

impl IngestLimits {
    /// Only what protects the server: fragments fit a storage record, tags stay small.
    pub fn self_hosted() -> IngestLimits {
        IngestLimits {
            max_fragment_bytes: 60 << 20,
            // The int16 block timecodes reach ~32.7 s at the default 1 ms scale; a longer
            // fragment is possible with a coarser scale, and harmless.
            max_fragment_duration_ms: 10 * 60 * 1000,
            max_tracks: 3,
            max_tags: 100,
            max_tag_name_bytes: 1024,
            max_tag_value_bytes: 64 << 10,
            every_track_needs_frames: false,
            max_connection: None,
            idle_timeout: IDLE_TIMEOUT,
            idle_ack_every: IDLE_ACK_EVERY,
        }
    }

    /// AWS's PutMedia quotas (`shared/reference/aws-protocol.md` A.5).
    pub fn aws() -> IngestLimits {
        IngestLimits {
            max_fragment_bytes: 50_000_000,
            max_fragment_duration_ms: 10_000,
            max_tracks: 3,
            max_tags: 10,
            max_tag_name_bytes: 128,
            max_tag_value_bytes: 256,
            every_track_needs_frames: true,
            max_connection: Some(AWS_MAX_CONNECTION),
            idle_timeout: IDLE_TIMEOUT,
            idle_ack_every: IDLE_ACK_EVERY,
        }
    }

    /// Ends uploads after `timeout` without data. IDLE acks stay 3 s apart, or come at half the
    /// timeout when that is shorter, so a client always gets one before the upload ends.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> IngestLimits {
        self.idle_timeout = timeout;
        self.idle_ack_every = IDLE_ACK_EVERY
            .min(timeout / 2)
            .max(Duration::from_millis(1));
        self
    }
}

/// AWS's defaults (`shared/reference/aws-protocol.md` A.4, A.5): an IDLE ack every 3 s while no
/// data arrives, for up to 30 s; a connection lasts at most 45 minutes.
pub const IDLE_ACK_EVERY: Duration = Duration::from_secs(3);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const AWS_MAX_CONNECTION: Duration = Duration::from_secs(45 * 60);

/// The stream an upload goes to.
#[derive(Debug, Clone)]
pub struct Target {
    pub stream_id: u64,
    pub shard: ShardUid,
    /// Retention 0: fragments reach live readers and are dropped.
    pub live_only: bool,
}

// ---------------------------------------------------------------------------------------------
// One connection per stream
// ---------------------------------------------------------------------------------------------

/// The PutMedia connections in progress, one per stream: a new one for a stream replaces the
/// old (AWS accepts the newest), which matters when a producer reconnects while its previous
/// connection is still half open.
#[derive(Debug, Default)]
pub struct Uploads {
    active: Mutex<HashMap<u64, (u64, Arc<Notify>)>>,
    next: std::sync::atomic::AtomicU64,
}

/// Held by an upload while it runs; `replaced` fires when a newer upload takes the stream.
#[derive(Debug)]
pub struct UploadSlot {
    uploads: Arc<Uploads>,
    stream_id: u64,
    id: u64,
    pub replaced: Arc<Notify>,
}

impl Uploads {
    pub fn claim(self: &Arc<Self>, stream_id: u64) -> UploadSlot {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let replaced = Arc::new(Notify::new());
        let previous = self.lock().insert(stream_id, (id, replaced.clone()));
        if let Some((_, old)) = previous {
            old.notify_one();
        }
        UploadSlot {
            uploads: self.clone(),
            stream_id,
            id,
            replaced,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (u64, Arc<Notify>)>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut active = self.uploads.lock();
        if active
            .get(&self.stream_id)
            .is_some_and(|(id, _)| *id == self.id)
        {
            active.remove(&self.stream_id);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The state machine
// ---------------------------------------------------------------------------------------------

/// Why an upload stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped(pub AckError);

/// The fragment being received.
struct Current {
    /// The cluster `Timecode` as sent (for acks).
    raw_timecode: u64,
    /// On the absolute scale (RELATIVE start added), in timecode units.
    abs_timecode: i128,
    producer_ts_ms: i64,
    /// `None` until the first frame; also `None` for a held duplicate candidate.
    record: Option<OpenRecord>,
    /// A stored fragment with the same producer timestamp exists: hold the frames and compare.
    candidate: Option<Vec<u64>>,
    held: Vec<u8>,
    frames: Vec<FrameEntry>,
    media_bytes: u64,
    min_tc: i64,
    max_tc: i64,
    tracks_seen: Vec<u64>,
    tags: Vec<StoredTag>,
    /// See [`super::fragment::fragment_number`]; 0 when the fragment will be stored.
    live_number: u64,
}

/// A commit in flight, in upload order.
struct Committing {
    raw_timecode: u64,
    fragment_number: String,
    done: JoinHandle<Result<Appended, StoreError>>,
}

/// One PutMedia upload. See the module docs.
pub struct Ingest {
    store: Store,
    target: Target,
    timing: Timing,
    limits: IngestLimits,
    reader: MkvReader,
    info: SegmentInfo,
    tracks: Option<Vec<Track>>,
    /// The stored session blob for the current Info + Tracks.
    session: Option<(u64, Session)>,
    current: Option<Current>,
    /// After a fragment-level error: drop frames until the next cluster.
    skipping: bool,
    /// Tags seen since the last cluster; they belong to the next fragment.
    pending_tags: Vec<StoredTag>,
    /// The previous fragment's cluster timecode in ns (absolute), for the "never back" rule.
    last_cluster_ns: Option<i128>,
    committing: VecDeque<Committing>,
    /// The last live-only fragment number handed out.
    live_number: u64,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("target", &self.target)
            .field("timing", &self.timing)
            .field("session", &self.session.as_ref().map(|s| s.0))
            .field("committing", &self.committing.len())
            .finish_non_exhaustive()
    }
}

impl Ingest {
    pub fn new(store: Store, target: Target, timing: Timing, limits: IngestLimits) -> Ingest {
        Ingest {
            store,
            target,
            timing,
            limits,
            reader: MkvReader::new(),
            info: SegmentInfo::default(),
            tracks: None,
            session: None,
            current: None,
            skipping: false,
            pending_tags: Vec::new(),
            last_cluster_ns: None,
            committing: VecDeque::new(),
            live_number: 0,
        }
    }

    /// Feeds body bytes and handles every event they complete.
    pub async fn push(&mut self, data: &[u8], acks: &mut dyn AckSink) -> Result<(), Stopped> {
        self.reader.push(data);
        loop {
            let event = self.reader.next_event();
            match self.on_parsed(event, acks).await? {
                true => continue,
                false => return Ok(()),
            }
        }
    }

    /// The body ended: drains the parser, stores the last fragment and waits for every commit.
    pub async fn finish(&mut self, acks: &mut dyn AckSink) -> Result<(), Stopped> {
        loop {
            let event = self.reader.finish();
            if !self.on_parsed(event, acks).await? {
                break;
            }
        }
        // An unknown-size cluster still open at the end of input is closed by the parser; if
        // one is somehow left, it ends here.
        self.end_fragment(acks).await?;
        self.drain_commits(acks, true).await
    }

    /// Stops after an error: the fragment in progress is dropped, finished ones still persist.
    pub async fn abandon(&mut self, acks: &mut dyn AckSink) {
        self.drop_current();
        let _ = self.drain_commits(acks, true).await;
    }

    /// Sends the acks of commits that are done, without waiting; with `wait`, waits for all.
    pub async fn drain_commits(
        &mut self,
        acks: &mut dyn AckSink,
        wait: bool,
    ) -> Result<(), Stopped> {
        while let Some(front) = self.committing.front() {
            if !wait && !front.done.is_finished() {
                break;
            }
            let Some(c) = self.committing.pop_front() else {
                break;
            };
            self.commit_done(c.raw_timecode, c.fragment_number, c.done.await, acks)?;
        }
        Ok(())
    }

    /// Waits for the oldest commit in flight, if any (for a `select!` beside the body).
    pub async fn next_commit(&mut self, acks: &mut dyn AckSink) -> Result<(), Stopped> {
        let Some(front) = self.committing.front_mut() else {
            return std::future::pending().await;
        };
        let result = (&mut front.done).await;
        let Some(c) = self.committing.pop_front() else {
            return Ok(());
        };
        self.commit_done(c.raw_timecode, c.fragment_number, result, acks)
    }

    pub fn has_commits(&self) -> bool {
        !self.committing.is_empty()
    }

    fn commit_done(
        &mut self,
        raw_timecode: u64,
        fragment_number: String,
        result: Result<Result<Appended, StoreError>, tokio::task::JoinError>,
        acks: &mut dyn AckSink,
    ) -> Result<(), Stopped> {
        match result {
            Ok(Ok(_)) => {
                acks.send(Ack::new(
                    AckEvent::Persisted,
                    Some(raw_timecode),
                    Some(fragment_number),
                ));
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::error!(stream = self.target.stream_id, error = %e, "storing a fragment failed");
                acks.send(Ack::error(
                    AckError::PersistFailed,
                    Some(raw_timecode),
                    Some(fragment_number),
                ));
                Err(Stopped(AckError::PersistFailed))
            }
            Err(e) => {
                tracing::error!(error = %e, "fragment commit task failed");
                acks.send(Ack::error(AckError::Internal, Some(raw_timecode), None));
                Err(Stopped(AckError::Internal))
            }
        }
    }

    /// Handles one parser result; `Ok(false)` when the parser needs more input.
    async fn on_parsed(
        &mut self,
        event: Result<Option<MkvEvent>, MkvError>,
        acks: &mut dyn AckSink,
    ) -> Result<bool, Stopped> {
        match event {
            Ok(Some(event)) => {
                self.on_event(event, acks).await?;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                tracing::info!(stream = self.target.stream_id, error = %e, "PutMedia body is not valid MKV");
                let tc = self.current.as_ref().map(|c| c.raw_timecode);
                self.drop_current();
                let error = match e.kind {
                    MkvErrorKind::TooLarge => AckError::FragmentTooLarge,
                    _ => AckError::InvalidMkv,
                };
                acks.send(Ack::error(error, tc, None));
                Err(Stopped(error))
            }
        }
    }

    async fn on_event(&mut self, event: MkvEvent, acks: &mut dyn AckSink) -> Result<(), Stopped> {
        match event {
            MkvEvent::Header(_) => {
                // A new document: a new Info and Tracks follow (producers that restart their
                // muxer on the same connection, or GetMedia output uploaded again).
                self.end_fragment(acks).await?;
                self.info = SegmentInfo::default();
                self.tracks = None;
                self.session = None;
            }
            MkvEvent::SegmentStart { .. } | MkvEvent::SegmentEnd => {}
            MkvEvent::Info(info) => {
                if info.timecode_scale == 0 {
                    acks.send(Ack::error(AckError::InvalidMkv, None, None));
                    return Err(Stopped(AckError::InvalidMkv));
                }
                self.info = info;
                self.session = None;
            }
            MkvEvent::Tracks(tracks) => {
                if tracks.len() > self.limits.max_tracks || tracks.is_empty() {
                    let error = if tracks.is_empty() {
                        AckError::InvalidMkv
                    } else {
                        AckError::TooManyTracks
                    };
                    acks.send(Ack::error(error, None, None));
                    return Err(Stopped(error));
                }
                self.tracks = Some(tracks);
                self.session = None;
            }
            MkvEvent::Tags(tags) => {
                for t in tags {
                    // The AWS_ prefix is reserved: the producer's end-of-fragment marker and
                    // any fragment metadata of ours coming back in re-uploaded GetMedia output.
                    if t.name.starts_with("AWS_") {
                        continue;
                    }
                    if t.name.len() > self.limits.max_tag_name_bytes
                        || tag_len(&t.value) > self.limits.max_tag_value_bytes
                        || self.pending_tags.len() >= self.limits.max_tags
                    {
                        acks.send(Ack::error(AckError::MetadataLimit, None, None));
                        self.pending_tags.clear();
                        // The tags are dropped; the fragments they were for are not.
                        return Ok(());
                    }
                    self.pending_tags.push(StoredTag {
                        name: t.name,
                        value: match t.value {
                            mkv::TagValue::String(s) => TagData::String(s),
                            mkv::TagValue::Binary(b) => TagData::Binary(b),
                        },
                    });
                }
            }
            MkvEvent::ClusterStart { timecode } => {
                self.end_fragment(acks).await?;
                self.start_fragment(timecode, acks).await?;
            }
            MkvEvent::Frame(frame) => self.on_frame(frame, acks).await?,
            MkvEvent::ClusterEnd => self.end_fragment(acks).await?,
        }
        Ok(())
    }

    /// The stored session for the current Info and Tracks, storing it on first use.
    async fn session(&mut self) -> Result<(u64, Session), Stopped> {
        if let Some(s) = &self.session {
            return Ok(s.clone());
        }
        let Some(tracks) = &self.tracks else {
            return Err(Stopped(AckError::InvalidMkv));
        };
        let mut header = Vec::new();
        mkv::write::info(&mut header, &self.info);
        mkv::write::tracks(&mut header, tracks);
        let session = Session {
            timecode_scale: self.info.timecode_scale,
            header_mkv: Bytes::from(header),
        };
        let encoded = session.encode();
        let store = self.store.clone();
        let stream_id = self.target.stream_id;
        let latest = tokio::task::spawn_blocking(move || store.latest_blob_blocking(stream_id))
            .await
            .map_err(|_| Stopped(AckError::Internal))?
            .map_err(|e| self.internal(&e))?;
        let id = match latest {
            Some((id, blob)) if blob == encoded => id,
            _ => self
                .store
                .put_blob(stream_id, encoded)
                .await
                .map_err(|e| self.internal(&e))?,
        };
        self.session = Some((id, session.clone()));
        Ok((id, session))
    }

    /// A storage error as the ack error that ends the upload: the stream deleted under it is
    /// 4008 (stream not active, which producers do not retry); anything else is internal.
    fn internal(&self, e: &StoreError) -> Stopped {
        match e {
            StoreError::StreamNotFound(_) | StoreError::ShardNotFound(_) => {
                tracing::info!(
                    stream = self.target.stream_id,
                    "PutMedia stream was deleted during the upload"
                );
                Stopped(AckError::StreamNotActive)
            }
            _ => {
                tracing::error!(stream = self.target.stream_id, error = %e, "PutMedia storage error");
                Stopped(AckError::Internal)
            }
        }
    }

    async fn start_fragment(
        &mut self,
        timecode: u64,
        acks: &mut dyn AckSink,
    ) -> Result<(), Stopped> {
        self.skipping = false;
        let (_, session) = match self.session().await {
            Ok(s) => s,
            Err(Stopped(AckError::InvalidMkv)) => {
                // A cluster before any Tracks.
                acks.send(Ack::error(AckError::InvalidMkv, Some(timecode), None));
                return Err(Stopped(AckError::InvalidMkv));
            }
            Err(e) => {
                acks.send(Ack::error(e.0, Some(timecode), None));
                return Err(e);
            }
        };
        let scale = i128::from(session.timecode_scale);
        let abs_timecode = match self.timing.timecode_type {
            TimecodeType::Absolute => i128::from(timecode),
            TimecodeType::Relative => {
                i128::from(self.timing.start_ms) * 1_000_000 / scale + i128::from(timecode)
            }
        };
        let producer_ts_ms = abs_timecode * scale / 1_000_000;
        let Ok(producer_ts_ms) = i64::try_from(producer_ts_ms) else {
            acks.send(Ack::error(
                AckError::InvalidProducerTimestamp,
                Some(timecode),
                None,
            ));
            self.skipping = true;
            return Ok(());
        };
        // A cluster may not start before the previous one (4004). Not "before the previous
        // fragment's last frame": muxers interleaving audio (ffmpeg) end a cluster with audio
        // frames later than the next cluster's first video frame.
        if let Some(last) = self.last_cluster_ns
            && abs_timecode * scale < last
        {
            acks.send(Ack::error(AckError::TimecodeWentBack, Some(timecode), None));
            self.skipping = true;
            return Ok(());
        }
        // A fragment resent after a lost ack has the producer timestamp of a stored one.
        let candidate = if self.target.live_only {
            None
        } else {
            self.stored_at(producer_ts_ms).await
        };
        acks.send(Ack::new(AckEvent::Buffering, Some(timecode), None));
        let live_number = if self.target.live_only {
            let clock_us = u64::try_from(self.store.now_ms()).unwrap_or(0) * 1000;
            self.live_number = (self.live_number + 1).max(clock_us);
            self.live_number
        } else {
            0
        };
        self.current = Some(Current {
            raw_timecode: timecode,
            abs_timecode,
            producer_ts_ms,
            record: None,
            candidate,
            held: Vec::new(),
            frames: Vec::new(),
            media_bytes: 0,
            min_tc: i64::MAX,
            max_tc: i64::MIN,
            tracks_seen: Vec::new(),
            tags: std::mem::take(&mut self.pending_tags),
            live_number,
        });
        Ok(())
    }

    /// The offsets of stored fragments with exactly this producer timestamp (producer time is
    /// not unique: a producer may restart its clock), or `None` when there are none.
    async fn stored_at(&self, producer_ts_ms: i64) -> Option<Vec<u64>> {
        let found = self
            .store
            .time_range(
                self.target.shard,
                TimeKind::Producer,
                producer_ts_ms,
                producer_ts_ms,
                None,
                MAX_RESEND_CANDIDATES,
            )
            .await
            .ok()?;
        let offsets: Vec<u64> = found
            .into_iter()
            .filter(|r| r.producer_ts_ms == producer_ts_ms)
            .map(|r| r.offset)
            .collect();
        (!offsets.is_empty()).then_some(offsets)
    }

    async fn on_frame(&mut self, frame: mkv::Frame, acks: &mut dyn AckSink) -> Result<(), Stopped> {
        if self.skipping {
            return Ok(());
        }
        let Some(cur) = self.current.as_mut() else {
            acks.send(Ack::error(AckError::InvalidMkv, None, None));
            return Err(Stopped(AckError::InvalidMkv));
        };
        let declared = self
            .tracks
            .as_ref()
            .is_some_and(|t| t.iter().any(|t| t.number == frame.track));
        let fail = if !declared {
            Some(AckError::UndeclaredTrack)
        } else if cur.frames.is_empty() && !frame.key {
            // A fragment must start on a key frame, so a reader can decode it on its own.
            Some(AckError::InvalidMkv)
        } else {
            None
        };
        let block_len = mkv::write::simple_block_len(&frame) as u64;
        let tc = i64::from(frame.timecode);
        let (min_tc, max_tc) = (cur.min_tc.min(tc), cur.max_tc.max(tc));
        let scale = self.info.timecode_scale;
        let fail = fail.or_else(|| {
            if cur.media_bytes + block_len > self.limits.max_fragment_bytes {
                Some(AckError::FragmentTooLarge)
            } else if units_to_ms(i128::from(max_tc - min_tc), scale)
                > self.limits.max_fragment_duration_ms as i64
            {
                Some(AckError::FragmentTooLong)
            } else {
                None
            }
        });
        if let Some(error) = fail {
            let tc = cur.raw_timecode;
            self.drop_current();
            self.skipping = true;
            acks.send(Ack::error(error, Some(tc), None));
            return Ok(());
        }
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        let mut block = Vec::with_capacity(block_len as usize);
        mkv::write::simple_block(&mut block, &frame);
        let entry = FrameEntry {
            offset: cur.media_bytes as u32,
            len: block.len() as u32,
            track: frame.track,
            timecode: frame.timecode,
            key: frame.key,
        };
        if cur.candidate.is_some() {
            cur.held.extend_from_slice(&block);
        } else {
            if cur.record.is_none() {
                let key = FragmentKey {
                    session: self.session.as_ref().map_or(0, |s| s.0),
                    cluster_timecode: cur.abs_timecode.max(0) as u64,
                    duration_ms: 0,
                    media_bytes: 0,
                    frames: 0,
                    live_number: cur.live_number,
                };
                let record = self
                    .store
                    .begin_record(self.target.shard, Some(cur.producer_ts_ms), key.encode(), 0)
                    .await;
                match record {
                    Ok(r) => cur.record = Some(r),
                    Err(e) => {
                        let tc = cur.raw_timecode;
                        let stop = self.internal(&e);
                        self.drop_current();
                        acks.send(Ack::error(stop.0, Some(tc), None));
                        return Err(stop);
                    }
                }
            }
            if let Some(record) = &cur.record
                && let Err(e) = record.push(Bytes::from(block))
            {
                let tc = cur.raw_timecode;
                tracing::warn!(error = %e, "fragment over the record size limit");
                self.drop_current();
                self.skipping = true;
                acks.send(Ack::error(AckError::FragmentTooLarge, Some(tc), None));
                return Ok(());
            }
        }
        cur.media_bytes += block_len;
        cur.min_tc = min_tc;
        cur.max_tc = max_tc;
        if !cur.tracks_seen.contains(&frame.track) {
            cur.tracks_seen.push(frame.track);
        }
        cur.frames.push(entry);
        Ok(())
    }

    /// Ends the fragment in progress, if any: RECEIVED, then store it (PERSISTED comes when
    /// the commit is durable).
    async fn end_fragment(&mut self, acks: &mut dyn AckSink) -> Result<(), Stopped> {
        let Some(mut cur) = self.current.take() else {
            return Ok(());
        };
        if cur.frames.is_empty() {
            // An empty cluster: nothing to store.
            return Ok(());
        }
        if self.limits.every_track_needs_frames
            && let Some(tracks) = &self.tracks
            && tracks.iter().any(|t| !cur.tracks_seen.contains(&t.number))
        {
            if let Some(r) = cur.record.take() {
                r.abort();
            }
            acks.send(Ack::error(
                AckError::TrackWithoutFrames,
                Some(cur.raw_timecode),
                None,
            ));
            return Ok(());
        }
        let scale = self.info.timecode_scale;
        self.last_cluster_ns = Some(cur.abs_timecode * i128::from(scale));
        let key = FragmentKey {
            session: self.session.as_ref().map_or(0, |s| s.0),
            cluster_timecode: cur.abs_timecode.max(0) as u64,
            duration_ms: duration_ms(&cur.frames, scale),
            media_bytes: cur.media_bytes,
            frames: cur.frames.len() as u32,
            live_number: cur.live_number,
        };
        let trailer = Trailer {
            frames: std::mem::take(&mut cur.frames),
            tags: std::mem::take(&mut cur.tags),
        }
        .encode();

        if let Some(candidates) = cur.candidate.take() {
            let held = Bytes::from(std::mem::take(&mut cur.held));
            let mut original = None;
            for offset in candidates {
                if self.same_as_stored(offset, &held, &trailer).await {
                    original = Some(offset);
                    break;
                }
            }
            if let Some(original) = original {
                let number = SequenceNumber::of_record(self.target.shard, original).to_string();
                acks.send(Ack::new(
                    AckEvent::Received,
                    Some(cur.raw_timecode),
                    Some(number.clone()),
                ));
                acks.send(Ack::new(
                    AckEvent::Persisted,
                    Some(cur.raw_timecode),
                    Some(number),
                ));
                return Ok(());
            }
            // Same time, different content: a fragment of its own.
            let record = self
                .store
                .begin_record(self.target.shard, Some(cur.producer_ts_ms), key.encode(), 0)
                .await
                .map_err(|e| self.internal(&e));
            let record = match record {
                Ok(r) => r,
                Err(stop) => {
                    acks.send(Ack::error(stop.0, Some(cur.raw_timecode), None));
                    return Err(stop);
                }
            };
            if let Err(e) = record.push(held) {
                record.abort();
                let stop = self.internal(&e);
                acks.send(Ack::error(stop.0, Some(cur.raw_timecode), None));
                return Err(stop);
            }
            cur.record = Some(record);
        }
        let Some(record) = cur.record.take() else {
            return Ok(());
        };
        let number = fragment_number(self.target.shard, record.offset(), &key).to_string();
        acks.send(Ack::new(
            AckEvent::Received,
            Some(cur.raw_timecode),
            Some(number.clone()),
        ));
        if let Err(e) = record.push(trailer) {
            record.abort();
            let stop = self.internal(&e);
            acks.send(Ack::error(stop.0, Some(cur.raw_timecode), Some(number)));
            return Err(stop);
        }
        if self.target.live_only {
            // Live readers had every frame; nothing is kept, nothing is PERSISTED.
            record.abort();
            return Ok(());
        }
        let done = tokio::spawn(record.commit_with_key(key.encode()));
        self.committing.push_back(Committing {
            raw_timecode: cur.raw_timecode,
            fragment_number: number,
            done,
        });
        self.drain_commits(acks, false).await
    }

    /// Whether the stored fragment at `offset` has exactly these blocks and this trailer.
    async fn same_as_stored(&self, offset: u64, blocks: &Bytes, trailer: &Bytes) -> bool {
        let Ok(batch) = self
            .store
            .read(
                self.target.shard,
                Position::At(offset),
                ReadLimits::new(1, usize::MAX),
            )
            .await
        else {
            return false;
        };
        let Some(stored) = batch.records.into_iter().find(|r| r.offset == offset) else {
            return false;
        };
        let n = blocks.len();
        stored.payload.len() == n + trailer.len()
            && stored.payload[..n] == blocks[..]
            && stored.payload[n..] == trailer[..]
    }

    fn drop_current(&mut self) {
        if let Some(mut cur) = self.current.take()
            && let Some(record) = cur.record.take()
        {
            record.abort();
        }
    }
}

fn tag_len(v: &mkv::TagValue) -> usize {
    match v {
        mkv::TagValue::String(s) => s.len(),
        mkv::TagValue::Binary(b) => b.len(),
    }
}

// ---------------------------------------------------------------------------------------------
// Driving an upload from an HTTP body
// ---------------------------------------------------------------------------------------------

/// Stored fragments with the same producer timestamp a resend is compared with, at most.
const MAX_RESEND_CANDIDATES: usize = 16;

/// Feeds `body` to an [`Ingest`] until it ends, sending acks to `acks` as it goes. Returns when
/// the upload is over; every fragment it acked RECEIVED has been persisted or reported.
pub async fn run(
    mut ingest: Ingest,
    body: crate::http::Body,
    acks: &mut dyn AckSink,
    slot: &UploadSlot,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut body = read_ahead(body);
    let started = tokio::time::Instant::now();
    let max_connection = ingest.limits.max_connection;
    let connection_deadline = async move {
        match max_connection {
            Some(d) => tokio::time::sleep_until(started + d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(connection_deadline);
    tokio::pin!(shutdown);
    let (idle_timeout, idle_ack_every) = (ingest.limits.idle_timeout, ingest.limits.idle_ack_every);
    let idle_deadline = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle_deadline);
    let mut idle = tokio::time::interval_at(started + idle_ack_every, idle_ack_every);
    loop {
        tokio::select! {
            biased;
            result = ingest.next_commit(acks), if ingest.has_commits() => {
                if result.is_err() {
                    ingest.abandon(acks).await;
                    return;
                }
            }
            () = slot.replaced.notified() => {
                acks.send(Ack::error(AckError::ConnectionReplaced, None, None));
                ingest.abandon(acks).await;
                return;
            }
            () = &mut connection_deadline => {
                acks.send(Ack::error(AckError::ConnectionTooLong, None, None));
                ingest.abandon(acks).await;
                return;
            }
            () = &mut shutdown => {
                // The fragment in progress is dropped (the producer resends it elsewhere or
                // later); finished ones are persisted first.
                acks.send(Ack::error(AckError::StreamReadError, None, None));
                ingest.abandon(acks).await;
                return;
            }
            piece = body.recv() => match piece {
                None | Some(BodyPiece::End) => {
                    if ingest.finish(acks).await.is_err() {
                        ingest.abandon(acks).await;
                    }
                    return;
                }
                Some(BodyPiece::Failed(e)) => {
                    tracing::info!(error = %e, "PutMedia body ended with an error");
                    acks.send(Ack::error(AckError::StreamReadError, None, None));
                    ingest.abandon(acks).await;
                    return;
                }
                Some(BodyPiece::Data(data)) => {
                    idle_deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + idle_timeout);
                    idle.reset();
                    if ingest.push(&data, acks).await.is_err() {
                        ingest.abandon(acks).await;
                        return;
                    }
                }
            },
            // Before the IDLE tick: when both are due, the upload ends without one more IDLE.
            () = &mut idle_deadline => {
                // AWS documents no ErrorId for this: the service just closes the request.
                tracing::info!(stream = ingest.target.stream_id, timeout = ?idle_timeout, "PutMedia upload sent no data; ending it");
                ingest.abandon(acks).await;
                return;
            }
            _ = idle.tick() => acks.send(Ack::new(AckEvent::Idle, None, None)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Session blobs after retention
// ---------------------------------------------------------------------------------------------

/// Removes the stored ingest sessions no fragment refers to any more: those older than the
/// session of each video stream's oldest fragment. The newest session always stays (an upload
/// may be using it). Run after each retention pass.
pub async fn prune_sessions(store: &Store) {
    for meta in store.list_streams() {
        if meta.kind != timeshard_storage::StreamKind::Video {
            continue;
        }
        let Some(info) = store.stream(&meta.name) else {
            continue;
        };
        let Some(shard) = info.shards.first().map(|s| s.uid) else {
            continue;
        };
        let latest = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.latest_blob_blocking(meta.id)).await
        };
        let Ok(Ok(Some((latest, _)))) = latest else {
            continue;
        };
        let oldest = store
            .read(shard, Position::Oldest, ReadLimits::new(1, usize::MAX))
            .await
            .ok()
            .and_then(|b| b.records.into_iter().next())
            .and_then(|r| FragmentKey::decode(&r.key).ok())
            .map(|k| k.session);
        let below = oldest.map_or(latest, |s| s.min(latest));
        match store.prune_blobs(meta.id, below).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(stream = %meta.name, sessions = n, "pruned ingest sessions"),
            Err(e) => {
                tracing::warn!(stream = %meta.name, error = %e, "pruning ingest sessions failed")
            }
        }
    }
}

/// What the request body delivered.
enum BodyPiece {
    Data(Bytes),
    End,
    Failed(String),
}

/// Reads the request body in a task of its own, as fast as it arrives, into a bounded queue.
///
/// Ingest must get every byte the client sent even when the connection then fails: ffmpeg
/// sends its last cluster and the end of the body, reads a little of the response and closes,
/// so the connection resets when the next ack is written, and hyper discards whatever of the
/// body was not read yet. Reading ahead takes the bytes out before that happens. The queue is
/// bounded (in pieces, each at most one HTTP frame), so a slow ingest still pushes back on the
/// client.
fn read_ahead(mut body: crate::http::Body) -> tokio::sync::mpsc::Receiver<BodyPiece> {
    use http_body_util::BodyExt as _;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let piece = match body.frame().await {
                None => BodyPiece::End,
                Some(Err(e)) => BodyPiece::Failed(e.to_string()),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => BodyPiece::Data(data),
                    _ => continue,
                },
            };
            let last = !matches!(piece, BodyPiece::Data(_));
            // A closed queue means ingest is over: stop reading.
            if tx.send(piece).await.is_err() || last {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use timeshard_storage::options::StoreOptions;
    use timeshard_storage::{NewRecord, NewShard, NewStream, StreamKind};

    use super::*;

    fn key(session: u64) -> Bytes {
        FragmentKey {
            session,
            cluster_timecode: 0,
            duration_ms: 1000,
            media_bytes: 1,
            frames: 1,
            live_number: 0,
        }
        .encode()
    }

    #[tokio::test]
    async fn sessions_older_than_the_oldest_fragment_are_pruned_and_the_newest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("opens");
        let info = store
            .create_stream(NewStream::new(
                "video/cam",
                StreamKind::Video,
                3_600_000,
                vec![NewShard::whole_key_range()],
            ))
            .await
            .expect("creates");
        let (id, shard) = (info.meta.id, info.shards[0].uid);
        for n in 1..=3 {
            assert_eq!(
                store.put_blob(id, Bytes::from(vec![n])).await.expect("put"),
                u64::from(n)
            );
        }
        // No fragments: everything but the newest session goes.
        prune_sessions(&store).await;
        assert_eq!(store.blob_blocking(id, 2).expect("reads"), None);
        assert!(store.blob_blocking(id, 3).expect("reads").is_some());

        let s4 = store
            .put_blob(id, Bytes::from_static(b"4"))
            .await
            .expect("put");
        let s5 = store
            .put_blob(id, Bytes::from_static(b"5"))
            .await
            .expect("put");
        store
            .append(
                shard,
                vec![NewRecord {
                    key: key(s4),
                    payload: Bytes::from_static(b"x"),
                    producer_ts_ms: Some(1),
                    flags: 0,
                }],
            )
            .await
            .expect("appends");
        // The oldest fragment refers to session 4: 3 goes, 4 and 5 stay.
        prune_sessions(&store).await;
        assert_eq!(store.blob_blocking(id, 3).expect("reads"), None);
        assert!(store.blob_blocking(id, s4).expect("reads").is_some());
        assert!(store.blob_blocking(id, s5).expect("reads").is_some());
    }
}
