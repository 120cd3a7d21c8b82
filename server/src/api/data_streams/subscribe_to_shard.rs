//! SubscribeToShard: a registered consumer's push subscription to one shard for up to five
//! minutes, answered as an event stream (`application/vnd.amazon.eventstream`, framed by
//! [`super::eventstream`]).
//!
//! Errors found before the stream starts (unknown consumer or shard, a bad starting position, a
//! repeat call within 5 s) are ordinary error responses. Once the 200 is sent, the body is:
//! 1. an `initial-response` event whose payload is an empty structure;
//! 2. `SubscribeToShardEvent`s: the records from the starting position, read from the log in
//!    batches, then every append as soon as it is acknowledged (the task follows
//!    [`Store::watch`]; it never polls), and an event without records at least every 5 s while
//!    the shard is idle, so clients can tell a quiet shard from a dead connection. Each event
//!    carries `ContinuationSequenceNumber` (the last record sent: clients resume with
//!    `AFTER_SEQUENCE_NUMBER` of it) and `MillisBehindLatest`;
//! 3. the end: after five minutes the body just ends. At the end of a closed shard the last
//!    event carries `ChildShards` and no `ContinuationSequenceNumber`, which is how the KCL and
//!    Flink recognise a shard end. Errors after the start (stream deleted, consumer
//!    deregistered, a failed read) are `exception` messages, and then the body ends.
//!
//! Payloads inside the events are in the request's encoding. JSON clients (the AWS SDKs for
//! Rust and JavaScript v3, boto3) get JSON with `:content-type: application/json`: smithy's
//! awsJson1_1 protocol labels and reads event payloads that way (aws-smithy-json
//! `AwsJsonRpcProtocol::event_stream_media_type`), and a captured Kinesis event carries exactly
//! that header. CBOR clients (the AWS SDKs for Java, hence the KCL) get CBOR labelled
//! `application/x-amz-cbor-1.1`: the Java SDK v2 unmarshals every event with the operation's
//! protocol factory, whose parser is CBOR whenever CBOR is enabled, its default for Kinesis.
//!
//! One task per subscription writes messages into a small channel that the response body
//! drains. The channel's bound is the back-pressure, and the task also waits for the channel to
//! close, so a client that goes away stops it at once even while the shard is idle.
//!
//! The "repeat within 5 s" rule needs a little state: a process-wide map from (data directory,
//! consumer, shard) to the last subscription. A call within 5 s of the previous one is refused
//! with ResourceInUseException; a later one takes over and the older subscription ends cleanly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Frame;
use serde::{Deserialize, Serialize};
use timeshard_storage::{
    Position, ReadBatch, ReadLimits, SequenceNumber, ShardState, ShardUid, Store,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tracing::debug;

use super::common::{
    Call, ChildShard, KinesisRecord, child_shards, encryption_type, kinesis_records, millis_behind,
    missing, shard, starting_position, store_error, usable_stream,
};
use super::consumers::{self, StoredConsumer};
use super::eventstream::{self, Message};
use super::wire::{self, Encoding, Timestamp};
use crate::api::error::aws_json_11;
use crate::api::{ApiError, ErrorKind, HandlerResult};
use crate::http::BoxError;

/// The content type of the response.
pub const EVENT_STREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";
/// A subscription ends after this long, as Kinesis's do.
pub const SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(300);
/// An idle subscription sends an event without records this often.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// A second call for the same consumer and shard within this many milliseconds is refused.
const REPEAT_WINDOW_MS: i64 = 5_000;
/// Record bytes (payload and partition key) per event beyond its first record. With base64 and
/// per-record fields an event stays a few MiB, far below the 24 MiB payload limit; one record
/// alone (at most 1 MiB through PutRecord) always fits.
const EVENT_RECORD_BYTES: usize = 1 << 20;
const EVENT_MAX_RECORDS: usize = 10_000;
/// Messages encoded ahead of the connection.
const QUEUED_MESSAGES: usize = 2;

#[derive(Debug, Deserialize)]
struct StartingPosition {
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "SequenceNumber")]
    sequence_number: Option<String>,
    #[serde(rename = "Timestamp")]
    timestamp: Option<Timestamp>,
}

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "ConsumerARN")]
    consumer_arn: Option<String>,
    #[serde(rename = "ShardId")]
    shard_id: Option<String>,
    #[serde(rename = "StartingPosition")]
    starting_position: Option<StartingPosition>,
}

/// The `SubscribeToShardEvent` payload.
#[derive(Debug, Serialize)]
struct Event {
    #[serde(rename = "Records")]
    records: Vec<KinesisRecord>,
    /// Absent only in the last event of a closed shard.
    #[serde(
        rename = "ContinuationSequenceNumber",
        skip_serializing_if = "Option::is_none"
    )]
    continuation_sequence_number: Option<String>,
    #[serde(rename = "MillisBehindLatest")]
    millis_behind_latest: i64,
    #[serde(rename = "ChildShards", skip_serializing_if = "Option::is_none")]
    child_shards: Option<Vec<ChildShard>>,
}

#[derive(Debug, Serialize)]
struct Empty {}

#[derive(Debug, Serialize)]
struct ExceptionPayload {
    message: String,
}

/// The `:content-type` of event and exception payloads in `enc`.
fn payload_content_type(enc: Encoding) -> &'static str {
    match enc {
        Encoding::Json => "application/json",
        Encoding::Cbor => wire::CBOR_CONTENT_TYPE,
    }
}

fn encode_message(message: &Message) -> Result<Bytes, ApiError> {
    eventstream::encode(message)
        .map_err(|e| ApiError::internal(format!("encoding an event stream message: {e}")))
}

fn event_message<T: Serialize>(
    enc: Encoding,
    event_type: &str,
    payload: &T,
) -> Result<Bytes, ApiError> {
    let payload = wire::try_encode(enc, payload)?;
    encode_message(&eventstream::event(
        event_type,
        payload_content_type(enc),
        payload,
    ))
}

/// A modelled exception message (`ResourceNotFoundException`, `InternalFailureException`, ...)
/// named through the one JSON 1.1 table, with a `{"message": ...}` payload in `enc`.
fn exception_message(enc: Encoding, err: &ApiError) -> Bytes {
    let (name, _) = aws_json_11(err.kind);
    let payload = wire::encode(
        enc,
        &ExceptionPayload {
            message: err.message.clone(),
        },
    );
    let mut message = eventstream::exception(name, payload);
    for (header, value) in &mut message.headers {
        if header == ":content-type" {
            *value = eventstream::HeaderValue::String(payload_content_type(enc).to_owned());
        }
    }
    // A message this small always encodes; should it not, an unmodelled error still does.
    encode_message(&message).unwrap_or_else(|_| {
        eventstream::encode(&eventstream::error("InternalFailure", &err.message))
            .unwrap_or_default()
    })
}

// ---------------------------------------------------------------------------------------------
// The request
// ---------------------------------------------------------------------------------------------

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = wire::decode(call.enc, body)?;
    let consumer_arn = req.consumer_arn.ok_or_else(|| missing("consumerARN"))?;
    let shard_id = req.shard_id.ok_or_else(|| missing("shardId"))?;
    let start = req
        .starting_position
        .ok_or_else(|| missing("startingPosition"))?;
    let kind = start.kind.ok_or_else(|| missing("startingPosition.type"))?;
    let found = consumers::find(call, None, None, Some(&consumer_arn))?;
    let stream_name = found.info.meta.name.clone();
    let info = usable_stream(call, &stream_name)?;
    let target = shard(call, &info, &shard_id)?.clone();
    let position = starting_position(
        "startingPosition.type",
        &kind,
        start.sequence_number.as_deref(),
        start.timestamp,
        &target,
    )?;
    let store = call.state.store().clone();
    // Subscribed before the start is resolved, so no append between the two is missed.
    let tail_rx = store.watch(target.uid).map_err(|e| store_error(call, e))?;
    let next = store
        .resolve(target.uid, position)
        .await
        .map_err(|e| store_error(call, e))?;
    let tail = store
        .tail(target.uid)
        .map_err(|e| store_error(call, e))?
        .next_offset;
    if next > tail {
        return Err(ApiError::invalid_argument(format!(
            "SequenceNumber in StartingPosition for shard {shard_id} in stream {stream_name} is beyond the last record of the shard."
        )));
    }
    let claim = claim(store.dir(), &found.arn, target.uid, call.now_ms).map_err(|since_ms| {
        ApiError::new(
            ErrorKind::ResourceInUse,
            format!(
                "Another SubscribeToShard call for consumer {} and shard {shard_id} was made {since_ms} ms ago; wait 5 seconds between calls.",
                found.arn
            ),
        )
    })?;

    let (tx, rx) = mpsc::channel(QUEUED_MESSAGES);
    let initial = event_message(call.enc, "initial-response", &Empty {})?;
    // The channel is new and has room: the SDKs wait for this message before `send` returns.
    if tx.try_send(initial).is_err() {
        return Err(ApiError::internal(
            "the subscription channel refused its first message",
        ));
    }
    let encryption = encryption_type(&info.meta);
    let subscription = Subscription {
        store,
        enc: call.enc,
        stream_name,
        stream_id: info.meta.id,
        consumer: found.consumer,
        consumer_arn: found.arn,
        shard: target.uid,
        shard_index: target.index,
        encryption: (encryption != "NONE").then_some(encryption),
        next,
        tail_rx,
        tx,
        claim,
        lifetime: SUBSCRIPTION_LIFETIME,
        keep_alive: KEEP_ALIVE_INTERVAL,
        shutdown: call.state.shutdown_signal(),
    };
    debug!(consumer = %subscription.consumer_arn, shard = %shard_id, from = next, "subscription started");
    tokio::spawn(subscription.run());

    let mut response = Response::new(EventBody(rx).boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(EVENT_STREAM_CONTENT_TYPE),
    );
    Ok(response)
}

/// The response body: whatever the subscription task has encoded, in order; it ends when the
/// task drops its sender.
#[derive(Debug)]
struct EventBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|message| message.map(|bytes| Ok(Frame::data(bytes))))
    }
}

// ---------------------------------------------------------------------------------------------
// The subscription task
// ---------------------------------------------------------------------------------------------

/// How a wait or a send ended, when it did not end as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The client went away: nothing more can be sent.
    Disconnected,
    /// Five minutes are up: the body ends cleanly.
    Expired,
    /// A newer subscription took over, or the consumer was deregistered (checked on waking).
    Stopped,
    /// The server is shutting down: the body ends cleanly and the client subscribes again.
    ShuttingDown,
}

struct Subscription {
    store: Store,
    enc: Encoding,
    stream_name: String,
    stream_id: u64,
    consumer: StoredConsumer,
    consumer_arn: String,
    shard: ShardUid,
    shard_index: u32,
    encryption: Option<String>,
    /// The offset of the next record to send.
    next: u64,
    tail_rx: watch::Receiver<timeshard_storage::Tail>,
    tx: mpsc::Sender<Bytes>,
    claim: Claim,
    lifetime: Duration,
    keep_alive: Duration,
    shutdown: watch::Receiver<bool>,
}

impl Subscription {
    async fn run(mut self) {
        let deadline = Instant::now() + self.lifetime;
        let end = self.follow(deadline).await;
        debug!(consumer = %self.consumer_arn, shard = %self.shard, next = self.next, ?end, "subscription ended");
    }

    /// Sends events until the subscription ends; returns why it ended.
    async fn follow(&mut self, deadline: Instant) -> Result<&'static str, Stop> {
        // Due at once: the first event follows the initial response without waiting.
        let mut keep_alive_at = Instant::now();
        // Its own receiver, so waiting on it does not hold `self` through the select below.
        let mut shutdown = self.shutdown.clone();
        loop {
            if Instant::now() >= deadline {
                return Err(Stop::Expired);
            }
            let tail = self.tail_rx.borrow_and_update().clone();
            if tail.state == ShardState::Deleted {
                return self.fail(self.stream_gone()).await;
            }
            let closed = tail.state == ShardState::Closed;
            if self.next < tail.next_offset {
                let batch = match self
                    .store
                    .read(
                        self.shard,
                        Position::At(self.next),
                        ReadLimits::new(EVENT_MAX_RECORDS, EVENT_RECORD_BYTES),
                    )
                    .await
                {
                    Ok(batch) => batch,
                    Err(e) => return self.fail(self.read_error(e)).await,
                };
                if batch.next_offset > self.next {
                    // A closed shard's tail is final, so reaching it is the shard's end.
                    let at_end = closed && batch.next_offset >= tail.next_offset;
                    let children = if at_end { Some(self.children()) } else { None };
                    let event = self.event(batch, children, tail.last_server_ts_ms);
                    self.send_event(&event, deadline).await?;
                    keep_alive_at = Instant::now() + self.keep_alive;
                    if at_end {
                        return Ok("end of a closed shard");
                    }
                    continue;
                }
            }
            if closed && self.next >= tail.next_offset {
                let event = Event {
                    records: Vec::new(),
                    continuation_sequence_number: None,
                    millis_behind_latest: 0,
                    child_shards: Some(self.children()),
                };
                self.send_event(&event, deadline).await?;
                return Ok("end of a closed shard");
            }
            tokio::select! {
                biased;
                () = self.tx.closed() => return Err(Stop::Disconnected),
                () = self.claim.stop.notified() => return self.stopped().await,
                changed = self.tail_rx.changed() => {
                    if changed.is_err() {
                        // The shard's state is gone with its stream.
                        return self.fail(self.stream_gone()).await;
                    }
                }
                () = sleep_until(deadline) => return Err(Stop::Expired),
                true = async { shutdown.wait_for(|down| *down).await.is_ok() } => {
                    return Err(Stop::ShuttingDown);
                }
                () = sleep_until(keep_alive_at) => {
                    if !self.consumer_exists() {
                        return self.fail(self.consumer_gone()).await;
                    }
                    let event = self.idle_event();
                    self.send_event(&event, deadline).await?;
                    keep_alive_at = Instant::now() + self.keep_alive;
                }
            }
        }
    }

    fn continuation(&self) -> String {
        // The last record sent (or skipped by the starting position); before the first record of
        // a shard, the shard's start, which comes before every record.
        match self.next.checked_sub(1) {
            Some(last) => SequenceNumber::of_record(self.shard, last),
            None => SequenceNumber::shard_start(self.shard),
        }
        .to_string()
    }

    fn idle_event(&self) -> Event {
        Event {
            records: Vec::new(),
            continuation_sequence_number: Some(self.continuation()),
            millis_behind_latest: 0,
            child_shards: None,
        }
    }

    /// An event for `batch`, and the position after it; with `children`, the shard's last.
    fn event(
        &mut self,
        batch: ReadBatch,
        children: Option<Vec<ChildShard>>,
        tail_ts_ms: i64,
    ) -> Event {
        let millis_behind_latest = millis_behind(&batch, tail_ts_ms);
        let next_offset = batch.next_offset;
        let records = kinesis_records(self.shard, batch, self.encryption.as_deref());
        self.next = next_offset;
        Event {
            records,
            continuation_sequence_number: children.is_none().then(|| self.continuation()),
            millis_behind_latest,
            child_shards: children,
        }
    }

    /// The shards this (closed) one split or merged into. The store announces a close only once
    /// the children are in the catalog, so they are there by the time a follower asks.
    fn children(&self) -> Vec<ChildShard> {
        match self.store.stream(&self.stream_name) {
            Some(info) if info.meta.id == self.stream_id => child_shards(&info, self.shard_index),
            _ => Vec::new(),
        }
    }

    fn consumer_exists(&self) -> bool {
        self.store.stream(&self.stream_name).is_some_and(|info| {
            info.meta.id == self.stream_id
                && consumers::registered(&info.meta)
                    .is_ok_and(|list| list.iter().any(|c| c.is(&self.consumer)))
        })
    }

    fn stream_gone(&self) -> ApiError {
        ApiError::not_found(format!(
            "Stream {} was deleted; the subscription of consumer {} ended.",
            self.stream_name, self.consumer_arn
        ))
    }

    fn consumer_gone(&self) -> ApiError {
        ApiError::not_found(format!(
            "Consumer {} was deregistered; its subscription ended.",
            self.consumer_arn
        ))
    }

    fn read_error(&self, e: timeshard_storage::StoreError) -> ApiError {
        match e {
            timeshard_storage::StoreError::ShardNotFound(_) => self.stream_gone(),
            e => ApiError::internal(format!("reading the shard: {e}")),
        }
    }

    /// Woken by [`Claim::stop`]: deregistration ends with an exception, a takeover cleanly.
    async fn stopped(&mut self) -> Result<&'static str, Stop> {
        if self.consumer_exists() {
            Err(Stop::Stopped)
        } else {
            self.fail(self.consumer_gone()).await
        }
    }

    /// Sends `err` as an exception message; the subscription ends with it.
    async fn fail(&mut self, err: ApiError) -> Result<&'static str, Stop> {
        let message = exception_message(self.enc, &err);
        // Whatever happens to this last message, the subscription is over.
        let _ = self.tx.send(message).await;
        Ok("failed")
    }

    async fn send_event(&mut self, event: &Event, deadline: Instant) -> Result<(), Stop> {
        let message = match event_message(self.enc, "SubscribeToShardEvent", event) {
            Ok(message) => message,
            Err(err) => {
                self.fail(err).await?;
                return Err(Stop::Stopped);
            }
        };
        tokio::select! {
            sent = self.tx.send(message) => sent.map_err(|_| Stop::Disconnected),
            () = sleep_until(deadline) => Err(Stop::Expired),
            () = self.claim.stop.notified() => {
                self.stopped().await?;
                Err(Stop::Stopped)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Who is subscribed
// ---------------------------------------------------------------------------------------------

/// (data directory, consumer ARN, shard): the directory keeps servers in one process (tests)
/// apart.
type Key = (PathBuf, String, ShardUid);

#[derive(Debug)]
struct Entry {
    id: u64,
    since_ms: i64,
    live: bool,
    stop: Arc<Notify>,
}

static SUBSCRIPTIONS: LazyLock<Mutex<HashMap<Key, Entry>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn subscriptions() -> std::sync::MutexGuard<'static, HashMap<Key, Entry>> {
    // The map is consistent after every statement, so a panic elsewhere leaves it usable.
    SUBSCRIPTIONS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A subscription's place in the map; it is marked ended when dropped.
#[derive(Debug)]
struct Claim {
    key: Key,
    id: u64,
    stop: Arc<Notify>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(entry) = subscriptions().get_mut(&self.key)
            && entry.id == self.id
        {
            entry.live = false;
        }
    }
}

/// Records a new subscription at `now_ms`, telling a live older one to stop. Refused, with
/// the milliseconds since the previous call, within [`REPEAT_WINDOW_MS`] of it.
fn claim(dir: &Path, consumer_arn: &str, shard: ShardUid, now_ms: i64) -> Result<Claim, i64> {
    let key = (dir.to_path_buf(), consumer_arn.to_owned(), shard);
    let mut map = subscriptions();
    map.retain(|_, e| e.live || now_ms.saturating_sub(e.since_ms) < REPEAT_WINDOW_MS);
    if let Some(previous) = map.get(&key) {
        let since_ms = now_ms.saturating_sub(previous.since_ms);
        if since_ms < REPEAT_WINDOW_MS {
            return Err(since_ms);
        }
        if previous.live {
            previous.stop.notify_one();
        }
    }
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let stop = Arc::new(Notify::new());
    map.insert(
        key.clone(),
        Entry {
            id,
            since_ms: now_ms,
            live: true,
            stop: stop.clone(),
        },
    );
    Ok(Claim { key, id, stop })
}

/// Wakes the live subscriptions of a consumer that was just deregistered; they check and end.
pub(crate) fn consumer_deregistered(store: &Store, consumer_arn: &str) {
    let dir = store.dir();
    for ((d, arn, _), entry) in subscriptions().iter() {
        if entry.live && d == dir && arn == consumer_arn {
            entry.stop.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn repeat_calls_within_five_seconds_are_refused_and_later_ones_take_over() {
        let dir = tempfile::tempdir().unwrap();
        let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/c:1";
        let first = claim(dir.path(), arn, ShardUid(1), 1_000).unwrap();
        assert_eq!(
            claim(dir.path(), arn, ShardUid(1), 5_999).unwrap_err(),
            4_999
        );
        // Another shard, consumer or data directory is another subscription.
        let other_shard = claim(dir.path(), arn, ShardUid(2), 1_000).unwrap();
        let other_consumer = claim(dir.path(), "x", ShardUid(1), 1_000).unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let other_server = claim(other_dir.path(), arn, ShardUid(1), 1_000).unwrap();

        // After the window a new call takes over: the first is told to stop.
        let second = claim(dir.path(), arn, ShardUid(1), 6_000).unwrap();
        let stop = first.stop.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), stop.notified())
                .await
                .unwrap();
        });
        // The first ending does not free the slot the second holds...
        drop(first);
        assert!(claim(dir.path(), arn, ShardUid(1), 6_001).is_err());
        // ...and an ended subscription still counts for the window, but not after it.
        drop(second);
        assert!(claim(dir.path(), arn, ShardUid(1), 10_999).is_err());
        assert!(claim(dir.path(), arn, ShardUid(1), 11_000).is_ok());
        drop((other_shard, other_consumer, other_server));
    }

    const ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/c:1";

    /// A store with stream `s` (one shard) and consumer `c` registered on it.
    async fn store_with_consumer(dir: &Path) -> (Store, ShardUid) {
        let opts = timeshard_storage::options::StoreOptions {
            sync: timeshard_storage::options::SyncPolicy::Never,
            ..Default::default()
        };
        let store = Store::open(dir, opts).unwrap();
        let info = store
            .create_stream(timeshard_storage::NewStream::new(
                "s",
                timeshard_storage::StreamKind::Data,
                3_600_000,
                vec![timeshard_storage::NewShard::whole_key_range()],
            ))
            .await
            .unwrap();
        set_consumers(&store, r#"[{"name":"c","created_ms":1000}]"#).await;
        (store, info.shards[0].uid)
    }

    async fn set_consumers(store: &Store, json: &'static str) {
        store
            .update_stream("s", None, move |meta| {
                meta.attributes.insert(
                    super::super::common::ATTR_CONSUMERS.to_owned(),
                    json.to_owned(),
                );
                Ok(())
            })
            .await
            .unwrap();
    }

    fn new_subscription(
        store: &Store,
        shard: ShardUid,
        lifetime: Duration,
        keep_alive: Duration,
    ) -> (Subscription, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(QUEUED_MESSAGES);
        let info = store.stream("s").unwrap();
        let subscription = Subscription {
            store: store.clone(),
            enc: Encoding::Json,
            stream_name: "s".into(),
            stream_id: info.meta.id,
            consumer: StoredConsumer {
                name: "c".into(),
                created_ms: 1000,
                tags: Default::default(),
            },
            consumer_arn: ARN.into(),
            shard,
            shard_index: 0,
            encryption: None,
            next: 0,
            tail_rx: store.watch(shard).unwrap(),
            tx,
            claim: claim(store.dir(), ARN, shard, 0).unwrap(),
            lifetime,
            keep_alive,
            // A dropped sender never signals: these subscriptions see no shutdown.
            shutdown: watch::channel(false).1,
        };
        (subscription, rx)
    }

    /// The next message as (`:message-type`, event or exception type, JSON payload), or `None`
    /// once the subscription ended.
    async fn next(rx: &mut mpsc::Receiver<Bytes>) -> Option<(String, String, serde_json::Value)> {
        let bytes = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("no message within 10 s")?;
        let (message, used) = eventstream::decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        let kind = message.header_str(":message-type").unwrap().to_owned();
        let name = message
            .header_str(":event-type")
            .or(message.header_str(":exception-type"))
            .unwrap()
            .to_owned();
        Some((
            kind,
            name,
            serde_json::from_slice(&message.payload).unwrap(),
        ))
    }

    #[tokio::test]
    async fn an_idle_subscription_keeps_alive_and_ends_after_its_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let (store, shard) = store_with_consumer(dir.path()).await;
        let (subscription, mut rx) = new_subscription(
            &store,
            shard,
            Duration::from_millis(450),
            Duration::from_millis(100),
        );
        let started = std::time::Instant::now();
        let task = tokio::spawn(subscription.run());
        let mut events = 0;
        while let Some((kind, name, payload)) = next(&mut rx).await {
            assert_eq!(
                (kind.as_str(), name.as_str()),
                ("event", "SubscribeToShardEvent")
            );
            assert_eq!(payload["Records"], serde_json::json!([]));
            assert_eq!(
                payload["ContinuationSequenceNumber"],
                SequenceNumber::shard_start(shard).to_string()
            );
            events += 1;
        }
        assert!(started.elapsed() >= Duration::from_millis(450));
        assert!(events >= 3, "{events} keep-alive events");
        task.await.unwrap();
        store.close();
    }

    #[tokio::test]
    async fn server_shutdown_ends_the_subscription_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let (store, shard) = store_with_consumer(dir.path()).await;
        let (mut subscription, mut rx) = new_subscription(
            &store,
            shard,
            Duration::from_secs(300),
            Duration::from_secs(300),
        );
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        subscription.shutdown = shutdown_rx;
        let task = tokio::spawn(subscription.run());
        // The first (empty) event is due at once; then the subscription waits.
        assert!(next(&mut rx).await.is_some());
        shutdown_tx.send(true).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(1), next(&mut rx)).await;
        assert_eq!(ended.expect("the subscription outlived the shutdown"), None);
        task.await.unwrap();
        store.close();
    }

    #[tokio::test]
    async fn appends_are_pushed_at_once_and_a_gone_client_stops_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let (store, shard) = store_with_consumer(dir.path()).await;
        // Keep-alives so rare that only the watch can explain a prompt event.
        let (subscription, mut rx) = new_subscription(
            &store,
            shard,
            Duration::from_secs(300),
            Duration::from_secs(300),
        );
        let key = subscription.claim.key.clone();
        let task = tokio::spawn(subscription.run());
        let (_, _, first) = next(&mut rx).await.unwrap();
        assert_eq!(first["Records"], serde_json::json!([]));
        store
            .append(
                shard,
                vec![timeshard_storage::NewRecord {
                    key: Bytes::from_static(b"pk"),
                    payload: Bytes::from_static(b"\x00\xffhello"),
                    ..Default::default()
                }],
            )
            .await
            .unwrap();
        let (_, _, event) = tokio::time::timeout(Duration::from_secs(2), next(&mut rx))
            .await
            .unwrap()
            .unwrap();
        let seq = SequenceNumber::of_record(shard, 0).to_string();
        assert_eq!(event["Records"][0]["SequenceNumber"], seq);
        assert_eq!(event["Records"][0]["PartitionKey"], "pk");
        assert_eq!(event["Records"][0]["Data"], "AP9oZWxsbw==");
        assert_eq!(event["ContinuationSequenceNumber"], seq);
        assert_eq!(event["MillisBehindLatest"], 0);

        drop(rx);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the task outlived its client")
            .unwrap();
        assert!(!subscriptions()[&key].live);
        store.close();
    }

    #[tokio::test]
    async fn a_consumer_is_the_same_whatever_its_tags() {
        let dir = tempfile::tempdir().unwrap();
        let (store, shard) = store_with_consumer(dir.path()).await;
        let long = Duration::from_secs(300);
        let (subscription, _rx) = new_subscription(&store, shard, long, long);
        assert!(subscription.consumer_exists());
        set_consumers(
            &store,
            r#"[{"name":"c","created_ms":1000,"tags":{"team":"a"}}]"#,
        )
        .await;
        assert!(subscription.consumer_exists(), "tagging ended it");
        // The same name registered at another time is another consumer.
        set_consumers(&store, r#"[{"name":"c","created_ms":2000}]"#).await;
        assert!(!subscription.consumer_exists());
        drop(subscription);
        store.close();
    }

    #[tokio::test]
    async fn deregistration_and_stream_deletion_end_with_an_exception() {
        let dir = tempfile::tempdir().unwrap();
        let (store, shard) = store_with_consumer(dir.path()).await;
        let long = Duration::from_secs(300);
        let (subscription, mut rx) = new_subscription(&store, shard, long, long);
        let task = tokio::spawn(subscription.run());
        next(&mut rx).await.unwrap();
        set_consumers(&store, "[]").await;
        consumer_deregistered(&store, ARN);
        let (kind, name, payload) = next(&mut rx).await.unwrap();
        assert_eq!(
            (kind.as_str(), name.as_str()),
            ("exception", "ResourceNotFoundException")
        );
        assert!(
            payload["message"]
                .as_str()
                .unwrap()
                .contains("deregistered")
        );
        assert!(next(&mut rx).await.is_none());
        task.await.unwrap();

        set_consumers(&store, r#"[{"name":"c","created_ms":1000}]"#).await;
        // A fresh start for the same consumer and shard (the 5 s rule is tested above).
        subscriptions().retain(|(d, _, _), _| d != store.dir());
        let (subscription, mut rx) = new_subscription(&store, shard, long, long);
        let task = tokio::spawn(subscription.run());
        next(&mut rx).await.unwrap();
        store.delete_stream("s").await.unwrap();
        let (kind, name, _) = next(&mut rx).await.unwrap();
        assert_eq!(
            (kind.as_str(), name.as_str()),
            ("exception", "ResourceNotFoundException")
        );
        assert!(next(&mut rx).await.is_none());
        task.await.unwrap();
        store.close();
    }
}
