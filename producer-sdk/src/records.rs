//! The batching producer for Kinesis Data Streams: records in, PutRecords requests out.
//!
//! [`RecordsProducer::put`] queues a record and returns a [`PutTicket`], a future that resolves
//! to the record's shard and sequence number, or to the error that ended its tries. A background
//! task gathers queued records into PutRecords requests of at most 500 records and 5 MiB (data
//! plus partition keys, as Kinesis counts), sends one when it is full or its oldest record has
//! waited `linger`, and keeps up to `max_in_flight` requests going. [`blocking::RecordsProducer`]
//! is the same producer for threaded code.
//!
//! # Limits checked by `put`
//!
//! A partition key of 1 to 256 characters, data plus key of at most 1 MiB, an `ExplicitHashKey`
//! that is a decimal integer below 2^128: anything else is refused by `put` itself with
//! [`Error::Input`], before it is queued, so one bad record never fails a request of good ones.
//!
//! # Retries
//!
//! Entries that fail with `ProvisionedThroughputExceededException` or `InternalFailure`, and
//! every entry of a request that failed as a whole with a retriable error (connection trouble,
//! timeouts, throttling, 5xx; see [`Error::is_retriable`]), are tried again after an exponential
//! backoff (`min_backoff` doubling up to `max_backoff`, the upper half of each wait random), up
//! to `max_attempts` tries and no later than `retry_deadline` after the record was put. Anything
//! else (validation, a missing stream, refused credentials) fails the ticket at once with the
//! service's code and message. A ticket that fails is counted in
//! [`RecordsStats::records_failed`]; nothing is dropped without its ticket saying so.
//!
//! # Order
//!
//! Order is kept per *order key*: the partition key, or the partition key together with the
//! `ExplicitHashKey` for records put with one (records of one partition key sent to different
//! hash keys may land on different shards, between which readers see no order anyway). Records
//! are numbered as the producer receives them: for one task calling `put`, the order of its
//! calls. The producer keeps three rules:
//!
//! 1. an order key is never in two requests in flight at once;
//! 2. within a request, an order key's records are in put order;
//! 3. a record to be retried goes back to the head of its order key's queue, and that key
//!    sends nothing until the retry is due; so no later record of the key is sent before it.
//!
//! The guarantee that follows: **if the service, within one request, never writes an entry of a
//! shard after failing an earlier entry of the same shard, then for every order key the records
//! written are in put order**. Records that failed for good leave a gap. A record whose request
//! timed out or lost its connection after the service stored it is written twice when retried
//! (at least once, as with every Kinesis producer); the copies stay in order.
//!
//! timeshard's PutRecords fails a shard's entries as a suffix (once an entry of a shard is
//! throttled, the later entries of that shard in the request fail too, and a failed append
//! fails all of them: `server/src/api/data_streams/put_records.rs`). AWS Kinesis does not
//! promise this: it may throttle a large entry and accept a smaller later one of the same shard.
//! For such a service set [`RecordsConfig::strict_key_order`]: a request then carries at most
//! one record per order key, so rules 1 and 3 alone keep each key's order whatever the service
//! fails, at the price of smaller requests when there are few keys. Whenever a request comes
//! back with an entry of an order key written after an earlier entry of that key failed,
//! [`RecordsStats::order_violations`] counts it and a warning is logged, rather than hiding it.
//!
//! # Memory
//!
//! `put` waits while `max_buffered_records` records or `max_buffered_bytes` bytes are queued or
//! in flight, so a producer faster than the stream is slowed down rather than growing.
//!
//! # Shape
//!
//! The batching and retry rules are a plain state machine (`Batcher`: records and answers in,
//! requests out, the time passed in), kept apart from the task that owns the channel, the timers
//! and the HTTP calls, so the unit tests drive it step by step.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{Api, Endpoint, HttpClient};
use crate::error::Error;

/// Records per PutRecords request (Kinesis's limit).
pub const MAX_BATCH_RECORDS: usize = 500;
/// Data plus partition key bytes per PutRecords request (Kinesis's limit).
pub const MAX_BATCH_BYTES: usize = 5 << 20;
/// Data plus partition key bytes of one record (Kinesis's limit).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Characters of a partition key (Kinesis's limit).
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// How the producer batches and retries.
#[derive(Debug, Clone)]
pub struct RecordsConfig {
    /// Records per request, 1 to 500.
    pub max_batch_records: usize,
    /// Data plus partition key bytes per request, at most 5 MiB. A record larger than this
    /// still goes, alone.
    pub max_batch_bytes: usize,
    /// How long a record may wait for others to fill its request.
    pub linger: Duration,
    /// Requests sent and not yet answered, at least 1.
    pub max_in_flight: usize,
    /// Tries per record, the first included.
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles with each try.
    pub min_backoff: Duration,
    /// The longest wait between tries.
    pub max_backoff: Duration,
    /// A record is not tried again once this long has passed since it was put; it fails with
    /// the error of its last try.
    pub retry_deadline: Duration,
    /// `put` waits while this many bytes (data plus keys) are queued or in flight.
    pub max_buffered_bytes: usize,
    /// `put` waits while this many records are queued or in flight.
    pub max_buffered_records: usize,
    /// At most one record of a partition key per request, so each key's order holds even
    /// against a service that may fail an entry of a shard and write a later one (AWS). Slower
    /// with few keys. See the module documentation.
    pub strict_key_order: bool,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        RecordsConfig {
            max_batch_records: MAX_BATCH_RECORDS,
            max_batch_bytes: MAX_BATCH_BYTES,
            linger: Duration::from_millis(50),
            max_in_flight: 4,
            max_attempts: 10,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            retry_deadline: Duration::from_secs(120),
            max_buffered_bytes: 64 << 20,
            max_buffered_records: 100_000,
            strict_key_order: false,
        }
    }
}

impl RecordsConfig {
    /// The same configuration with every value brought within what works.
    fn normalized(mut self) -> RecordsConfig {
        self.max_batch_records = self.max_batch_records.clamp(1, MAX_BATCH_RECORDS);
        self.max_batch_bytes = self.max_batch_bytes.clamp(1, MAX_BATCH_BYTES);
        self.max_in_flight = self.max_in_flight.max(1);
        self.max_attempts = self.max_attempts.max(1);
        self.max_backoff = self.max_backoff.max(self.min_backoff);
        // Room for the largest record, and within what a semaphore can count.
        self.max_buffered_bytes = self
            .max_buffered_bytes
            .clamp(MAX_RECORD_BYTES, Semaphore::MAX_PERMITS);
        self.max_buffered_records = self.max_buffered_records.clamp(1, Semaphore::MAX_PERMITS);
        self
    }
}

/// The stream, by name or ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRef {
    Name(String),
    Arn(String),
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub shard_id: String,
    pub sequence_number: String,
}

/// Counters since the producer started, and what it holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordsStats {
    /// Records accepted by `put`.
    pub records_put: u64,
    /// Records the service wrote (their tickets resolved to a [`Put`]).
    pub records_written: u64,
    /// Records whose tickets resolved to an error.
    pub records_failed: u64,
    /// Entries queued again after a failed try (a record may count several times).
    pub retries: u64,
    /// PutRecords requests sent.
    pub requests: u64,
    /// Requests that failed as a whole (connection, HTTP error).
    pub requests_failed: u64,
    /// Requests in which a key's later entry was written after an earlier one failed.
    pub order_violations: u64,
    /// Records queued or in flight now.
    pub buffered_records: u64,
    /// Bytes (data plus keys) queued or in flight now.
    pub buffered_bytes: u64,
}

/// Resolves once the record is written or has failed for good. Await it, or call
/// [`PutTicket::wait`].
#[derive(Debug)]
pub struct PutTicket(oneshot::Receiver<Result<Put, Error>>);

impl PutTicket {
    pub async fn wait(self) -> Result<Put, Error> {
        self.await
    }
}

impl Future for PutTicket {
    type Output = Result<Put, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(stopped())))
    }
}

fn stopped() -> Error {
    Error::Closed("the records producer stopped before the record was answered".to_owned())
}

fn closed() -> Error {
    Error::Closed("the records producer is closed".to_owned())
}

/// Checks a record against Kinesis's limits; returns its size as Kinesis counts it.
fn check_record(
    key: &str,
    explicit_hash_key: Option<&str>,
    data_len: usize,
) -> Result<usize, Error> {
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_PARTITION_KEY_CHARS {
        return Err(Error::Input(format!(
            "a partition key has 1 to {MAX_PARTITION_KEY_CHARS} characters; this one has {chars}"
        )));
    }
    let size = key.len() + data_len;
    if size > MAX_RECORD_BYTES {
        return Err(Error::Input(format!(
            "a record (data and partition key) is at most {MAX_RECORD_BYTES} bytes; this one is {size}"
        )));
    }
    if let Some(h) = explicit_hash_key
        && (h.is_empty() || !h.bytes().all(|b| b.is_ascii_digit()) || h.parse::<u128>().is_err())
    {
        return Err(Error::Input(format!(
            "an ExplicitHashKey is a decimal integer from 0 to 2^128-1; got '{h}'"
        )));
    }
    Ok(size)
}

/// The order key of a record with an `ExplicitHashKey`. NUL cannot be in a hash key, so two
/// records share it only if they share both keys (or a partition key holds NULs, which at worst
/// orders two keys together).
fn order_key(partition_key: &str, explicit_hash_key: &str) -> String {
    format!("\0{explicit_hash_key}\0{partition_key}")
}

/// One record, from `put` until its ticket is answered.
struct Item {
    /// Put order, given by the batcher.
    seq: u64,
    /// The flush generation it belongs to, given by the batcher.
    epoch: u64,
    /// The partition key.
    key: Arc<str>,
    /// What order is kept by: the partition key (the same allocation), or the partition key
    /// with the `ExplicitHashKey` when there is one.
    order_key: Arc<str>,
    explicit_hash_key: Option<String>,
    data: Bytes,
    reply: oneshot::Sender<Result<Put, Error>>,
    /// Tries made so far.
    attempts: u32,
    /// When the batcher received it.
    queued_at: Instant,
    /// Its share of the buffer bounds, given back when the item is dropped.
    _permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Item {
    fn size(&self) -> usize {
        self.key.len() + self.data.len()
    }
}

/// One entry of a PutRecords answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    #[serde(default)]
    shard_id: Option<String>,
    #[serde(default)]
    sequence_number: Option<String>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
}

/// Per-entry error codes worth another try. Kinesis documents these two; throttling under
/// another name is treated alike.
fn entry_retriable(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException" | "InternalFailure"
    ) || code.contains("Throttl")
}

/// The same error again, for each record of a request that failed as a whole.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::Service {
            operation,
            status,
            code,
            message,
        } => Error::Service {
            operation: operation.clone(),
            status: *status,
            code: code.clone(),
            message: message.clone(),
        },
        Error::Connection { context, message } => Error::Connection {
            context: context.clone(),
            message: message.clone(),
        },
        Error::Protocol { context, message } => Error::Protocol {
            context: context.clone(),
            message: message.clone(),
        },
        Error::Timeout(what, d) => Error::Timeout(what.clone(), *d),
        Error::Config(m) => Error::Config(m.clone()),
        Error::Input(m) => Error::Input(m.clone()),
        other => Error::Closed(other.to_string()),
    }
}

/// A key's records and whether it may send.
#[derive(Default)]
struct KeyState {
    /// Records not in flight, in put order.
    queue: VecDeque<Item>,
    /// Sum of their sizes.
    bytes: usize,
    /// A request with records of this key is in flight.
    in_flight: bool,
    /// Its head record failed and is due again at this time.
    retry_at: Option<Instant>,
}

impl KeyState {
    fn can_send(&self) -> bool {
        !self.in_flight && self.retry_at.is_none()
    }
}

/// What a completed request did, for the statistics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Tally {
    written: u64,
    failed: u64,
    retried: u64,
    order_violation: bool,
}

/// The batching and retry rules, without I/O or clocks: records and answers go in, requests
/// come out. Records live in one queue per partition key; `ready` holds the head of every key
/// that may send now, by put order, so a request is a merge of those queues in put order.
struct Batcher {
    config: RecordsConfig,
    keys: HashMap<Arc<str>, KeyState>,
    /// Head sequence number -> key, for each key with records that may send now.
    ready: BTreeMap<u64, Arc<str>>,
    /// Records and bytes of the keys in `ready`.
    ready_records: usize,
    ready_bytes: usize,
    /// Keys waiting for a retry, by due time (one entry per key in backoff).
    retries: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    requests_in_flight: usize,
    next_seq: u64,
    /// The current flush generation, and how many records of each generation are unanswered.
    epoch: u64,
    unresolved: BTreeMap<u64, usize>,
    rng: u64,
}

impl Batcher {
    fn new(config: RecordsConfig) -> Batcher {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Batcher {
            config: config.normalized(),
            keys: HashMap::new(),
            ready: BTreeMap::new(),
            ready_records: 0,
            ready_bytes: 0,
            retries: BinaryHeap::new(),
            requests_in_flight: 0,
            next_seq: 0,
            epoch: 0,
            unresolved: BTreeMap::new(),
            rng: seed | 1,
        }
    }

    /// Queues a new record behind every earlier record of its key.
    fn push(&mut self, mut item: Item, now: Instant) {
        item.seq = self.next_seq;
        self.next_seq += 1;
        item.epoch = self.epoch;
        item.queued_at = now;
        *self.unresolved.entry(self.epoch).or_insert(0) += 1;
        let size = item.size();
        let seq = item.seq;
        let key = item.order_key.clone();
        let ks = self.keys.entry(key.clone()).or_default();
        ks.queue.push_back(item);
        ks.bytes += size;
        if ks.can_send() {
            self.ready_records += 1;
            self.ready_bytes += size;
            if ks.queue.len() == 1 {
                self.ready.insert(seq, key);
            }
        }
    }

    /// Lets a key that was in flight or in backoff send again.
    fn make_ready(&mut self, key: &Arc<str>) {
        if let Some(ks) = self.keys.get(key)
            && ks.can_send()
            && let Some(head) = ks.queue.front()
        {
            self.ready.insert(head.seq, key.clone());
            self.ready_records += ks.queue.len();
            self.ready_bytes += ks.bytes;
        }
    }

    fn promote_due_retries(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.retries.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.retries.pop() else {
                break;
            };
            if let Some(ks) = self.keys.get_mut(&key)
                && ks.retry_at == Some(at)
            {
                ks.retry_at = None;
                self.make_ready(&key);
            }
        }
    }

    /// The next request, if one should go now: room in flight, and records that fill it, or
    /// whose oldest has waited `linger`, or `urgent` (a flush or close is waiting).
    fn take_batch(&mut self, now: Instant, urgent: bool) -> Option<Vec<Item>> {
        if self.requests_in_flight >= self.config.max_in_flight {
            return None;
        }
        self.promote_due_retries(now);
        let max_records = self.config.max_batch_records;
        let max_bytes = self.config.max_batch_bytes;
        let strict = self.config.strict_key_order;
        let (_, first_key) = self.ready.first_key_value()?;
        let oldest = self.keys.get(first_key)?.queue.front()?.queued_at;
        let sendable = if strict {
            self.ready.len()
        } else {
            self.ready_records
        };
        let full = sendable >= max_records || self.ready_bytes >= max_bytes;
        if !(urgent || full || now >= oldest + self.config.linger) {
            return None;
        }
        let mut batch: Vec<Item> = Vec::new();
        let mut bytes = 0;
        let mut taken_keys: Vec<Arc<str>> = Vec::new();
        while batch.len() < max_records {
            let Some(entry) = self.ready.first_entry() else {
                break;
            };
            let key = entry.get().clone();
            let Some(ks) = self.keys.get_mut(&key) else {
                entry.remove();
                continue;
            };
            let Some(size) = ks.queue.front().map(Item::size) else {
                entry.remove();
                continue;
            };
            if bytes + size > max_bytes && !batch.is_empty() {
                break;
            }
            entry.remove();
            let Some(item) = ks.queue.pop_front() else {
                continue;
            };
            ks.bytes -= size;
            bytes += size;
            self.ready_records -= 1;
            self.ready_bytes -= size;
            if !ks.in_flight {
                ks.in_flight = true;
                taken_keys.push(key.clone());
            }
            if !strict && let Some(next) = ks.queue.front() {
                self.ready.insert(next.seq, key);
            }
            batch.push(item);
        }
        // The keys of this request wait for its answer.
        for key in taken_keys {
            if let Some(ks) = self.keys.get(&key)
                && let Some(head) = ks.queue.front()
            {
                self.ready.remove(&head.seq);
                self.ready_records -= ks.queue.len();
                self.ready_bytes -= ks.bytes;
            }
        }
        if batch.is_empty() {
            return None;
        }
        self.requests_in_flight += 1;
        Some(batch)
    }

    /// Applies a request's answer: answers tickets, queues retries ahead of newer records of
    /// their keys, and frees the request's keys.
    fn complete(
        &mut self,
        batch: Vec<Item>,
        result: Result<Vec<Entry>, Error>,
        now: Instant,
    ) -> Tally {
        self.requests_in_flight = self.requests_in_flight.saturating_sub(1);
        let mut tally = Tally::default();
        // The request's keys, once each: every one of them is marked in flight until here.
        let mut keys: Vec<Arc<str>> = Vec::new();
        for item in &batch {
            if let Some(ks) = self.keys.get_mut(&item.order_key)
                && ks.in_flight
            {
                ks.in_flight = false;
                keys.push(item.order_key.clone());
            }
        }
        let result = match result {
            Ok(entries) if entries.len() == batch.len() => Ok(entries),
            Ok(entries) => Err(Error::protocol(
                "PutRecords answer",
                &format!("{} entries for {} records", entries.len(), batch.len()),
            )),
            Err(e) => Err(e),
        };
        let mut retry: Vec<Item> = Vec::new();
        match result {
            Ok(entries) => {
                let mut failed_keys: HashSet<Arc<str>> = HashSet::new();
                for (item, entry) in batch.into_iter().zip(entries) {
                    match entry {
                        Entry {
                            error_code: None,
                            shard_id: Some(shard_id),
                            sequence_number: Some(sequence_number),
                            ..
                        } => {
                            if failed_keys.contains(&item.order_key) {
                                tally.order_violation = true;
                            }
                            tally.written += 1;
                            self.answer(
                                item,
                                Ok(Put {
                                    shard_id,
                                    sequence_number,
                                }),
                            );
                        }
                        Entry {
                            error_code,
                            error_message,
                            ..
                        } => {
                            failed_keys.insert(item.order_key.clone());
                            let code =
                                error_code.unwrap_or_else(|| "MissingSequenceNumber".to_owned());
                            let retriable = entry_retriable(&code);
                            let error = Error::Service {
                                operation: "PutRecords".to_owned(),
                                status: 200,
                                code,
                                message: error_message.unwrap_or_default(),
                            };
                            self.retry_or_fail(item, error, retriable, now, &mut retry, &mut tally);
                        }
                    }
                }
            }
            Err(e) => {
                let retriable = e.is_retriable();
                for item in batch {
                    self.retry_or_fail(
                        item,
                        copy_error(&e),
                        retriable,
                        now,
                        &mut retry,
                        &mut tally,
                    );
                }
            }
        }
        // Retried records go back to the head of their keys' queues, in put order: every record
        // still queued for their key was put after them.
        let mut retried_keys: HashMap<Arc<str>, u32> = HashMap::new();
        for item in retry.into_iter().rev() {
            let attempts = retried_keys.entry(item.order_key.clone()).or_insert(0);
            *attempts = (*attempts).max(item.attempts);
            let ks = self.keys.entry(item.order_key.clone()).or_default();
            ks.bytes += item.size();
            ks.queue.push_front(item);
        }
        for key in keys {
            let backoff = retried_keys.get(&key).map(|a| self.backoff(*a));
            let Some(ks) = self.keys.get_mut(&key) else {
                continue;
            };
            if let Some(backoff) = backoff {
                let at = now + backoff;
                ks.retry_at = Some(at);
                self.retries.push(Reverse((at, key)));
            } else if ks.queue.is_empty() {
                self.keys.remove(&key);
            } else {
                self.make_ready(&key);
            }
        }
        tally
    }

    fn retry_or_fail(
        &mut self,
        mut item: Item,
        error: Error,
        retriable: bool,
        now: Instant,
        retry: &mut Vec<Item>,
        tally: &mut Tally,
    ) {
        item.attempts += 1;
        if retriable
            && item.attempts < self.config.max_attempts
            && now < item.queued_at + self.config.retry_deadline
        {
            tally.retried += 1;
            retry.push(item);
        } else {
            tally.failed += 1;
            self.answer(item, Err(error));
        }
    }

    fn answer(&mut self, item: Item, result: Result<Put, Error>) {
        if let Some(n) = self.unresolved.get_mut(&item.epoch) {
            *n -= 1;
            if *n == 0 {
                self.unresolved.remove(&item.epoch);
            }
        }
        let _ = item.reply.send(result);
    }

    /// The wait before try `attempts + 1`: exponential, its upper half random.
    fn backoff(&mut self, attempts: u32) -> Duration {
        let exp = self
            .config
            .min_backoff
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
            .min(self.config.max_backoff);
        // xorshift64*: jitter needs no better randomness.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        let unit = r as f64 / (1u64 << 53) as f64;
        exp / 2 + (exp / 2).mul_f64(unit)
    }

    /// When something becomes due without an answer or a new record: a key's retry, or the
    /// oldest ready record's linger.
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let retry = self.retries.peek().map(|Reverse((at, _))| *at);
        let linger = if self.requests_in_flight < self.config.max_in_flight {
            self.ready
                .first_key_value()
                .and_then(|(_, key)| self.keys.get(key))
                .and_then(|ks| ks.queue.front())
                .map(|item| item.queued_at + self.config.linger)
        } else {
            None
        };
        [retry, linger]
            .into_iter()
            .flatten()
            .filter(|at| *at > now)
            .min()
    }

    /// Starts a new flush generation; returns the one that ended.
    fn mark(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch - 1
    }

    /// Whether every record of generations up to `epoch` is answered.
    fn answered_through(&self, epoch: u64) -> bool {
        self.unresolved
            .first_key_value()
            .is_none_or(|(&oldest, _)| oldest > epoch)
    }

    fn is_idle(&self) -> bool {
        self.unresolved.is_empty() && self.requests_in_flight == 0
    }

    /// The PutRecords body for a request (JSON 1.1, written directly: at 500 records a request
    /// a `serde_json::Value` per record showed in profiles).
    fn body(stream: &StreamRef, batch: &[Item]) -> Bytes {
        let data_len: usize = batch.iter().map(|i| i.data.len() * 4 / 3 + 4).sum();
        let mut out = Vec::with_capacity(64 + data_len + batch.len() * 64);
        out.extend_from_slice(match stream {
            StreamRef::Name(_) => b"{\"StreamName\":",
            StreamRef::Arn(_) => b"{\"StreamARN\":",
        });
        let (StreamRef::Name(s) | StreamRef::Arn(s)) = stream;
        json_string(&mut out, s);
        out.extend_from_slice(b",\"Records\":[");
        for (n, item) in batch.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"Data\":\"");
            let start = out.len();
            out.resize(
                start + base64::encoded_len(item.data.len(), true).unwrap_or(0),
                0,
            );
            let written = base64::engine::general_purpose::STANDARD
                .encode_slice(&item.data, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + written);
            out.extend_from_slice(b"\",\"PartitionKey\":");
            json_string(&mut out, &item.key);
            if let Some(h) = &item.explicit_hash_key {
                out.extend_from_slice(b",\"ExplicitHashKey\":");
                json_string(&mut out, h);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        Bytes::from(out)
    }
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:/ ".contains(&b))
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

type PutRecordsFuture = Pin<Box<dyn Future<Output = Result<Vec<Entry>, Error>> + Send>>;

/// Sends a PutRecords body and returns the answer's entries (a trait so the unit tests can
/// stand in for the service).
trait Transport: Send + Sync + 'static {
    fn put_records(&self, body: Bytes) -> PutRecordsFuture;
}

struct HttpTransport {
    client: HttpClient,
    endpoint: Endpoint,
}

impl Transport for HttpTransport {
    fn put_records(&self, body: Bytes) -> PutRecordsFuture {
        let client = self.client.clone();
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Answer {
                records: Vec<Entry>,
            }
            let answer = client
                .call_bytes(Api::Data, &endpoint, "PutRecords", body)
                .await?;
            let answer: Answer = serde_json::from_slice(&answer)
                .map_err(|e| Error::protocol("PutRecords answer", &e))?;
            Ok(answer.records)
        })
    }
}

enum Msg {
    Put(Item),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
struct Counters {
    records_put: AtomicU64,
    records_written: AtomicU64,
    records_failed: AtomicU64,
    retries: AtomicU64,
    requests: AtomicU64,
    requests_failed: AtomicU64,
    order_violations: AtomicU64,
}

/// A handle to the producer; clones share it.
#[derive(Debug, Clone)]
pub struct RecordsProducer {
    tx: mpsc::UnboundedSender<Msg>,
    record_budget: Arc<Semaphore>,
    byte_budget: Arc<Semaphore>,
    config: Arc<RecordsConfig>,
    counters: Arc<Counters>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl RecordsProducer {
    /// Starts the producer's task on the current tokio runtime (panics outside one, as
    /// `tokio::spawn` does).
    pub fn new(
        client: HttpClient,
        endpoint: Endpoint,
        stream: StreamRef,
        config: RecordsConfig,
    ) -> RecordsProducer {
        RecordsProducer::with_transport(
            Arc::new(HttpTransport { client, endpoint }),
            stream,
            config,
        )
    }

    fn with_transport(
        transport: Arc<dyn Transport>,
        stream: StreamRef,
        config: RecordsConfig,
    ) -> RecordsProducer {
        let config = config.normalized();
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let dispatcher = Dispatcher {
            batcher: Batcher::new(config.clone()),
            transport,
            stream,
            counters: counters.clone(),
            requests: JoinSet::new(),
            batches: HashMap::new(),
            flushes: Vec::new(),
            closes: Vec::new(),
        };
        let task = tokio::spawn(dispatcher.run(rx));
        RecordsProducer {
            tx,
            record_budget: Arc::new(Semaphore::new(config.max_buffered_records)),
            byte_budget: Arc::new(Semaphore::new(config.max_buffered_bytes)),
            config: Arc::new(config),
            counters,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Queues a record. Waits only while the buffer is full. Records over Kinesis's limits are
    /// refused here, before anything is sent.
    pub async fn put(
        &self,
        partition_key: impl Into<String>,
        data: impl Into<Bytes>,
    ) -> Result<PutTicket, Error> {
        self.put_with_hash_key(partition_key, None, data).await
    }

    /// [`RecordsProducer::put`] with an `ExplicitHashKey` (a decimal 128-bit hash key) that
    /// picks the shard instead of the partition key's hash. Order is kept among the records
    /// with the same partition key and the same hash key.
    pub async fn put_with_hash_key(
        &self,
        partition_key: impl Into<String>,
        explicit_hash_key: Option<String>,
        data: impl Into<Bytes>,
    ) -> Result<PutTicket, Error> {
        let key: String = partition_key.into();
        let data: Bytes = data.into();
        let size = check_record(&key, explicit_hash_key.as_deref(), data.len())?;
        let records = self
            .record_budget
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        // `size` is at most 1 MiB, so it fits in a u32.
        let bytes = self
            .byte_budget
            .clone()
            .acquire_many_owned(size.max(1) as u32)
            .await
            .map_err(|_| closed())?;
        let (reply, rx) = oneshot::channel();
        let key: Arc<str> = Arc::from(key);
        let order_key = match &explicit_hash_key {
            None => key.clone(),
            Some(hash) => Arc::from(order_key(&key, hash)),
        };
        self.tx
            .send(Msg::Put(Item {
                seq: 0,
                epoch: 0,
                key,
                order_key,
                explicit_hash_key,
                data,
                reply,
                attempts: 0,
                queued_at: Instant::now(),
                _permits: Some((records, bytes)),
            }))
            .map_err(|_| closed())?;
        self.counters.records_put.fetch_add(1, Ordering::Relaxed);
        Ok(PutTicket(rx))
    }

    /// Sends everything queued so far without waiting for `linger`, and waits until each
    /// record put before the call is written or has failed.
    pub async fn flush(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(reply)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Refuses new records (on every clone), sends and answers everything queued, then stops
    /// the producer's task. Dropping every handle without closing also sends what is queued,
    /// in the background, as long as the runtime runs.
    pub async fn close(self) {
        self.record_budget.close();
        self.byte_budget.close();
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(reply)).is_ok() {
            let _ = rx.await;
        }
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    pub fn stats(&self) -> RecordsStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let held = |budget: &Semaphore, max: usize| {
            if budget.is_closed() {
                0
            } else {
                max.saturating_sub(budget.available_permits()) as u64
            }
        };
        RecordsStats {
            records_put: get(&c.records_put),
            records_written: get(&c.records_written),
            records_failed: get(&c.records_failed),
            retries: get(&c.retries),
            requests: get(&c.requests),
            requests_failed: get(&c.requests_failed),
            order_violations: get(&c.order_violations),
            buffered_records: held(&self.record_budget, self.config.max_buffered_records),
            buffered_bytes: held(&self.byte_budget, self.config.max_buffered_bytes),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The producer's task: owns the batcher, the requests in flight and the timers.
struct Dispatcher {
    batcher: Batcher,
    transport: Arc<dyn Transport>,
    stream: StreamRef,
    counters: Arc<Counters>,
    requests: JoinSet<Result<Vec<Entry>, Error>>,
    /// The records of each request in flight, by its task.
    batches: HashMap<tokio::task::Id, Vec<Item>>,
    /// Flushes waiting for their generation: (generation, reply).
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    closes: Vec<oneshot::Sender<()>>,
}

impl Dispatcher {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut closing = false;
        loop {
            let now = Instant::now();
            let urgent = closing || !self.flushes.is_empty();
            while let Some(batch) = self.batcher.take_batch(now, urgent) {
                self.send(batch);
            }
            self.answer_flushes();
            if closing && self.batcher.is_idle() {
                break;
            }
            let wake = self.batcher.next_wake(now);
            tokio::select! {
                msg = rx.recv(), if !closing => match msg {
                    Some(msg) => {
                        closing |= self.handle(msg);
                        // Take what else is waiting before batching, up to a bound.
                        for _ in 0..4096 {
                            match rx.try_recv() {
                                Ok(msg) => closing |= self.handle(msg),
                                Err(_) => break,
                            }
                        }
                    }
                    None => closing = true,
                },
                Some(done) = self.requests.join_next_with_id(), if !self.requests.is_empty() => {
                    let (id, result) = match done {
                        Ok((id, result)) => (id, result),
                        Err(e) => (e.id(), Err(Error::Closed(format!("a PutRecords task failed: {e}")))),
                    };
                    if let Some(batch) = self.batches.remove(&id) {
                        self.complete(batch, result);
                    }
                }
                () = sleep_until(wake) => {}
            }
        }
        // Records put after the close was asked for: answer them rather than drop them.
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Put(item) => {
                    self.counters.records_failed.fetch_add(1, Ordering::Relaxed);
                    let _ = item.reply.send(Err(closed()));
                }
                Msg::Flush(reply) | Msg::Close(reply) => {
                    let _ = reply.send(());
                }
            }
        }
        for (_, reply) in self.flushes.drain(..) {
            let _ = reply.send(());
        }
        for reply in self.closes.drain(..) {
            let _ = reply.send(());
        }
    }

    /// Takes a message; true when it asks to close.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Put(item) => {
                self.batcher.push(item, Instant::now());
                false
            }
            Msg::Flush(reply) => {
                let epoch = self.batcher.mark();
                self.flushes.push((epoch, reply));
                false
            }
            Msg::Close(reply) => {
                self.closes.push(reply);
                true
            }
        }
    }

    fn send(&mut self, batch: Vec<Item>) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let body = Batcher::body(&self.stream, &batch);
        let handle = self.requests.spawn(self.transport.put_records(body));
        self.batches.insert(handle.id(), batch);
    }

    fn complete(&mut self, batch: Vec<Item>, result: Result<Vec<Entry>, Error>) {
        if result.is_err() {
            self.counters
                .requests_failed
                .fetch_add(1, Ordering::Relaxed);
        }
        let tally = self.batcher.complete(batch, result, Instant::now());
        let c = &self.counters;
        c.records_written
            .fetch_add(tally.written, Ordering::Relaxed);
        c.records_failed.fetch_add(tally.failed, Ordering::Relaxed);
        c.retries.fetch_add(tally.retried, Ordering::Relaxed);
        if tally.order_violation {
            c.order_violations.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "PutRecords wrote a record after an earlier record of its partition key failed in the same request: that key's order is broken (set strict_key_order for this service)"
            );
        }
    }

    fn answer_flushes(&mut self) {
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(epoch, _)| self.batcher.answered_through(*epoch));
        self.flushes = waiting;
        for (_, reply) in done {
            let _ = reply.send(());
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub mod blocking {
    //! [`RecordsProducer`](super::RecordsProducer) for threaded code: the same producer on a
    //! runtime of its own (one worker thread), with blocking calls. Do not call these from
    //! inside an async task.

    use bytes::Bytes;
    use tokio::sync::oneshot;

    use super::{Put, RecordsConfig, RecordsStats, StreamRef};
    use crate::client::{Endpoint, HttpClient};
    use crate::error::Error;

    /// A blocking records producer.
    #[derive(Debug)]
    pub struct RecordsProducer {
        runtime: tokio::runtime::Runtime,
        inner: super::RecordsProducer,
    }

    /// A record's answer, waited for by blocking the thread.
    #[derive(Debug)]
    pub struct PutTicket(oneshot::Receiver<Result<Put, Error>>);

    impl PutTicket {
        pub fn wait(self) -> Result<Put, Error> {
            self.0
                .blocking_recv()
                .unwrap_or_else(|_| Err(super::stopped()))
        }
    }

    impl RecordsProducer {
        /// See [`super::RecordsProducer::new`].
        pub fn new(
            client: HttpClient,
            endpoint: Endpoint,
            stream: StreamRef,
            config: RecordsConfig,
        ) -> Result<RecordsProducer, Error> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("timeshard-records")
                .enable_all()
                .build()
                .map_err(|e| Error::io("starting the records producer's runtime", e))?;
            let inner = {
                let _entered = runtime.enter();
                super::RecordsProducer::new(client, endpoint, stream, config)
            };
            Ok(RecordsProducer { runtime, inner })
        }

        /// See [`super::RecordsProducer::put`]; blocks while the buffer is full.
        pub fn put(
            &self,
            partition_key: impl Into<String>,
            data: impl Into<Bytes>,
        ) -> Result<PutTicket, Error> {
            self.put_with_hash_key(partition_key, None, data)
        }

        pub fn put_with_hash_key(
            &self,
            partition_key: impl Into<String>,
            explicit_hash_key: Option<String>,
            data: impl Into<Bytes>,
        ) -> Result<PutTicket, Error> {
            let ticket = self.runtime.block_on(self.inner.put_with_hash_key(
                partition_key,
                explicit_hash_key,
                data,
            ))?;
            Ok(PutTicket(ticket.0))
        }

        pub fn flush(&self) {
            self.runtime.block_on(self.inner.flush());
        }

        pub fn stats(&self) -> RecordsStats {
            self.inner.stats()
        }

        /// Sends and answers everything queued, then stops.
        pub fn close(self) {
            let RecordsProducer { runtime, inner } = self;
            runtime.block_on(inner.close());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, data: impl Into<Bytes>) -> (Item, oneshot::Receiver<Result<Put, Error>>) {
        let (reply, rx) = oneshot::channel();
        let item = Item {
            seq: 0,
            epoch: 0,
            key: Arc::from(key),
            order_key: Arc::from(key),
            explicit_hash_key: None,
            data: data.into(),
            reply,
            attempts: 0,
            queued_at: Instant::now(),
            _permits: None,
        };
        (item, rx)
    }

    /// Queues `key:index` records; returns their ticket receivers.
    fn push_all(
        b: &mut Batcher,
        now: Instant,
        records: &[(&str, usize)],
    ) -> Vec<oneshot::Receiver<Result<Put, Error>>> {
        records
            .iter()
            .map(|(key, i)| {
                let (it, rx) = item(key, format!("{key}:{i}"));
                b.push(it, now);
                rx
            })
            .collect()
    }

    fn names(batch: &[Item]) -> Vec<String> {
        batch
            .iter()
            .map(|i| String::from_utf8_lossy(&i.data).into_owned())
            .collect()
    }

    fn written(n: usize) -> Entry {
        Entry {
            shard_id: Some("shardId-000000000000".into()),
            sequence_number: Some(format!("{}", 1000 + n)),
            ..Entry::default()
        }
    }

    fn throttled() -> Entry {
        Entry {
            error_code: Some("ProvisionedThroughputExceededException".into()),
            error_message: Some("Rate exceeded for shard shardId-000000000000".into()),
            ..Entry::default()
        }
    }

    fn config() -> RecordsConfig {
        RecordsConfig {
            max_in_flight: 10,
            ..RecordsConfig::default()
        }
    }

    #[test]
    fn a_request_holds_at_most_500_records() {
        let mut b = Batcher::new(config());
        let now = Instant::now();
        let keys: Vec<String> = (0..1200).map(|k| format!("k{k}")).collect();
        let records: Vec<(&str, usize)> = keys.iter().map(|k| (k.as_str(), 0)).collect();
        push_all(&mut b, now, &records);
        let first = b
            .take_batch(now, false)
            .expect("a full request goes at once");
        assert_eq!(first.len(), 500);
        assert_eq!(names(&first)[..2], ["k0:0", "k1:0"], "put order");
        assert_eq!(b.take_batch(now, false).map(|r| r.len()), Some(500));
        assert!(
            b.take_batch(now, false).is_none(),
            "200 records wait for linger"
        );
        assert_eq!(b.next_wake(now), Some(now + config().linger));
        assert_eq!(
            b.take_batch(now + config().linger, false).map(|r| r.len()),
            Some(200)
        );
        assert!(b.take_batch(now + config().linger, true).is_none());
    }

    #[test]
    fn a_request_holds_at_most_5_mib() {
        let mut b = Batcher::new(config());
        let now = Instant::now();
        for k in 0..12 {
            let (it, _) = item(&format!("k{k}"), vec![7u8; 1_000_000]);
            b.push(it, now);
        }
        // One key per record, so only the byte limit splits them.
        let mut sizes = Vec::new();
        while let Some(batch) = b.take_batch(now, true) {
            let bytes: usize = batch.iter().map(Item::size).sum();
            assert!(bytes <= MAX_BATCH_BYTES, "{bytes} bytes in a request");
            sizes.push(batch.len());
        }
        assert_eq!(sizes, [5, 5, 2]);

        // Records of exactly 1 MiB (data plus key): five fill a request to the byte.
        let mut b = Batcher::new(config());
        for k in 0..6 {
            let key = format!("key{k}");
            let (it, _) = item(&key, vec![0u8; MAX_RECORD_BYTES - key.len()]);
            b.push(it, now);
        }
        let batch = b.take_batch(now, false).expect("5 MiB is full");
        assert_eq!(batch.len(), 5);
        assert_eq!(batch.iter().map(Item::size).sum::<usize>(), MAX_BATCH_BYTES);
        // And the request body carries them all (base64 data, partition keys).
        let body = Batcher::body(&StreamRef::Name("s".into()), &batch);
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["StreamName"], "s");
        assert_eq!(json["Records"].as_array().map(Vec::len), Some(5));
        assert_eq!(json["Records"][4]["PartitionKey"], "key4");
    }

    #[test]
    fn records_over_the_limits_are_refused() {
        assert!(check_record("k", None, MAX_RECORD_BYTES - 1).is_ok());
        let err = check_record("k", None, MAX_RECORD_BYTES).expect_err("1 MiB + 1 with its key");
        assert!(err.to_string().contains("at most 1048576 bytes"), "{err}");
        assert!(check_record("", None, 1).is_err(), "empty key");
        assert!(
            check_record(&"k".repeat(257), None, 1).is_err(),
            "257 chars"
        );
        // 256 characters of two bytes each: the limit is in characters.
        assert!(check_record(&"é".repeat(256), None, 1).is_ok());
        assert!(check_record("k", Some("340282366920938463463374607431768211455"), 1).is_ok());
        for bad in [
            "340282366920938463463374607431768211456",
            "-1",
            "+1",
            "1e3",
            "",
        ] {
            assert!(check_record("k", Some(bad), 1).is_err(), "hash key {bad:?}");
        }
    }

    #[test]
    fn body_escapes_keys_and_names_the_stream_by_arn() {
        let (mut it, _) = item("a\"b\\c\u{1}é", Bytes::from_static(b"\x00\xff"));
        it.explicit_hash_key = Some("42".into());
        let arn = StreamRef::Arn("arn:aws:kinesis:us-east-1:000000000000:stream/s".into());
        let body = Batcher::body(&arn, &[it]);
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            json["StreamARN"],
            "arn:aws:kinesis:us-east-1:000000000000:stream/s"
        );
        let r = &json["Records"][0];
        assert_eq!(r["PartitionKey"], "a\"b\\c\u{1}é");
        assert_eq!(r["Data"], "AP8=");
        assert_eq!(r["ExplicitHashKey"], "42");
    }

    #[test]
    fn a_key_is_in_one_request_at_a_time() {
        let mut b = Batcher::new(config());
        let now = Instant::now();
        push_all(&mut b, now, &[("a", 0), ("a", 1), ("b", 0)]);
        let first = b.take_batch(now, true).expect("first");
        assert_eq!(names(&first), ["a:0", "a:1", "b:0"]);
        push_all(&mut b, now, &[("a", 2), ("c", 0), ("b", 1)]);
        let second = b.take_batch(now, true).expect("second");
        assert_eq!(names(&second), ["c:0"], "a and b are in flight");
        assert!(b.take_batch(now, true).is_none());
        let tally = b.complete(first, Ok((0..3).map(written).collect()), now);
        assert_eq!(tally.written, 3);
        let third = b.take_batch(now, true).expect("third");
        assert_eq!(names(&third), ["a:2", "b:1"]);
    }

    #[test]
    fn explicit_hash_keys_make_separate_order_keys() {
        let mut b = Batcher::new(config());
        let now = Instant::now();
        let with_hash = |hash: &str, i: usize| {
            let (mut it, _) = item("pk", format!("{hash}:{i}"));
            it.explicit_hash_key = Some(hash.to_owned());
            it.order_key = Arc::from(order_key("pk", hash));
            it
        };
        b.push(with_hash("1", 0), now);
        b.push(with_hash("2", 0), now);
        let first = b.take_batch(now, true).expect("first");
        assert_eq!(names(&first), ["1:0", "2:0"]);
        b.push(with_hash("1", 1), now);
        b.push(with_hash("3", 0), now);
        push_all(&mut b, now, &[("pk", 0)]);
        let second = b.take_batch(now, true).expect("second");
        assert_eq!(names(&second), ["3:0", "pk:0"], "hash key 1 is in flight");
        assert_ne!(order_key("a", "12"), order_key("a1", "2"));
    }

    #[test]
    fn retried_records_go_before_newer_records_of_their_key() {
        let mut b = Batcher::new(config());
        let now = Instant::now();
        let mut tickets = push_all(
            &mut b,
            now,
            &[("a", 0), ("a", 1), ("a", 2), ("b", 0), ("a", 3), ("a", 4)],
        );
        let first = b.take_batch(now, true).expect("first");
        tickets.extend(push_all(&mut b, now, &[("a", 5), ("b", 1), ("a", 6)]));
        // a:2 is throttled; its shard's later entries (a:3, a:4) fail too.
        let answer = vec![
            written(0),
            written(1),
            throttled(),
            written(3),
            throttled(),
            throttled(),
        ];
        let tally = b.complete(first, Ok(answer), now);
        assert_eq!(
            tally,
            Tally {
                written: 3,
                failed: 0,
                retried: 3,
                order_violation: false
            }
        );
        // During the backoff only the other key goes.
        let second = b.take_batch(now, true).expect("b");
        assert_eq!(names(&second), ["b:1"]);
        let due = b.next_wake(now).expect("a retry is due later");
        assert!(due > now && due <= now + config().min_backoff, "{due:?}");
        assert!(b.take_batch(now, true).is_none());
        let later = now + Duration::from_secs(1);
        let third = b.take_batch(later, true).expect("the retry");
        assert_eq!(names(&third), ["a:2", "a:3", "a:4", "a:5", "a:6"]);
        assert_eq!(
            third.iter().map(|i| i.attempts).collect::<Vec<_>>(),
            [1, 1, 1, 0, 0]
        );
        assert!(matches!(tickets[0].try_recv(), Ok(Ok(_))));
        assert!(tickets[2].try_recv().is_err(), "a:2 is not answered yet");
    }

    #[test]
    fn an_entry_written_after_a_failed_entry_of_its_key_is_an_order_violation() {
        let mut b = Batcher::new(config());
        let now = Instant::now();
        push_all(&mut b, now, &[("a", 0), ("b", 0), ("a", 1)]);
        let batch = b.take_batch(now, true).expect("batch");
        let tally = b.complete(batch, Ok(vec![throttled(), written(1), written(2)]), now);
        assert!(tally.order_violation);

        push_all(&mut b, now, &[("c", 0), ("d", 0)]);
        let batch = b.take_batch(now, true).expect("c and d");
        let tally = b.complete(batch, Ok(vec![throttled(), written(1)]), now);
        assert!(!tally.order_violation, "different keys");
    }

    #[test]
    fn strict_key_order_sends_one_record_per_key() {
        let mut b = Batcher::new(RecordsConfig {
            strict_key_order: true,
            max_batch_records: 2,
            ..config()
        });
        let now = Instant::now();
        push_all(&mut b, now, &[("a", 0), ("a", 1), ("a", 2), ("b", 0)]);
        let first = b.take_batch(now, false).expect("two keys fill two places");
        assert_eq!(names(&first), ["a:0", "b:0"]);
        assert!(b.take_batch(now, true).is_none());
        b.complete(first, Ok(vec![written(0), written(1)]), now);
        assert!(
            b.take_batch(now, false).is_none(),
            "one key cannot fill a request: linger"
        );
        let second = b.take_batch(now, true).expect("a:1");
        assert_eq!(names(&second), ["a:1"]);
    }

    #[test]
    fn errors_that_cannot_be_retried_answer_at_once() {
        let mut b = Batcher::new(config());
        let now = Instant::now();
        let mut tickets = push_all(&mut b, now, &[("a", 0), ("b", 0)]);
        let batch = b.take_batch(now, true).expect("batch");
        let missing = Error::Service {
            operation: "PutRecords".into(),
            status: 400,
            code: "ResourceNotFoundException".into(),
            message: "Stream s under account 000000000000 not found.".into(),
        };
        let tally = b.complete(batch, Err(missing), now);
        assert_eq!((tally.failed, tally.retried), (2, 0));
        for t in &mut tickets {
            let err = t.try_recv().expect("answered").expect_err("failed");
            assert_eq!(err.code(), Some("ResourceNotFoundException"));
            assert!(err.to_string().contains("not found"), "{err}");
        }
        assert!(b.is_idle());
        assert!(b.keys.is_empty(), "no state left for finished keys");
    }

    #[test]
    fn retriable_errors_are_retried_up_to_max_attempts_and_the_deadline() {
        let mut b = Batcher::new(RecordsConfig {
            max_attempts: 2,
            ..config()
        });
        let now = Instant::now();
        let mut tickets = push_all(&mut b, now, &[("a", 0), ("a", 1)]);
        let broken = || Error::Connection {
            context: "PutRecords to http://127.0.0.1:1".into(),
            message: "connection reset".into(),
        };
        let batch = b.take_batch(now, true).expect("try 1");
        assert_eq!(b.complete(batch, Err(broken()), now).retried, 2);
        let later = now + Duration::from_secs(1);
        let batch = b.take_batch(later, true).expect("try 2");
        assert_eq!(names(&batch), ["a:0", "a:1"]);
        assert_eq!(b.complete(batch, Err(broken()), later).failed, 2);
        let err = tickets[0]
            .try_recv()
            .expect("answered")
            .expect_err("failed");
        assert!(matches!(err, Error::Connection { .. }), "{err}");
        assert!(b.is_idle());

        // The deadline ends retries even with tries left.
        let mut b = Batcher::new(RecordsConfig {
            retry_deadline: Duration::from_secs(2),
            ..config()
        });
        let mut tickets = push_all(&mut b, now, &[("a", 0)]);
        let batch = b.take_batch(now, true).expect("try 1");
        let tally = b.complete(batch, Ok(vec![throttled()]), now + Duration::from_secs(3));
        assert_eq!((tally.failed, tally.retried), (1, 0));
        let err = tickets[0]
            .try_recv()
            .expect("answered")
            .expect_err("failed");
        assert_eq!(err.code(), Some("ProvisionedThroughputExceededException"));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_bound() {
        let mut b = Batcher::new(config());
        let c = config();
        for _ in 0..100 {
            let first = b.backoff(1);
            assert!(
                first >= c.min_backoff / 2 && first <= c.min_backoff,
                "{first:?}"
            );
            let third = b.backoff(3);
            assert!(
                third >= c.min_backoff * 2 && third <= c.min_backoff * 4,
                "{third:?}"
            );
            let late = b.backoff(40);
            assert!(
                late >= c.max_backoff / 2 && late <= c.max_backoff,
                "{late:?}"
            );
        }
        let spread: HashSet<Duration> = (0..20).map(|_| b.backoff(2)).collect();
        assert!(spread.len() > 10, "jitter varies the waits");
    }

    #[test]
    fn flush_generations_are_answered_when_their_records_are() {
        let mut b = Batcher::new(config());
        let now = Instant::now();
        push_all(&mut b, now, &[("a", 0)]);
        let gen0 = b.mark();
        push_all(&mut b, now, &[("b", 0)]);
        let gen1 = b.mark();
        assert!(!b.answered_through(gen0));
        let batch = b.take_batch(now, true).expect("batch");
        assert_eq!(names(&batch), ["a:0", "b:0"]);
        b.complete(batch, Ok(vec![written(0), throttled()]), now);
        assert!(b.answered_through(gen0), "a:0 is written");
        assert!(!b.answered_through(gen1), "b:0 waits for a retry");
        let gen2 = b.mark();
        assert!(!b.answered_through(gen2));
        let batch = b
            .take_batch(now + Duration::from_secs(1), true)
            .expect("retry");
        b.complete(batch, Ok(vec![written(1)]), now);
        assert!(b.answered_through(gen2) && b.is_idle());
    }

    /// A stand-in for the service: stores what it writes, fails entries as told.
    #[derive(Clone)]
    struct Fake {
        inner: Arc<FakeInner>,
    }

    struct FakeInner {
        /// Whether a shard's failures in a request are a suffix (timeshard), or each entry
        /// fails on its own (AWS may).
        suffix: bool,
        /// Percent of entries (or of shards, for a suffix) that fail.
        fail_percent: u64,
        /// Held requests wait for a permit.
        gate: Option<Arc<Semaphore>>,
        state: Mutex<FakeState>,
    }

    struct FakeState {
        rng: u64,
        /// (key, data) in the order written.
        written: Vec<(String, String)>,
        requests: u64,
    }

    impl Fake {
        fn new(suffix: bool, fail_percent: u64, gate: Option<Arc<Semaphore>>) -> Fake {
            Fake {
                inner: Arc::new(FakeInner {
                    suffix,
                    fail_percent,
                    gate,
                    state: Mutex::new(FakeState {
                        rng: 0x9E37_79B9_7F4A_7C15,
                        written: Vec::new(),
                        requests: 0,
                    }),
                }),
            }
        }

        fn written(&self) -> Vec<(String, String)> {
            lock(&self.inner.state).written.clone()
        }
    }

    impl FakeState {
        fn roll(&mut self, n: u64) -> u64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng % n
        }
    }

    impl Transport for Fake {
        fn put_records(&self, body: Bytes) -> PutRecordsFuture {
            let inner = self.inner.clone();
            Box::pin(async move {
                if let Some(gate) = &inner.gate {
                    let _ = gate.acquire().await.map(|p| p.forget());
                }
                let delay = lock(&inner.state).roll(3);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let json: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| Error::protocol("body", &e))?;
                let records = json["Records"].as_array().cloned().unwrap_or_default();
                let mut s = lock(&inner.state);
                s.requests += 1;
                if s.roll(100) < 5 {
                    return Err(Error::Service {
                        operation: "PutRecords".into(),
                        status: 500,
                        code: "InternalFailure".into(),
                        message: "whole request".into(),
                    });
                }
                let mut failed_shards = HashSet::new();
                let mut entries = Vec::new();
                for r in records {
                    let key = r["PartitionKey"].as_str().unwrap_or_default().to_owned();
                    let data = base64::engine::general_purpose::STANDARD
                        .decode(r["Data"].as_str().unwrap_or_default())
                        .unwrap_or_default();
                    let shard = key.bytes().map(u64::from).sum::<u64>() % 4;
                    let fails = if inner.suffix {
                        failed_shards.contains(&shard) || s.roll(100) < inner.fail_percent
                    } else {
                        s.roll(100) < inner.fail_percent
                    };
                    if fails {
                        failed_shards.insert(shard);
                        entries.push(throttled());
                    } else {
                        let n = s.written.len();
                        s.written
                            .push((key, String::from_utf8_lossy(&data).into_owned()));
                        entries.push(written(n));
                    }
                }
                Ok(entries)
            })
        }
    }

    fn fast_retries() -> RecordsConfig {
        RecordsConfig {
            linger: Duration::from_millis(1),
            min_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            max_attempts: 1000,
            max_batch_records: 50,
            ..RecordsConfig::default()
        }
    }

    /// Puts `per_key` records on each of `keys` keys, interleaved; waits for every ticket.
    async fn put_many(p: &RecordsProducer, keys: usize, per_key: usize) {
        let mut tickets = Vec::new();
        for i in 0..per_key {
            for k in 0..keys {
                let t = p.put(format!("key{k}"), format!("key{k}:{i}")).await;
                tickets.push(t.expect("put"));
            }
        }
        p.flush().await;
        for t in tickets {
            t.await.expect("written");
        }
    }

    /// Whether every key's written records are exactly 0..per_key, in order.
    fn in_put_order(written: &[(String, String)], keys: usize, per_key: usize) -> bool {
        let mut per: HashMap<&str, Vec<usize>> = HashMap::new();
        for (key, data) in written {
            let i = data.rsplit(':').next().and_then(|i| i.parse().ok());
            per.entry(key).or_default().push(i.unwrap_or(usize::MAX));
        }
        per.len() == keys && per.values().all(|v| *v == (0..per_key).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn per_key_order_holds_with_partial_failures_and_requests_in_flight() {
        let fake = Fake::new(true, 20, None);
        let p = RecordsProducer::with_transport(
            Arc::new(fake.clone()),
            StreamRef::Name("s".into()),
            fast_retries(),
        );
        put_many(&p, 20, 100).await;
        let stats = p.stats();
        assert_eq!(stats.records_written, 2000);
        assert!(stats.retries > 100, "{stats:?}");
        assert!(stats.requests_failed > 0, "{stats:?}");
        assert_eq!(stats.order_violations, 0);
        assert_eq!((stats.buffered_records, stats.buffered_bytes), (0, 0));
        p.close().await;
        assert!(in_put_order(&fake.written(), 20, 100));
    }

    #[tokio::test]
    async fn a_service_failing_single_entries_breaks_order_unless_strict() {
        // Without strict order the producer sees what happened and counts it.
        let fake = Fake::new(false, 30, None);
        let p = RecordsProducer::with_transport(
            Arc::new(fake.clone()),
            StreamRef::Name("s".into()),
            fast_retries(),
        );
        put_many(&p, 4, 100).await;
        assert!(p.stats().order_violations > 0, "{:?}", p.stats());
        p.close().await;
        assert!(!in_put_order(&fake.written(), 4, 100));

        let fake = Fake::new(false, 30, None);
        let p = RecordsProducer::with_transport(
            Arc::new(fake.clone()),
            StreamRef::Name("s".into()),
            RecordsConfig {
                strict_key_order: true,
                ..fast_retries()
            },
        );
        put_many(&p, 4, 100).await;
        assert_eq!(p.stats().order_violations, 0);
        p.close().await;
        assert!(in_put_order(&fake.written(), 4, 100));
    }

    #[tokio::test]
    async fn put_waits_while_the_buffer_is_full() {
        let gate = Arc::new(Semaphore::new(0));
        let fake = Fake::new(true, 0, Some(gate.clone()));
        let p = RecordsProducer::with_transport(
            Arc::new(fake.clone()),
            StreamRef::Name("s".into()),
            RecordsConfig {
                max_buffered_records: 10,
                ..fast_retries()
            },
        );
        let mut tickets = Vec::new();
        for i in 0..10 {
            tickets.push(p.put("k", format!("k:{i}")).await.expect("room"));
        }
        assert_eq!(p.stats().buffered_records, 10);
        let eleventh = tokio::time::timeout(Duration::from_millis(100), p.put("k", "k:10")).await;
        assert!(eleventh.is_err(), "put waits while 10 records are held");
        gate.add_permits(100);
        tickets.push(p.put("k", "k:10").await.expect("room again"));
        for t in tickets {
            t.await.expect("written");
        }
        p.close().await;
        assert!(in_put_order(&fake.written(), 1, 11));
    }

    #[tokio::test]
    async fn close_answers_every_ticket_and_later_puts_are_refused() {
        let fake = Fake::new(true, 10, None);
        let p = RecordsProducer::with_transport(
            Arc::new(fake.clone()),
            StreamRef::Name("s".into()),
            RecordsConfig {
                linger: Duration::from_secs(3600),
                ..fast_retries()
            },
        );
        let other = p.clone();
        let mut tickets = Vec::new();
        for i in 0..300 {
            tickets.push(
                p.put(format!("k{}", i % 7), format!("x:{i}"))
                    .await
                    .expect("put"),
            );
        }
        p.close().await;
        for t in tickets {
            t.await.expect("sent by close despite the long linger");
        }
        let err = other.put("k", "late").await.expect_err("closed");
        assert!(matches!(err, Error::Closed(_)), "{err}");
        assert_eq!(fake.written().len(), 300);
        let oversize = other.put("k", vec![0u8; MAX_RECORD_BYTES]).await;
        assert!(matches!(oversize, Err(Error::Input(_))));
    }
}
