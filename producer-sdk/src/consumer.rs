//! The media client for consumers: a stream's fragments live ([`MediaClient::live`], GetMedia)
//! or by time range ([`MediaClient::range`], ListFragments then GetMediaForFragmentList), and
//! with the `decode` feature its frames decoded to RGB with absolute timestamps
//! ([`MediaClient::frames`]).
//!
//! Shape, and why:
//! - **Bodies are read chunk by chunk** into the parser's sans-I/O [`FragmentReader`]; nothing
//!   buffers a whole response.
//! - **A fragment is handed out as soon as its trailing tags have arrived.** GetMedia writes a
//!   live fragment as an MKV document of unknown size, which the `FragmentReader` can only call
//!   complete at the next document's EBML header; that would hold every fragment back until the
//!   next one starts, and the newest one for as long as the producer pauses. [`DocumentEnds`]
//!   walks the element headers of the same bytes (skipping frame payloads, not parsing them)
//!   and finds the end of the `Tags` element carrying `AWS_KINESISVIDEO_CONTINUATION_TOKEN` (or
//!   an error code), which is where the service's document ends; each document then gets its
//!   own `FragmentReader`, finished there. This is the completeness rule of the KVS parser
//!   library (`shared/reference/aws-protocol.md` B).
//! - **Live never skips or repeats.** A fragment is complete only with its continuation token;
//!   whatever was cut off by a broken connection is dropped and read again. Every reconnect
//!   resumes with `CONTINUATION_TOKEN` = the token of the last fragment handed out (or, before
//!   the first one, the server time of the fragment that was being read, else the caller's
//!   selector), after a backoff that grows while connections fail without progress. Fragment
//!   numbers must increase; one that does not is a repeat and is skipped.
//! - **Ranges are exact.** ListFragments (every page) names the fragments; they are fetched in
//!   batches of at most 1000 with GetMediaForFragmentList, and each answer is checked against
//!   the list, in order. A broken batch is asked again from the first fragment not yet handed
//!   out.
//! - **Decoding runs on its own thread** ([`MediaClient::frames`]): H.264 decoding is CPU work
//!   that would stall the async workers, so a dedicated thread owns the decoder, fed through a
//!   bounded channel by a task that fetches fragments; the bounds make a slow consumer slow the
//!   download instead of growing memory.
//!
//! Iterators here are async structs with `next().await` (`None` at the end, `Some(Err)` for an
//! error that ended them), so no `Stream` trait crate is needed.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::json;
use timeshard_parser::fragment::{parse_timestamp_ms, tag_names};
use timeshard_parser::mkv::ids;
use timeshard_parser::{Fragment, FragmentReader, MkvError};

use crate::auth::{AuthOptions, Signer};
use crate::client::{Api, CALL_TIMEOUT, Endpoint, HttpClient};
use crate::error::Error;
use crate::video::control::{self, MediaApi, VideoControl};
pub use crate::video::control::{ListedFragment, TimestampType};
#[cfg(feature = "decode")]
pub use timeshard_parser::decode::{DecodedFrame, Selection};

/// The most fragment numbers GetMediaForFragmentList takes in one call.
pub const MAX_FRAGMENT_LIST: usize = 1000;

/// Where [`MediaClient::live`] starts (GetMedia's `StartSelector`, as in the
/// kinesis-video-media service model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartSelector {
    /// The fragment being ingested now (from its start), or else the next one.
    Now,
    /// The oldest stored fragment.
    Earliest,
    /// The fragment after this fragment number (exclusive).
    AfterFragmentNumber(String),
    /// The fragment containing this server time (epoch ms), or else the first one after it.
    ServerTimestamp(i64),
    /// The fragment containing this producer time (epoch ms), or else the first one after it.
    ProducerTimestamp(i64),
    /// The fragment after the one whose `AWS_KINESISVIDEO_CONTINUATION_TOKEN` this is.
    ContinuationToken(String),
}

impl StartSelector {
    /// The `StartSelector` member of a GetMedia request.
    pub fn to_json(&self) -> serde_json::Value {
        let seconds = |ms: i64| ms as f64 / 1000.0;
        match self {
            StartSelector::Now => json!({ "StartSelectorType": "NOW" }),
            StartSelector::Earliest => json!({ "StartSelectorType": "EARLIEST" }),
            StartSelector::AfterFragmentNumber(n) => {
                json!({ "StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": n })
            }
            StartSelector::ServerTimestamp(ms) => {
                json!({ "StartSelectorType": "SERVER_TIMESTAMP", "StartTimestamp": seconds(*ms) })
            }
            StartSelector::ProducerTimestamp(ms) => {
                json!({ "StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": seconds(*ms) })
            }
            StartSelector::ContinuationToken(token) => {
                json!({ "StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": token })
            }
        }
    }
}

/// How the media client retries and batches.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// The wait before the first retry after a failure; it doubles with each failure in a row.
    pub min_backoff: Duration,
    /// The longest wait between retries.
    pub max_backoff: Duration,
    /// How many times one step of a range (a ListFragments walk, a GetMediaForFragmentList
    /// batch) is tried before the range fails. Live retries connection trouble forever.
    pub range_attempts: u32,
    /// Fragment numbers per GetMediaForFragmentList call, 1 to [`MAX_FRAGMENT_LIST`].
    pub fragment_list_batch: usize,
    /// A live response that brings no byte for this long is taken for a dead connection and
    /// opened again. `None` (the default) waits forever: a stream whose producer is away is
    /// silent too.
    pub idle_timeout: Option<Duration>,
    /// How far before a range's start [`MediaClient::range`] looks for a fragment that began
    /// earlier and still holds media of the range. Fragments are cut at key frames; 60 s covers
    /// any GOP a camera uses.
    pub range_look_back: Duration,
}

impl Default for MediaOptions {
    fn default() -> Self {
        MediaOptions {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            range_attempts: 5,
            fragment_list_batch: MAX_FRAGMENT_LIST,
            idle_timeout: None,
            range_look_back: Duration::from_secs(60),
        }
    }
}

impl MediaOptions {
    fn backoff(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (failures - 1).min(16);
        self.min_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Reads one stream's media. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MediaClient {
    control: VideoControl,
    stream: String,
    options: MediaOptions,
}

impl MediaClient {
    /// A client for `stream` whose control-plane endpoint is `endpoint`; the data endpoints come
    /// from GetDataEndpoint, asked before each connection as AWS recommends.
    pub fn new(client: HttpClient, endpoint: Endpoint, stream: impl Into<String>) -> MediaClient {
        MediaClient {
            control: VideoControl::new(client, endpoint),
            stream: stream.into(),
            options: MediaOptions::default(),
        }
    }

    /// [`MediaClient::new`] with credentials and region found the way the AWS CLI finds them
    /// ([`crate::auth::resolve`]), for an `http://host:port` endpoint URL.
    pub fn connect(
        endpoint_url: &str,
        stream: impl Into<String>,
        auth: &AuthOptions,
    ) -> Result<MediaClient, Error> {
        let endpoint = Endpoint::parse(endpoint_url)?;
        let resolved = crate::auth::resolve(auth)?;
        let client = HttpClient::new(Signer::new(resolved.credentials, resolved.region));
        Ok(MediaClient::new(client, endpoint, stream))
    }

    pub fn with_options(mut self, options: MediaOptions) -> MediaClient {
        self.options = options;
        self
    }

    pub fn options(&self) -> &MediaOptions {
        &self.options
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The stream's fragments from `start` on, then live as they are ingested, until dropped.
    /// Reconnects by itself whenever the GetMedia response ends or breaks; see the module docs
    /// for why that neither skips nor repeats a fragment.
    pub fn live(&self, start: StartSelector) -> LiveFragments {
        LiveFragments {
            client: self.clone(),
            follow: Follow::new(start),
            body: None,
            failures: 0,
            mkv_failures: 0,
            connections: 0,
            done: false,
        }
    }

    /// Lists the fragments holding media of `[start_ms, end_ms]` on `clock` (epoch ms, both
    /// ends inclusive): those starting in the range, and one that started up to
    /// [`MediaOptions::range_look_back`] before it and lasts into it. They come in timestamp
    /// order (then fragment number) from [`RangeFragments::next`], fetched in batches.
    pub async fn range(
        &self,
        clock: TimestampType,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<RangeFragments, Error> {
        if end_ms < start_ms {
            return Err(Error::Config(format!(
                "the range ends ({end_ms}) before it starts ({start_ms})"
            )));
        }
        let look_back = i64::try_from(self.options.range_look_back.as_millis()).unwrap_or(0);
        let mut failures = 0;
        let mut listed = loop {
            tokio::time::sleep(self.options.backoff(failures)).await;
            let attempt = async {
                let endpoint = self
                    .control
                    .data_endpoint(&self.stream, MediaApi::ListFragments)
                    .await?;
                control::list_fragments(
                    self.control.client(),
                    &endpoint,
                    &self.stream,
                    clock,
                    start_ms.saturating_sub(look_back),
                    end_ms,
                )
                .await
            };
            match attempt.await {
                Ok(listed) => break listed,
                Err(e) if retriable(&e) && failures + 1 < self.options.range_attempts => {
                    failures += 1;
                    tracing::warn!(stream = %self.stream, error = %e, "ListFragments failed; retrying");
                }
                Err(e) => return Err(e),
            }
        };
        let at = |f: &ListedFragment| match clock {
            TimestampType::Server => f.server_timestamp_ms,
            TimestampType::Producer => f.producer_timestamp_ms,
        };
        listed.retain(|f| {
            let start = at(f);
            let end = start.saturating_add(i64::try_from(f.duration_ms).unwrap_or(i64::MAX));
            start <= end_ms && (start >= start_ms || end > start_ms)
        });
        listed.sort_by(|a, b| {
            at(a)
                .cmp(&at(b))
                .then_with(|| compare_numbers(&a.fragment_number, &b.fragment_number))
        });
        Ok(RangeFragments {
            client: self.clone(),
            listed,
            next: 0,
            batch_end: 0,
            body: None,
            docs: Documents::new(),
            failures: 0,
            done: false,
        })
    }

    /// The frames of `source`, decoded to RGB, as `selection` picks them, each with its
    /// absolute server timestamp, producer timestamp and fragment number.
    ///
    /// Decoding runs on a dedicated thread; a task on the current tokio runtime (this must be
    /// called inside one) fetches the fragments. Both stop when the [`DecodedFrames`] is
    /// dropped. For a [`FrameSource::Range`], only frames whose timestamp on the range's clock
    /// lies in the range are handed out, and [`Selection::EveryNth`] counts from the first of
    /// them; for [`FrameSource::Live`] it counts from the first frame decoded.
    #[cfg(feature = "decode")]
    pub fn frames(&self, source: FrameSource, selection: Selection) -> DecodedFrames {
        decoding::start(self.clone(), source, selection)
    }

    /// Opens GetMedia at `start`; the body is left to read.
    async fn open_get_media(&self, start: &StartSelector) -> Result<Incoming, Error> {
        let endpoint = self
            .control
            .data_endpoint(&self.stream, MediaApi::GetMedia)
            .await?;
        let body = json!({ "StreamName": self.stream, "StartSelector": start.to_json() });
        self.open(&endpoint, "getMedia", "GetMedia", &body).await
    }

    /// Opens GetMediaForFragmentList for `numbers`.
    async fn open_fragment_list(&self, numbers: &[&str]) -> Result<Incoming, Error> {
        let endpoint = self
            .control
            .data_endpoint(&self.stream, MediaApi::GetMediaForFragmentList)
            .await?;
        let body = json!({ "StreamName": self.stream, "Fragments": numbers });
        self.open(
            &endpoint,
            "getMediaForFragmentList",
            "GetMediaForFragmentList",
            &body,
        )
        .await
    }

    async fn open(
        &self,
        endpoint: &Endpoint,
        action: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<Incoming, Error> {
        let body = Bytes::from(serde_json::to_vec(body).map_err(|e| Error::Config(e.to_string()))?);
        let send = self
            .control
            .client()
            .send(Api::Video, endpoint, action, body);
        let response = tokio::time::timeout(CALL_TIMEOUT, send)
            .await
            .map_err(|_| Error::Timeout(name.to_owned(), CALL_TIMEOUT))??;
        Ok(response.into_body())
    }
}

/// Whether trying again may help: [`Error::is_retriable`], plus GetMedia's connection limit
/// (AWS allows three readers per stream; one may leave).
fn retriable(e: &Error) -> bool {
    e.is_retriable() || e.code() == Some("ConnectionLimitExceededException")
}

/// Orders fragment numbers: decimal strings, possibly longer than any integer type.
pub fn compare_numbers(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

// ---------------------------------------------------------------------------------------------
// Live
// ---------------------------------------------------------------------------------------------

/// A stream's fragments as GetMedia delivers them, across reconnects. From
/// [`MediaClient::live`].
#[derive(Debug)]
pub struct LiveFragments {
    client: MediaClient,
    follow: Follow,
    body: Option<Incoming>,
    /// Connections in a row that failed or ended without a fragment: the backoff exponent.
    failures: u32,
    /// Unreadable responses in a row without a fragment handed out between them.
    mkv_failures: u32,
    connections: u64,
    done: bool,
}

/// Unreadable media from the same position this many times in a row ends a live read.
const MAX_MKV_FAILURES: u32 = 3;

impl LiveFragments {
    /// The next complete fragment. Connection trouble and responses that end are handled
    /// inside (reconnecting with backoff, forever); `Some(Err)` is an error that retrying cannot
    /// fix (the stream is missing or was deleted, the credentials are refused, the media cannot
    /// be read), after which this returns `None`.
    pub async fn next(&mut self) -> Option<Result<Fragment, Error>> {
        loop {
            if let Some(fragment) = self.follow.pop() {
                self.failures = 0;
                self.mkv_failures = 0;
                return Some(Ok(fragment));
            }
            if self.done {
                return None;
            }
            let Some(body) = self.body.as_mut() else {
                tokio::time::sleep(self.client.options.backoff(self.failures)).await;
                let start = self.follow.resume().clone();
                match self.client.open_get_media(&start).await {
                    Ok(body) => {
                        self.connections += 1;
                        tracing::debug!(stream = %self.client.stream, ?start, "GetMedia connected");
                        self.body = Some(body);
                        self.follow.connection_started();
                    }
                    Err(e) if retriable(&e) => {
                        self.failures = self.failures.saturating_add(1);
                        tracing::warn!(stream = %self.client.stream, error = %e, "GetMedia failed; retrying");
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                continue;
            };
            let frame = match self.client.options.idle_timeout {
                Some(limit) => match tokio::time::timeout(limit, body.frame()).await {
                    Ok(frame) => frame.map(|r| r.map_err(Some)),
                    Err(_) => Some(Err(None)),
                },
                None => body.frame().await.map(|r| r.map_err(Some)),
            };
            match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers
                    };
                    if let Err(e) = self.follow.push(&data) {
                        self.body = None;
                        self.follow.connection_ended(false);
                        self.failures = self.failures.saturating_add(1);
                        self.mkv_failures += 1;
                        tracing::warn!(stream = %self.client.stream, error = %e, "GetMedia sent unreadable media; reconnecting");
                        if self.mkv_failures >= MAX_MKV_FAILURES {
                            self.done = true;
                            return Some(Err(Error::Mkv(e)));
                        }
                    }
                }
                Some(Err(e)) => {
                    match e {
                        Some(e) => {
                            tracing::info!(stream = %self.client.stream, error = %crate::client::error_chain(&e), "GetMedia connection broke; resuming");
                        }
                        None => {
                            tracing::info!(stream = %self.client.stream, "GetMedia connection idle too long; resuming");
                        }
                    }
                    self.body = None;
                    if !self.follow.connection_ended(false) {
                        self.failures = self.failures.saturating_add(1);
                    }
                }
                None => {
                    tracing::debug!(stream = %self.client.stream, "GetMedia response ended; resuming");
                    self.body = None;
                    if !self.follow.connection_ended(true) {
                        self.failures = self.failures.saturating_add(1);
                    }
                }
            }
        }
    }

    /// Where a new read would resume to go on exactly after the last fragment handed out: the
    /// caller's selector until then, `CONTINUATION_TOKEN` afterwards. Store it to resume after
    /// a restart.
    pub fn resume_selector(&self) -> &StartSelector {
        self.follow.resume()
    }

    /// GetMedia responses opened so far (1 + reconnects).
    pub fn connections(&self) -> u64 {
        self.connections
    }
}

/// The sans-I/O part of a live read: which fragments are complete and new, and where to resume.
#[derive(Debug)]
struct Follow {
    /// Where the next connection starts.
    resume: StartSelector,
    /// Whether `resume` is still the caller's selector (no fragment handed out yet).
    started: bool,
    /// The newest fragment number queued, to recognise repeats.
    last_number: Option<String>,
    docs: Documents,
    ready: VecDeque<Fragment>,
    /// Fragments queued from the current connection.
    from_connection: u64,
}

impl Follow {
    fn new(start: StartSelector) -> Follow {
        Follow {
            resume: start,
            started: false,
            last_number: None,
            docs: Documents::new(),
            ready: VecDeque::new(),
            from_connection: 0,
        }
    }

    fn resume(&self) -> &StartSelector {
        &self.resume
    }

    fn connection_started(&mut self) {
        self.docs = Documents::new();
        self.from_connection = 0;
    }

    fn push(&mut self, chunk: &[u8]) -> Result<(), MkvError> {
        let result = self.docs.push(chunk);
        self.take_documents();
        result
    }

    /// The response ended (`clean`) or broke. A fragment cut off is dropped here and read again
    /// on the next connection. Returns whether the connection brought a fragment.
    fn connection_ended(&mut self, clean: bool) -> bool {
        if clean && let Err(e) = self.docs.finish() {
            tracing::debug!(error = %e, "GetMedia response ended inside an element");
        }
        self.take_documents();
        // Before the first fragment the caller's selector may be NOW, which would move on
        // past a fragment that was being read; its server time finds it again.
        if !self.started
            && self.ready.is_empty()
            && let Some(ts) = self.docs.current_server_ts
        {
            self.resume = StartSelector::ServerTimestamp(ts);
        }
        self.docs = Documents::new();
        self.from_connection > 0
    }

    fn take_documents(&mut self) {
        while let Some(fragment) = self.docs.out.pop_front() {
            self.accept(fragment);
        }
    }

    fn accept(&mut self, fragment: Fragment) {
        if fragment.error_code.is_some() || fragment.error_id.is_some() {
            // FRAGMENT_DROPPED: the producer's fragment broke off mid-way and its number goes to
            // the next one; INTERNAL_ERROR: the response ends next and is resumed.
            tracing::warn!(
                fragment = ?fragment.fragment_number,
                code = ?fragment.error_code,
                id = ?fragment.error_id,
                "GetMedia reported an error; the fragment is skipped"
            );
            return;
        }
        if fragment.continuation_token.is_none() {
            // Only the end of the input can make the reader return a fragment without its
            // trailing tags: cut off, read again after reconnecting.
            return;
        }
        if let (Some(last), Some(number)) = (&self.last_number, &fragment.fragment_number)
            && compare_numbers(number, last) != Ordering::Greater
        {
            tracing::debug!(fragment = %number, "GetMedia repeated a fragment; skipped");
            return;
        }
        if fragment.fragment_number.is_some() {
            self.last_number = fragment.fragment_number.clone();
        }
        self.from_connection += 1;
        self.ready.push_back(fragment);
    }

    fn pop(&mut self) -> Option<Fragment> {
        let fragment = self.ready.pop_front()?;
        if let Some(token) = &fragment.continuation_token {
            self.resume = StartSelector::ContinuationToken(token.clone());
            self.started = true;
        }
        Some(fragment)
    }
}

// ---------------------------------------------------------------------------------------------
// Ranges
// ---------------------------------------------------------------------------------------------

/// The fragments of a time range, from [`MediaClient::range`].
#[derive(Debug)]
pub struct RangeFragments {
    client: MediaClient,
    listed: Vec<ListedFragment>,
    /// Index in `listed` of the next fragment to hand out.
    next: usize,
    /// End (exclusive) of the batch asked for last.
    batch_end: usize,
    body: Option<Incoming>,
    docs: Documents,
    /// Attempts in a row that failed or brought nothing.
    failures: u32,
    done: bool,
}

impl RangeFragments {
    /// The fragments ListFragments named for the range, in the order they are handed out.
    pub fn listed(&self) -> &[ListedFragment] {
        &self.listed
    }

    /// The next fragment of the range, `None` after the last. A fragment that retention removed
    /// between the listing and the fetch is skipped (with a warning). Connection trouble is
    /// retried ([`MediaOptions::range_attempts`] times in a row); `Some(Err)` ends the range.
    pub async fn next(&mut self) -> Option<Result<Fragment, Error>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(fragment) = self.docs.out.pop_front() {
                match self.check(fragment) {
                    Ok(Some(fragment)) => return Some(Ok(fragment)),
                    Ok(None) => continue,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            if self.next >= self.listed.len() {
                self.done = true;
                return None;
            }
            let Some(body) = self.body.as_mut() else {
                if self.next < self.batch_end {
                    // The last batch ended or broke before its end: ask again from here.
                    self.failures += 1;
                }
                if self.failures >= self.client.options.range_attempts {
                    self.done = true;
                    return Some(Err(Error::Protocol {
                        context: "GetMediaForFragmentList".to_owned(),
                        message: format!(
                            "fragment {} did not arrive in {} attempts",
                            self.listed[self.next].fragment_number, self.failures
                        ),
                    }));
                }
                tokio::time::sleep(self.client.options.backoff(self.failures)).await;
                let batch = self
                    .client
                    .options
                    .fragment_list_batch
                    .clamp(1, MAX_FRAGMENT_LIST);
                let end = (self.next + batch).min(self.listed.len());
                let numbers: Vec<&str> = self.listed[self.next..end]
                    .iter()
                    .map(|f| f.fragment_number.as_str())
                    .collect();
                match self.client.open_fragment_list(&numbers).await {
                    Ok(body) => {
                        self.body = Some(body);
                        self.docs = Documents::new();
                        self.batch_end = end;
                    }
                    Err(e)
                        if retriable(&e)
                            && self.failures + 1 < self.client.options.range_attempts =>
                    {
                        self.failures += 1;
                        self.batch_end = 0;
                        tracing::warn!(stream = %self.client.stream, error = %e, "GetMediaForFragmentList failed; retrying");
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                continue;
            };
            match body.frame().await {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if let Err(e) = self.docs.push(&data) {
                        tracing::warn!(stream = %self.client.stream, error = %e, "GetMediaForFragmentList sent unreadable media; asking again");
                        self.body = None;
                        self.docs.reset_partial();
                    }
                }
                Some(Err(e)) => {
                    tracing::info!(stream = %self.client.stream, error = %crate::client::error_chain(&e), "GetMediaForFragmentList connection broke; asking again");
                    self.body = None;
                    self.docs.reset_partial();
                }
                None => {
                    self.body = None;
                    if let Err(e) = self.docs.finish() {
                        tracing::debug!(error = %e, "GetMediaForFragmentList ended inside an element");
                    }
                }
            }
        }
    }

    /// Matches an answered fragment against the list: `Ok(None)` skips it.
    fn check(&mut self, fragment: Fragment) -> Result<Option<Fragment>, Error> {
        let expected = &self.listed[self.next].fragment_number;
        if fragment.fragment_number.as_deref() != Some(expected.as_str()) {
            return Err(Error::Protocol {
                context: "GetMediaForFragmentList".to_owned(),
                message: format!(
                    "fragment {:?} came where {expected} was expected",
                    fragment.fragment_number
                ),
            });
        }
        if fragment.error_code.is_some() || fragment.error_id.is_some() {
            tracing::warn!(
                fragment = %expected,
                code = ?fragment.error_code,
                message = ?fragment.error_message,
                "a listed fragment could not be read (retention may have removed it); skipped"
            );
            self.next += 1;
            return Ok(None);
        }
        if fragment.continuation_token.is_none() {
            // Cut off by the end of the answer: asked again with the rest.
            return Ok(None);
        }
        self.next += 1;
        self.failures = 0;
        Ok(Some(fragment))
    }
}

// ---------------------------------------------------------------------------------------------
// Documents: bytes in, complete fragments out
// ---------------------------------------------------------------------------------------------

/// A media response's bytes in, fragments out, each as soon as its document's trailing tags
/// are in (see the module docs): one [`FragmentReader`] per document, finished at the end that
/// [`DocumentEnds`] finds.
#[derive(Debug)]
struct Documents {
    ends: DocumentEnds,
    reader: FragmentReader,
    out: VecDeque<Fragment>,
    /// The server timestamp in the head tags of the document being read.
    current_server_ts: Option<i64>,
}

impl Documents {
    fn new() -> Documents {
        Documents {
            ends: DocumentEnds::new(),
            reader: FragmentReader::new(),
            out: VecDeque::new(),
            current_server_ts: None,
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Result<(), MkvError> {
        let mut at = 0;
        for mark in self.ends.push(chunk) {
            match mark.kind {
                MarkKind::Head { server_ts_ms } => {
                    if server_ts_ms.is_some() {
                        self.current_server_ts = server_ts_ms;
                    }
                }
                MarkKind::End => {
                    self.reader.push(&chunk[at..mark.end]);
                    at = mark.end;
                    self.finish()?;
                    self.reader = FragmentReader::new();
                    self.current_server_ts = None;
                }
            }
        }
        self.reader.push(&chunk[at..]);
        while let Some(fragment) = self.reader.next_fragment()? {
            self.out.push_back(fragment);
        }
        Ok(())
    }

    /// The end of the input (or of a document): every fragment left, the last one included.
    fn finish(&mut self) -> Result<(), MkvError> {
        while let Some(fragment) = self.reader.finish()? {
            self.out.push_back(fragment);
        }
        Ok(())
    }

    /// Forgets the document being read (cut off), keeping the fragments already complete.
    fn reset_partial(&mut self) {
        let out = std::mem::take(&mut self.out);
        *self = Documents::new();
        self.out = out;
    }
}

/// Where a media response's documents end, found from element headers alone.
///
/// Walks the EBML structure of GetMedia / GetMediaForFragmentList output: it enters Segments
/// and Clusters, skips every other element by its size (frame payloads are never copied), and
/// reads each top-level `Tags` element (small) to see whether it holds the trailing
/// `AWS_KINESISVIDEO_CONTINUATION_TOKEN` or an error code, which end a document, or the head's
/// server timestamp. Anything it does not expect (an unknown size elsewhere, a `Tags` element
/// over 1 MiB, a malformed header) makes it give up: the [`FragmentReader`] then completes
/// fragments at the next document on its own, later but still correctly.
#[derive(Debug)]
struct DocumentEnds {
    state: WalkState,
    /// Header bytes of an element not yet complete.
    head: Vec<u8>,
    gave_up: bool,
}

#[derive(Debug)]
enum WalkState {
    /// At an element header.
    Header,
    /// Inside an element's payload that is skipped: bytes left.
    Skip(u64),
    /// Inside a `Tags` payload being read: bytes left, bytes so far.
    Tags(u64, Vec<u8>),
}

/// Something found in a chunk pushed into [`DocumentEnds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    /// Offset in the chunk just past the `Tags` element.
    end: usize,
    kind: MarkKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkKind {
    /// Tags with the fragment number or timestamps: a document's head.
    Head { server_ts_ms: Option<i64> },
    /// Tags with the continuation token or an error: the document ends here.
    End,
}

/// The largest `Tags` element read whole; AWS's are a few hundred bytes.
const MAX_TAGS_BYTES: u64 = 1 << 20;

impl DocumentEnds {
    fn new() -> DocumentEnds {
        DocumentEnds {
            state: WalkState::Header,
            head: Vec::new(),
            gave_up: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Vec<Mark> {
        let mut marks = Vec::new();
        let mut at = 0;
        while at < chunk.len() && !self.gave_up {
            match &mut self.state {
                WalkState::Skip(left) => {
                    let n = (*left).min((chunk.len() - at) as u64);
                    *left -= n;
                    at += n as usize;
                    if *left == 0 {
                        self.state = WalkState::Header;
                    }
                }
                WalkState::Tags(left, payload) => {
                    let n = (*left).min((chunk.len() - at) as u64) as usize;
                    payload.extend_from_slice(&chunk[at..at + n]);
                    *left -= n as u64;
                    at += n;
                    if *left == 0 {
                        let kind = classify_tags(payload);
                        self.state = WalkState::Header;
                        if let Some(kind) = kind {
                            marks.push(Mark { end: at, kind });
                        }
                    }
                }
                WalkState::Header => {
                    self.head.push(chunk[at]);
                    at += 1;
                    match element_header(&self.head) {
                        Header::Incomplete => {}
                        Header::Invalid => self.gave_up = true,
                        Header::Done { id, size } => {
                            self.head.clear();
                            self.state = match (id, size) {
                                (ids::SEGMENT | ids::CLUSTER, _) => WalkState::Header,
                                (ids::TAGS, Some(size)) if size <= MAX_TAGS_BYTES => {
                                    WalkState::Tags(size, Vec::with_capacity(size as usize))
                                }
                                (_, Some(0)) => WalkState::Header,
                                (_, Some(size)) => WalkState::Skip(size),
                                (_, None) => {
                                    self.gave_up = true;
                                    WalkState::Header
                                }
                            };
                            // An empty Tags element holds nothing.
                            if let WalkState::Tags(0, _) = self.state {
                                self.state = WalkState::Header;
                            }
                        }
                    }
                }
            }
        }
        marks
    }
}

enum Header {
    Incomplete,
    Invalid,
    /// `size` is `None` for an unknown size.
    Done {
        id: u32,
        size: Option<u64>,
    },
}

/// Reads an EBML element header (ID with its marker bits, as the ids are written; then the
/// size) from the start of `buf`.
fn element_header(buf: &[u8]) -> Header {
    let Some(&first) = buf.first() else {
        return Header::Incomplete;
    };
    let id_len = first.leading_zeros() as usize + 1;
    if id_len > 4 {
        return Header::Invalid;
    }
    if buf.len() < id_len + 1 {
        return Header::Incomplete;
    }
    let id = buf[..id_len]
        .iter()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    let size_first = buf[id_len];
    let size_len = size_first.leading_zeros() as usize + 1;
    if size_len > 8 {
        return Header::Invalid;
    }
    if buf.len() < id_len + size_len {
        return Header::Incomplete;
    }
    let mask = if size_len == 8 { 0 } else { 0xFFu8 >> size_len };
    let mut value = u64::from(size_first & mask);
    let mut all_ones = (size_first & mask) == mask;
    for &b in &buf[id_len + 1..id_len + size_len] {
        value = (value << 8) | u64::from(b);
        all_ones &= b == 0xFF;
    }
    Header::Done {
        id,
        size: (!all_ones).then_some(value),
    }
}

/// What a `Tags` payload says about the document: its end (continuation token, error code), its
/// head (fragment number, timestamps) or nothing (the producer's tags).
fn classify_tags(payload: &[u8]) -> Option<MarkKind> {
    let mut head = false;
    let mut server_ts_ms = None;
    for (name, value) in simple_tags(payload) {
        match name.as_str() {
            tag_names::CONTINUATION_TOKEN
            | tag_names::ERROR_CODE
            | tag_names::ERROR_ID
            | tag_names::EXCEPTION_ERROR_CODE => return Some(MarkKind::End),
            tag_names::SERVER_TIMESTAMP | tag_names::SERVER_SIDE_TIMESTAMP => {
                head = true;
                server_ts_ms = value.as_deref().and_then(parse_timestamp_ms);
            }
            tag_names::FRAGMENT_NUMBER
            | tag_names::PRODUCER_TIMESTAMP
            | tag_names::PRODUCER_SIDE_TIMESTAMP => head = true,
            _ => {}
        }
    }
    head.then_some(MarkKind::Head { server_ts_ms })
}

/// The (TagName, TagString) pairs of a `Tags` payload, descending into Tag, Targets and
/// (nested) SimpleTag. Stops quietly at anything malformed.
fn simple_tags(payload: &[u8]) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let rest = &payload[at..];
        let mut header_len = 1;
        let (id, size) = loop {
            if header_len > rest.len() || header_len > 12 {
                return out;
            }
            match element_header(&rest[..header_len]) {
                Header::Incomplete => header_len += 1,
                Header::Invalid => return out,
                Header::Done { id, size } => break (id, size),
            }
        };
        at += header_len;
        match (id, size) {
            (ids::TAG | ids::TARGETS | ids::SIMPLE_TAG, _) => {}
            (_, None) => return out,
            (_, Some(size)) => {
                let Some(end) = usize::try_from(size)
                    .ok()
                    .and_then(|s| at.checked_add(s))
                    .filter(|&end| end <= payload.len())
                else {
                    return out;
                };
                let text = || String::from_utf8_lossy(&payload[at..end]).into_owned();
                match id {
                    ids::TAG_NAME => out.push((text(), None)),
                    ids::TAG_STRING => {
                        if let Some(last) = out.last_mut() {
                            last.1 = Some(text());
                        }
                    }
                    _ => {}
                }
                at = end;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Decoded frames
// ---------------------------------------------------------------------------------------------

/// Where [`MediaClient::frames`] takes its fragments from.
#[cfg(feature = "decode")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameSource {
    /// [`MediaClient::live`] from this selector.
    Live(StartSelector),
    /// [`MediaClient::range`], and only the frames in `[start_ms, end_ms]` on `clock`.
    Range {
        clock: TimestampType,
        start_ms: i64,
        end_ms: i64,
    },
}

/// Decoded frames, from [`MediaClient::frames`].
#[cfg(feature = "decode")]
#[derive(Debug)]
pub struct DecodedFrames {
    frames: tokio::sync::mpsc::Receiver<Result<DecodedFrame, Error>>,
    fetch: tokio::task::JoinHandle<()>,
}

#[cfg(feature = "decode")]
impl DecodedFrames {
    /// The next frame, `None` at the end of a range (or after an error that ended the source).
    /// `Some(Err)` is either a fragment that could not be decoded (its frames are skipped and
    /// the next fragment follows) or an error that ended the source, after which this returns
    /// `None`.
    pub async fn next(&mut self) -> Option<Result<DecodedFrame, Error>> {
        self.frames.recv().await
    }
}

#[cfg(feature = "decode")]
impl Drop for DecodedFrames {
    fn drop(&mut self) {
        // The decoder thread ends on its own once its output is gone; the fetch may be waiting
        // on a silent live stream.
        self.fetch.abort();
    }
}

#[cfg(feature = "decode")]
mod decoding {
    use timeshard_parser::decode::FrameDecoder;
    use tokio::sync::mpsc;

    use super::*;

    /// Fragments fetched ahead of the decoder: enough to keep it busy while the next one
    /// downloads.
    const FRAGMENT_QUEUE: usize = 2;
    /// Decoded frames waiting for the caller. An RGB frame is large (6 MB at 1080p), so few.
    const FRAME_QUEUE: usize = 8;

    pub(super) fn start(
        client: MediaClient,
        source: FrameSource,
        selection: Selection,
    ) -> DecodedFrames {
        let (fragment_tx, fragment_rx) = mpsc::channel(FRAGMENT_QUEUE);
        let (frame_tx, frame_rx) = mpsc::channel(FRAME_QUEUE);
        let (filter, decoder_selection) = Filter::new(&source, selection);
        let fetch = tokio::spawn(fetch(client, source, fragment_tx));
        let spawned = std::thread::Builder::new()
            .name("timeshard-decode".to_owned())
            .spawn({
                let frame_tx = frame_tx.clone();
                move || decode(fragment_rx, &frame_tx, decoder_selection, filter)
            });
        if let Err(e) = spawned {
            let _ = frame_tx.try_send(Err(Error::io("starting the decoder thread", e)));
        }
        DecodedFrames {
            frames: frame_rx,
            fetch,
        }
    }

    /// Fetches the source's fragments into the decoder's queue; an error goes the same way, so
    /// that it arrives after the frames before it.
    async fn fetch(
        client: MediaClient,
        source: FrameSource,
        out: mpsc::Sender<Result<Fragment, Error>>,
    ) {
        match source {
            FrameSource::Live(start) => {
                let mut live = client.live(start);
                while let Some(item) = live.next().await {
                    if out.send(item).await.is_err() {
                        return;
                    }
                }
            }
            FrameSource::Range {
                clock,
                start_ms,
                end_ms,
            } => {
                let mut range = match client.range(clock, start_ms, end_ms).await {
                    Ok(range) => range,
                    Err(e) => {
                        let _ = out.send(Err(e)).await;
                        return;
                    }
                };
                while let Some(item) = range.next().await {
                    if out.send(item).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The decoder thread: fragments in, frames out, until either side is gone.
    fn decode(
        mut fragments: mpsc::Receiver<Result<Fragment, Error>>,
        frames: &mpsc::Sender<Result<DecodedFrame, Error>>,
        selection: Selection,
        mut filter: Filter,
    ) {
        let mut decoder = FrameDecoder::new(selection);
        while let Some(item) = fragments.blocking_recv() {
            let fragment = match item {
                Ok(fragment) => fragment,
                Err(e) => {
                    let _ = frames.blocking_send(Err(e));
                    return;
                }
            };
            match decoder.decode_fragment(&fragment) {
                Ok(decoded) => {
                    for frame in decoded {
                        if filter.keep(&frame) && frames.blocking_send(Ok(frame)).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let error = Error::Protocol {
                        context: format!(
                            "decoding fragment {}",
                            fragment
                                .fragment_number
                                .as_deref()
                                .unwrap_or("(unnumbered)")
                        ),
                        message: e.to_string(),
                    };
                    if frames.blocking_send(Err(error)).is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// What a range keeps of the decoded frames: those in the range, and of them every Nth.
    #[derive(Debug)]
    pub(super) struct Filter {
        range: Option<(TimestampType, i64, i64)>,
        /// Every Nth frame in the range, counted here rather than by the decoder, which
        /// would count the frames before the range too.
        every: Option<u32>,
        seen: u64,
    }

    impl Filter {
        /// The filter, and the selection the decoder is asked for.
        fn new(source: &FrameSource, selection: Selection) -> (Filter, Selection) {
            let range = match source {
                FrameSource::Live(_) => None,
                FrameSource::Range {
                    clock,
                    start_ms,
                    end_ms,
                } => Some((*clock, *start_ms, *end_ms)),
            };
            let (every, decoder_selection) = match (range, selection) {
                // Every frame must be decoded anyway (P-frames need their references); only
                // which ones are converted to RGB differs.
                (Some(_), Selection::EveryNth(n)) => (Some(n.max(1)), Selection::All),
                (_, selection) => (None, selection),
            };
            let filter = Filter {
                range,
                every,
                seen: 0,
            };
            (filter, decoder_selection)
        }

        pub(super) fn keep(&mut self, frame: &DecodedFrame) -> bool {
            if let Some((clock, start_ms, end_ms)) = self.range {
                let at = match clock {
                    TimestampType::Server => Some(frame.timestamp_ms),
                    TimestampType::Producer => frame.producer_timestamp_ms,
                };
                if at.is_some_and(|at| at < start_ms || at > end_ms) {
                    return false;
                }
            }
            let Some(n) = self.every else {
                return true;
            };
            let keep = self.seen.is_multiple_of(u64::from(n));
            self.seen += 1;
            keep
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;
    use timeshard_parser::mkv::write;
    use timeshard_parser::{Frame, SegmentInfo, SimpleTag, TagValue, Track, VideoSettings};

    use super::*;

    fn tag(name: &str, value: &str) -> SimpleTag {
        SimpleTag {
            name: name.to_owned(),
            value: TagValue::String(value.to_owned()),
        }
    }

    fn frame(timecode: i16, key: bool) -> Frame {
        Frame {
            track: 1,
            timecode,
            key,
            invisible: false,
            discardable: false,
            data: Bytes::from(vec![key as u8; 300]),
        }
    }

    fn track() -> Track {
        Track {
            number: 1,
            uid: Some(1),
            track_type: 1,
            codec_id: "V_MPEG4/ISO/AVC".to_owned(),
            codec_private: None,
            name: None,
            default_duration: None,
            video: Some(VideoSettings {
                pixel_width: 320,
                pixel_height: 240,
            }),
            audio: None,
        }
    }

    /// A GetMedia document as the server writes a live fragment: unknown-size Segment and
    /// Cluster; `tail` false leaves out the trailing tags (cut off).
    fn document(number: u64, server_ms: i64, frames: usize, tail: bool) -> Vec<u8> {
        let mut out = Vec::new();
        write::ebml_header(&mut out);
        write::segment_start_unknown(&mut out);
        write::info(&mut out, &SegmentInfo::default());
        write::tracks(&mut out, &[track()]);
        let stamp = format!("{}.{:03}", server_ms / 1000, server_ms % 1000);
        write::tags(
            &mut out,
            &[
                tag(tag_names::FRAGMENT_NUMBER, &number.to_string()),
                tag(tag_names::SERVER_TIMESTAMP, &stamp),
                tag(tag_names::PRODUCER_TIMESTAMP, &stamp),
            ],
        );
        write::cluster_start_unknown(&mut out, server_ms as u64);
        for i in 0..frames {
            write::simple_block(&mut out, &frame(i as i16 * 40, i == 0));
        }
        if tail {
            write::tags(&mut out, &[tag("PRODUCER_TAG", "x")]);
            write::tags(
                &mut out,
                &[
                    tag(tag_names::MILLIS_BEHIND_NOW, "12"),
                    tag(tag_names::CONTINUATION_TOKEN, &number.to_string()),
                ],
            );
        }
        out
    }

    fn numbers(fragments: &[Fragment]) -> Vec<String> {
        fragments
            .iter()
            .map(|f| f.fragment_number.clone().unwrap())
            .collect()
    }

    #[test]
    fn a_live_fragment_is_complete_at_its_trailing_tags() {
        let doc = document(7, 1_700_000_000_123, 5, true);
        // Every split of the document into two chunks gives the fragment once, at the end of
        // the second chunk: no next document is needed.
        for split in 0..doc.len() {
            let mut docs = Documents::new();
            docs.push(&doc[..split]).unwrap();
            assert!(docs.out.is_empty(), "split {split}");
            docs.push(&doc[split..]).unwrap();
            assert_eq!(docs.out.len(), 1, "split {split}");
            let f = &docs.out[0];
            assert_eq!(f.fragment_number.as_deref(), Some("7"));
            assert_eq!(f.continuation_token.as_deref(), Some("7"));
            assert_eq!(f.frames.len(), 5);
            assert_eq!(f.producer_tags.len(), 1);
        }
    }

    #[test]
    fn documents_split_anywhere() {
        let mut all = Vec::new();
        for n in 1..=3u64 {
            all.extend(document(n, 1_700_000_000_000 + n as i64 * 1000, 3, true));
        }
        for chunk in [1, 7, 100, all.len()] {
            let mut docs = Documents::new();
            for piece in all.chunks(chunk) {
                docs.push(piece).unwrap();
            }
            let got: Vec<Fragment> = docs.out.drain(..).collect();
            assert_eq!(numbers(&got), ["1", "2", "3"], "chunk {chunk}");
            assert!(got.iter().all(|f| f.frames.len() == 3));
        }
    }

    #[test]
    fn the_walker_reads_header_sizes() {
        // 1-byte ID, 1-byte size 5.
        assert!(matches!(
            element_header(&[0xA3, 0x85]),
            Header::Done {
                id: 0xA3,
                size: Some(5)
            }
        ));
        // Segment with an unknown 8-byte size.
        let mut seg = Vec::new();
        write::segment_start_unknown(&mut seg);
        assert!(matches!(
            element_header(&seg),
            Header::Done {
                id: ids::SEGMENT,
                size: None
            }
        ));
        assert!(matches!(element_header(&[0x1A, 0x45]), Header::Incomplete));
        assert!(matches!(element_header(&[0x00]), Header::Invalid));
    }

    #[test]
    fn follow_skips_nothing_and_repeats_nothing_across_broken_connections() {
        let docs: Vec<Vec<u8>> = (1..=4u64)
            .map(|n| document(n, 1_700_000_000_000 + n as i64 * 1000, 4, true))
            .collect();
        let mut follow = Follow::new(StartSelector::Now);
        let mut got = Vec::new();

        // Connection 1: fragment 1 whole, then fragment 2 cut off in its frames.
        follow.connection_started();
        follow.push(&docs[0]).unwrap();
        follow.push(&docs[1][..docs[1].len() - 200]).unwrap();
        assert!(follow.connection_ended(false));
        while let Some(f) = follow.pop() {
            got.push(f);
        }
        assert_eq!(
            follow.resume(),
            &StartSelector::ContinuationToken("1".to_owned())
        );

        // Connection 2: the server (wrongly) repeats 1, then 2 and 3; it ends cleanly.
        follow.connection_started();
        for d in &docs[0..3] {
            follow.push(d).unwrap();
        }
        assert!(follow.connection_ended(true));
        while let Some(f) = follow.pop() {
            got.push(f);
        }
        // Connection 3 brings nothing, then 4.
        follow.connection_started();
        assert!(!follow.connection_ended(true));
        follow.connection_started();
        follow.push(&docs[3]).unwrap();
        while let Some(f) = follow.pop() {
            got.push(f);
        }
        assert_eq!(numbers(&got), ["1", "2", "3", "4"]);
        assert_eq!(
            follow.resume(),
            &StartSelector::ContinuationToken("4".to_owned())
        );
    }

    #[test]
    fn a_cut_first_fragment_is_found_again_by_its_server_time() {
        let doc = document(9, 1_700_000_123_456, 4, true);
        let mut follow = Follow::new(StartSelector::Now);
        follow.connection_started();
        follow.push(&doc[..doc.len() - 100]).unwrap();
        assert!(!follow.connection_ended(false));
        assert_eq!(
            follow.resume(),
            &StartSelector::ServerTimestamp(1_700_000_123_456)
        );
        assert!(follow.pop().is_none());
    }

    #[test]
    fn a_dropped_fragment_is_skipped_and_its_number_reused() {
        let mut dropped = document(5, 1_700_000_000_000, 2, false);
        write::tags(
            &mut dropped,
            &[
                tag(tag_names::ERROR_CODE, "FRAGMENT_DROPPED"),
                tag(tag_names::ERROR_ID, "4000"),
            ],
        );
        let next = document(5, 1_700_000_001_000, 3, true);
        let mut follow = Follow::new(StartSelector::Earliest);
        follow.connection_started();
        follow.push(&dropped).unwrap();
        follow.push(&next).unwrap();
        let f = follow.pop().unwrap();
        assert_eq!(f.frames.len(), 3);
        assert!(follow.pop().is_none());
    }

    #[test]
    fn start_selectors_as_json() {
        assert_eq!(
            StartSelector::ServerTimestamp(1_726_677_687_758).to_json(),
            json!({ "StartSelectorType": "SERVER_TIMESTAMP", "StartTimestamp": 1726677687.758 })
        );
        assert_eq!(
            StartSelector::ContinuationToken("91".to_owned()).to_json()["ContinuationToken"],
            "91"
        );
        assert_eq!(
            StartSelector::AfterFragmentNumber("3".to_owned()).to_json()["StartSelectorType"],
            "FRAGMENT_NUMBER"
        );
    }

    #[test]
    fn numbers_compare_as_integers() {
        assert_eq!(compare_numbers("9", "10"), Ordering::Less);
        assert_eq!(compare_numbers("0010", "10"), Ordering::Equal);
        assert_eq!(
            compare_numbers("91343852333181432392682062606743692270383393426", "9"),
            Ordering::Greater
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let o = MediaOptions::default();
        assert_eq!(o.backoff(0), Duration::ZERO);
        assert_eq!(o.backoff(1), Duration::from_millis(100));
        assert_eq!(o.backoff(3), Duration::from_millis(400));
        assert_eq!(o.backoff(40), Duration::from_secs(5));
    }
}
