//! Kinesis Video Streams media, end to end: PutMedia (our test client `timeshard_tests::putmedia`,
//! signed like the KVS C producer; ffmpeg; curl), GetMedia and the archived-media APIs (the
//! official AWS SDK for Rust), against a real server each.
//!
//! The reference is the sample media itself: every sample is read with the parser's
//! `MkvReader`, and whatever comes back (acks per cluster, ListFragments timestamps and sizes,
//! GetMedia frames read with the parser's `FragmentReader`) is compared with it, frame by frame.
//! Protocol details follow `shared/reference/aws-protocol.md` sections A (PutMedia and its acks),
//! B (GetMedia) and C (ListFragments, GetMediaForFragmentList).
//!
//! GetMedia is a live response that never ends on its own, so it is read document by document
//! (one MKV document per fragment; a document is complete at its trailing
//! `AWS_KINESISVIDEO_CONTINUATION_TOKEN` or error tags) and the test stops after the fragments
//! it expects, with a timeout on every read.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesisvideo::types::ApiName;
use aws_sdk_kinesisvideoarchivedmedia::primitives::DateTime;
use aws_sdk_kinesisvideoarchivedmedia::types::{
    Fragment as ListedFragment, FragmentSelector, FragmentSelectorType, TimestampRange,
};
use aws_sdk_kinesisvideomedia::primitives::ByteStream;
use aws_sdk_kinesisvideomedia::types::{StartSelector, StartSelectorType};
use bytes::Bytes;
use timeshard_parser::fragment::tag_names;
use timeshard_parser::mkv::{self, write};
use timeshard_parser::{Fragment, Frame, MkvEvent, MkvReader, SegmentInfo, Track, read_fragments};
use timeshard_server::config::LimitsMode;
use timeshard_storage::SequenceNumber;
use timeshard_storage::clock::{Clock as _, ManualClock};
use timeshard_tests::TestServer;
use timeshard_tests::putmedia::{Ack, AckEventType, BodySource, PutMedia, PutMediaResult, Upload};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// 5 s of H.264, 25 fps, a key frame every second: 5 clusters of 25 frames.
const VIDEO: &str = "h264-320x240-25fps-1s-gop.mkv";
/// The same picture with B-frames, plus AAC: 7 clusters.
const VIDEO_AAC: &str = "h264-aac-320x240.mkv";
/// How long one read of a media response may take before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
const ACK_TIMEOUT: Duration = Duration::from_secs(15);
const HOUR_MS: i64 = 3_600_000;

// ---------------------------------------------------------------------------------------------
// Samples: what was sent
// ---------------------------------------------------------------------------------------------

/// One cluster of an MKV input, with where it lies in the bytes.
#[derive(Debug, Clone)]
struct Cluster {
    timecode: u64,
    /// Offset of the Cluster element (the end of whatever came before it).
    start: u64,
    /// Offset just past the cluster's last element.
    end: u64,
    frames: Vec<Frame>,
    /// Offset just past each frame's block.
    frame_ends: Vec<u64>,
}

/// An MKV input read with the parser's `MkvReader`.
#[derive(Debug, Clone)]
struct Sample {
    bytes: Bytes,
    info: SegmentInfo,
    tracks: Vec<Track>,
    clusters: Vec<Cluster>,
}

impl Sample {
    fn load(name: &str) -> Sample {
        let path = samples_dir().join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"));
        Sample::parse(Bytes::from(bytes))
    }

    /// Reads a whole (valid) single-document MKV input.
    fn parse(bytes: Bytes) -> Sample {
        let mut reader = MkvReader::new();
        reader.push(&bytes);
        let mut info = SegmentInfo::default();
        let mut tracks = Vec::new();
        let mut clusters: Vec<Cluster> = Vec::new();
        let mut open: Option<Cluster> = None;
        let mut before = 0;
        loop {
            let event = reader.finish().unwrap_or_else(|e| panic!("sample: {e}"));
            let Some(event) = event else { break };
            let at = reader.position();
            match event {
                MkvEvent::Info(i) => info = i,
                MkvEvent::Tracks(t) => tracks = t,
                MkvEvent::ClusterStart { timecode } => {
                    assert!(open.is_none(), "cluster inside a cluster");
                    open = Some(Cluster {
                        timecode,
                        start: before,
                        end: 0,
                        frames: Vec::new(),
                        frame_ends: Vec::new(),
                    });
                }
                MkvEvent::Frame(f) => {
                    let c = open.as_mut().expect("frame outside a cluster");
                    c.frames.push(f);
                    c.frame_ends.push(at);
                }
                MkvEvent::ClusterEnd => {
                    let mut c = open.take().expect("cluster end without a cluster");
                    c.end = *c.frame_ends.last().expect("empty cluster");
                    clusters.push(c);
                }
                _ => {}
            }
            before = at;
        }
        Sample {
            bytes,
            info,
            tracks,
            clusters,
        }
    }

    fn timecodes(&self) -> Vec<u64> {
        self.clusters.iter().map(|c| c.timecode).collect()
    }

    /// The sample's media duration in ms (first cluster to the last cluster's last frame).
    fn duration_ms(&self) -> u64 {
        let last = self.clusters.last().unwrap();
        let end = last.frames.iter().map(|f| f.timecode).max().unwrap();
        (last.timecode as i64 + i64::from(end)) as u64
    }
}

fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("samples")
}

/// A PutMedia body in the KVS producer's style (unknown-size Segment and Clusters) from the
/// sample's Info and Tracks and the given clusters.
fn kvs_document(info: &SegmentInfo, tracks: &[Track], clusters: &[(u64, &[Frame])]) -> Vec<u8> {
    let mut out = Vec::new();
    write::ebml_header(&mut out);
    write::segment_start_unknown(&mut out);
    write::info(&mut out, info);
    write::tracks(&mut out, tracks);
    for (timecode, frames) in clusters {
        write::cluster_start_unknown(&mut out, *timecode);
        for f in *frames {
            write::simple_block(&mut out, f);
        }
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A producer start time for RELATIVE uploads: an hour ago, with a millisecond part so that its
/// parsing counts.
fn start_an_hour_ago() -> i64 {
    (now_ms() / 1000 - 3600) * 1000 + 123
}

/// A body pace for `speed` times real time: the sleep between chunks of `chunk` bytes.
fn pace_for(sample: &Sample, chunk: usize, speed: f64) -> Duration {
    let bytes_per_ms = sample.bytes.len() as f64 / sample.duration_ms() as f64;
    Duration::from_secs_f64(chunk as f64 / bytes_per_ms / speed / 1000.0)
}

// ---------------------------------------------------------------------------------------------
// Acks
// ---------------------------------------------------------------------------------------------

/// `a < b` for fragment numbers (decimal strings, possibly longer than any integer type).
fn number_lt(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    (a.len(), a) < (b.len(), b)
}

/// Checks the acks of an upload in which every cluster (by its timecode, in order) went through
/// cleanly: per cluster one BUFFERING, one RECEIVED and (when `persisted`) one PERSISTED with
/// the same timecode, in that order, RECEIVED and PERSISTED with the same fragment number;
/// numbers strictly increasing; no ERROR, nothing for other timecodes. IDLE acks may come
/// anywhere. Returns the fragment numbers in cluster order.
#[track_caller]
fn check_clean_acks(acks: &[Ack], timecodes: &[u64], persisted: bool) -> Vec<String> {
    check_acks(acks, timecodes, &[], persisted)
}

/// [`check_clean_acks`] for an upload where the clusters in `failed` (timecode, ErrorId) got an
/// ERROR ack instead of RECEIVED/PERSISTED (a BUFFERING before it is allowed). Returns the
/// fragment numbers of the clean clusters, in order.
#[track_caller]
fn check_acks(
    acks: &[Ack],
    timecodes: &[u64],
    failed: &[(u64, u32)],
    persisted: bool,
) -> Vec<String> {
    let all = format!("{acks:#?}");
    let events: Vec<(usize, &Ack)> = acks
        .iter()
        .enumerate()
        .filter(|(_, a)| !a.is(AckEventType::Idle))
        .collect();
    let find = |event: AckEventType, tc: u64| -> Vec<(usize, &Ack)> {
        events
            .iter()
            .filter(|(_, a)| a.is(event) && a.fragment_timecode == Some(tc))
            .copied()
            .collect()
    };
    let mut numbers: Vec<String> = Vec::new();
    let mut last_buffering = None;
    for &tc in timecodes {
        if let Some(&(_, id)) = failed.iter().find(|(t, _)| *t == tc) {
            let errors = find(AckEventType::Error, tc);
            assert_eq!(errors.len(), 1, "one ERROR for cluster {tc}; acks: {all}");
            assert_eq!(
                errors[0].1.error_id,
                Some(id),
                "ErrorId for cluster {tc}; acks: {all}"
            );
            assert!(
                errors[0]
                    .1
                    .error_code
                    .as_deref()
                    .is_some_and(|c| !c.is_empty()),
                "ERROR without an ErrorCode: {all}"
            );
            assert!(find(AckEventType::Received, tc).is_empty(), "{all}");
            assert!(find(AckEventType::Persisted, tc).is_empty(), "{all}");
            assert!(find(AckEventType::Buffering, tc).len() <= 1, "{all}");
            continue;
        }
        let buffering = find(AckEventType::Buffering, tc);
        let received = find(AckEventType::Received, tc);
        let persisted_acks = find(AckEventType::Persisted, tc);
        assert_eq!(
            buffering.len(),
            1,
            "one BUFFERING for cluster {tc}; acks: {all}"
        );
        assert_eq!(
            received.len(),
            1,
            "one RECEIVED for cluster {tc}; acks: {all}"
        );
        assert!(
            buffering[0].0 < received[0].0,
            "BUFFERING after RECEIVED for {tc}: {all}"
        );
        if let Some(prev) = last_buffering {
            assert!(prev < buffering[0].0, "BUFFERING acks out of order: {all}");
        }
        last_buffering = Some(buffering[0].0);
        let number = received[0]
            .1
            .fragment_number
            .clone()
            .unwrap_or_else(|| panic!("RECEIVED without a FragmentNumber: {all}"));
        if persisted {
            assert_eq!(
                persisted_acks.len(),
                1,
                "one PERSISTED for cluster {tc}; acks: {all}"
            );
            assert!(
                received[0].0 < persisted_acks[0].0,
                "PERSISTED before RECEIVED for {tc}: {all}"
            );
            assert_eq!(
                persisted_acks[0].1.fragment_number.as_deref(),
                Some(number.as_str()),
                "RECEIVED and PERSISTED numbers differ for {tc}: {all}"
            );
        } else {
            assert!(
                persisted_acks.is_empty(),
                "PERSISTED on a stream that keeps nothing: {all}"
            );
        }
        if let Some(prev) = numbers.last() {
            assert!(
                number_lt(prev, &number),
                "fragment numbers not increasing ({prev} then {number}): {all}"
            );
        }
        numbers.push(number);
    }
    let expected_errors = failed.len();
    let errors = events
        .iter()
        .filter(|(_, a)| a.is(AckEventType::Error))
        .count();
    assert_eq!(errors, expected_errors, "unexpected ERROR acks: {all}");
    for (_, a) in &events {
        if let Some(tc) = a.fragment_timecode {
            assert!(
                timecodes.contains(&tc),
                "an ack for timecode {tc}, which no cluster had: {all}"
            );
        }
    }
    numbers
}

// ---------------------------------------------------------------------------------------------
// Server, streams, clients
// ---------------------------------------------------------------------------------------------

struct Env {
    server: TestServer,
    kvs: aws_sdk_kinesisvideo::Client,
}

impl Env {
    async fn start() -> Env {
        Env::with_server(TestServer::start().await)
    }

    fn with_server(server: TestServer) -> Env {
        let kvs = server.kinesis_video_client();
        Env { server, kvs }
    }

    /// Creates a stream; returns its ARN.
    async fn create_stream(&self, name: &str, retention_hours: i32) -> String {
        self.kvs
            .create_stream()
            .stream_name(name)
            .media_type("video/h264")
            .data_retention_in_hours(retention_hours)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateStream {name}: {}", display(&e)))
            .stream_arn
            .unwrap_or_else(|| panic!("CreateStream {name}: no StreamARN"))
    }

    /// GetDataEndpoint, as producers and players call it before each data-plane API.
    async fn endpoint(&self, name: &str, api: ApiName) -> String {
        self.kvs
            .get_data_endpoint()
            .stream_name(name)
            .api_name(api.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetDataEndpoint {api:?}: {}", display(&e)))
            .data_endpoint
            .unwrap_or_else(|| panic!("GetDataEndpoint {api:?}: no DataEndpoint"))
    }

    /// A PutMedia request for `name` on the address GetDataEndpoint(PUT_MEDIA) gives.
    async fn put_media(&self, name: &str) -> PutMedia {
        let endpoint = self.endpoint(name, ApiName::PutMedia).await;
        let addr: SocketAddr = endpoint
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("PUT_MEDIA endpoint {endpoint} is not http://host:port"))
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("PUT_MEDIA endpoint {endpoint}: {e}"));
        PutMedia::new(addr, name)
    }

    async fn media(&self, name: &str) -> aws_sdk_kinesisvideomedia::Client {
        let endpoint = self.endpoint(name, ApiName::GetMedia).await;
        timeshard_tests::kinesis_video_media_client(&endpoint)
    }

    async fn archived(
        &self,
        name: &str,
        api: ApiName,
    ) -> aws_sdk_kinesisvideoarchivedmedia::Client {
        let endpoint = self.endpoint(name, api).await;
        timeshard_tests::kinesis_video_archived_media_client(&endpoint)
    }

    /// GetMedia with `selector`, as a document reader.
    async fn get_media(&self, name: &str, selector: StartSelector) -> MediaStream {
        let kind = selector.start_selector_type().clone();
        let out = self
            .media(name)
            .await
            .get_media()
            .stream_name(name)
            .start_selector(selector)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetMedia {kind:?}: {}", display(&e)));
        assert_eq!(
            out.content_type(),
            Some("video/webm"),
            "GetMedia content type"
        );
        MediaStream::new(out.payload)
    }

    /// Every fragment ListFragments gives for the range, walking NextToken pages of
    /// `max_results`; also returns the number of pages.
    async fn list_fragments(
        &self,
        name: &str,
        kind: FragmentSelectorType,
        start_ms: i64,
        end_ms: i64,
        max_results: Option<i64>,
    ) -> (Vec<ListedFragment>, usize) {
        let client = self.archived(name, ApiName::ListFragments).await;
        let selector = FragmentSelector::builder()
            .fragment_selector_type(kind)
            .timestamp_range(
                TimestampRange::builder()
                    .start_timestamp(DateTime::from_millis(start_ms))
                    .end_timestamp(DateTime::from_millis(end_ms))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut request = client.list_fragments().stream_name(name);
            request = match &token {
                Some(t) => request.next_token(t),
                None => request.fragment_selector(selector.clone()),
            };
            if let Some(n) = max_results {
                request = request.max_results(n);
            }
            let out = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("ListFragments: {}", display(&e)));
            pages += 1;
            if let Some(n) = max_results {
                assert!(
                    out.fragments().len() as i64 <= n,
                    "{} fragments in a page of {n}",
                    out.fragments().len()
                );
            }
            all.extend(out.fragments().iter().cloned());
            match out.next_token() {
                Some(t) => {
                    assert!(pages < 1000, "ListFragments pages never end");
                    token = Some(t.to_owned());
                }
                None => break,
            }
        }
        (all, pages)
    }

    /// Every fragment of the stream, in producer-timestamp order.
    async fn all_fragments(&self, name: &str) -> Vec<ListedFragment> {
        let (mut all, _) = self
            .list_fragments(
                name,
                FragmentSelectorType::ProducerTimestamp,
                0,
                now_ms() + HOUR_MS,
                None,
            )
            .await;
        all.sort_by_key(|f| (millis(f.producer_timestamp.as_ref()), number_key(f)));
        all
    }
}

fn display<E: std::error::Error>(e: &E) -> String {
    aws_sdk_kinesisvideo::error::DisplayErrorContext(e).to_string()
}

/// A timestamp in epoch ms, rounded to the nearest ms: JSON carries timestamps as floating
/// point seconds, and the SDK's conversion from `f64` may land a few ns below the ms sent.
fn millis(t: Option<&DateTime>) -> i64 {
    let t = t.expect("timestamp missing");
    t.secs() * 1000 + (i64::from(t.subsec_nanos()) + 500_000) / 1_000_000
}

fn number_key(f: &ListedFragment) -> (usize, String) {
    let n = f
        .fragment_number()
        .unwrap()
        .trim_start_matches('0')
        .to_owned();
    (n.len(), n)
}

fn start(
    kind: StartSelectorType,
) -> aws_sdk_kinesisvideomedia::types::builders::StartSelectorBuilder {
    StartSelector::builder().start_selector_type(kind)
}

/// `GET /health` over a bare socket: the status code.
async fn health(addr: SocketAddr) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("no /health answer in 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad /health answer {text:?}"))
}

// ---------------------------------------------------------------------------------------------
// Media responses: what came back
// ---------------------------------------------------------------------------------------------

/// What a media response yields, in order.
#[derive(Debug)]
enum MediaEvent {
    /// A fragment's cluster started (its frames follow).
    ClusterStart,
    /// One frame, as soon as its block has arrived.
    Frame(Frame),
    /// A whole document, read on its own with the parser's `FragmentReader`.
    Document(Box<Fragment>),
}

/// Splits a media body into documents. A document is complete at a Tags element holding the
/// continuation token or an error: the last thing the server writes in each (GetMedia's next
/// document may never come).
#[derive(Debug, Default)]
struct Documents {
    reader: MkvReader,
    bytes: Vec<u8>,
    doc_start: usize,
    /// Position after the last event.
    at: usize,
    ready: VecDeque<MediaEvent>,
}

impl Documents {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        self.reader.push(chunk);
    }

    fn next(&mut self) -> Option<MediaEvent> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            let event = self
                .reader
                .next_event()
                .unwrap_or_else(|e| panic!("media response is not valid MKV: {e}"))?;
            let before = self.at;
            self.at = self.reader.position() as usize;
            match event {
                MkvEvent::Header(_) => self.doc_start = before,
                MkvEvent::ClusterStart { .. } => self.ready.push_back(MediaEvent::ClusterStart),
                MkvEvent::Frame(f) => self.ready.push_back(MediaEvent::Frame(f)),
                MkvEvent::Tags(tags) => {
                    let last = tags.iter().any(|t| {
                        [
                            tag_names::CONTINUATION_TOKEN,
                            tag_names::ERROR_CODE,
                            tag_names::ERROR_ID,
                            tag_names::EXCEPTION_ERROR_CODE,
                        ]
                        .contains(&t.name.as_str())
                    });
                    if last {
                        let doc = &self.bytes[self.doc_start..self.at];
                        let mut fragments: Vec<Fragment> = read_fragments(doc)
                            .collect::<Result<_, _>>()
                            .unwrap_or_else(|e| panic!("a media document does not read: {e}"));
                        assert_eq!(
                            fragments.len(),
                            1,
                            "one media document must hold one fragment: {fragments:#?}"
                        );
                        self.ready
                            .push_back(MediaEvent::Document(Box::new(fragments.remove(0))));
                        self.doc_start = self.at;
                    }
                }
                _ => {}
            }
        }
    }
}

/// A GetMedia or GetMediaForFragmentList response being read.
struct MediaStream {
    payload: ByteStream,
    docs: Documents,
    ended: bool,
}

impl MediaStream {
    fn new(payload: ByteStream) -> MediaStream {
        MediaStream {
            payload,
            docs: Documents::default(),
            ended: false,
        }
    }

    /// The next event; `None` once the response has ended. Panics after [`READ_TIMEOUT`].
    async fn next_event(&mut self) -> Option<MediaEvent> {
        loop {
            if let Some(e) = self.docs.next() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout(READ_TIMEOUT, self.payload.next()).await {
                Err(_) => panic!("no media bytes in {READ_TIMEOUT:?}"),
                Ok(None) => self.ended = true,
                Ok(Some(Err(e))) => panic!("reading the media response: {e}"),
                Ok(Some(Ok(chunk))) => self.docs.push(&chunk),
            }
        }
    }

    /// The next `n` documents. Panics if the response ends first.
    async fn documents(&mut self, n: usize) -> Vec<Fragment> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next_event().await {
                Some(MediaEvent::Document(f)) => out.push(*f),
                Some(_) => {}
                None => panic!(
                    "the media response ended after {} of {n} documents",
                    out.len()
                ),
            }
        }
        out
    }

    /// Every remaining document of a response that ends (GetMediaForFragmentList).
    async fn all_documents(&mut self) -> Vec<Fragment> {
        let mut out = Vec::new();
        while let Some(event) = self.next_event().await {
            if let MediaEvent::Document(f) = event {
                out.push(*f);
            }
        }
        assert!(
            self.docs.bytes.len() == self.docs.doc_start,
            "{} bytes after the last complete document",
            self.docs.bytes.len() - self.docs.doc_start
        );
        out
    }
}

/// Checks one media document against cluster `i` of `sample`: the fragment number (if known),
/// the AWS tags, the producer timestamp (`producer_start_ms` + cluster timecode for a RELATIVE
/// upload, the timecode itself for ABSOLUTE), the tracks, the cluster timecode on the absolute
/// scale and every frame.
#[track_caller]
fn check_document(
    doc: &Fragment,
    sample: &Sample,
    i: usize,
    producer_start_ms: Option<i64>,
    number: Option<&str>,
) {
    check_document_at(doc, sample, i, producer_start_ms, number, now_ms());
}

/// [`check_document`] on a server whose clock says `server_now_ms`.
#[track_caller]
fn check_document_at(
    doc: &Fragment,
    sample: &Sample,
    i: usize,
    producer_start_ms: Option<i64>,
    number: Option<&str>,
    server_now_ms: i64,
) {
    let cluster = &sample.clusters[i];
    let ctx = format!("document for cluster {i} (timecode {})", cluster.timecode);
    assert_eq!(doc.error_code, None, "{ctx}: error tags");
    assert_eq!(doc.error_id, None, "{ctx}: error tags");
    assert!(doc.has_cluster, "{ctx}: no cluster");
    let doc_number = doc
        .fragment_number
        .as_deref()
        .unwrap_or_else(|| panic!("{ctx}: no AWS_KINESISVIDEO_FRAGMENT_NUMBER"));
    assert!(
        !doc_number.is_empty() && doc_number.bytes().all(|b| b.is_ascii_digit()),
        "{ctx}: fragment number {doc_number:?}"
    );
    if let Some(n) = number {
        assert_eq!(doc_number, n, "{ctx}: fragment number");
    }
    let server_ts = doc
        .server_timestamp_ms
        .unwrap_or_else(|| panic!("{ctx}: no AWS_KINESISVIDEO_SERVER_TIMESTAMP"));
    assert!(
        (server_now_ms - HOUR_MS..=server_now_ms).contains(&server_ts),
        "{ctx}: server timestamp {server_ts} is not recent (server time {server_now_ms})"
    );
    let scale = sample.info.timecode_scale;
    // The cluster timecode on the absolute scale, in timecode units.
    let absolute_tc = match producer_start_ms {
        Some(start) => start as u64 * 1_000_000 / scale + cluster.timecode,
        None => cluster.timecode,
    };
    assert_eq!(
        doc.producer_timestamp_ms,
        Some((absolute_tc * scale / 1_000_000) as i64),
        "{ctx}: producer timestamp"
    );
    let behind = doc
        .millis_behind_now
        .unwrap_or_else(|| panic!("{ctx}: no AWS_KINESISVIDEO_MILLIS_BEHIND_NOW"));
    assert!(
        (0..HOUR_MS).contains(&behind),
        "{ctx}: MILLIS_BEHIND_NOW {behind}"
    );
    let token = doc
        .continuation_token
        .as_deref()
        .unwrap_or_else(|| panic!("{ctx}: no AWS_KINESISVIDEO_CONTINUATION_TOKEN"));
    assert!(
        !token.is_empty()
            && token.len() <= 128
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
        "{ctx}: continuation token {token:?} does not fit the model's pattern"
    );
    assert_eq!(doc.info.timecode_scale, sample.info.timecode_scale, "{ctx}");
    assert_eq!(*doc.tracks, sample.tracks, "{ctx}: tracks");
    assert_eq!(doc.cluster_timecode, absolute_tc, "{ctx}: cluster timecode");
    check_frames(&doc.frames, &cluster.frames, &ctx);
}

#[track_caller]
fn check_frames(got: &[Frame], want: &[Frame], ctx: &str) {
    assert_eq!(got.len(), want.len(), "{ctx}: frame count");
    for (j, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            (g.track, g.timecode, g.key, g.data.len()),
            (w.track, w.timecode, w.key, w.data.len()),
            "{ctx}: frame {j} (track, timecode, key, size)"
        );
        assert!(g.data == w.data, "{ctx}: frame {j} data differs");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Acks
// ---------------------------------------------------------------------------------------------

/// Each sample uploaded whole: per cluster BUFFERING, RECEIVED, PERSISTED in that order with
/// the cluster's timecode, fragment numbers increasing, nothing else. The video sample goes up
/// in two halves with a wait between them, which only works if acks come back while the body is
/// still open (full duplex).
#[tokio::test]
async fn put_media_acks_every_cluster_of_each_sample() {
    let env = Env::start().await;
    for (name, file) in [("video", VIDEO), ("video-aac", VIDEO_AAC)] {
        let sample = Sample::load(file);
        assert_eq!(
            sample.clusters.len(),
            if file == VIDEO { 5 } else { 7 },
            "{file}: clusters"
        );
        env.create_stream(name, 24).await;
        let put = env.put_media(name).await.relative_to(start_an_hour_ago());
        let mut upload = put.start().await;
        assert_eq!(upload.status(), 200);
        // The first two clusters, then wait for their acks with the body still open.
        // Odd chunk sizes, so that elements and blocks straddle chunks.
        let chunk = if file == VIDEO { 4096 } else { 333 };
        let split = sample.clusters[1].end as usize;
        upload.send_bytes(&sample.bytes[..split], chunk, None).await;
        let second = sample.clusters[1].timecode;
        upload
            .wait_for(
                |a| a.is(AckEventType::Persisted) && a.fragment_timecode == Some(second),
                ACK_TIMEOUT,
            )
            .await;
        upload.send_bytes(&sample.bytes[split..], chunk, None).await;
        let result = upload.finish().await;
        assert_eq!(result.status, 200, "{file}");
        assert!(!result.acks.is_empty(), "{file}: no acks");
        let numbers = check_clean_acks(&result.acks, &sample.timecodes(), true);
        assert_eq!(numbers.len(), sample.clusters.len(), "{file}");
    }
    env.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. ListFragments
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn list_fragments_by_server_and_producer_timestamp() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("cam", 24).await;
    let start_ms = start_an_hour_ago();
    let before = now_ms();
    let put = env.put_media("cam").await.relative_to(start_ms);
    let result = put
        .send(BodySource::chunks(sample.bytes.clone(), 8192))
        .await;
    let after = now_ms();
    let numbers = check_clean_acks(&result.acks, &sample.timecodes(), true);

    // By server timestamp: every fragment, each field plausible.
    let (by_server, _) = env
        .list_fragments(
            "cam",
            FragmentSelectorType::ServerTimestamp,
            before - 1000,
            after + 1000,
            None,
        )
        .await;
    let mut by_server = by_server;
    by_server.sort_by_key(number_key);
    assert_eq!(
        by_server
            .iter()
            .map(|f| f.fragment_number().unwrap().to_owned())
            .collect::<Vec<_>>(),
        numbers,
        "ListFragments by server timestamp: the PERSISTED fragments"
    );
    let mut last_server = 0;
    for (i, (f, c)) in by_server.iter().zip(&sample.clusters).enumerate() {
        let data_bytes: usize = c.frames.iter().map(|f| f.data.len()).sum();
        let size = f.fragment_size_in_bytes();
        assert!(
            size as usize >= data_bytes && size as u64 <= (c.end - c.start) + 4096,
            "fragment {i}: FragmentSizeInBytes {size} for {data_bytes} bytes of frames in a \
             cluster of {} bytes",
            c.end - c.start
        );
        let length = f.fragment_length_in_milliseconds();
        assert!(
            (960..=1040).contains(&length),
            "fragment {i}: FragmentLengthInMilliseconds {length} for a 1 s GOP"
        );
        assert_eq!(
            millis(f.producer_timestamp()),
            start_ms + c.timecode as i64,
            "fragment {i}: ProducerTimestamp = start header + cluster timecode"
        );
        let server = millis(f.server_timestamp());
        assert!(
            (before..=after).contains(&server),
            "fragment {i}: ServerTimestamp {server} outside the upload [{before}, {after}]"
        );
        assert!(server >= last_server, "server timestamps go back");
        last_server = server;
    }

    // By producer timestamp: the range [1.5 s, 3.5 s] holds the clusters at 2 s and 3 s.
    let (by_producer, _) = env
        .list_fragments(
            "cam",
            FragmentSelectorType::ProducerTimestamp,
            start_ms + 1500,
            start_ms + 3500,
            None,
        )
        .await;
    let mut got: Vec<i64> = by_producer
        .iter()
        .map(|f| millis(f.producer_timestamp()))
        .collect();
    got.sort_unstable();
    assert_eq!(got, vec![start_ms + 2000, start_ms + 3000]);
    for f in &by_producer {
        let i = numbers
            .iter()
            .position(|n| Some(n.as_str()) == f.fragment_number())
            .expect("a listed fragment that was not acked");
        assert_eq!(
            millis(f.producer_timestamp()),
            start_ms + sample.clusters[i].timecode as i64
        );
    }

    // Pagination: pages of 2 walk every fragment exactly once.
    for kind in [
        FragmentSelectorType::ServerTimestamp,
        FragmentSelectorType::ProducerTimestamp,
    ] {
        let (from, to) = match kind {
            FragmentSelectorType::ServerTimestamp => (before - 1000, after + 1000),
            _ => (start_ms, start_ms + 10_000),
        };
        let (paged, pages) = env
            .list_fragments("cam", kind.clone(), from, to, Some(2))
            .await;
        assert_eq!(pages, 3, "{kind:?}: 5 fragments in pages of 2");
        let mut seen: Vec<String> = paged
            .iter()
            .map(|f| f.fragment_number().unwrap().to_owned())
            .collect();
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{kind:?}: a fragment listed twice"
        );
        seen.sort_by_key(|n| (n.len(), n.clone()));
        assert_eq!(seen, numbers, "{kind:?}: pages");
    }

    // Empty ranges.
    let (none, pages) = env
        .list_fragments(
            "cam",
            FragmentSelectorType::ProducerTimestamp,
            start_ms + 10_000,
            start_ms + 20_000,
            None,
        )
        .await;
    assert!(none.is_empty() && pages == 1, "{none:?}");
    let (none, _) = env
        .list_fragments(
            "cam",
            FragmentSelectorType::ServerTimestamp,
            before - 2 * HOUR_MS,
            before - HOUR_MS,
            None,
        )
        .await;
    assert!(none.is_empty(), "{none:?}");

    // ABSOLUTE timecodes are the producer timestamps themselves (here the audio sample's
    // clusters, which do not start at 0).
    let av = Sample::load(VIDEO_AAC);
    env.create_stream("abs", 24).await;
    let result = env
        .put_media("abs")
        .await
        .absolute()
        .send(BodySource::chunks(av.bytes.clone(), 8192))
        .await;
    let numbers = check_clean_acks(&result.acks, &av.timecodes(), true);
    let listed = env.all_fragments("abs").await;
    assert_eq!(
        listed
            .iter()
            .map(|f| (
                f.fragment_number().unwrap().to_owned(),
                millis(f.producer_timestamp())
            ))
            .collect::<Vec<_>>(),
        numbers
            .iter()
            .cloned()
            .zip(av.timecodes().iter().map(|&t| t as i64))
            .collect::<Vec<_>>(),
        "ABSOLUTE: ProducerTimestamp = cluster timecode"
    );
    for f in &listed {
        assert!(f.fragment_size_in_bytes() > 0);
        assert!((1..=2000).contains(&f.fragment_length_in_milliseconds()));
    }
    env.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 3. GetMedia start selectors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_media_for_every_start_selector() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    let n = sample.clusters.len();
    env.create_stream("cam", 24).await;
    let start_ms = start_an_hour_ago();

    // NOW, opened before the upload: every fragment, live. The upload is paced (8x real time)
    // so that fragments arrive at distinct server times, which SERVER_TIMESTAMP needs below.
    let mut now = env
        .get_media("cam", start(StartSelectorType::Now).build().unwrap())
        .await;
    let put = env.put_media("cam").await.relative_to(start_ms);
    let pace = pace_for(&sample, 2048, 8.0);
    let body = sample.bytes.clone();
    let uploading = tokio::spawn(put.send(BodySource::paced(body, 2048, pace)));
    let live = now.documents(n).await;
    let result = uploading.await.unwrap();
    let numbers = check_clean_acks(&result.acks, &sample.timecodes(), true);
    for (i, doc) in live.iter().enumerate() {
        check_document(doc, &sample, i, Some(start_ms), Some(&numbers[i]));
    }
    drop(now);

    let listed = env.all_fragments("cam").await;
    assert_eq!(
        listed
            .iter()
            .map(|f| f.fragment_number().unwrap().to_owned())
            .collect::<Vec<_>>(),
        numbers
    );
    let server_ts: Vec<i64> = listed
        .iter()
        .map(|f| millis(f.server_timestamp()))
        .collect();
    for (doc, ts) in live.iter().zip(&server_ts) {
        assert_eq!(doc.server_timestamp_ms, Some(*ts), "tag vs ListFragments");
    }

    // EARLIEST: everything from the first fragment.
    let mut earliest = env
        .get_media("cam", start(StartSelectorType::Earliest).build().unwrap())
        .await;
    let docs = earliest.documents(n).await;
    for (i, doc) in docs.iter().enumerate() {
        check_document(doc, &sample, i, Some(start_ms), Some(&numbers[i]));
        assert_eq!(doc.server_timestamp_ms, Some(server_ts[i]));
    }
    let token_after_second = docs[1].continuation_token.clone().unwrap();
    drop(earliest);

    let selectors = [
        (
            "FRAGMENT_NUMBER after the 2nd",
            start(StartSelectorType::FragmentNumber)
                .after_fragment_number(&numbers[1])
                .build()
                .unwrap(),
        ),
        (
            "SERVER_TIMESTAMP inside the 3rd",
            start(StartSelectorType::ServerTimestamp)
                .start_timestamp(DateTime::from_millis(
                    server_ts[2] + (server_ts[3] - server_ts[2]) / 2,
                ))
                .build()
                .unwrap(),
        ),
        (
            "PRODUCER_TIMESTAMP inside the 3rd",
            start(StartSelectorType::ProducerTimestamp)
                .start_timestamp(DateTime::from_millis(
                    start_ms + sample.clusters[2].timecode as i64 + 500,
                ))
                .build()
                .unwrap(),
        ),
        (
            "CONTINUATION_TOKEN of the 2nd",
            start(StartSelectorType::ContinuationToken)
                .continuation_token(&token_after_second)
                .build()
                .unwrap(),
        ),
    ];
    assert!(
        server_ts[3] - server_ts[2] >= 2,
        "the paced upload gave fragments 3 and 4 the same server time: {server_ts:?}"
    );
    for (what, selector) in selectors {
        let mut media = env.get_media("cam", selector).await;
        let docs = media.documents(n - 2).await;
        for (k, doc) in docs.iter().enumerate() {
            let i = k + 2;
            assert_eq!(
                doc.fragment_number.as_deref(),
                Some(numbers[i].as_str()),
                "{what}: document {k}"
            );
            check_document(doc, &sample, i, Some(start_ms), Some(&numbers[i]));
        }
    }

    // Edges: a time before every fragment starts at the first; a fragment's exact start time
    // selects that fragment.
    let edges = [
        (
            "SERVER_TIMESTAMP before everything",
            start(StartSelectorType::ServerTimestamp)
                .start_timestamp(DateTime::from_millis(server_ts[0] - 10_000))
                .build()
                .unwrap(),
            0,
        ),
        (
            "PRODUCER_TIMESTAMP before everything",
            start(StartSelectorType::ProducerTimestamp)
                .start_timestamp(DateTime::from_millis(start_ms - 10_000))
                .build()
                .unwrap(),
            0,
        ),
        (
            "PRODUCER_TIMESTAMP at the 3rd's start",
            start(StartSelectorType::ProducerTimestamp)
                .start_timestamp(DateTime::from_millis(
                    start_ms + sample.clusters[2].timecode as i64,
                ))
                .build()
                .unwrap(),
            2,
        ),
    ];
    for (what, selector, first) in edges {
        let mut media = env.get_media("cam", selector).await;
        let docs = media.documents(n - first).await;
        for (k, doc) in docs.iter().enumerate() {
            assert_eq!(
                doc.fragment_number.as_deref(),
                Some(numbers[first + k].as_str()),
                "{what}: document {k}"
            );
        }
    }

    // Positions past the last fragment wait for the next one, live.
    let last_token = docs_last_token(&live);
    // After the last fragment's server time plus its length (a fragment "contains" the times
    // from its start to its end, even if it was uploaded faster than real time).
    let last = listed.last().unwrap();
    let past_the_end = millis(last.server_timestamp()) + last.fragment_length_in_milliseconds() + 1;
    let later_ms = start_ms + 10_000;
    let waiting = [
        start(StartSelectorType::ContinuationToken)
            .continuation_token(last_token)
            .build()
            .unwrap(),
        start(StartSelectorType::FragmentNumber)
            .after_fragment_number(&numbers[n - 1])
            .build()
            .unwrap(),
        start(StartSelectorType::ProducerTimestamp)
            .start_timestamp(DateTime::from_millis(later_ms - 1000))
            .build()
            .unwrap(),
        start(StartSelectorType::ServerTimestamp)
            .start_timestamp(DateTime::from_millis(past_the_end))
            .build()
            .unwrap(),
    ];
    let mut readers = Vec::new();
    for selector in waiting {
        let kind = selector.start_selector_type().clone();
        readers.push((kind, env.get_media("cam", selector).await));
    }
    let result = env
        .put_media("cam")
        .await
        .relative_to(later_ms)
        .send(BodySource::chunks(sample.bytes.clone(), 8192))
        .await;
    let more = check_clean_acks(&result.acks, &sample.timecodes(), true);
    assert!(number_lt(&numbers[n - 1], &more[0]));
    for (kind, mut reader) in readers {
        let doc = reader.documents(1).await.remove(0);
        assert_eq!(
            doc.fragment_number.as_deref(),
            Some(more[0].as_str()),
            "{kind:?} past the end: the next fragment uploaded"
        );
        check_document(&doc, &sample, 0, Some(later_ms), Some(&more[0]));
    }
    env.server.shutdown().await;
}

fn docs_last_token(docs: &[Fragment]) -> String {
    docs.last()
        .and_then(|d| d.continuation_token.clone())
        .expect("no continuation token in the last document")
}

// ---------------------------------------------------------------------------------------------
// 4. Live: frames before their fragment is complete
// ---------------------------------------------------------------------------------------------

/// A GetMedia NOW reader gets each frame as soon as it is ingested: the first frames of every
/// fragment arrive while the producer has not even queued that fragment's last bytes.
#[tokio::test]
async fn get_media_now_streams_frames_before_their_fragment_ends() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("live", 24).await;
    let mut media = env
        .get_media("live", start(StartSelectorType::Now).build().unwrap())
        .await;

    let chunk = 1024;
    let pace = pace_for(&sample, chunk, 4.0);
    let start_ms = start_an_hour_ago();
    let put = env.put_media("live").await.relative_to(start_ms);
    let mut upload: Upload = put.start().await;
    let queued = upload.bytes_queued_counter();
    let body = sample.bytes.clone();
    let uploading = tokio::spawn(async move {
        upload.send_bytes(&body, chunk, Some(pace)).await;
        upload.finish().await
    });

    // For every frame: which cluster, and the bytes queued when it arrived.
    let mut seen: Vec<Vec<(Frame, u64)>> = Vec::new();
    let mut docs = Vec::new();
    while docs.len() < sample.clusters.len() {
        match media.next_event().await.expect("GetMedia ended") {
            MediaEvent::ClusterStart => seen.push(Vec::new()),
            MediaEvent::Frame(f) => {
                let at = queued.load(Ordering::SeqCst);
                seen.last_mut()
                    .expect("a frame before any cluster")
                    .push((f, at));
            }
            MediaEvent::Document(d) => docs.push(*d),
        }
    }
    let result = uploading.await.unwrap();
    check_clean_acks(&result.acks, &sample.timecodes(), true);
    assert_eq!(seen.len(), sample.clusters.len());
    for (k, (frames, cluster)) in seen.iter().zip(&sample.clusters).enumerate() {
        let got: Vec<Frame> = frames.iter().map(|(f, _)| f.clone()).collect();
        check_frames(&got, &cluster.frames, &format!("live cluster {k}"));
        // Frames that end well before the cluster does (4 KB, about 100 ms at this pace) must
        // have arrived before the producer had queued the cluster's last byte.
        let mut early = 0;
        for (j, (_, queued_then)) in frames.iter().enumerate() {
            if cluster.frame_ends[j] + 4096 <= cluster.end {
                assert!(
                    *queued_then < cluster.end,
                    "cluster {k} frame {j} (ends at byte {}) reached the reader only after \
                     {queued_then} bytes were queued, past the cluster's end at {}",
                    cluster.frame_ends[j],
                    cluster.end
                );
                early += 1;
            }
        }
        assert!(early >= 1, "cluster {k}: no frame to check");
    }
    for (i, doc) in docs.iter().enumerate() {
        check_document(doc, &sample, i, Some(start_ms), None);
    }
    env.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 5. GetMediaForFragmentList
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_media_for_fragment_list_in_the_order_asked() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("cam", 24).await;
    let start_ms = start_an_hour_ago();
    let result = env
        .put_media("cam")
        .await
        .relative_to(start_ms)
        .send(BodySource::chunks(sample.bytes.clone(), 16384))
        .await;
    let numbers = check_clean_acks(&result.acks, &sample.timecodes(), true);
    let client = env.archived("cam", ApiName::GetMediaForFragmentList).await;

    let fetch = |list: Vec<String>| {
        let client = client.clone();
        async move {
            let out = client
                .get_media_for_fragment_list()
                .stream_name("cam")
                .set_fragments(Some(list))
                .send()
                .await
                .unwrap_or_else(|e| panic!("GetMediaForFragmentList: {}", display(&e)));
            MediaStream::new(out.payload).all_documents().await
        }
    };

    let order = [2usize, 0, 1];
    let docs = fetch(order.iter().map(|&i| numbers[i].clone()).collect()).await;
    assert_eq!(docs.len(), 3);
    for (doc, &i) in docs.iter().zip(&order) {
        check_fragment_list_document(doc, &sample, i, start_ms, &numbers[i]);
    }

    // A fragment number of this stream that names no fragment: an error document in its place.
    let last: SequenceNumber = numbers[4].parse().unwrap();
    let unknown =
        SequenceNumber::of_record(last.shard, last.record_offset().unwrap() + 1000).to_string();
    let docs = fetch(vec![
        numbers[0].clone(),
        unknown.clone(),
        numbers[1].clone(),
    ])
    .await;
    assert_eq!(docs.len(), 3, "{docs:#?}");
    check_fragment_list_document(&docs[0], &sample, 0, start_ms, &numbers[0]);
    check_fragment_list_document(&docs[2], &sample, 1, start_ms, &numbers[1]);
    let missing = &docs[1];
    assert_eq!(missing.fragment_number.as_deref(), Some(unknown.as_str()));
    assert!(!missing.has_cluster && missing.frames.is_empty());
    assert!(
        missing.error_code.as_deref().is_some_and(|c| !c.is_empty()),
        "no error code for a missing fragment: {missing:#?}"
    );
    assert_eq!(missing.server_timestamp_ms, None);
    env.server.shutdown().await;
}

/// GetMediaForFragmentList documents carry the same content as GetMedia's; their timestamp
/// tags may use either spelling (the parser reads both), and the trailing tags are optional.
#[track_caller]
fn check_fragment_list_document(
    doc: &Fragment,
    sample: &Sample,
    i: usize,
    start_ms: i64,
    number: &str,
) {
    let ctx = format!("fragment list document for cluster {i}");
    assert_eq!(doc.error_code, None, "{ctx}");
    assert_eq!(doc.fragment_number.as_deref(), Some(number), "{ctx}");
    assert!(doc.server_timestamp_ms.is_some(), "{ctx}: server timestamp");
    let expected = start_ms + sample.clusters[i].timecode as i64;
    assert_eq!(doc.producer_timestamp_ms, Some(expected), "{ctx}");
    assert_eq!(doc.cluster_timecode, expected as u64, "{ctx}");
    assert_eq!(*doc.tracks, sample.tracks, "{ctx}");
    check_frames(&doc.frames, &sample.clusters[i].frames, &ctx);
}

// ---------------------------------------------------------------------------------------------
// 6. ffmpeg as producer, ffprobe as player
// ---------------------------------------------------------------------------------------------

const FFMPEG: &str = "/usr/bin/ffmpeg";
const FFPROBE: &str = "/usr/bin/ffprobe";

/// What an ffmpeg upload left: the GetMedia EARLIEST documents of every stored fragment, and
/// their bytes in a file for ffprobe. `None` when ffmpeg or ffprobe is missing.
struct FfmpegRoundTrip {
    env: Env,
    docs: Vec<Fragment>,
    output: PathBuf,
    _dir: tempfile::TempDir,
}

async fn ffmpeg_round_trip() -> Option<FfmpegRoundTrip> {
    if !std::path::Path::new(FFMPEG).exists() || !std::path::Path::new(FFPROBE).exists() {
        skip(&format!("{FFMPEG} or {FFPROBE} is missing"));
        return None;
    }
    // ffmpeg cannot sign its requests: a server without credentials (the SDK's signatures are
    // then ignored).
    let env = Env::with_server(TestServer::start_with(|c| c.credentials.clear()).await);
    env.create_stream("cam1", 24).await;
    let input = samples_dir().join(VIDEO_AAC);
    let url = format!("{}/putMedia", env.server.endpoint_url());
    let ffmpeg = tokio::process::Command::new(FFMPEG)
        .args(["-v", "error", "-nostdin", "-re", "-i"])
        .arg(&input)
        .args([
            "-c", "copy", "-f", "matroska", "-method", "POST", "-headers",
        ])
        .arg("x-amzn-stream-name: cam1\r\n")
        .arg(&url)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), ffmpeg)
        .await
        .expect("ffmpeg did not finish in 60 s")
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // ffmpeg does not read acks, so there is no PERSISTED to wait for: wait until the listing
    // has stopped growing for a second.
    let mut listed = env.all_fragments("cam1").await;
    let mut stable_since = tokio::time::Instant::now();
    while stable_since.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = env.all_fragments("cam1").await;
        if now.len() != listed.len() {
            listed = now;
            stable_since = tokio::time::Instant::now();
        }
    }
    assert!(!listed.is_empty(), "ffmpeg's upload left no fragments");
    let mut media = env
        .get_media("cam1", start(StartSelectorType::Earliest).build().unwrap())
        .await;
    let docs = media.documents(listed.len()).await;
    for (doc, f) in docs.iter().zip(&listed) {
        assert_eq!(doc.fragment_number.as_deref(), f.fragment_number());
        assert!(doc.error_code.is_none(), "{doc:#?}");
        assert!(doc.has_cluster && !doc.frames.is_empty());
    }
    let bytes = media.docs.bytes[..media.docs.doc_start].to_vec();
    drop(media);
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("get-media.mkv");
    std::fs::write(&output, &bytes).unwrap();
    Some(FfmpegRoundTrip {
        env,
        docs,
        output,
        _dir: dir,
    })
}

/// ffmpeg as the producer (`-method POST` to /putMedia, no SDK at all) and ffprobe as the
/// player: the GetMedia output of what was stored decodes, every frame of it, with the
/// sample's timestamps.
#[tokio::test]
async fn ffmpeg_uploads_and_ffprobe_decodes_get_media_output() {
    let Some(trip) = ffmpeg_round_trip().await else {
        return;
    };
    let input = samples_dir().join(VIDEO_AAC);
    let sample = Sample::load(VIDEO_AAC);
    // Every frame served decodes: ffprobe's counts equal the frames in the documents.
    let served = |kind: u64| {
        let number = sample
            .tracks
            .iter()
            .find(|t| t.track_type == kind)
            .unwrap()
            .number;
        trip.docs
            .iter()
            .flat_map(|d| &d.frames)
            .filter(|f| f.track == number)
            .count() as u64
    };
    assert_eq!(
        frame_counts(&trip.output).await,
        vec![
            ("video".to_owned(), served(mkv::TRACK_TYPE_VIDEO)),
            ("audio".to_owned(), served(mkv::TRACK_TYPE_AUDIO))
        ],
        "frames decoded by ffprobe vs frames in the GetMedia documents"
    );
    let got = video_packets(&trip.output).await;
    let want = video_packets(&input).await;
    assert!(
        got.len() <= want.len() && got.len() + 25 >= want.len(),
        "{got:?}"
    );
    // Decode order: decode timestamps increase (presentation ones do not, with B-frames).
    let dts: Vec<f64> = got.iter().filter_map(|p| p.1).collect();
    assert!(dts.len() + 2 >= got.len(), "few decode timestamps: {got:?}");
    assert!(
        dts.windows(2).all(|w| w[0] < w[1]),
        "video decode timestamps do not increase: {dts:?}"
    );
    let pts = got.iter().map(|p| p.0);
    let span = pts.clone().fold(f64::MIN, f64::max) - pts.fold(f64::MAX, f64::min);
    assert!(
        (4.5..=5.5).contains(&span),
        "video spans {span} s, not ~5 s"
    );
    // The sample's presentation times, up to a constant shift (the server's are epoch times).
    let shift = got[0].0 - want[0].0;
    assert!(
        shift > 1.0e9,
        "GetMedia timestamps are not epoch times: shift {shift}"
    );
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g.0 - w.0 - shift).abs() < 0.0015,
            "video packet {k}: pts {} vs the sample's {} (+{shift})",
            g.0,
            w.0
        );
    }
    trip.env.server.shutdown().await;
}

/// The whole ffmpeg upload is stored: GetMedia gives back as many video and audio frames as the
/// sample has, and ffprobe decodes them all.
#[tokio::test]
async fn ffmpeg_upload_is_stored_whole() {
    let Some(trip) = ffmpeg_round_trip().await else {
        return;
    };
    let input = samples_dir().join(VIDEO_AAC);
    let sample = Sample::load(VIDEO_AAC);
    let sample_frames: usize = sample.clusters.iter().map(|c| c.frames.len()).sum();
    let served: usize = trip.docs.iter().map(|d| d.frames.len()).sum();
    assert_eq!(
        served,
        sample_frames,
        "frames stored from ffmpeg's upload ({} fragments, the sample has {} clusters)",
        trip.docs.len(),
        sample.clusters.len()
    );
    assert_eq!(
        frame_counts(&trip.output).await,
        frame_counts(&input).await,
        "frames per stream (codec, count) of GetMedia output vs the sample"
    );
    trip.env.server.shutdown().await;
}

/// The non-empty CSV lines (`-of csv=p=0`) ffprobe prints for `path` with `args`; a failing
/// ffprobe fails the test with its error output.
async fn ffprobe_csv(path: &std::path::Path, args: &[&str]) -> Vec<String> {
    let out = tokio::process::Command::new(FFPROBE)
        .args(["-v", "error"])
        .args(args)
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {path:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `(codec_type, frames decoded)` per stream, from `ffprobe -count_frames`.
async fn frame_counts(path: &std::path::Path) -> Vec<(String, u64)> {
    ffprobe_csv(
        path,
        &[
            "-count_frames",
            "-show_entries",
            "stream=codec_type,nb_read_frames",
        ],
    )
    .await
    .into_iter()
    .map(|l| {
        let (kind, count) = l.split_once(',').unwrap_or_else(|| panic!("{l:?}"));
        (
            kind.to_owned(),
            count.parse().unwrap_or_else(|_| panic!("{l:?}")),
        )
    })
    .collect()
}

/// `(pts_time, dts_time)` of every video packet, in file order, from `ffprobe -show_packets`.
async fn video_packets(path: &std::path::Path) -> Vec<(f64, Option<f64>)> {
    ffprobe_csv(
        path,
        &[
            "-select_streams",
            "v:0",
            "-show_packets",
            "-show_entries",
            "packet=pts_time,dts_time",
        ],
    )
    .await
    .into_iter()
    .map(|l| {
        let mut parts = l.split(',');
        let pts = parts
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("packet without pts: {l:?}"));
        let dts = parts.next().and_then(|d| d.parse().ok());
        (pts, dts)
    })
    .collect()
}

// ---------------------------------------------------------------------------------------------
// 7. Malformed input
// ---------------------------------------------------------------------------------------------

/// One malformed upload and what it must lead to.
struct BadUpload {
    stream: &'static str,
    body: Vec<u8>,
    /// Clusters (timecode) whose fragments must be stored.
    stored: Vec<u64>,
    /// The ERROR ack: its timecode if it has one, and its ErrorId.
    error: (Option<u64>, u32),
    /// Every cluster timecode the body holds, failed one included.
    timecodes: Vec<u64>,
    /// The server must end the upload by itself, without the body ending.
    ends_upload: bool,
}

/// Each malformed input on its own stream, all at once and next to a good upload: each gets
/// its ERROR ack with the right id, the fragments before the error stay listed, the good upload
/// is untouched, and the server answers `/health` and takes a normal upload on every stream
/// afterwards.
#[tokio::test]
async fn malformed_uploads_fail_alone() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    let c = &sample.clusters;
    let prefix = |i: usize| sample.bytes[..c[i].end as usize].to_vec();
    let frames = |i: usize| c[i].frames.as_slice();

    let mut cases = Vec::new();
    // Cut in the middle of the third cluster (known-size clusters: the cut is visible).
    let cut = ((c[2].start + c[2].end) / 2) as usize;
    cases.push(BadUpload {
        stream: "truncated",
        body: sample.bytes[..cut].to_vec(),
        stored: vec![c[0].timecode, c[1].timecode],
        error: (Some(c[2].timecode), 4006),
        timecodes: vec![c[0].timecode, c[1].timecode, c[2].timecode],
        ends_upload: false,
    });
    // Two good clusters, then bytes no EBML element starts with (an ID's first byte is never 0).
    let mut garbage = prefix(1);
    let mut x: u32 = 0x1234_5678;
    garbage.push(0x00);
    for _ in 0..4096 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        garbage.push((x >> 24) as u8);
    }
    cases.push(BadUpload {
        stream: "garbage",
        body: garbage,
        stored: vec![c[0].timecode, c[1].timecode],
        error: (None, 4006),
        timecodes: vec![c[0].timecode, c[1].timecode],
        ends_upload: true,
    });
    // A SimpleBlock declaring 1 TiB in the third cluster.
    let mut bomb = prefix(1);
    write::cluster_start_unknown(&mut bomb, c[2].timecode);
    write::element_header(&mut bomb, mkv::ids::SIMPLE_BLOCK, Some(1 << 40));
    bomb.extend_from_slice(&[0x81, 0x00, 0x00, 0x80]);
    bomb.extend_from_slice(&[0x55; 512]);
    cases.push(BadUpload {
        stream: "bomb",
        body: bomb,
        stored: vec![c[0].timecode, c[1].timecode],
        error: (Some(c[2].timecode), 4001),
        timecodes: vec![c[0].timecode, c[1].timecode, c[2].timecode],
        ends_upload: true,
    });
    // Cluster timecodes 0, 1000, 500 (back), 2000: the third is refused, the rest stored.
    cases.push(BadUpload {
        stream: "back",
        body: kvs_document(
            &sample.info,
            &sample.tracks,
            &[
                (0, frames(0)),
                (1000, frames(1)),
                (500, frames(2)),
                (2000, frames(3)),
            ],
        ),
        stored: vec![0, 1000, 2000],
        error: (Some(500), 4004),
        timecodes: vec![0, 1000, 500, 2000],
        ends_upload: false,
    });
    // The second cluster starts with a P-frame.
    cases.push(BadUpload {
        stream: "nokey",
        body: kvs_document(
            &sample.info,
            &sample.tracks,
            &[(0, frames(0)), (1000, &frames(1)[1..]), (2000, frames(2))],
        ),
        stored: vec![0, 2000],
        error: (Some(1000), 4006),
        timecodes: vec![0, 1000, 2000],
        ends_upload: false,
    });
    // A block on track 7, which Tracks does not declare, in the middle of the second cluster.
    let mut stray: Vec<Frame> = frames(1).to_vec();
    let mut odd = stray[3].clone();
    odd.track = 7;
    odd.key = true;
    stray.insert(5, odd);
    cases.push(BadUpload {
        stream: "undeclared",
        body: kvs_document(
            &sample.info,
            &sample.tracks,
            &[(0, frames(0)), (1000, &stray), (2000, frames(2))],
        ),
        stored: vec![0, 2000],
        error: (Some(1000), 4010),
        timecodes: vec![0, 1000, 2000],
        ends_upload: false,
    });
    // A first document with two clusters, then a second one declaring four tracks.
    let mut four = kvs_document(
        &sample.info,
        &sample.tracks,
        &[(0, frames(0)), (1000, frames(1))],
    );
    let mut tracks = Vec::new();
    for n in 1..=4 {
        let mut t = sample.tracks[0].clone();
        t.number = n;
        t.uid = Some(n);
        tracks.push(t);
    }
    four.extend(kvs_document(&sample.info, &tracks, &[(2000, frames(2))]));
    cases.push(BadUpload {
        stream: "tracks",
        body: four,
        stored: vec![0, 1000],
        error: (None, 4012),
        timecodes: vec![0, 1000],
        ends_upload: true,
    });

    env.create_stream("good", 24).await;
    for case in &cases {
        env.create_stream(case.stream, 24).await;
    }
    let good = env.put_media("good").await.relative_to(start_an_hour_ago());
    let pace = pace_for(&sample, 2048, 8.0);
    let good_upload = tokio::spawn(good.send(BodySource::paced(sample.bytes.clone(), 2048, pace)));

    let mut bad = Vec::new();
    for case in &cases {
        let start_ms = start_an_hour_ago();
        let put = env.put_media(case.stream).await.relative_to(start_ms);
        let body = case.body.clone();
        let ends = case.ends_upload;
        bad.push(tokio::spawn(async move {
            let mut upload = put.start().await;
            upload.send_bytes(&body, 1500, None).await;
            let result = if ends {
                // The server must stop the upload by itself, with the body still open.
                upload.wait_end(Duration::from_secs(15)).await
            } else {
                upload.finish().await
            };
            (start_ms, result)
        }));
    }
    let mut outcomes: Vec<(i64, PutMediaResult)> = Vec::new();
    for task in bad {
        outcomes.push(task.await.unwrap());
    }
    let good_result = good_upload.await.unwrap();
    check_clean_acks(&good_result.acks, &sample.timecodes(), true);

    for (case, (start_ms, result)) in cases.iter().zip(&outcomes) {
        let ctx = case.stream;
        assert_eq!(result.status, 200, "{ctx}");
        let (error_tc, error_id) = case.error;
        match error_tc {
            Some(tc) => {
                check_acks(&result.acks, &case.timecodes, &[(tc, error_id)], true);
            }
            None => {
                check_clean_acks(
                    &result
                        .acks
                        .iter()
                        .filter(|a| !a.is(AckEventType::Error))
                        .cloned()
                        .collect::<Vec<_>>(),
                    &case.timecodes,
                    true,
                );
                let errors = result.acks_of(AckEventType::Error);
                assert_eq!(errors.len(), 1, "{ctx}: {:#?}", result.acks);
                assert_eq!(
                    errors[0].error_id,
                    Some(error_id),
                    "{ctx}: {:#?}",
                    result.acks
                );
            }
        }
        let listed = env.all_fragments(case.stream).await;
        assert_eq!(
            listed
                .iter()
                .map(|f| millis(f.producer_timestamp()))
                .collect::<Vec<_>>(),
            case.stored
                .iter()
                .map(|&tc| start_ms + tc as i64)
                .collect::<Vec<_>>(),
            "{ctx}: stored fragments"
        );
    }
    let good_listed = env.all_fragments("good").await;
    assert_eq!(good_listed.len(), sample.clusters.len(), "the good stream");

    assert_eq!(health(env.server.addr()).await, 200);
    for case in &cases {
        let result = env
            .put_media(case.stream)
            .await
            .send(BodySource::chunks(sample.bytes.clone(), 8192))
            .await;
        check_clean_acks(&result.acks, &sample.timecodes(), true);
        assert_eq!(
            env.all_fragments(case.stream).await.len(),
            case.stored.len() + sample.clusters.len(),
            "{}: after a normal upload",
            case.stream
        );
    }
    env.server.shutdown().await;
}

/// Garbage from the very first byte: refused at once, nothing stored.
#[tokio::test]
async fn garbage_from_the_first_byte_is_refused() {
    let env = Env::start().await;
    env.create_stream("junk", 24).await;
    let mut upload = env.put_media("junk").await.start().await;
    upload
        .send_bytes(b"GET / HTTP/1.1\r\nthis is not matroska at all", 64, None)
        .await;
    let result = upload.wait_end(Duration::from_secs(15)).await;
    let errors = result.acks_of(AckEventType::Error);
    assert_eq!(errors.len(), 1, "{:#?}", result.acks);
    assert_eq!(errors[0].error_id, Some(4006));
    assert!(
        result
            .acks
            .iter()
            .all(|a| a.is(AckEventType::Error) || a.is(AckEventType::Idle)),
        "{:#?}",
        result.acks
    );
    assert!(env.all_fragments("junk").await.is_empty());
    assert_eq!(health(env.server.addr()).await, 200);
    env.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Retention 0
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn retention_zero_is_live_only() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("live0", 0).await;
    let mut media = env
        .get_media("live0", start(StartSelectorType::Now).build().unwrap())
        .await;
    let start_ms = start_an_hour_ago();
    let put = env.put_media("live0").await.relative_to(start_ms);
    let pace = pace_for(&sample, 2048, 8.0);
    let uploading = tokio::spawn(put.send(BodySource::paced(sample.bytes.clone(), 2048, pace)));
    let docs = media.documents(sample.clusters.len()).await;
    let result = uploading.await.unwrap();
    let numbers = check_clean_acks(&result.acks, &sample.timecodes(), false);
    for (i, doc) in docs.iter().enumerate() {
        check_document(doc, &sample, i, Some(start_ms), Some(&numbers[i]));
    }
    let (listed, _) = env
        .list_fragments(
            "live0",
            FragmentSelectorType::ServerTimestamp,
            now_ms() - HOUR_MS,
            now_ms() + HOUR_MS,
            None,
        )
        .await;
    assert!(listed.is_empty(), "a live-only stream listed {listed:?}");
    assert!(env.all_fragments("live0").await.is_empty());

    // A second upload, its body fed through a channel by another task, keeps numbering
    // upwards.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let body = sample.bytes.clone();
    let feeder = tokio::spawn(async move {
        for chunk in body.chunks(5000) {
            tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
    });
    let again = env
        .put_media("live0")
        .await
        .send(BodySource::Channel(rx))
        .await;
    feeder.await.unwrap();
    let later = check_clean_acks(&again.acks, &sample.timecodes(), false);
    assert!(
        number_lt(numbers.last().unwrap(), &later[0]),
        "fragment numbers went back across uploads: {numbers:?} then {later:?}"
    );
    env.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 9. A fragment resent after a lost ack
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_resent_fragment_keeps_its_number() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("resend", 24).await;
    let first = env
        .put_media("resend")
        .await
        .absolute()
        .send(BodySource::chunks(sample.bytes.clone(), 8192))
        .await;
    let numbers = check_clean_acks(&first.acks, &sample.timecodes(), true);
    let second = env
        .put_media("resend")
        .await
        .absolute()
        .send(BodySource::chunks(sample.bytes.clone(), 3000))
        .await;
    let again = check_clean_acks(&second.acks, &sample.timecodes(), true);
    assert_eq!(again, numbers, "PERSISTED numbers of the resent fragments");
    let listed = env.all_fragments("resend").await;
    assert_eq!(
        listed
            .iter()
            .map(|f| f.fragment_number().unwrap().to_owned())
            .collect::<Vec<_>>(),
        numbers,
        "each fragment listed once"
    );

    // Same timestamps, other content (each cluster time gets the next cluster's frames): not a
    // resend, so new fragments, and the originals stay as they were.
    let shifted: Vec<(u64, &[Frame])> = sample
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let other = &sample.clusters[(i + 1) % sample.clusters.len()];
            (c.timecode, other.frames.as_slice())
        })
        .collect();
    let third = env
        .put_media("resend")
        .await
        .absolute()
        .send(BodySource::chunks(
            kvs_document(&sample.info, &sample.tracks, &shifted),
            8192,
        ))
        .await;
    let other = check_clean_acks(&third.acks, &sample.timecodes(), true);
    assert!(
        number_lt(numbers.last().unwrap(), &other[0]),
        "different content acked with old fragment numbers: {numbers:?} then {other:?}"
    );
    assert_eq!(
        env.all_fragments("resend").await.len(),
        2 * sample.clusters.len()
    );
    let client = env
        .archived("resend", ApiName::GetMediaForFragmentList)
        .await;
    let out = client
        .get_media_for_fragment_list()
        .stream_name("resend")
        .set_fragments(Some(vec![numbers[0].clone(), other[0].clone()]))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetMediaForFragmentList: {}", display(&e)));
    let docs = MediaStream::new(out.payload).all_documents().await;
    assert_eq!(docs.len(), 2);
    check_frames(&docs[0].frames, &sample.clusters[0].frames, "original");
    check_frames(
        &docs[1].frames,
        &sample.clusters[1].frames,
        "same time, other content",
    );
    env.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 10. One connection per stream
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_second_connection_replaces_the_first() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("cam", 24).await;
    let mut first = env
        .put_media("cam")
        .await
        .relative_to(start_an_hour_ago())
        .start()
        .await;
    first
        .send_bytes(&sample.bytes[..sample.clusters[1].end as usize], 4096, None)
        .await;
    let second_tc = sample.clusters[1].timecode;
    first
        .wait_for(
            |a| a.is(AckEventType::Persisted) && a.fragment_timecode == Some(second_tc),
            ACK_TIMEOUT,
        )
        .await;

    let second = env.put_media("cam").await.start().await;
    assert_eq!(second.status(), 200);
    // The first connection is told, and ends, while its body is still open.
    let replaced = first.wait_end(Duration::from_secs(15)).await;
    let error = replaced
        .acks
        .iter()
        .rfind(|a| !a.is(AckEventType::Idle))
        .unwrap();
    assert_eq!(
        (
            error.event_type,
            error.error_id,
            error.error_code.as_deref()
        ),
        (AckEventType::Error, Some(4000), Some("CONNECTION_REPLACED")),
        "{:#?}",
        replaced.acks
    );
    let before: Vec<Ack> = replaced
        .acks
        .iter()
        .filter(|a| !a.is(AckEventType::Error))
        .cloned()
        .collect();
    check_clean_acks(&before, &sample.timecodes()[..2], true);

    let mut second = second;
    second.send_bytes(&sample.bytes, 4096, None).await;
    let result = second.finish().await;
    check_clean_acks(&result.acks, &sample.timecodes(), true);
    assert_eq!(
        env.all_fragments("cam").await.len(),
        2 + sample.clusters.len()
    );
    env.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 11. Request errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn put_media_request_errors() {
    let env = Env::start().await;
    let arn = env.create_stream("exists", 24).await;
    let addr = env.server.addr();

    let missing = PutMedia::new(addr, "nope")
        .send(BodySource::chunks(
            Bytes::from_static(b"\x1a\x45\xdf\xa3"),
            4,
        ))
        .await;
    assert_eq!(missing.status, 404, "{}", missing.error_body);
    assert_eq!(
        missing
            .error_type
            .as_deref()
            .map(|t| t.split(':').next().unwrap()),
        Some("ResourceNotFoundException"),
        "{}",
        missing.error_body
    );
    assert!(missing.acks.is_empty());

    let no_name = PutMedia::new(addr, "exists")
        .without_stream_name()
        .send(BodySource::chunks(
            Bytes::from_static(b"\x1a\x45\xdf\xa3"),
            4,
        ))
        .await;
    assert_eq!(no_name.status, 400, "{}", no_name.error_body);
    assert_eq!(
        no_name
            .error_type
            .as_deref()
            .map(|t| t.split(':').next().unwrap()),
        Some("InvalidArgumentException"),
        "{}",
        no_name.error_body
    );

    // Malformed timecode headers are request errors, before any body.
    for (name, value) in [
        ("x-amzn-fragment-timecode-type", "SOMETIMES"),
        ("x-amzn-producer-start-timestamp", "yesterday"),
    ] {
        let bad = PutMedia::new(addr, "exists")
            .header(name, value)
            .send(BodySource::chunks(
                Bytes::from_static(b"\x1a\x45\xdf\xa3"),
                4,
            ))
            .await;
        assert_eq!(bad.status, 400, "{name}: {value}: {}", bad.error_body);
        assert!(bad.acks.is_empty());
    }

    // The stream still takes a normal upload, named by ARN this time. Without timecode headers
    // the producer timestamps count from the request's arrival.
    let sample = Sample::load(VIDEO);
    let before = now_ms();
    let ok = PutMedia::new(addr, "exists")
        .without_stream_name()
        .header("x-amzn-stream-arn", &arn)
        .send(BodySource::chunks(sample.bytes.clone(), 8192))
        .await;
    let after = now_ms();
    assert_eq!(ok.status, 200, "{}", ok.error_body);
    check_clean_acks(&ok.acks, &sample.timecodes(), true);
    let listed = env.all_fragments("exists").await;
    assert_eq!(listed.len(), sample.clusters.len());
    for (f, c) in listed.iter().zip(&sample.clusters) {
        let start = millis(f.producer_timestamp()) - c.timecode as i64;
        assert!(
            (before..=after).contains(&start),
            "producer timestamp {} - timecode {} is not the request's arrival in [{before}, \
             {after}]",
            millis(f.producer_timestamp()),
            c.timecode
        );
    }

    // A wrong ARN is a missing stream.
    let wrong = PutMedia::new(addr, "exists")
        .without_stream_name()
        .header("x-amzn-stream-arn", &arn.replace("/exists/", "/nope/"))
        .send(BodySource::chunks(
            Bytes::from_static(b"\x1a\x45\xdf\xa3"),
            4,
        ))
        .await;
    assert_eq!(wrong.status, 404, "{}", wrong.error_body);
    env.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// More live behaviour
// ---------------------------------------------------------------------------------------------

/// GetMedia NOW opened while a fragment is arriving starts with that fragment, from its first
/// frame (not with the next one).
#[tokio::test]
async fn get_media_now_mid_fragment_starts_at_its_first_frame() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("mid", 24).await;
    let start_ms = start_an_hour_ago();
    let mut upload = env
        .put_media("mid")
        .await
        .relative_to(start_ms)
        .start()
        .await;
    // Up to the middle of the third cluster.
    let third = &sample.clusters[2];
    let middle = third.frame_ends[12] as usize;
    upload.send_bytes(&sample.bytes[..middle], 4096, None).await;
    upload
        .wait_for(
            |a| a.is(AckEventType::Buffering) && a.fragment_timecode == Some(third.timecode),
            ACK_TIMEOUT,
        )
        .await;
    // BUFFERING comes at the cluster's start; give the frames after it a moment to be stored.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut media = env
        .get_media("mid", start(StartSelectorType::Now).build().unwrap())
        .await;
    upload.send_bytes(&sample.bytes[middle..], 4096, None).await;
    let result = upload.finish().await;
    let numbers = check_clean_acks(&result.acks, &sample.timecodes(), true);
    let docs = media.documents(3).await;
    for (k, doc) in docs.iter().enumerate() {
        check_document(doc, &sample, k + 2, Some(start_ms), Some(&numbers[k + 2]));
    }
    env.server.shutdown().await;
}

/// A fragment dropped by an ingest error after its first frames went out live: the live reader
/// gets a document with error tags (and no continuation token) in its place, never the bad
/// block, and then the next fragment whole.
#[tokio::test]
async fn a_live_reader_is_told_when_a_fragment_is_dropped() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("drop", 24).await;
    let mut media = env
        .get_media("drop", start(StartSelectorType::Now).build().unwrap())
        .await;
    let c = &sample.clusters;
    let mut stray: Vec<Frame> = c[1].frames.clone();
    let mut odd = stray[3].clone();
    odd.track = 7;
    stray.insert(5, odd);
    let body = kvs_document(
        &sample.info,
        &sample.tracks,
        &[(0, &c[0].frames), (1000, &stray), (2000, &c[2].frames)],
    );
    let start_ms = start_an_hour_ago();
    // Paced (4x), so the reader follows the second fragment while it is arriving.
    let pace = pace_for(&sample, 1024, 4.0);
    let result = env
        .put_media("drop")
        .await
        .relative_to(start_ms)
        .send(BodySource::paced(body, 1024, pace))
        .await;
    let numbers = check_acks(&result.acks, &[0, 1000, 2000], &[(1000, 4010)], true);
    let docs = media.documents(3).await;
    check_document(&docs[0], &sample, 0, Some(start_ms), Some(&numbers[0]));
    let dropped = &docs[1];
    assert!(
        dropped.error_code.is_some() || dropped.error_id.is_some(),
        "the dropped fragment's document has no error tags: {dropped:#?}"
    );
    assert_eq!(
        dropped.continuation_token, None,
        "a token for a dropped fragment"
    );
    assert!(
        dropped.frames.len() <= 5,
        "frames past the bad block: {}",
        dropped.frames.len()
    );
    check_frames(
        &dropped.frames,
        &c[1].frames[..dropped.frames.len()],
        "dropped fragment",
    );
    let mut third = sample.clone();
    third.clusters[2].timecode = 2000;
    check_document(&docs[2], &third, 2, Some(start_ms), Some(&numbers[1]));
    assert!(docs.iter().flat_map(|d| &d.frames).all(|f| f.track != 7));
    env.server.shutdown().await;
}

/// A TimecodeScale of 100 µs (the KVS producer allows 100 ns to 1 s): producer timestamps,
/// lengths and GetMedia timecodes keep their units.
#[tokio::test]
async fn timecodes_in_a_finer_scale() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("fine", 24).await;
    let info = SegmentInfo {
        timecode_scale: 100_000,
        ..sample.info.clone()
    };
    let scaled: Vec<(u64, Vec<Frame>)> = sample
        .clusters
        .iter()
        .map(|c| {
            let frames = c
                .frames
                .iter()
                .map(|f| Frame {
                    timecode: f.timecode * 10,
                    ..f.clone()
                })
                .collect();
            (c.timecode * 10, frames)
        })
        .collect();
    let clusters: Vec<(u64, &[Frame])> = scaled.iter().map(|(t, f)| (*t, f.as_slice())).collect();
    let fine = Sample::parse(Bytes::from(kvs_document(&info, &sample.tracks, &clusters)));
    assert_eq!(fine.info.timecode_scale, 100_000);
    let start_ms = start_an_hour_ago();
    let result = env
        .put_media("fine")
        .await
        .relative_to(start_ms)
        .send(BodySource::chunks(fine.bytes.clone(), 8192))
        .await;
    // Acks carry the timecodes as sent, in the document's units.
    let numbers = check_clean_acks(&result.acks, &fine.timecodes(), true);
    let listed = env.all_fragments("fine").await;
    assert_eq!(listed.len(), sample.clusters.len());
    for (f, c) in listed.iter().zip(&sample.clusters) {
        assert_eq!(
            millis(f.producer_timestamp()),
            start_ms + c.timecode as i64,
            "ProducerTimestamp at a 100 µs scale"
        );
        assert!(
            (960..=1040).contains(&f.fragment_length_in_milliseconds()),
            "FragmentLengthInMilliseconds {} at a 100 µs scale",
            f.fragment_length_in_milliseconds()
        );
    }
    let mut media = env
        .get_media("fine", start(StartSelectorType::Earliest).build().unwrap())
        .await;
    for (i, doc) in media
        .documents(fine.clusters.len())
        .await
        .iter()
        .enumerate()
    {
        check_document(doc, &fine, i, Some(start_ms), Some(&numbers[i]));
    }
    env.server.shutdown().await;
}

/// An upload that goes quiet gets IDLE acks (no fragment fields) and can go on afterwards.
#[tokio::test]
async fn a_quiet_upload_gets_idle_acks() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("quiet", 24).await;
    let mut upload = env
        .put_media("quiet")
        .await
        .relative_to(start_an_hour_ago())
        .start()
        .await;
    let first_end = sample.clusters[0].end as usize;
    upload
        .send_bytes(&sample.bytes[..first_end], 4096, None)
        .await;
    let idle = upload
        .wait_for(|a| a.is(AckEventType::Idle), Duration::from_secs(10))
        .await;
    assert_eq!(
        (idle.fragment_number, idle.error_id),
        (None, None),
        "an IDLE ack names no fragment"
    );
    upload
        .send_bytes(&sample.bytes[first_end..], 4096, None)
        .await;
    let result = upload.finish().await;
    check_clean_acks(&result.acks, &sample.timecodes(), true);
    env.server.shutdown().await;
}

/// Three tracks are the most a fragment may have, and are fine.
#[tokio::test]
async fn three_tracks_are_allowed() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("three", 24).await;
    let mut tracks = Vec::new();
    for n in 1..=3 {
        let mut t = sample.tracks[0].clone();
        t.number = n;
        t.uid = Some(n);
        tracks.push(t);
    }
    // Every track has frames: the video on track 1, copies of its key frames on 2 and 3.
    let c = &sample.clusters;
    let with_copies: Vec<Vec<Frame>> = c
        .iter()
        .take(2)
        .map(|c| {
            let mut frames = c.frames.clone();
            for n in [2, 3] {
                let mut f = c.frames[0].clone();
                f.track = n;
                frames.insert(1, f);
            }
            frames
        })
        .collect();
    let body = kvs_document(
        &sample.info,
        &tracks,
        &[(0, &with_copies[0]), (1000, &with_copies[1])],
    );
    let result = env
        .put_media("three")
        .await
        .relative_to(start_an_hour_ago())
        .send(BodySource::chunks(body, 8192))
        .await;
    check_clean_acks(&result.acks, &[0, 1000], true);
    let mut media = env
        .get_media("three", start(StartSelectorType::Earliest).build().unwrap())
        .await;
    let docs = media.documents(2).await;
    for (doc, frames) in docs.iter().zip(&with_copies) {
        assert_eq!(*doc.tracks, tracks);
        check_frames(&doc.frames, frames, "three tracks");
    }
    env.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Deletion
// ---------------------------------------------------------------------------------------------

/// Deleting a stream ends its live GetMedia responses (rather than leaving them waiting for a
/// next fragment forever), and its upload stops with an ERROR ack at its next fragment.
#[tokio::test]
async fn deleting_a_stream_ends_its_readers_and_upload() {
    let (env, mut upload, mut media, rest) = upload_then_delete("gone").await;
    loop {
        match media.next_event().await {
            None => break,
            Some(MediaEvent::Document(d)) => panic!("a document after DeleteStream: {d:#?}"),
            Some(_) => {}
        }
    }
    // One more chunk, the next cluster's start and first frame; no more writes after it, so
    // that the answer is read whole.
    upload.send_chunk(rest).await;
    let result = upload.wait_end(Duration::from_secs(15)).await;
    let errors = result.acks_of(AckEventType::Error);
    assert_eq!(errors.len(), 1, "{:#?}", result.acks);
    assert_eq!(result.acks_of(AckEventType::Received).len(), 2);
    assert_eq!(health(env.server.addr()).await, 200);
    env.server.shutdown().await;
}

/// The ERROR ack an upload gets when its stream is deleted says so: 4008 (stream not active)
/// or the producer SDK's 4507 (stream deleted), not an internal error the producer would retry.
#[tokio::test]
async fn an_upload_to_a_deleted_stream_is_told_it_is_gone() {
    let (env, mut upload, _media, rest) = upload_then_delete("gone2").await;
    upload.send_chunk(rest).await;
    let result = upload.wait_end(Duration::from_secs(15)).await;
    let errors = result.acks_of(AckEventType::Error);
    assert_eq!(errors.len(), 1, "{:#?}", result.acks);
    assert!(
        matches!(errors[0].error_id, Some(4008 | 4507)),
        "ErrorId after DeleteStream: {:#?}",
        errors[0]
    );
    env.server.shutdown().await;
}

/// Uploads two fragments to a new stream `name`, reads them with GetMedia EARLIEST, deletes
/// the stream; returns the open upload, the reader, and the next chunk of the sample (the
/// third cluster up to its first frame).
async fn upload_then_delete(name: &str) -> (Env, Upload, MediaStream, Bytes) {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    let arn = env.create_stream(name, 24).await;
    let mut upload = env
        .put_media(name)
        .await
        .relative_to(start_an_hour_ago())
        .start()
        .await;
    let second_end = sample.clusters[1].end as usize;
    upload
        .send_bytes(&sample.bytes[..second_end], 4096, None)
        .await;
    let tc = sample.clusters[1].timecode;
    upload
        .wait_for(
            |a| a.is(AckEventType::Persisted) && a.fragment_timecode == Some(tc),
            ACK_TIMEOUT,
        )
        .await;
    let mut media = env
        .get_media(name, start(StartSelectorType::Earliest).build().unwrap())
        .await;
    media.documents(2).await;
    env.kvs
        .delete_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeleteStream: {}", display(&e)));
    let rest = sample
        .bytes
        .slice(second_end..sample.clusters[2].frame_ends[0] as usize);
    (env, upload, media, rest)
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

/// A server shutting down tells its uploads (ERROR 4000, which producers retry elsewhere) after
/// persisting what they had finished.
#[tokio::test]
async fn shutdown_ends_uploads_with_an_error_ack() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("bye", 24).await;
    let mut upload = env
        .put_media("bye")
        .await
        .relative_to(start_an_hour_ago())
        .start()
        .await;
    // Two whole clusters and half of the third.
    let cut = ((sample.clusters[2].start + sample.clusters[2].end) / 2) as usize;
    upload.send_bytes(&sample.bytes[..cut], 4096, None).await;
    let tc = sample.clusters[1].timecode;
    upload
        .wait_for(
            |a| a.is(AckEventType::Persisted) && a.fragment_timecode == Some(tc),
            ACK_TIMEOUT,
        )
        .await;
    let shutdown = tokio::spawn(env.server.shutdown());
    let result = upload.wait_end(Duration::from_secs(15)).await;
    tokio::time::timeout(Duration::from_secs(15), shutdown)
        .await
        .expect("shutdown did not finish")
        .unwrap();
    let timecodes: Vec<u64> = sample.timecodes()[..3].to_vec();
    let last = result
        .acks
        .iter()
        .rfind(|a| !a.is(AckEventType::Idle))
        .unwrap();
    assert_eq!(
        (last.event_type, last.error_id),
        (AckEventType::Error, Some(4000)),
        "{:#?}",
        result.acks
    );
    let before: Vec<Ack> = result
        .acks
        .iter()
        .filter(|a| !a.is(AckEventType::Error))
        .cloned()
        .collect();
    // The third cluster was only BUFFERING.
    let numbers = check_acks(
        &before
            .iter()
            .filter(|a| a.fragment_timecode != Some(timecodes[2]))
            .cloned()
            .collect::<Vec<_>>(),
        &timecodes[..2],
        &[],
        true,
    );
    assert_eq!(numbers.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Idle uploads and the connection time limit
// ---------------------------------------------------------------------------------------------

/// Frames of the second cluster sent before an upload goes quiet.
const PARTIAL_FRAMES: usize = 10;

/// Starts a RELATIVE upload to `name`, sends the first cluster of `sample` whole and waits for
/// its PERSISTED ack, then sends the first [`PARTIAL_FRAMES`] frames of the second cluster and
/// waits for its BUFFERING ack. Returns the upload, with its body still open, and the first
/// fragment's number.
async fn one_fragment_and_a_part(
    env: &Env,
    name: &str,
    sample: &Sample,
    start_ms: i64,
) -> (Upload, String) {
    let mut upload = env
        .put_media(name)
        .await
        .relative_to(start_ms)
        .start()
        .await;
    assert_eq!(upload.status(), 200);
    let c = &sample.clusters;
    upload
        .send_bytes(&sample.bytes[..c[0].end as usize], 4096, None)
        .await;
    let persisted = upload
        .wait_for(
            |a| a.is(AckEventType::Persisted) && a.fragment_timecode == Some(c[0].timecode),
            ACK_TIMEOUT,
        )
        .await;
    let cut = c[1].frame_ends[PARTIAL_FRAMES - 1] as usize;
    upload
        .send_bytes(&sample.bytes[c[0].end as usize..cut], 4096, None)
        .await;
    upload
        .wait_for(
            |a| a.is(AckEventType::Buffering) && a.fragment_timecode == Some(c[1].timecode),
            ACK_TIMEOUT,
        )
        .await;
    (upload, persisted.fragment_number.unwrap())
}

/// After an upload of [`one_fragment_and_a_part`] ended: the first fragment alone is stored
/// (ListFragments lists it, GetMedia gives it whole), and a new upload to the stream, of the
/// clusters from the second on, goes through. A GetMedia EARLIEST reader opened before that
/// upload gets exactly those fragments after the first: had the part of the second cluster
/// been stored, it would come in between.
async fn only_the_finished_fragment_is_kept(
    env: &Env,
    name: &str,
    sample: &Sample,
    start_ms: i64,
    first: &str,
) {
    let listed = env.all_fragments(name).await;
    assert_eq!(
        listed
            .iter()
            .map(|f| f.fragment_number())
            .collect::<Vec<_>>(),
        vec![Some(first)],
        "ListFragments: {listed:#?}"
    );
    let scale = sample.info.timecode_scale as i64;
    assert_eq!(
        millis(listed[0].producer_timestamp.as_ref()),
        start_ms + sample.clusters[0].timecode as i64 * scale / 1_000_000,
        "producer timestamp of the first fragment"
    );
    let mut media = env
        .get_media(name, start(StartSelectorType::Earliest).build().unwrap())
        .await;
    let docs = media.documents(1).await;
    check_document(&docs[0], sample, 0, Some(start_ms), Some(first));

    let rest: Vec<(u64, &[Frame])> = sample.clusters[1..]
        .iter()
        .map(|c| (c.timecode, &c.frames[..]))
        .collect();
    let body = kvs_document(&sample.info, &sample.tracks, &rest);
    let result = env
        .put_media(name)
        .await
        .relative_to(start_ms)
        .send(BodySource::chunks(body, 4096))
        .await;
    assert_eq!(result.status, 200);
    let numbers = check_clean_acks(&result.acks, &sample.timecodes()[1..], true);
    assert!(number_lt(first, &numbers[0]), "{first} then {}", numbers[0]);
    let docs = media.documents(rest.len()).await;
    for (i, doc) in docs.iter().enumerate() {
        check_document(doc, sample, i + 1, Some(start_ms), Some(&numbers[i]));
    }
    assert_eq!(env.all_fragments(name).await.len(), sample.clusters.len());
}

/// An upload that stops sending mid-fragment gets IDLE acks, then its response just ends (AWS
/// documents no ErrorId for this: the service closes the request) once the idle timeout has
/// passed. The fragment it was in is dropped (a live reader is told, nothing is stored), the one
/// it finished stays, and the stream takes a new upload.
#[tokio::test]
async fn an_idle_upload_ends_and_keeps_its_finished_fragments() {
    let env = Env::with_server(
        TestServer::start_with(|c| c.put_media_idle_timeout = Duration::from_secs(2)).await,
    );
    let sample = Sample::load(VIDEO);
    env.create_stream("idle", 24).await;
    let mut live = env
        .get_media("idle", start(StartSelectorType::Now).build().unwrap())
        .await;
    let start_ms = start_an_hour_ago();
    let (upload, first) = one_fragment_and_a_part(&env, "idle", &sample, start_ms).await;

    // A server that never times out fails here (the default, 30 s, is past this bound too).
    let result = upload.wait_end(Duration::from_secs(20)).await;
    let acks = &result.acks;
    let partial_tc = sample.clusters[1].timecode;
    let buffering = acks
        .iter()
        .position(|a| a.is(AckEventType::Buffering) && a.fragment_timecode == Some(partial_tc))
        .unwrap();
    // After the part of the second cluster: IDLE acks, at least one, and nothing else (no
    // RECEIVED for a fragment that never ended, no ERROR).
    let after = &acks[buffering + 1..];
    assert!(
        !after.is_empty() && after.iter().all(|a| a.is(AckEventType::Idle)),
        "expected only IDLE acks, at least one, before the end: {acks:#?}"
    );
    for idle in after {
        assert_eq!(
            (
                idle.fragment_timecode,
                idle.fragment_number.as_deref(),
                idle.error_id
            ),
            (None, None, None),
            "an IDLE ack names no fragment: {acks:#?}"
        );
    }
    let finished: Vec<Ack> = acks
        .iter()
        .filter(|a| a.fragment_timecode != Some(partial_tc))
        .cloned()
        .collect();
    let numbers = check_clean_acks(&finished, &sample.timecodes()[..1], true);
    assert_eq!(numbers, vec![first.clone()]);

    // The live reader had the first fragment, and is told the second was dropped.
    let docs = live.documents(2).await;
    check_document(&docs[0], &sample, 0, Some(start_ms), Some(&first));
    let dropped = &docs[1];
    assert!(
        dropped.error_code.is_some() || dropped.error_id.is_some(),
        "the dropped fragment's document has no error tags: {dropped:#?}"
    );
    assert_eq!(
        dropped.continuation_token, None,
        "a token for a dropped fragment"
    );
    assert!(
        dropped.frames.len() <= PARTIAL_FRAMES,
        "{}",
        dropped.frames.len()
    );
    check_frames(
        &dropped.frames,
        &sample.clusters[1].frames[..dropped.frames.len()],
        "dropped fragment",
    );

    only_the_finished_fragment_is_kept(&env, "idle", &sample, start_ms, &first).await;
    env.server.shutdown().await;
}

/// `--limits aws` ends a PutMedia connection after 45 minutes with ERROR 4003 (here after a
/// few seconds, set by `put_media_max_connection_duration`), even while it sends data: the
/// fragment in progress is dropped and the finished ones stay.
#[tokio::test]
async fn a_connection_ends_at_its_time_limit() {
    let env = Env::with_server(
        TestServer::start_with(|c| {
            c.limits = LimitsMode::Aws;
            c.put_media_max_connection_duration = Some(Duration::from_secs(4));
        })
        .await,
    );
    let sample = Sample::load(VIDEO);
    env.create_stream("old", 24).await;
    let start_ms = start_an_hour_ago();
    let (mut upload, first) = one_fragment_and_a_part(&env, "old", &sample, start_ms).await;
    // Go on with the second cluster, all but its last frame, in 80 pieces 100 ms apart: the
    // limit comes while data is still arriving, and the cluster never ends.
    let c = &sample.clusters[1];
    let from = c.frame_ends[PARTIAL_FRAMES - 1] as usize;
    let to = c.frame_ends[c.frames.len() - 2] as usize;
    let trickle = sample.bytes.slice(from..to);
    let sender = tokio::spawn(async move {
        let piece = trickle.len().div_ceil(80);
        let mut at = 0;
        while at < trickle.len() && !upload.server_closed_body() {
            let end = (at + piece).min(trickle.len());
            upload.send_chunk(trickle.slice(at..end)).await;
            at = end;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        upload
    });
    let upload = sender.await.unwrap();
    let result = upload.wait_end(Duration::from_secs(20)).await;
    let acks = &result.acks;
    let last = acks.iter().rfind(|a| !a.is(AckEventType::Idle)).unwrap();
    assert_eq!(
        (
            last.event_type,
            last.error_id,
            last.error_code.as_deref(),
            last.fragment_timecode
        ),
        (
            AckEventType::Error,
            Some(4003),
            Some("MAX_CONNECTION_DURATION_REACHED"),
            None
        ),
        "{acks:#?}"
    );
    let finished: Vec<Ack> = acks
        .iter()
        .filter(|a| !a.is(AckEventType::Error) && a.fragment_timecode != Some(c.timecode))
        .cloned()
        .collect();
    let numbers = check_clean_acks(&finished, &sample.timecodes()[..1], true);
    assert_eq!(numbers, vec![first.clone()]);
    assert!(
        acks.iter()
            .filter(|a| a.fragment_timecode == Some(c.timecode))
            .all(|a| a.is(AckEventType::Buffering)),
        "the cut fragment got more than BUFFERING: {acks:#?}"
    );

    only_the_finished_fragment_is_kept(&env, "old", &sample, start_ms, &first).await;
    env.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------------

/// Once retention has removed a stream's oldest fragments, the media APIs carry on from what is
/// left: ListFragments and GetMedia EARLIEST start at the oldest survivor (whose ingest session,
/// Info and Tracks, must still be there), a start position inside the removed part moves up to
/// it, and GetMediaForFragmentList answers a removed fragment with error tags.
#[tokio::test]
async fn media_after_retention_removed_the_oldest_fragments() {
    let clock = Arc::new(ManualClock::new(now_ms()));
    let server = TestServer::start_with_clock(clock.clone(), |c| {
        c.max_clock_skew = Duration::from_secs(24 * 3600);
        c.retention_interval = Duration::from_secs(1);
    })
    .await;
    let env = Env::with_server(server);
    let video = Sample::load(VIDEO);
    let av = Sample::load(VIDEO_AAC);
    env.create_stream("old", 1).await;
    let start_ms = start_an_hour_ago();
    let first = env
        .put_media("old")
        .await
        .relative_to(start_ms)
        .send(BodySource::chunks(video.bytes.clone(), 8192))
        .await;
    let old = check_clean_acks(&first.acks, &video.timecodes(), true);
    clock.advance_ms(40 * 60_000);
    let second = env
        .put_media("old")
        .await
        .relative_to(start_ms + 60_000)
        .send(BodySource::chunks(av.bytes.clone(), 8192))
        .await;
    let kept = check_clean_acks(&second.acks, &av.timecodes(), true);
    // The first upload is now 70 minutes old, past the 1 h retention; the second 30 minutes.
    clock.advance_ms(30 * 60_000);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let listed = env.all_fragments("old").await;
        let numbers: Vec<String> = listed
            .iter()
            .map(|f| f.fragment_number().unwrap().to_owned())
            .collect();
        if numbers == kept {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not leave exactly the second upload: {numbers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another pass, so that the removed fragments' ingest session is pruned too.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let mut media = env
        .get_media("old", start(StartSelectorType::Earliest).build().unwrap())
        .await;
    let docs = media.documents(av.clusters.len()).await;
    for (i, doc) in docs.iter().enumerate() {
        check_document_at(
            doc,
            &av,
            i,
            Some(start_ms + 60_000),
            Some(&kept[i]),
            clock.now_ms(),
        );
    }
    let mut media = env
        .get_media(
            "old",
            start(StartSelectorType::FragmentNumber)
                .after_fragment_number(&old[1])
                .build()
                .unwrap(),
        )
        .await;
    let doc = media.documents(1).await.remove(0);
    assert_eq!(
        doc.fragment_number.as_deref(),
        Some(kept[0].as_str()),
        "FRAGMENT_NUMBER after a removed fragment: the oldest left"
    );

    let client = env.archived("old", ApiName::GetMediaForFragmentList).await;
    let out = client
        .get_media_for_fragment_list()
        .stream_name("old")
        .set_fragments(Some(vec![old[2].clone(), kept[1].clone()]))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetMediaForFragmentList: {}", display(&e)));
    let docs = MediaStream::new(out.payload).all_documents().await;
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].fragment_number.as_deref(), Some(old[2].as_str()));
    assert!(
        docs[0].error_code.is_some() && !docs[0].has_cluster,
        "{:#?}",
        docs[0]
    );
    check_fragment_list_document(&docs[1], &av, 1, start_ms + 60_000, &kept[1]);

    // The first upload's Info and Tracks again: a new ingest session, readable after the
    // surviving one.
    let third = env
        .put_media("old")
        .await
        .relative_to(start_ms + 120_000)
        .send(BodySource::chunks(video.bytes.clone(), 8192))
        .await;
    let new = check_clean_acks(&third.acks, &video.timecodes(), true);
    let mut media = env
        .get_media("old", start(StartSelectorType::Earliest).build().unwrap())
        .await;
    let docs = media
        .documents(av.clusters.len() + video.clusters.len())
        .await;
    for (i, doc) in docs[av.clusters.len()..].iter().enumerate() {
        check_document_at(
            doc,
            &video,
            i,
            Some(start_ms + 120_000),
            Some(&new[i]),
            clock.now_ms(),
        );
    }
    env.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The KVS producer's byte layout, and AWS's per-fragment limits
// ---------------------------------------------------------------------------------------------

/// One cluster of a KVS-producer-style body: metadata tags before it, frames, and the
/// end-of-fragment marker after it.
struct KvsCluster<'a> {
    timecode: u64,
    tags: Vec<mkv::SimpleTag>,
    frames: &'a [Frame],
}

/// A body laid out as the KVS producer (PIC) writes it: Info with its strings, per fragment a
/// Tags element of metadata before the unknown-size Cluster and an
/// `AWS_KINESISVIDEO_END_OF_FRAGMENT` Tags after its frames.
fn pic_document(tracks: &[Track], clusters: &[KvsCluster<'_>]) -> Vec<u8> {
    let info = SegmentInfo {
        segment_uid: Some(Bytes::from_static(&[7; 16])),
        title: Some("Kinesis Video SDK".to_owned()),
        muxing_app: Some("libkinesisvideo".to_owned()),
        writing_app: Some("KinesisVideoSDK".to_owned()),
        ..SegmentInfo::default()
    };
    let mut out = Vec::new();
    write::ebml_header(&mut out);
    write::segment_start_unknown(&mut out);
    write::info(&mut out, &info);
    write::tracks(&mut out, tracks);
    for c in clusters {
        write::tags(&mut out, &c.tags);
        write::cluster_start_unknown(&mut out, c.timecode);
        for f in c.frames {
            write::simple_block(&mut out, f);
        }
        write::tags(
            &mut out,
            &[mkv::SimpleTag::string(tag_names::END_OF_FRAGMENT, "")],
        );
    }
    out
}

/// A PIC-style upload with ABSOLUTE epoch timecodes: producer timestamps are the timecodes,
/// fragment metadata comes back with its fragment (and only that one), the end-of-fragment
/// markers do not come back at all.
#[tokio::test]
async fn a_kvs_producer_style_upload() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("pic", 24).await;
    let base = start_an_hour_ago() as u64;
    let metadata = vec![
        mkv::SimpleTag::string("CAMERA", "front door"),
        mkv::SimpleTag::string("SEQUENCE", "2"),
    ];
    let clusters: Vec<KvsCluster<'_>> = sample
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| KvsCluster {
            timecode: base + c.timecode,
            tags: if i == 1 { metadata.clone() } else { Vec::new() },
            frames: &c.frames,
        })
        .collect();
    let body = pic_document(&sample.tracks, &clusters);
    let pic = Sample::parse(Bytes::from(body.clone()));
    let result = env
        .put_media("pic")
        .await
        .absolute()
        .header(
            "x-amzn-producer-start-timestamp",
            &format!("{}.{}", base / 1000, base % 1000),
        )
        .send(BodySource::chunks(body, 5000))
        .await;
    let numbers = check_clean_acks(&result.acks, &pic.timecodes(), true);
    let listed = env.all_fragments("pic").await;
    assert_eq!(
        listed
            .iter()
            .map(|f| millis(f.producer_timestamp()))
            .collect::<Vec<_>>(),
        pic.timecodes()
            .iter()
            .map(|&t| t as i64)
            .collect::<Vec<_>>()
    );
    let mut media = env
        .get_media("pic", start(StartSelectorType::Earliest).build().unwrap())
        .await;
    let docs = media.documents(pic.clusters.len()).await;
    for (i, doc) in docs.iter().enumerate() {
        check_document(doc, &pic, i, None, Some(&numbers[i]));
        let expected = if i == 1 { metadata.clone() } else { Vec::new() };
        assert_eq!(doc.producer_tags, expected, "producer tags of fragment {i}");
    }
    assert!(
        !media
            .docs
            .bytes
            .windows(tag_names::END_OF_FRAGMENT.len())
            .any(|w| w == tag_names::END_OF_FRAGMENT.as_bytes()),
        "the producer's end-of-fragment marker came back in GetMedia"
    );
    env.server.shutdown().await;
}

/// With `--limits aws`: a fragment longer than 10 s (4002), a declared track without frames in
/// a fragment (4011) and more than 10 metadata tags (4009) are refused, and the uploads go on.
#[tokio::test]
async fn aws_limits_per_fragment() {
    let env = Env::with_server(TestServer::start_with(|c| c.limits = LimitsMode::Aws).await);
    let video = Sample::load(VIDEO);
    let av = Sample::load(VIDEO_AAC);

    // 12 s of frames in the second cluster.
    env.create_stream("long", 24).await;
    let long: Vec<Frame> = (0..25)
        .map(|k| Frame {
            timecode: k * 500,
            ..video.clusters[1].frames[k as usize].clone()
        })
        .collect();
    let body = kvs_document(
        &video.info,
        &video.tracks,
        &[
            (0, &video.clusters[0].frames),
            (1000, &long),
            (13_000, &video.clusters[2].frames),
        ],
    );
    let result = env
        .put_media("long")
        .await
        .relative_to(start_an_hour_ago())
        .send(BodySource::chunks(body, 8192))
        .await;
    check_acks(&result.acks, &[0, 1000, 13_000], &[(1000, 4002)], true);

    // The audio track has no frames in the second cluster.
    env.create_stream("silent", 24).await;
    let video_track = av
        .tracks
        .iter()
        .find(|t| t.track_type == mkv::TRACK_TYPE_VIDEO)
        .unwrap()
        .number;
    let video_only: Vec<Frame> = av.clusters[1]
        .frames
        .iter()
        .filter(|f| f.track == video_track)
        .cloned()
        .collect();
    let tcs: Vec<u64> = av.timecodes()[..3].to_vec();
    let body = kvs_document(
        &av.info,
        &av.tracks,
        &[
            (tcs[0], &av.clusters[0].frames),
            (tcs[1], &video_only),
            (tcs[2], &av.clusters[2].frames),
        ],
    );
    let result = env
        .put_media("silent")
        .await
        .relative_to(start_an_hour_ago())
        .send(BodySource::chunks(body, 8192))
        .await;
    check_acks(&result.acks, &tcs, &[(tcs[1], 4011)], true);

    // Ten metadata tags are fine, eleven are not (the tags go, the fragment stays).
    env.create_stream("chatty", 24).await;
    let tags = |n: usize| -> Vec<mkv::SimpleTag> {
        (0..n)
            .map(|k| mkv::SimpleTag::string(format!("KEY{k}"), format!("value {k}")))
            .collect()
    };
    let clusters: Vec<KvsCluster<'_>> = video.clusters[..3]
        .iter()
        .enumerate()
        .map(|(i, c)| KvsCluster {
            timecode: c.timecode,
            tags: match i {
                0 => tags(10),
                1 => tags(11),
                _ => Vec::new(),
            },
            frames: &c.frames,
        })
        .collect();
    let result = env
        .put_media("chatty")
        .await
        .relative_to(start_an_hour_ago())
        .send(BodySource::chunks(
            pic_document(&video.tracks, &clusters),
            8192,
        ))
        .await;
    let errors = result.acks_of(AckEventType::Error);
    assert_eq!(errors.len(), 1, "{:#?}", result.acks);
    assert_eq!(errors[0].error_id, Some(4009), "{:#?}", result.acks);
    let clean: Vec<Ack> = result
        .acks
        .iter()
        .filter(|a| !a.is(AckEventType::Error))
        .cloned()
        .collect();
    check_clean_acks(&clean, &video.timecodes()[..3], true);
    let mut media = env
        .get_media(
            "chatty",
            start(StartSelectorType::Earliest).build().unwrap(),
        )
        .await;
    let docs = media.documents(3).await;
    assert_eq!(docs[0].producer_tags, tags(10));
    assert!(
        docs[1].producer_tags.len() < 11,
        "eleven tags kept: {:?}",
        docs[1].producer_tags
    );
    env.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Media API errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn media_api_errors() {
    let env = Env::start().await;
    env.create_stream("cam", 24).await;
    let endpoint = env.endpoint("cam", ApiName::GetMedia).await;
    let media = timeshard_tests::kinesis_video_media_client(&endpoint);
    let archived = timeshard_tests::kinesis_video_archived_media_client(&endpoint);

    let code = |e: &dyn aws_sdk_kinesisvideo::error::ProvideErrorMetadata| {
        e.code().unwrap_or_default().to_owned()
    };
    let status = |raw: Option<&aws_sdk_kinesisvideo::config::http::HttpResponse>| {
        raw.map(|r| r.status().as_u16())
    };

    let e = media
        .get_media()
        .stream_name("nope")
        .start_selector(start(StartSelectorType::Earliest).build().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (code(&e), status(e.raw_response())),
        ("ResourceNotFoundException".to_owned(), Some(404))
    );
    for selector in [
        start(StartSelectorType::FragmentNumber).build().unwrap(),
        start(StartSelectorType::FragmentNumber)
            .after_fragment_number("12")
            .build()
            .unwrap(),
        start(StartSelectorType::ContinuationToken).build().unwrap(),
        start(StartSelectorType::ServerTimestamp).build().unwrap(),
    ] {
        let what = format!("{selector:?}");
        let e = media
            .get_media()
            .stream_name("cam")
            .start_selector(selector)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            (code(&e), status(e.raw_response())),
            ("InvalidArgumentException".to_owned(), Some(400)),
            "{what}"
        );
    }

    let range = |from: i64, to: i64| {
        FragmentSelector::builder()
            .fragment_selector_type(FragmentSelectorType::ServerTimestamp)
            .timestamp_range(
                TimestampRange::builder()
                    .start_timestamp(DateTime::from_millis(from))
                    .end_timestamp(DateTime::from_millis(to))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let e = archived
        .list_fragments()
        .stream_name("nope")
        .fragment_selector(range(0, now_ms()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (code(&e), status(e.raw_response())),
        ("ResourceNotFoundException".to_owned(), Some(404))
    );
    for (what, request) in [
        (
            "end before start",
            archived
                .list_fragments()
                .stream_name("cam")
                .fragment_selector(range(now_ms(), now_ms() - 1000)),
        ),
        (
            "a made-up NextToken",
            archived
                .list_fragments()
                .stream_name("cam")
                .next_token("bm9wZQ=="),
        ),
        (
            "MaxResults 0",
            archived
                .list_fragments()
                .stream_name("cam")
                .max_results(0)
                .fragment_selector(range(0, now_ms())),
        ),
    ] {
        let e = request.send().await.unwrap_err();
        assert_eq!(
            (code(&e), status(e.raw_response())),
            ("InvalidArgumentException".to_owned(), Some(400)),
            "{what}"
        );
    }
    let e = archived
        .get_media_for_fragment_list()
        .stream_name("nope")
        .fragments("1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (code(&e), status(e.raw_response())),
        ("ResourceNotFoundException".to_owned(), Some(404))
    );
    env.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// More resends
// ---------------------------------------------------------------------------------------------

/// What a producer does after a reconnect: it resends from its last PERSISTED ack on, so the
/// new connection starts with fragments already stored and goes on with new ones. The stored
/// ones keep their numbers, the new ones get higher numbers, nothing is listed twice.
#[tokio::test]
async fn a_reconnecting_producer_resends_then_goes_on() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("again", 24).await;
    let tcs = sample.timecodes();
    let c = &sample.clusters;
    let first = env
        .put_media("again")
        .await
        .absolute()
        .send(BodySource::chunks(
            sample.bytes[..c[2].end as usize].to_vec(),
            8192,
        ))
        .await;
    let old = check_clean_acks(&first.acks, &tcs[..3], true);
    // Clusters 2 to 5 (the 2nd and 3rd again) on a new connection, as a new document.
    let frames: Vec<(u64, &[Frame])> = c[1..]
        .iter()
        .map(|c| (c.timecode, c.frames.as_slice()))
        .collect();
    let second = env
        .put_media("again")
        .await
        .absolute()
        .send(BodySource::chunks(
            kvs_document(&sample.info, &sample.tracks, &frames),
            8192,
        ))
        .await;
    let numbers = check_clean_acks(&second.acks, &tcs[1..], true);
    assert_eq!(numbers[..2], old[1..], "the resent fragments' numbers");
    assert!(number_lt(&old[2], &numbers[2]), "{old:?} then {numbers:?}");
    let listed: Vec<String> = env
        .all_fragments("again")
        .await
        .iter()
        .map(|f| f.fragment_number().unwrap().to_owned())
        .collect();
    let mut expected = old.clone();
    expected.extend_from_slice(&numbers[2..]);
    assert_eq!(listed, expected, "each fragment listed once");
    env.server.shutdown().await;
}

/// Two stored fragments share a producer timestamp (the second had other content, so it was
/// not a resend). Resending the second must be recognised as a resend of it, not stored a
/// third time.
#[tokio::test]
async fn a_resend_is_recognised_among_fragments_with_the_same_timestamp() {
    let env = Env::start().await;
    let sample = Sample::load(VIDEO);
    env.create_stream("twins", 24).await;
    let tcs = sample.timecodes();
    let first = env
        .put_media("twins")
        .await
        .absolute()
        .send(BodySource::chunks(sample.bytes.clone(), 8192))
        .await;
    let originals = check_clean_acks(&first.acks, &tcs, true);
    let shifted: Vec<(u64, &[Frame])> = sample
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let other = &sample.clusters[(i + 1) % sample.clusters.len()];
            (c.timecode, other.frames.as_slice())
        })
        .collect();
    let other = Bytes::from(kvs_document(&sample.info, &sample.tracks, &shifted));
    let second = env
        .put_media("twins")
        .await
        .absolute()
        .send(BodySource::chunks(other.clone(), 8192))
        .await;
    let twins = check_clean_acks(&second.acks, &tcs, true);
    assert!(number_lt(originals.last().unwrap(), &twins[0]));
    // The second upload again, after a lost ack.
    let third = env
        .put_media("twins")
        .await
        .absolute()
        .send(BodySource::chunks(other, 4000))
        .await;
    let again = check_clean_acks(&third.acks, &tcs, true);
    assert_eq!(again, twins, "a resend of the fragments with other content");
    assert_eq!(
        env.all_fragments("twins").await.len(),
        2 * sample.clusters.len(),
        "fragments stored twice"
    );
    env.server.shutdown().await;
}

/// A seekable file as `curl -T file.mkv` sends it: known-size Segment, SeekHead, Cues after the
/// clusters, subtitles in BlockGroups. Every frame comes back from GetMedia.
#[tokio::test]
async fn a_seekable_file_with_block_groups() {
    let env = Env::start().await;
    let sample = Sample::load("h264-srt-320x240-file.mkv");
    assert_eq!(sample.clusters.len(), 2);
    assert_eq!(sample.tracks.len(), 2);
    env.create_stream("file", 24).await;
    let start_ms = start_an_hour_ago();
    let result = env
        .put_media("file")
        .await
        .relative_to(start_ms)
        .send(BodySource::chunks(sample.bytes.clone(), 8192))
        .await;
    let numbers = check_clean_acks(&result.acks, &sample.timecodes(), true);
    let mut media = env
        .get_media("file", start(StartSelectorType::Earliest).build().unwrap())
        .await;
    for (i, doc) in media.documents(2).await.iter().enumerate() {
        check_document(doc, &sample, i, Some(start_ms), Some(&numbers[i]));
    }
    env.server.shutdown().await;
}

/// curl as the producer (`curl -X POST -T -`: a chunked body from stdin, with
/// `Expect: 100-continue`), its output parsed as acks.
#[tokio::test]
async fn curl_uploads_from_a_pipe() {
    const CURL: &str = "/usr/bin/curl";
    if !std::path::Path::new(CURL).exists() {
        skip(&format!("{CURL} is missing"));
        return;
    }
    let env = Env::with_server(TestServer::start_with(|c| c.credentials.clear()).await);
    env.create_stream("piped", 24).await;
    let sample = Sample::load(VIDEO);
    let url = format!("{}/putMedia", env.server.endpoint_url());
    let mut curl = tokio::process::Command::new(CURL)
        .args([
            "-sS",
            "-X",
            "POST",
            "-T",
            "-",
            "-H",
            "x-amzn-stream-name: piped",
        ])
        .arg(&url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = curl.stdin.take().unwrap();
    stdin.write_all(&sample.bytes).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), curl.wait_with_output())
        .await
        .expect("curl did not finish in 30 s")
        .unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acks: Vec<Ack> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(Ack::parse)
        .collect();
    let numbers = check_clean_acks(&acks, &sample.timecodes(), true);
    let listed: Vec<String> = env
        .all_fragments("piped")
        .await
        .iter()
        .map(|f| f.fragment_number().unwrap().to_owned())
        .collect();
    assert_eq!(listed, numbers);
    env.server.shutdown().await;
}

/// Skips a test whose tool is missing, or fails it when `TIMESHARD_REQUIRE_MEDIA_TOOLS` is set
/// (CI installs the tools and sets it, so these tests can never pass there by skipping).
fn skip(why: &str) {
    assert!(
        std::env::var_os("TIMESHARD_REQUIRE_MEDIA_TOOLS").is_none(),
        "TIMESHARD_REQUIRE_MEDIA_TOOLS is set, but {why}"
    );
    println!("skipped: {why}");
}
