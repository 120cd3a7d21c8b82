//! `timeshard-bench video`: PutMedia ingest and live GetMedia over HTTP/1.1 on loopback.
//!
//! 1. CreateStream for `--streams` video streams (retention `--retention-hours`, so fragments
//!    are stored and acked PERSISTED).
//! 2. With `--readers N`: N GetMedia requests per stream, StartSelector `NOW`, opened before any
//!    media is sent, so each follows the stream live from its first fragment.
//! 3. One PutMedia upload per stream, each on its own HTTP/1.1 connection, as one chunked
//!    request whose body the tool streams while a second task reads the acks (full duplex), as
//!    the KVS producer SDK does. `--pace realtime` sends every frame at its media time (25 fps: a
//!    frame every 40 ms), the streams' start times spread evenly over one fragment so their
//!    fragments do not all end at once, like cameras switched on at different times; `--pace
//!    max` sends as fast as the server takes the bytes.
//!
//! The media is synthetic MKV written with the parser's writer, the layout of the KVS producer
//! (EBML header, Segment of unknown size, Info at 1 ms TimecodeScale, Tracks with one H.264-like
//! video track) except that every Cluster has a known size: the server then sees a fragment's
//! end with its last byte, so the PERSISTED latency measured below is the server's alone, not a
//! wait for the next cluster. Cluster timecodes are ABSOLUTE (`x-amzn-fragment-timecode-type:
//! ABSOLUTE`), wall-clock epoch milliseconds from the upload's start, one cluster per
//! `--fragment-secs`, the first frame of each a key frame. Frame bytes are not H.264 (the server
//! does not decode): each frame starts with a 24-byte marker (a magic, the stream's index, the
//! frame's index in its upload, and when the tool sent it, in nanoseconds since the run
//! started), and the rest is one shared buffer of pseudo-random bytes, so sending a frame costs
//! the client a small header and a reference count.
//!
//! What is measured:
//! - **PERSISTED latency**: from the moment the tool hands the last byte of a cluster to the
//!   connection to the moment the PERSISTED ack for that cluster's timecode arrives (RECEIVED
//!   is measured the same way). Acks are found by byte search in the ack lines, not parsed as
//!   JSON. An ERROR ack, and a cluster whose PERSISTED ack never comes, are counted and fail the
//!   run.
//! - **Live frame latency**: from the moment the tool hands a frame's first bytes (with the
//!   marker) to the PutMedia connection to the moment a GetMedia reader receives the marker.
//!   Readers find markers with memchr's `memmem`, not an MKV parser, and check that each frame
//!   of their stream arrives once, in order, with none missing from their first on.
//! - **Throughput**: bytes of clusters acked PERSISTED, over the time from the first producer's
//!   start to the last PERSISTED ack; fragments per second likewise.
//! - **CPU**: as in `records`, from /proc: the process, and of it the client's threads.
//! - **The disk**: the server's segment fdatasyncs during the run (count, mean, how many over 10
//!   and 50 ms), from the `timeshard_storage_fsync_seconds` histogram of its `/metrics`.
//!
//! A frame handed to the connection more than 10 ms after its time (`--pace realtime`) is
//! counted as late: the client could not keep up, or (usually) the server stopped reading and
//! the connection's buffers filled. Under `--pace max` the producer keeps the connection full,
//! so its latencies include the time a cluster waits behind the ones queued before it (up to
//! 16 body chunks in the tool plus the socket buffers): they measure backlog, not the server.
//!
//! `--warmup-fragments N` reports the first N fragments of each upload apart (the first one
//! stores the upload's session); `--latency-log FILE` writes every PERSISTED ack with the time
//! its cluster was sent, to see whether slow ones come together (a stall) or spread out.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::channel::{Channel, Sender};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use timeshard_parser::mkv::{self, Frame, SegmentInfo, Track, VideoSettings};
use timeshard_storage::options::SyncPolicy;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{
    CLIENT_THREAD_NAME, Conn, CpuSource, CpuUse, Endpoint, Latencies, LocalServer, snippet,
};

/// The start of every frame's data: a magic that pseudo-random filler practically never holds
/// (8 bytes), the stream's index (u32), the frame's index in its upload (u32), and the time the
/// tool sent it in ns since the run started (u64); little-endian.
const MARKER_MAGIC: [u8; 8] = [0xF5, b'T', b'S', b'B', b'F', b'R', b'M', 0x9A];
const MARKER_LEN: usize = 24;
/// Body chunks queued per PutMedia connection before the producer waits for the server.
const BODY_CHUNKS: usize = 16;
/// A frame sent this much after its time counts as late.
const LATE: Duration = Duration::from_millis(10);
/// How long acks may take to finish after a producer's body ends.
const ACK_DRAIN: Duration = Duration::from_secs(60);
/// How long a live reader waits for its stream's last frame once the producer is done.
const LIVE_DRAIN: Duration = Duration::from_secs(10);
/// When producers start, after setup.
const START_DELAY: Duration = Duration::from_millis(500);

/// How producers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Pace {
    /// Every frame at its media time, like a camera.
    Realtime,
    /// Back to back, as fast as the server takes them.
    Max,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct VideoArgs {
    /// Server to load, e.g. http://127.0.0.1:4567. Default: start timeshard in this process on
    /// 127.0.0.1:0 with a fresh data directory under target/bench-data.
    #[arg(long)]
    endpoint: Option<String>,
    /// Video streams, each with its own PutMedia connection.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Bitrate of each stream in Mbit/s, which sets the frame size (unless --frame-bytes does).
    #[arg(long, default_value_t = 4.0)]
    bitrate_mbps: f64,
    /// Frames per second of media time.
    #[arg(long, default_value_t = 25)]
    fps: u32,
    /// Fragment (MKV cluster) length, in seconds of media time.
    #[arg(long, default_value_t = 1.0)]
    fragment_secs: f64,
    /// Seconds of media per stream (realtime), or seconds of sending (max); whole fragments.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Bytes per frame. Default: bitrate / 8 / fps (20000 for 4 Mbit/s at 25 fps).
    #[arg(long)]
    frame_bytes: Option<usize>,
    /// `realtime`: each frame at its media time; `max`: as fast as possible.
    #[arg(long, value_enum, default_value_t = Pace::Realtime)]
    pace: Pace,
    /// Live GetMedia readers (StartSelector NOW) per stream.
    #[arg(long, default_value_t = 0)]
    readers: usize,
    /// Fragments at the start of each upload measured apart from the rest (the first one pays
    /// for storing the upload's session): the latency percentiles are then of the later ones.
    #[arg(long, default_value_t = 0)]
    warmup_fragments: u64,
    /// DataRetentionInHours of the streams the tool creates (PERSISTED needs more than 0).
    #[arg(long, default_value_t = 1)]
    retention_hours: u32,
    /// Name of the server in the output (default: timeshard in-process, else the endpoint).
    #[arg(long)]
    label: Option<String>,
    /// With --endpoint: the server's process id, to report its CPU time from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// In-process server only: sync policy (always, never, batch:<delay>).
    #[arg(long, default_value = "always")]
    sync: SyncPolicy,
    /// In-process server only: directory to create the temporary data directory in.
    #[arg(long)]
    data_parent: Option<PathBuf>,
    /// Write every PERSISTED ack to this CSV file (stream, fragment, when its last byte was
    /// sent in ms since the first producer started, latency in ms), to see when slow ones
    /// happened.
    #[arg(long)]
    latency_log: Option<PathBuf>,
}

pub(crate) fn run(args: &VideoArgs) -> anyhow::Result<()> {
    if args.streams == 0 || args.fps == 0 || args.duration <= 0.0 || args.fragment_secs <= 0.0 {
        bail!("--streams, --fps, --duration and --fragment-secs must be positive");
    }
    let plan = Arc::new(Plan::new(args)?);
    let (endpoint_url, label, cpu, local) = match &args.endpoint {
        Some(url) => (
            url.clone(),
            args.label.clone().unwrap_or_else(|| url.clone()),
            args.server_pid.map_or(CpuSource::None, CpuSource::Pid),
            None,
        ),
        None => {
            let data_dir = LocalServer::new_data_dir(args.data_parent.as_deref(), "video-")?;
            let local = LocalServer::start(data_dir, args.sync)?;
            (
                local.url(),
                args.label
                    .clone()
                    .unwrap_or_else(|| format!("timeshard (in-process, sync {})", args.sync)),
                CpuSource::InProcess,
                Some(local),
            )
        }
    };
    let endpoint = Arc::new(Endpoint::parse(&endpoint_url, false)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(CLIENT_THREAD_NAME)
        .build()
        .context("starting the client runtime")?;
    let outcome = runtime.block_on(load(args, &plan, &endpoint, &label, cpu, local.is_none()));
    drop(runtime);
    if let Some(local) = local {
        drop(local.shutdown());
    }
    let outcome = outcome?;
    if let Some(path) = &args.latency_log {
        write_latency_log(path, &outcome)?;
    }
    let (markdown, result_line, problems) = report(args, &plan, &label, &outcome);
    println!("{markdown}");
    println!("{result_line}");
    if !problems.is_empty() {
        bail!("the run had problems: {}", problems.join("; "));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The media

/// What every upload sends, shared by all producers.
struct Plan {
    frame_bytes: usize,
    frames_per_fragment: u32,
    fragment_ms: u64,
    /// Wall-clock time between frames under `--pace realtime`.
    frame_interval: Duration,
    /// Fragments per stream (realtime); under `max`, the time limit decides.
    fragments: u64,
    pace: Pace,
    duration: Duration,
    /// EBML header, Segment (unknown size), Info, Tracks.
    header: Bytes,
    /// The frame data after the marker: `frame_bytes - MARKER_LEN` pseudo-random bytes.
    filler: Bytes,
    /// Bytes of one SimpleBlock element.
    block_len: usize,
}

impl Plan {
    fn new(args: &VideoArgs) -> anyhow::Result<Plan> {
        let frame_bytes = args
            .frame_bytes
            .unwrap_or_else(|| (args.bitrate_mbps * 1e6 / 8.0 / f64::from(args.fps)) as usize);
        if frame_bytes < MARKER_LEN {
            bail!("frames must be at least {MARKER_LEN} bytes (the marker), not {frame_bytes}");
        }
        let fragment_ms = (args.fragment_secs * 1000.0).round() as u64;
        let frames_per_fragment =
            (f64::from(args.fps) * args.fragment_secs).round().max(1.0) as u32;
        if fragment_ms == 0 || fragment_ms >= i16::MAX as u64 {
            bail!("--fragment-secs must be between 0.001 and 32.7 (int16 block timecodes at 1 ms)");
        }
        let fragments = (args.duration / args.fragment_secs).round().max(1.0) as u64;

        let mut header = Vec::new();
        mkv::write::ebml_header(&mut header);
        mkv::write::segment_start_unknown(&mut header);
        mkv::write::info(
            &mut header,
            &SegmentInfo {
                muxing_app: Some("timeshard-bench".into()),
                writing_app: Some("timeshard-bench".into()),
                ..SegmentInfo::default()
            },
        );
        mkv::write::tracks(
            &mut header,
            &[Track {
                number: 1,
                uid: Some(1),
                track_type: 1,
                codec_id: "V_MPEG4/ISO/AVC".into(),
                // An avcC record's shape (version 1, High profile, level 4.0); never decoded.
                codec_private: Some(Bytes::from_static(&[
                    0x01, 0x64, 0x00, 0x28, 0xFF, 0xE1, 0x00, 0x04, 0x67, 0x64, 0x00, 0x28, 0x01,
                    0x00, 0x02, 0x68, 0xEE,
                ])),
                name: Some("bench".into()),
                default_duration: Some(1_000_000_000 / u64::from(args.fps)),
                video: Some(VideoSettings {
                    pixel_width: 1280,
                    pixel_height: 720,
                }),
                audio: None,
            }],
        );
        let filler = pseudo_random(frame_bytes - MARKER_LEN);
        Ok(Plan {
            frame_bytes,
            frames_per_fragment,
            fragment_ms,
            frame_interval: Duration::from_secs_f64(args.fragment_secs) / frames_per_fragment,
            fragments,
            pace: args.pace,
            duration: Duration::from_secs_f64(args.duration),
            header: Bytes::from(header),
            filler,
            block_len: mkv::write::simple_block_header_len(1, frame_bytes) + frame_bytes,
        })
    }

    /// The block timecode of frame `k` of a cluster, in ms from the cluster's.
    fn frame_timecode(&self, k: u32) -> i16 {
        (u64::from(k) * self.fragment_ms / u64::from(self.frames_per_fragment)) as i16
    }

    /// A Cluster header of known size with its Timecode and Position.
    fn cluster_start(&self, buf: &mut Vec<u8>, timecode: u64) {
        let mut start = Vec::with_capacity(16);
        mkv::write::uint_element(&mut start, mkv::ids::TIMECODE, timecode);
        mkv::write::uint_element(&mut start, mkv::ids::POSITION, 0);
        let size = start.len() + self.frames_per_fragment as usize * self.block_len;
        mkv::write::element_header(buf, mkv::ids::CLUSTER, Some(size as u64));
        buf.extend_from_slice(&start);
    }

    /// Bytes of one whole Cluster element.
    fn cluster_len(&self) -> usize {
        let mut head = Vec::new();
        self.cluster_start(&mut head, 1_700_000_000_000);
        head.len() + self.frames_per_fragment as usize * self.block_len
    }
}

/// Bytes that do not compress to nothing and hold no marker (xorshift64).
fn pseudo_random(len: usize) -> Bytes {
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut out = vec![0u8; len];
    for chunk in out.chunks_mut(8) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        chunk.copy_from_slice(&rng.to_le_bytes()[..chunk.len()]);
    }
    debug_assert!(memchr::memmem::find(&out, &MARKER_MAGIC).is_none());
    Bytes::from(out)
}

/// One frame's marker, as a reader finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marker {
    stream: u32,
    frame: u32,
    sent_ns: u64,
}

impl Marker {
    fn write(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&MARKER_MAGIC);
        buf.extend_from_slice(&self.stream.to_le_bytes());
        buf.extend_from_slice(&self.frame.to_le_bytes());
        buf.extend_from_slice(&self.sent_ns.to_le_bytes());
    }

    /// `b` starts with a whole marker.
    fn read(b: &[u8]) -> Marker {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut ns = [0u8; 8];
        ns.copy_from_slice(&b[16..24]);
        Marker {
            stream: u32_at(8),
            frame: u32_at(12),
            sent_ns: u64::from_le_bytes(ns),
        }
    }
}

/// Finds markers in a byte stream that arrives in arbitrary chunks.
#[derive(Debug, Default)]
struct MarkerScanner {
    /// The last `MARKER_LEN - 1` bytes seen, where an incomplete marker may start.
    carry: Vec<u8>,
}

impl MarkerScanner {
    fn scan(&mut self, chunk: &[u8], mut found: impl FnMut(Marker)) {
        let carried = self.carry.len();
        if carried > 0 {
            // A marker starting in the carried bytes cannot have been complete before.
            self.carry
                .extend_from_slice(&chunk[..chunk.len().min(MARKER_LEN - 1)]);
            for at in memchr::memmem::find_iter(&self.carry, &MARKER_MAGIC) {
                if at < carried && at + MARKER_LEN <= self.carry.len() {
                    found(Marker::read(&self.carry[at..]));
                }
            }
        }
        for at in memchr::memmem::find_iter(chunk, &MARKER_MAGIC) {
            if at + MARKER_LEN <= chunk.len() {
                found(Marker::read(&chunk[at..]));
            }
        }
        if chunk.len() >= MARKER_LEN - 1 {
            self.carry.clear();
            self.carry
                .extend_from_slice(&chunk[chunk.len() - (MARKER_LEN - 1)..]);
        } else {
            if carried == 0 {
                self.carry.extend_from_slice(chunk);
            }
            // The carry now holds the old carry and the whole chunk: keep its end.
            let excess = self.carry.len().saturating_sub(MARKER_LEN - 1);
            self.carry.drain(..excess);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run

/// Everything the producers and readers measured.
struct Outcome {
    producers: Vec<ProducerOutcome>,
    readers: Vec<ReaderOutcome>,
    /// From the first producer's start to the last PERSISTED ack (or the end of the run).
    elapsed_s: f64,
    /// When the first producer started.
    started: Instant,
    cpu: CpuUse,
    /// The server's segment fdatasyncs during the run, from its `/metrics` (when it has them).
    fsync: Option<FsyncStats>,
    /// Readers that could not be opened, producers that failed outright.
    failures: Vec<String>,
}

async fn load(
    args: &VideoArgs,
    plan: &Arc<Plan>,
    endpoint: &Arc<Endpoint>,
    label: &str,
    cpu: CpuSource,
    external: bool,
) -> anyhow::Result<Outcome> {
    let prefix = format!("bench-video-{}", chrono::Utc::now().timestamp_millis());
    let names: Vec<String> = (0..args.streams).map(|i| format!("{prefix}-{i}")).collect();
    let mut control = Conn::open(endpoint).await?;
    let created = Instant::now();
    let mut arns = Vec::with_capacity(names.len());
    for name in &names {
        let answer = control
            .post_json(
                "/createStream",
                &json!({
                    "StreamName": name,
                    "MediaType": "video/h264",
                    "DataRetentionInHours": args.retention_hours,
                }),
            )
            .await?;
        arns.push(
            answer["StreamARN"]
                .as_str()
                .ok_or_else(|| anyhow!("CreateStream {name}: no StreamARN in {answer}"))?
                .to_owned(),
        );
    }
    for name in &names {
        wait_active(&mut control, name).await?;
    }
    eprintln!(
        "{label}: {} video streams ACTIVE after {:.0} ms; {} x {} B frames, {} frames per {} ms \
         fragment, pace {:?}, {} live readers per stream",
        names.len(),
        created.elapsed().as_secs_f64() * 1e3,
        names.len(),
        plan.frame_bytes,
        plan.frames_per_fragment,
        plan.fragment_ms,
        plan.pace,
        args.readers,
    );

    // Everything starts from here: marker times count from `base`.
    let base = Instant::now();
    let mut totals = Vec::with_capacity(names.len());
    let mut readers = JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        let (total_tx, total_rx) = watch::channel(None);
        totals.push(total_tx);
        for _ in 0..args.readers {
            let reader = open_live_reader(endpoint, name).await?;
            let warmup_frames = args.warmup_fragments * u64::from(plan.frames_per_fragment);
            readers.spawn(follow_live(
                reader,
                i as u32,
                base,
                warmup_frames,
                total_rx.clone(),
            ));
        }
    }
    // GetMedia NOW starts at the next fragment once the server's reader task is watching.
    tokio::time::sleep(START_DELAY).await;

    let start = tokio::time::Instant::now() + START_DELAY;
    let stagger = match plan.pace {
        Pace::Realtime => Duration::from_millis(plan.fragment_ms) / names.len() as u32,
        Pace::Max => Duration::ZERO,
    };
    let mut producers = JoinSet::new();
    for ((i, name), total) in names.iter().enumerate().zip(totals) {
        let producer = Producer {
            endpoint: endpoint.clone(),
            plan: plan.clone(),
            index: i as u32,
            name: name.clone(),
            start: start + stagger * i as u32,
            base,
            warmup_fragments: args.warmup_fragments,
        };
        producers.spawn(producer.run(total));
    }
    tokio::time::sleep_until(start).await;
    let cpu_before = cpu.sample();
    let fsync_before = FsyncStats::fetch(&mut control).await;
    let started = Instant::now();

    let mut failures = Vec::new();
    let mut producer_outcomes = Vec::new();
    while let Some(joined) = producers.join_next().await {
        match joined.context("producer task")? {
            Ok(p) => producer_outcomes.push(p),
            Err(e) => failures.push(format!("a producer failed: {e:#}")),
        }
    }
    let mut reader_outcomes = Vec::new();
    while let Some(joined) = readers.join_next().await {
        match joined.context("reader task")? {
            Ok(r) => reader_outcomes.push(r),
            Err(e) => failures.push(format!("a live reader failed: {e:#}")),
        }
    }
    let cpu = cpu.since(cpu_before);
    let fsync = match (fsync_before, FsyncStats::fetch(&mut control).await) {
        (Some(before), Some(after)) => Some(after.since(&before)),
        _ => None,
    };
    let last_ack = producer_outcomes
        .iter()
        .filter_map(|p| p.acks.last_persisted)
        .max();
    let elapsed_s = last_ack
        .map_or_else(
            || started.elapsed(),
            |t| t.saturating_duration_since(started),
        )
        .as_secs_f64();

    if external {
        // An external server keeps what it was given; leave it as it was found.
        for arn in &arns {
            let _ = control
                .post_json("/deleteStream", &json!({ "StreamARN": arn }))
                .await;
        }
    }
    Ok(Outcome {
        producers: producer_outcomes,
        readers: reader_outcomes,
        elapsed_s,
        started,
        cpu,
        fsync,
        failures,
    })
}

/// The storage engine's fdatasync histogram, as timeshard's `/metrics` renders it
/// (`timeshard_storage_fsync_seconds`): what the disk did during a run.
#[derive(Debug, Clone, PartialEq)]
struct FsyncStats {
    count: u64,
    sum_s: f64,
    /// `(upper bound in seconds, cumulative count)`, ascending.
    buckets: Vec<(f64, u64)>,
}

impl FsyncStats {
    const NAME: &str = "timeshard_storage_fsync_seconds";

    async fn fetch(conn: &mut Conn) -> Option<FsyncStats> {
        let (status, body) = conn.get("/metrics").await.ok()?;
        if status != StatusCode::OK {
            return None;
        }
        FsyncStats::parse(std::str::from_utf8(&body).ok()?)
    }

    fn parse(text: &str) -> Option<FsyncStats> {
        let mut stats = FsyncStats {
            count: 0,
            sum_s: 0.0,
            buckets: Vec::new(),
        };
        let mut seen = false;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(Self::NAME) else {
                continue;
            };
            let (series, value) = rest.rsplit_once(' ')?;
            if let Some(bound) = series
                .strip_prefix("_bucket{le=\"")
                .and_then(|b| b.strip_suffix("\"}"))
            {
                if let Ok(bound) = bound.parse::<f64>() {
                    stats.buckets.push((bound, value.parse().ok()?));
                }
            } else if series == "_sum" {
                stats.sum_s = value.parse().ok()?;
                seen = true;
            } else if series == "_count" {
                stats.count = value.parse().ok()?;
            }
        }
        seen.then_some(stats)
    }

    fn since(&self, before: &FsyncStats) -> FsyncStats {
        FsyncStats {
            count: self.count.saturating_sub(before.count),
            sum_s: self.sum_s - before.sum_s,
            buckets: self
                .buckets
                .iter()
                .map(|&(bound, n)| {
                    let was = before
                        .buckets
                        .iter()
                        .find(|(b, _)| *b == bound)
                        .map_or(0, |&(_, n)| n);
                    (bound, n.saturating_sub(was))
                })
                .collect(),
        }
    }

    /// Calls slower than `bound_s` (a bucket bound).
    fn over(&self, bound_s: f64) -> u64 {
        let within = self
            .buckets
            .iter()
            .find(|(b, _)| (*b - bound_s).abs() < 1e-12)
            .map_or(0, |&(_, n)| n);
        self.count.saturating_sub(within)
    }

    fn describe(&self) -> String {
        if self.count == 0 {
            return "no segment fdatasync".to_owned();
        }
        format!(
            "{} segment fdatasyncs, mean {:.1} ms, {} over 10 ms, {} over 50 ms",
            self.count,
            self.sum_s / self.count as f64 * 1e3,
            self.over(0.01),
            self.over(0.05),
        )
    }
}

/// DescribeStream until ACTIVE (timeshard creates video streams ACTIVE unless told otherwise).
async fn wait_active(conn: &mut Conn, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + super::CREATE_TIMEOUT;
    loop {
        let answer = conn
            .post_json("/describeStream", &json!({ "StreamName": name }))
            .await?;
        match answer["StreamInfo"]["Status"].as_str() {
            Some("ACTIVE") => return Ok(()),
            Some("CREATING") if Instant::now() < deadline => {
                tokio::time::sleep(super::POLL_INTERVAL).await;
            }
            other => bail!("video stream {name} is {other:?} while waiting for ACTIVE"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Producers

struct Producer {
    endpoint: Arc<Endpoint>,
    plan: Arc<Plan>,
    index: u32,
    name: String,
    start: tokio::time::Instant,
    base: Instant,
    warmup_fragments: u64,
}

#[derive(Default)]
struct ProducerOutcome {
    index: u32,
    bytes_sent: u64,
    fragments_sent: u64,
    frames_sent: u64,
    late_frames: u64,
    /// The server stopped taking the body before the producer was done.
    body_closed: bool,
    acks: AckOutcome,
}

/// A cluster waiting for its acks.
struct Pending {
    timecode: u64,
    /// Its index in the upload.
    fragment: u64,
    /// One of the first `--warmup-fragments` of its upload.
    warmup: bool,
    /// When its last byte was handed to the connection.
    last_byte: Instant,
    received: bool,
}

impl Producer {
    async fn run(self, total: watch::Sender<Option<u64>>) -> anyhow::Result<ProducerOutcome> {
        let outcome = self.upload().await;
        // Readers wait for this many frames (none if the upload failed early).
        let frames = outcome.as_ref().map_or(0, |o| o.frames_sent);
        let _ = total.send(Some(frames));
        outcome
    }

    async fn upload(&self) -> anyhow::Result<ProducerOutcome> {
        let plan = &*self.plan;
        let tcp = TcpStream::connect(&self.endpoint.authority)
            .await
            .with_context(|| format!("connecting to {}", self.endpoint.authority))?;
        tcp.set_nodelay(true)?;
        let (mut sender, connection) =
            http1::handshake::<_, Channel<Bytes, Infallible>>(TokioIo::new(tcp))
                .await
                .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        tokio::time::sleep_until(self.start).await;

        let start_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let (mut tx, body) = Channel::<Bytes, Infallible>::new(BODY_CHUNKS);
        let req = Request::post("/putMedia")
            .header(HOST, self.endpoint.host.clone())
            .header(USER_AGENT, "timeshard-bench")
            .header("x-amzn-stream-name", &self.name)
            .header("x-amzn-fragment-timecode-type", "ABSOLUTE")
            .header(
                "x-amzn-producer-start-timestamp",
                format!("{}.{:03}", start_ms / 1000, start_ms % 1000),
            )
            .header("x-amzn-fragment-acknowledgment-required", "1")
            .body(body)?;
        sender.ready().await.context("PutMedia: connection lost")?;
        let response = sender.send_request(req);
        let mut out = ProducerOutcome {
            index: self.index,
            ..ProducerOutcome::default()
        };
        // Queued until the connection sends the request head, then streamed.
        send(&mut tx, plan.header.clone(), &mut out).await;
        let response = response.await.context("PutMedia: sending the request")?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.into_body().collect().await?.to_bytes();
            bail!("PutMedia {}: HTTP {status}: {}", self.name, snippet(&body));
        }
        let pending = Arc::new(Mutex::new(VecDeque::new()));
        let acks = tokio::spawn(read_acks(response.into_body(), pending.clone()));

        let deadline = self.start + plan.duration;
        let mut head = Vec::with_capacity(64);
        let mut frame_index: u64 = 0;
        'fragments: for fragment in 0.. {
            match plan.pace {
                Pace::Realtime if fragment >= plan.fragments => break,
                Pace::Max if fragment > 0 && tokio::time::Instant::now() >= deadline => break,
                _ => {}
            }
            let timecode = start_ms + fragment * plan.fragment_ms;
            for k in 0..plan.frames_per_fragment {
                if plan.pace == Pace::Realtime {
                    let due = self.start
                        + plan
                            .frame_interval
                            .saturating_mul(u32::try_from(frame_index).unwrap_or(u32::MAX));
                    tokio::time::sleep_until(due).await;
                    if due.elapsed() > LATE {
                        out.late_frames += 1;
                    }
                }
                head.clear();
                if k == 0 {
                    plan.cluster_start(&mut head, timecode);
                }
                let key = Frame {
                    track: 1,
                    timecode: 0,
                    key: k == 0,
                    invisible: false,
                    discardable: false,
                    data: Bytes::new(),
                };
                mkv::write::simple_block_header(
                    &mut head,
                    1,
                    plan.frame_timecode(k),
                    mkv::write::simple_block_flags(&key),
                    plan.frame_bytes,
                );
                Marker {
                    stream: self.index,
                    frame: frame_index as u32,
                    sent_ns: self.base.elapsed().as_nanos() as u64,
                }
                .write(&mut head);
                if !send(&mut tx, Bytes::copy_from_slice(&head), &mut out).await {
                    break 'fragments;
                }
                if k + 1 == plan.frames_per_fragment {
                    // The clock starts before the last byte goes, so no ack can beat it.
                    lock(&pending).push_back(Pending {
                        timecode,
                        fragment,
                        warmup: fragment < self.warmup_fragments,
                        last_byte: Instant::now(),
                        received: false,
                    });
                }
                if !send(&mut tx, plan.filler.clone(), &mut out).await {
                    break 'fragments;
                }
                frame_index += 1;
                out.frames_sent += 1;
            }
            out.fragments_sent += 1;
        }
        // The end of the body ends the upload; the server acks what is left, then ends its
        // answer.
        drop(tx);
        out.acks = match tokio::time::timeout(ACK_DRAIN, acks).await {
            Ok(joined) => joined.context("ack reader task")?,
            Err(_) => AckOutcome {
                read_error: Some(format!(
                    "acks still unfinished {} s after the body ended",
                    ACK_DRAIN.as_secs()
                )),
                ..AckOutcome::default()
            },
        };
        out.acks.missing = lock(&pending).len() as u64;
        Ok(out)
    }
}

/// Hands a chunk to the connection; `false` once the server no longer reads the body.
async fn send(tx: &mut Sender<Bytes, Infallible>, chunk: Bytes, out: &mut ProducerOutcome) -> bool {
    let len = chunk.len() as u64;
    if tx.send_data(chunk).await.is_err() {
        out.body_closed = true;
        return false;
    }
    out.bytes_sent += len;
    true
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Acks

#[derive(Default)]
struct AckOutcome {
    persisted: Latencies,
    received: Latencies,
    /// PERSISTED latencies of the warm-up fragments.
    persisted_warmup: Latencies,
    /// Every PERSISTED ack: the fragment's index, when its last byte went, its latency.
    log: Vec<(u64, Instant, Duration)>,
    errors: u64,
    first_error: Option<String>,
    /// Clusters sent that were never acked PERSISTED.
    missing: u64,
    fragments_persisted: u64,
    /// PERSISTED acks for no cluster this producer is waiting on.
    unexpected: u64,
    last_persisted: Option<Instant>,
    read_error: Option<String>,
}

/// What the tool needs of one ack line.
#[derive(Debug, PartialEq, Eq)]
struct AckLine<'a> {
    event: &'a [u8],
    timecode: Option<u64>,
}

/// Reads `{"EventType":"PERSISTED","FragmentTimecode":1663277247152,...}` by byte search.
fn parse_ack(line: &[u8]) -> Option<AckLine<'_>> {
    const EVENT: &[u8] = b"\"EventType\":\"";
    const TIMECODE: &[u8] = b"\"FragmentTimecode\":";
    let at = memchr::memmem::find(line, EVENT)? + EVENT.len();
    let len = memchr::memchr(b'"', &line[at..])?;
    let event = &line[at..at + len];
    let timecode = memchr::memmem::find(line, TIMECODE).and_then(|at| {
        let digits = &line[at + TIMECODE.len()..];
        let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&digits[..n]).ok()?.parse().ok()
    });
    Some(AckLine { event, timecode })
}

async fn read_acks(mut body: Incoming, pending: Arc<Mutex<VecDeque<Pending>>>) -> AckOutcome {
    let mut out = AckOutcome::default();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = match body.frame().await {
            None => break,
            Some(Err(e)) => {
                out.read_error = Some(format!("reading acks: {e}"));
                break;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        let now = Instant::now();
        buf.extend_from_slice(&chunk);
        let mut consumed = 0;
        while let Some(nl) = memchr::memchr(b'\n', &buf[consumed..]) {
            let line = &buf[consumed..consumed + nl];
            consumed += nl + 1;
            on_ack(line, now, &pending, &mut out);
        }
        buf.drain(..consumed);
    }
    out
}

fn on_ack(line: &[u8], now: Instant, pending: &Mutex<VecDeque<Pending>>, out: &mut AckOutcome) {
    let Some(ack) = parse_ack(line) else {
        if !line.trim_ascii().is_empty() {
            out.errors += 1;
            out.first_error
                .get_or_insert_with(|| format!("unreadable ack {}", snippet(line)));
        }
        return;
    };
    match ack.event {
        b"PERSISTED" | b"RECEIVED" => {
            let persisted = ack.event == b"PERSISTED";
            let mut pending = lock(pending);
            let at = ack
                .timecode
                .and_then(|tc| pending.iter().position(|p| p.timecode == tc));
            let Some(at) = at else {
                if persisted {
                    out.unexpected += 1;
                }
                return;
            };
            let latency = now.saturating_duration_since(pending[at].last_byte);
            if persisted {
                if pending[at].warmup {
                    out.persisted_warmup.add(latency);
                } else {
                    out.persisted.add(latency);
                }
                out.last_persisted = Some(now);
                out.fragments_persisted += 1;
                out.log
                    .push((pending[at].fragment, pending[at].last_byte, latency));
                pending.remove(at);
            } else if !pending[at].warmup && !pending[at].received {
                pending[at].received = true;
                out.received.add(latency);
            }
        }
        b"ERROR" => {
            out.errors += 1;
            out.first_error
                .get_or_insert_with(|| String::from_utf8_lossy(line).into_owned());
        }
        // BUFFERING, IDLE.
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Live readers

#[derive(Default)]
struct ReaderOutcome {
    latency: Latencies,
    /// Latencies of the frames of the warm-up fragments.
    latency_warmup: Latencies,
    frames: u64,
    /// Frames after the first received that never came.
    missing: u64,
    /// Frames that came again or out of order.
    disordered: u64,
    /// Markers of another stream.
    foreign: u64,
    /// The index of the first frame received (0 when the reader saw the upload's start).
    first: Option<u32>,
    error: Option<String>,
}

/// A live GetMedia answer being read, and the connection's handle (kept while reading).
struct LiveReader {
    _sender: http1::SendRequest<Full<Bytes>>,
    body: Incoming,
}

/// GetMedia with StartSelector NOW; returns the streaming answer once its head is in.
async fn open_live_reader(endpoint: &Arc<Endpoint>, name: &str) -> anyhow::Result<LiveReader> {
    let tcp = TcpStream::connect(&endpoint.authority)
        .await
        .with_context(|| format!("connecting to {}", endpoint.authority))?;
    tcp.set_nodelay(true)?;
    let (mut sender, connection) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let body = json!({ "StreamName": name, "StartSelector": { "StartSelectorType": "NOW" } });
    let req = Request::post("/getMedia")
        .header(HOST, endpoint.host.clone())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    sender.ready().await.context("GetMedia: connection lost")?;
    let response = sender
        .send_request(req)
        .await
        .context("GetMedia: sending the request")?;
    if response.status() != StatusCode::OK {
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        bail!("GetMedia {name}: HTTP {status}: {}", snippet(&body));
    }
    Ok(LiveReader {
        _sender: sender,
        body: response.into_body(),
    })
}

/// Reads a live GetMedia answer until the stream's last frame (as its producer reports it)
/// has come, or `LIVE_DRAIN` after the producer is done.
async fn follow_live(
    reader: LiveReader,
    stream: u32,
    base: Instant,
    warmup_frames: u64,
    mut total: watch::Receiver<Option<u64>>,
) -> anyhow::Result<ReaderOutcome> {
    let LiveReader { _sender, mut body } = reader;
    let mut out = ReaderOutcome::default();
    let mut scanner = MarkerScanner::default();
    let mut last: Option<u32> = None;
    let mut unique: u64 = 0;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut producer_done: Option<u64> = None;
    loop {
        if let Some(frames) = producer_done {
            if last.is_some_and(|l| u64::from(l) + 1 >= frames) || frames == 0 {
                break;
            }
            drain_until.get_or_insert_with(|| tokio::time::Instant::now() + LIVE_DRAIN);
        }
        tokio::select! {
            frame = body.frame() => match frame {
                None => break,
                Some(Err(e)) => {
                    out.error = Some(format!("reading GetMedia: {e}"));
                    break;
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    let now_ns = base.elapsed().as_nanos() as u64;
                    scanner.scan(&data, |m| {
                        if m.stream != stream {
                            out.foreign += 1;
                            return;
                        }
                        out.frames += 1;
                        let latency = Duration::from_nanos(now_ns.saturating_sub(m.sent_ns));
                        if u64::from(m.frame) < warmup_frames {
                            out.latency_warmup.add(latency);
                        } else {
                            out.latency.add(latency);
                        }
                        out.first.get_or_insert(m.frame);
                        match last {
                            Some(l) if m.frame <= l => out.disordered += 1,
                            _ => {
                                unique += 1;
                                last = Some(m.frame);
                            }
                        }
                    });
                }
            },
            changed = total.changed(), if producer_done.is_none() => {
                producer_done = Some(match changed {
                    Ok(()) => total.borrow_and_update().unwrap_or(0),
                    Err(_) => total.borrow().unwrap_or(0),
                });
            }
            () = sleep_until_or_never(drain_until) => break,
        }
    }
    let frames = producer_done.unwrap_or(0);
    let expected = frames.saturating_sub(u64::from(out.first.unwrap_or(0)));
    out.missing = expected.saturating_sub(unique);
    Ok(out)
}

async fn sleep_until_or_never(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------------
// Report

fn write_latency_log(path: &std::path::Path, o: &Outcome) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut csv = String::from("stream,fragment,sent_ms,persisted_latency_ms\n");
    let mut rows: Vec<(u32, u64, f64, f64)> = o
        .producers
        .iter()
        .flat_map(|p| {
            p.acks.log.iter().map(|&(fragment, sent, latency)| {
                (
                    p.index,
                    fragment,
                    sent.saturating_duration_since(o.started).as_secs_f64() * 1e3,
                    latency.as_secs_f64() * 1e3,
                )
            })
        })
        .collect();
    rows.sort_by(|a, b| a.2.total_cmp(&b.2));
    for (stream, fragment, sent_ms, latency_ms) in rows {
        let _ = writeln!(csv, "{stream},{fragment},{sent_ms:.3},{latency_ms:.3}");
    }
    std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))
}

fn report(
    args: &VideoArgs,
    plan: &Plan,
    label: &str,
    o: &Outcome,
) -> (String, String, Vec<String>) {
    let mut persisted = Latencies::default();
    let mut persisted_warmup = Latencies::default();
    let mut received = Latencies::default();
    let mut fragments_persisted = 0;
    let (mut bytes_sent, mut fragments_sent, mut frames_sent, mut late) = (0, 0, 0, 0);
    let (mut errors, mut missing, mut unexpected, mut closed) = (0, 0, 0, 0);
    let mut first_error: Option<String> = None;
    let mut read_errors = Vec::new();
    for p in &o.producers {
        bytes_sent += p.bytes_sent;
        fragments_sent += p.fragments_sent;
        frames_sent += p.frames_sent;
        late += p.late_frames;
        errors += p.acks.errors;
        missing += p.acks.missing;
        unexpected += p.acks.unexpected;
        closed += u64::from(p.body_closed);
        if first_error.is_none() {
            first_error.clone_from(&p.acks.first_error);
        }
        if let Some(e) = &p.acks.read_error {
            read_errors.push(e.clone());
        }
        persisted.merge(Latencies(p.acks.persisted.0.clone()));
        persisted_warmup.merge(Latencies(p.acks.persisted_warmup.0.clone()));
        fragments_persisted += p.acks.fragments_persisted;
        received.merge(Latencies(p.acks.received.0.clone()));
    }
    let persisted_bytes = fragments_persisted * plan.cluster_len() as u64;
    let mb_per_s = persisted_bytes as f64 / o.elapsed_s / 1e6;
    let fragments_per_s = fragments_persisted as f64 / o.elapsed_s;

    let mut live = Latencies::default();
    let mut live_warmup = Latencies::default();
    let (mut live_frames, mut live_missing, mut disordered, mut foreign, mut late_join) =
        (0, 0, 0, 0, 0);
    for r in &o.readers {
        live.merge(Latencies(r.latency.0.clone()));
        live_warmup.merge(Latencies(r.latency_warmup.0.clone()));
        live_frames += r.frames;
        live_missing += r.missing;
        disordered += r.disordered;
        foreign += r.foreign;
        late_join += u64::from(r.first.is_some_and(|f| f > 0));
        if let Some(e) = &r.error {
            read_errors.push(e.clone());
        }
    }

    let mut problems = o.failures.clone();
    if errors > 0 {
        problems.push(format!(
            "{errors} ERROR acks (first: {})",
            first_error.as_deref().unwrap_or("-")
        ));
    }
    if missing > 0 {
        problems.push(format!(
            "{missing} of {fragments_sent} fragments sent were never acked PERSISTED"
        ));
    }
    if unexpected > 0 {
        problems.push(format!("{unexpected} PERSISTED acks for no fragment sent"));
    }
    if closed > 0 {
        problems.push(format!(
            "the server stopped reading {closed} PutMedia bodies early"
        ));
    }
    if live_missing > 0 || disordered > 0 || foreign > 0 {
        problems.push(format!(
            "live readers: {live_missing} frames missing, {disordered} repeated or out of \
             order, {foreign} of another stream"
        ));
    }
    problems.extend(read_errors);

    let size = if plan.frame_bytes >= 1 << 20 && plan.frame_bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", plan.frame_bytes >> 20)
    } else if plan.frame_bytes.is_multiple_of(1000) {
        format!("{} kB", plan.frame_bytes / 1000)
    } else {
        format!("{} B", plan.frame_bytes)
    };
    let pace = match plan.pace {
        Pace::Realtime => format!("real time ({} fps)", args.fps),
        Pace::Max => "as fast as possible".to_owned(),
    };
    let stream_mbps = plan.frame_bytes as f64 * 8.0 * f64::from(plan.frames_per_fragment)
        / (plan.fragment_ms as f64 / 1e3)
        / 1e6;
    let readers = if args.readers > 0 {
        format!(", {} live GetMedia reader(s) per stream", args.readers)
    } else {
        String::new()
    };
    let live_text = if args.readers > 0 {
        format!(
            "; live frame latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {live_frames} \
             frames ({late_join} readers joined after the first frame)",
            live.p50_ms(),
            live.p99_ms(),
            live.max_ms(),
        )
    } else {
        String::new()
    };
    let warmup_text = if args.warmup_fragments > 0 {
        let live = if args.readers > 0 {
            format!(
                ", live frames p99 {:.1} ms, max {:.1} ms",
                live_warmup.p99_ms(),
                live_warmup.max_ms()
            )
        } else {
            String::new()
        };
        format!(
            "; not in those figures, the first {} fragment(s) of each upload: PERSISTED p50 {:.1}              ms, p99 {:.1} ms, max {:.1} ms{live}",
            args.warmup_fragments,
            persisted_warmup.p50_ms(),
            persisted_warmup.p99_ms(),
            persisted_warmup.max_ms(),
        )
    } else {
        String::new()
    };
    let mut md = String::new();
    md.push_str("| benchmark | result | notes |\n|---|---|---|\n");
    md.push_str(&format!(
        "| {label}: PutMedia, {} stream(s) x {stream_mbps:.1} Mbit/s ({size} frames, {} ms \
         fragments of {} frames), {pace}{readers} | **{mb_per_s:.1} MB/s** | {fragments_per_s:.1} \
         fragments/s; PERSISTED p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; RECEIVED p50 {:.1} ms, \
         p99 {:.1} ms{live_text}{warmup_text}; {fragments_persisted} of {fragments_sent} fragments PERSISTED \
         ({frames_sent} frames, {:.0} MB sent) in {:.1} s; {errors} ERROR acks, {missing} \
         missing; {late} frames sent >{} ms late; {}; {} |",
        args.streams,
        plan.fragment_ms,
        plan.frames_per_fragment,
        persisted.p50_ms(),
        persisted.p99_ms(),
        persisted.max_ms(),
        received.p50_ms(),
        received.p99_ms(),
        bytes_sent as f64 / 1e6,
        o.elapsed_s,
        LATE.as_millis(),
        o.fsync
            .as_ref()
            .map_or_else(|| "fdatasyncs not known".to_owned(), FsyncStats::describe),
        o.cpu.describe(o.elapsed_s),
    ));
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{s:.2}"));
    let live_ms = |v: f64| {
        if args.readers > 0 {
            format!("{v:.2}")
        } else {
            "-".to_owned()
        }
    };
    let result_line = format!(
        "result label={label:?} streams={} pace={:?} frame_bytes={} mb_per_s={mb_per_s:.1} \
         fragments_per_s={fragments_per_s:.1} persisted_p50_ms={:.2} persisted_p99_ms={:.2} \
         persisted_max_ms={:.2} received_p99_ms={:.2} live_p50_ms={} live_p99_ms={} \
         live_max_ms={} warmup_persisted_p99_ms={:.2} warmup_live_p99_ms={} late_frames={late} server_cpu_s={} client_cpu_s={} fsyncs={} fsync_mean_ms={} \
         errors={errors} missing={missing} problems={}",
        args.streams,
        plan.pace,
        plan.frame_bytes,
        persisted.p50_ms(),
        persisted.p99_ms(),
        persisted.max_ms(),
        received.p99_ms(),
        live_ms(live.p50_ms()),
        live_ms(live.p99_ms()),
        live_ms(live.max_ms()),
        persisted_warmup.p99_ms(),
        live_ms(live_warmup.p99_ms()),
        opt(o.cpu.server_s()),
        opt(o.cpu.client_s()),
        o.fsync
            .as_ref()
            .map_or("-".to_owned(), |f| f.count.to_string()),
        opt(o
            .fsync
            .as_ref()
            .filter(|f| f.count > 0)
            .map(|f| f.sum_s / f.count as f64 * 1e3)),
        problems.len(),
    );
    (md, result_line, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_read_by_byte_search() {
        let line = br#"{"EventType":"PERSISTED","FragmentTimecode":1663277247152,"FragmentNumber":"9134"}"#;
        assert_eq!(
            parse_ack(line),
            Some(AckLine {
                event: b"PERSISTED",
                timecode: Some(1_663_277_247_152)
            })
        );
        let idle = br#"{"EventType":"IDLE"}"#;
        assert_eq!(
            parse_ack(idle),
            Some(AckLine {
                event: b"IDLE",
                timecode: None
            })
        );
        assert_eq!(parse_ack(b"garbage"), None);
    }

    #[test]
    fn fsync_histograms_are_read_from_metrics() {
        let text = "# TYPE timeshard_storage_fsync_seconds histogram\n\
            timeshard_storage_fsync_seconds_bucket{le=\"0.01\"} 7\n\
            timeshard_storage_fsync_seconds_bucket{le=\"0.05\"} 9\n\
            timeshard_storage_fsync_seconds_bucket{le=\"+Inf\"} 10\n\
            timeshard_storage_fsync_seconds_sum 0.25\n\
            timeshard_storage_fsync_seconds_count 10\n";
        let after = FsyncStats::parse(text).expect("parses");
        assert_eq!(after.count, 10);
        assert_eq!(after.buckets, [(0.01, 7), (0.05, 9), (f64::INFINITY, 10)]);
        let before = FsyncStats {
            count: 4,
            sum_s: 0.05,
            buckets: vec![(0.01, 4), (0.05, 4)],
        };
        let run = after.since(&before);
        assert_eq!((run.count, run.over(0.01), run.over(0.05)), (6, 3, 1));
        assert_eq!(FsyncStats::parse("other_metric 1\n"), None);
    }

    #[test]
    fn markers_are_found_across_any_chunking() {
        let filler = pseudo_random(100);
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for frame in 0..20u32 {
            stream.extend_from_slice(b"\xA3\x42\x00\x81");
            let m = Marker {
                stream: 7,
                frame,
                sent_ns: u64::from(frame) * 1_000_003,
            };
            m.write(&mut stream);
            expected.push(m);
            stream.extend_from_slice(&filler[..usize::from(frame as u8 % 50)]);
        }
        for chunk_len in [1, 2, 3, 7, 23, 24, 25, 64, 1000] {
            let mut scanner = MarkerScanner::default();
            let mut found = Vec::new();
            for chunk in stream.chunks(chunk_len) {
                scanner.scan(chunk, |m| found.push(m));
            }
            assert_eq!(found, expected, "chunks of {chunk_len}");
        }
        // Uneven chunks: every split point pair in a window.
        for a in 0..60 {
            for b in a..a + 40 {
                let mut scanner = MarkerScanner::default();
                let mut found = Vec::new();
                for chunk in [&stream[..a], &stream[a..b], &stream[b..]] {
                    scanner.scan(chunk, |m| found.push(m));
                }
                assert_eq!(found, expected, "split at {a} and {b}");
            }
        }
    }

    #[test]
    fn clusters_have_the_size_they_declare() {
        let args = VideoArgs {
            endpoint: None,
            streams: 1,
            bitrate_mbps: 4.0,
            fps: 25,
            fragment_secs: 1.0,
            duration: 1.0,
            frame_bytes: None,
            pace: Pace::Realtime,
            readers: 0,
            warmup_fragments: 1,
            retention_hours: 1,
            label: None,
            server_pid: None,
            sync: SyncPolicy::Never,
            data_parent: None,
            latency_log: None,
        };
        let plan = Plan::new(&args).expect("valid plan");
        assert_eq!(plan.frame_bytes, 20_000);
        assert_eq!(plan.frames_per_fragment, 25);
        assert_eq!(plan.frame_timecode(24), 960);
        // A whole cluster as the producer sends it reads back as 25 frames and a cluster end.
        let mut doc = plan.header.to_vec();
        plan.cluster_start(&mut doc, 1_700_000_000_000);
        for k in 0..plan.frames_per_fragment {
            let frame = Frame {
                track: 1,
                timecode: plan.frame_timecode(k),
                key: k == 0,
                invisible: false,
                discardable: false,
                data: Bytes::new(),
            };
            mkv::write::simple_block_header(
                &mut doc,
                1,
                frame.timecode,
                mkv::write::simple_block_flags(&frame),
                plan.frame_bytes,
            );
            Marker {
                stream: 0,
                frame: k,
                sent_ns: 0,
            }
            .write(&mut doc);
            doc.extend_from_slice(&plan.filler);
        }
        assert_eq!(
            doc.len() - plan.header.len(),
            plan.cluster_len(),
            "cluster length"
        );
        let mut reader = mkv::MkvReader::new();
        reader.push(&doc);
        let mut frames = 0;
        let mut ended = false;
        while let Some(event) = reader.next_event().expect("valid MKV") {
            match event {
                mkv::MkvEvent::Frame(f) => {
                    assert_eq!(f.data.len(), plan.frame_bytes);
                    assert_eq!(f.key, frames == 0);
                    frames += 1;
                }
                mkv::MkvEvent::ClusterEnd => ended = true,
                _ => {}
            }
        }
        assert_eq!(frames, 25);
        assert!(ended, "a known-size cluster ends with its last block");
    }
}
