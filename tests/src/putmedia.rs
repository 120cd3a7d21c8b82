//! A PutMedia client for tests: one `POST /putMedia` with a chunked MKV body, signed the way the
//! KVS C producer signs it, with the ack stream read while the body is still uploading.
//!
//! PutMedia is not in any AWS SDK (producers use their own HTTP code), so the tests need their
//! own client. It is built on hyper 1's low-level HTTP/1.1 client because the request is full
//! duplex: the server answers `200` at once and streams newline-separated JSON acks
//! (`shared/reference/aws-protocol.md` A.4) while the body goes on, and a test must be able to
//! look at those acks before it ends the body, or never end it (a live upload that GetMedia
//! readers follow; a connection that a newer one replaces).
//!
//! - [`PutMedia`] holds the request: the stream name and the timecode headers.
//!   [`PutMedia::send`] uploads a [`BodySource`] (a byte slice in chunks of a chosen size,
//!   optionally paced, or a channel of chunks) and returns every ack and the status;
//!   [`PutMedia::start`] returns an [`Upload`] to drive by hand.
//! - Every ack line is parsed strictly into an [`Ack`]: unknown keys, a `FragmentNumber` that is
//!   not a quoted string or a `FragmentTimecode` that is not an integer fail the test, because
//!   the C producer's ack parser would not read them either.
//! - [`Upload::bytes_queued`] counts the body bytes handed to the connection so far. Bytes
//!   queued are an upper bound of the bytes the server has received, so "a reader got this frame
//!   while fewer bytes than the end of its fragment were queued" proves the frame was forwarded
//!   before the fragment was complete.
//!
//! Like the rest of this library, helpers panic with a message instead of returning errors.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_sdk_kinesisvideo::config::Credentials;
use aws_sigv4::http_request::{
    SessionTokenMode, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use http_body_util::channel::{Channel, Sender};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};

/// SHA-256 of the empty string: the payload hash the C producer signs for its streamed body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// How long [`PutMedia::start`] waits for the response head, and [`Upload::finish`] for the
/// response to end once the body has.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// An ack's `EventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AckEventType {
    Buffering,
    Received,
    Persisted,
    Error,
    Idle,
}

/// One ack, one line of the response body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    #[serde(rename = "EventType")]
    pub event_type: AckEventType,
    /// The cluster `Timecode` exactly as sent.
    #[serde(rename = "FragmentTimecode")]
    pub fragment_timecode: Option<u64>,
    /// A decimal string.
    #[serde(rename = "FragmentNumber")]
    pub fragment_number: Option<String>,
    #[serde(rename = "ErrorId")]
    pub error_id: Option<u32>,
    #[serde(rename = "ErrorCode")]
    pub error_code: Option<String>,
}

impl Ack {
    /// Parses one ack line; panics (the test fails) on anything the C producer could not read.
    pub fn parse(line: &str) -> Ack {
        let ack: Ack = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("ack line {line:?} is not a valid ack: {e}"));
        if let Some(n) = &ack.fragment_number {
            assert!(
                !n.is_empty() && n.len() <= 128 && n.bytes().all(|b| b.is_ascii_digit()),
                "FragmentNumber {n:?} is not 1 to 128 decimal digits (ack {line:?})"
            );
        }
        assert!(line.len() <= 1024, "ack longer than 1024 chars: {line:?}");
        ack
    }

    pub fn is(&self, event: AckEventType) -> bool {
        self.event_type == event
    }
}

/// What an upload got back.
#[derive(Debug, Clone)]
pub struct PutMediaResult {
    pub status: u16,
    /// The `x-amzn-errortype` header of an error response.
    pub error_type: Option<String>,
    /// Every ack, in the order received (empty unless the status is 200).
    pub acks: Vec<Ack>,
    /// The response body of a non-200 answer, as text.
    pub error_body: String,
}

impl PutMediaResult {
    /// The acks of one kind.
    pub fn acks_of(&self, event: AckEventType) -> Vec<&Ack> {
        self.acks.iter().filter(|a| a.is(event)).collect()
    }
}

/// Where an upload's body comes from.
#[derive(Debug)]
pub enum BodySource {
    /// These bytes, in chunks of `chunk_size`, with `pace` between chunks if set.
    Bytes {
        data: Bytes,
        chunk_size: usize,
        pace: Option<Duration>,
    },
    /// Chunks from a channel until its senders are dropped.
    Channel(mpsc::Receiver<Bytes>),
}

impl BodySource {
    /// `data` in chunks of `chunk_size`, as fast as the connection takes them.
    pub fn chunks(data: impl Into<Bytes>, chunk_size: usize) -> BodySource {
        BodySource::Bytes {
            data: data.into(),
            chunk_size,
            pace: None,
        }
    }

    /// `data` in chunks of `chunk_size`, one every `pace`.
    pub fn paced(data: impl Into<Bytes>, chunk_size: usize, pace: Duration) -> BodySource {
        BodySource::Bytes {
            data: data.into(),
            chunk_size,
            pace: Some(pace),
        }
    }
}

/// A PutMedia request to send.
#[derive(Debug, Clone)]
pub struct PutMedia {
    addr: SocketAddr,
    headers: Vec<(String, String)>,
    signed: bool,
}

impl PutMedia {
    /// `POST /putMedia` to the server at `addr` for `stream_name`, signed with the test
    /// credentials, without timecode headers (the server then counts timecodes from the
    /// request's arrival, as for ffmpeg).
    pub fn new(addr: SocketAddr, stream_name: &str) -> PutMedia {
        PutMedia {
            addr,
            headers: vec![("x-amzn-stream-name".to_owned(), stream_name.to_owned())],
            signed: true,
        }
    }

    /// No stream-name header at all.
    pub fn without_stream_name(mut self) -> PutMedia {
        self.headers.retain(|(n, _)| n != "x-amzn-stream-name");
        self
    }

    /// `x-amzn-fragment-timecode-type: ABSOLUTE`.
    pub fn absolute(self) -> PutMedia {
        self.header("x-amzn-fragment-timecode-type", "ABSOLUTE")
    }

    /// `x-amzn-fragment-timecode-type: RELATIVE` and `x-amzn-producer-start-timestamp` from
    /// `start_ms` (epoch ms), written as the C producer writes it (`<s>.<ms>`).
    pub fn relative_to(self, start_ms: i64) -> PutMedia {
        let stamp = format!("{}.{:03}", start_ms / 1000, start_ms % 1000);
        self.header("x-amzn-fragment-timecode-type", "RELATIVE")
            .header("x-amzn-producer-start-timestamp", &stamp)
    }

    /// Any other header.
    pub fn header(mut self, name: &str, value: &str) -> PutMedia {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sends the request unsigned (for a server started without credentials).
    pub fn unsigned(mut self) -> PutMedia {
        self.signed = false;
        self
    }

    /// Uploads `source` and returns once the response has ended.
    pub async fn send(self, source: BodySource) -> PutMediaResult {
        let mut upload = self.start().await;
        upload.send_source(source).await;
        upload.finish().await
    }

    /// Opens the connection, sends the request head and waits for the response head. The body
    /// stays open until [`Upload::finish`] (or the [`Upload`] is dropped).
    pub async fn start(self) -> Upload {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.addr));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap_or_else(|e| panic!("HTTP/1.1 handshake with {}: {e}", self.addr));
        let conn = tokio::spawn(async move {
            // The connection ends with the response; an error here (the server closing early)
            // shows up as a missing or cut response, which the test sees.
            let _ = conn.await;
        });
        // A buffer of one chunk: `send_data` returns once the connection has taken the
        // previous chunk, so `bytes_queued` stays close to what is really on the wire.
        let (body_tx, body) = Channel::<Bytes, Infallible>::new(1);
        let mut builder = http::Request::post("/putMedia")
            .header("host", self.addr.to_string())
            .header("user-agent", "timeshard-tests-putmedia/1.0")
            .header("x-amzn-fragment-acknowledgment-required", "1")
            .header("transfer-encoding", "chunked")
            .header("connection", "keep-alive");
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let mut request = builder
            .body(body)
            .unwrap_or_else(|e| panic!("building the PutMedia request: {e}"));
        if self.signed {
            sign_like_the_c_producer(&mut request);
        }
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let response = tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(request))
            .await
            .unwrap_or_else(|_| panic!("no PutMedia response head in {RESPONSE_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("PutMedia request failed: {e}"));
        let status = response.status().as_u16();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let mut body = response.into_body();
        let reader = tokio::spawn(async move {
            let mut pending = Vec::new();
            let mut raw = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = match frame {
                    Ok(f) => f,
                    Err(e) => return Err(format!("reading the ack stream: {e}")),
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if status != 200 {
                    raw.extend_from_slice(&data);
                    continue;
                }
                pending.extend_from_slice(&data);
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&line[..nl]).trim().to_owned();
                    if !line.is_empty() {
                        let _ = ack_tx.send(Ack::parse(&line));
                    }
                }
            }
            if !pending.iter().all(u8::is_ascii_whitespace) {
                return Err(format!(
                    "the ack stream ended inside a line: {:?}",
                    String::from_utf8_lossy(&pending)
                ));
            }
            Ok(String::from_utf8_lossy(&raw).into_owned())
        });
        Upload {
            body: Some(body_tx),
            queued: Arc::new(AtomicU64::new(0)),
            server_closed_body: false,
            status,
            error_type,
            ack_rx,
            acks: Vec::new(),
            ack_stream_ended: false,
            reader: Some(reader),
            _conn: conn,
        }
    }
}

/// Signs `request` as the C producer does (PC `Common/AwsV4Signer.c`): payload hash of the empty
/// string, no `x-amz-content-sha256`, every header but `authorization` signed, hop-by-hop ones
/// (`connection`, `transfer-encoding`) and `user-agent` included; `content-type` is added after
/// signing.
fn sign_like_the_c_producer(request: &mut http::Request<Channel<Bytes, Infallible>>) {
    let identity = Credentials::new(
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        None,
        None,
        "timeshard-tests",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.excluded_headers = Some(vec![Cow::Borrowed("authorization")]);
    settings.session_token_mode = SessionTokenMode::Exclude;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("kinesisvideo")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .unwrap_or_else(|e| panic!("signing parameters: {e}"))
        .into();
    let host = request
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let uri = format!("http://{host}{}", request.uri());
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let signable = SignableRequest::new(
        "POST",
        Cow::Owned(uri),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Precomputed(EMPTY_SHA256.to_owned()),
    )
    .unwrap_or_else(|e| panic!("signable PutMedia request: {e}"));
    let (instructions, _) = sign(signable, &params)
        .unwrap_or_else(|e| panic!("signing PutMedia: {e}"))
        .into_parts();
    instructions.apply_to_request_http1x(request);
}

/// An upload in progress: feed it body bytes, look at acks as they come, then finish it.
#[derive(Debug)]
pub struct Upload {
    /// `None` once the body has ended.
    body: Option<Sender<Bytes, Infallible>>,
    queued: Arc<AtomicU64>,
    server_closed_body: bool,
    status: u16,
    error_type: Option<String>,
    ack_rx: mpsc::UnboundedReceiver<Ack>,
    /// Every ack taken from `ack_rx` so far.
    acks: Vec<Ack>,
    ack_stream_ended: bool,
    reader: Option<JoinHandle<Result<String, String>>>,
    _conn: JoinHandle<()>,
}

impl Upload {
    /// The response status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Body bytes handed to the connection so far (an upper bound of what the server has).
    pub fn bytes_queued(&self) -> u64 {
        self.queued.load(Ordering::SeqCst)
    }

    /// The counter behind [`Upload::bytes_queued`], to read from another task while this one
    /// uploads.
    pub fn bytes_queued_counter(&self) -> Arc<AtomicU64> {
        self.queued.clone()
    }

    /// Whether the server stopped taking body bytes (it ended the request).
    pub fn server_closed_body(&self) -> bool {
        self.server_closed_body
    }

    /// Sends one body chunk (waits while the connection is busy with the previous one). A
    /// chunk the server no longer takes is dropped and noted ([`Upload::server_closed_body`]).
    pub async fn send_chunk(&mut self, chunk: Bytes) {
        let Some(tx) = self.body.as_mut() else {
            panic!("send_chunk after the body ended");
        };
        self.queued.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        if tx.send_data(chunk).await.is_err() {
            self.server_closed_body = true;
        }
    }

    /// Sends `data` in chunks of `chunk_size`, sleeping `pace` after each chunk if set.
    pub async fn send_bytes(&mut self, data: &[u8], chunk_size: usize, pace: Option<Duration>) {
        assert!(chunk_size > 0, "chunk_size must be positive");
        let data = Bytes::copy_from_slice(data);
        let mut at = 0;
        while at < data.len() {
            let end = (at + chunk_size).min(data.len());
            self.send_chunk(data.slice(at..end)).await;
            at = end;
            if let Some(pace) = pace
                && at < data.len()
            {
                tokio::time::sleep(pace).await;
            }
        }
    }

    /// Sends everything `source` gives.
    pub async fn send_source(&mut self, source: BodySource) {
        match source {
            BodySource::Bytes {
                data,
                chunk_size,
                pace,
            } => self.send_bytes(&data, chunk_size, pace).await,
            BodySource::Channel(mut rx) => {
                while let Some(chunk) = rx.recv().await {
                    self.send_chunk(chunk).await;
                }
            }
        }
    }

    /// The acks received so far (after the last [`Upload::next_ack`] or [`Upload::wait_for`]).
    pub fn acks(&self) -> &[Ack] {
        &self.acks
    }

    /// Takes in the acks that have arrived, without waiting.
    pub fn poll_acks(&mut self) -> &[Ack] {
        while let Ok(ack) = self.ack_rx.try_recv() {
            self.acks.push(ack);
        }
        &self.acks
    }

    /// The next ack, `None` when the ack stream has ended. Panics after `timeout`.
    pub async fn next_ack(&mut self, timeout: Duration) -> Option<Ack> {
        if self.ack_stream_ended {
            return None;
        }
        match tokio::time::timeout(timeout, self.ack_rx.recv()).await {
            Ok(Some(ack)) => {
                self.acks.push(ack.clone());
                Some(ack)
            }
            Ok(None) => {
                self.ack_stream_ended = true;
                None
            }
            Err(_) => panic!(
                "no ack in {timeout:?}; acks so far: {:?}",
                self.acks
                    .iter()
                    .map(|a| a.event_type)
                    .collect::<Vec<AckEventType>>()
            ),
        }
    }

    /// Waits for the first ack (received from now on, or already received) matching `pred`.
    /// Panics if the ack stream ends or `timeout` passes first.
    pub async fn wait_for(&mut self, pred: impl Fn(&Ack) -> bool, timeout: Duration) -> Ack {
        self.poll_acks();
        if let Some(ack) = self.acks.iter().find(|a| pred(a)) {
            return ack.clone();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_ack(left).await {
                Some(ack) if pred(&ack) => return ack,
                Some(_) => {}
                None => panic!(
                    "the ack stream ended without the ack waited for; acks: {:?}",
                    self.acks
                ),
            }
        }
    }

    /// Ends the body and waits for the response to end; returns everything received.
    pub async fn finish(mut self) -> PutMediaResult {
        self.body = None;
        self.wait_end(RESPONSE_TIMEOUT).await
    }

    /// Waits for the response to end *without* ending the body (the server ends it: an error,
    /// a replaced connection). Panics after `timeout`.
    pub async fn wait_end(mut self, timeout: Duration) -> PutMediaResult {
        let Some(reader) = self.reader.take() else {
            panic!("wait_end called twice");
        };
        let raw = match tokio::time::timeout(timeout, reader).await {
            Ok(Ok(Ok(raw))) => raw,
            Ok(Ok(Err(e))) => panic!("{e}; acks so far: {:?}", self.poll_acks()),
            Ok(Err(e)) => panic!("the ack reader task failed: {e}"),
            Err(_) => panic!(
                "the PutMedia response did not end in {timeout:?}; acks: {:?}",
                self.poll_acks()
            ),
        };
        self.poll_acks();
        PutMediaResult {
            status: self.status,
            error_type: self.error_type.take(),
            acks: std::mem::take(&mut self.acks),
            error_body: raw,
        }
    }
}
