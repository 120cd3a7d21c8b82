//! The batching producer for Kinesis Data Streams: records in, PutRecords requests out.
//!
//! [`RecordsProducer::put`] queues a record and returns a [`PutTicket`] that resolves to the
//! record's shard and sequence number, or to the error that ended its tries. A background task
//! gathers queued records into PutRecords requests of at most 500 records and 5 MiB (data plus
//! partition keys, as Kinesis counts), sends one when it is full or its oldest record has waited
//! `linger`, and keeps up to `max_in_flight` requests going.
//!
//! Retries. Entries that fail with `ProvisionedThroughputExceededException` or `InternalFailure`,
//! and every entry of a request that failed as a whole with a retriable error (connection
//! trouble, throttling, 5xx), are queued again with exponential backoff and jitter, up to
//! `max_attempts` tries. Anything else (validation, a missing stream, refused credentials) fails
//! the ticket at once with the service's message.
//!
//! Order. Records with the same partition key are written in the order they were put:
//! - a key is never in two requests in flight at once, and a record waiting for its retry holds
//!   back every later record of its key;
//! - retried records keep their place in the queue, ahead of newer records of their key.
//!
//! That is enough when the service fails a shard's entries in a request as a suffix: after the
//! first failed entry of a shard, every later one fails too. timeshard does (see
//! docs/api-compat.md); should a later entry of a key succeed after an earlier one failed, the
//! order of that key is broken by the service, and the producer counts it in
//! [`RecordsStats::order_violations`] and logs it instead of hiding it.
//!
//! Memory is bounded: `put` waits while `max_buffered_bytes` of records are queued or in flight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{Api, Endpoint, HttpClient};
use crate::error::Error;

/// Kinesis's limits on PutRecords.
pub const MAX_BATCH_RECORDS: usize = 500;
pub const MAX_BATCH_BYTES: usize = 5 << 20;
pub const MAX_RECORD_BYTES: usize = 1 << 20;
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// How the producer batches and retries.
#[derive(Debug, Clone)]
pub struct RecordsConfig {
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    /// How long a record may wait for others to fill its request.
    pub linger: Duration,
    pub max_in_flight: usize,
    /// Tries per record, the first included.
    pub max_attempts: u32,
    pub max_backoff: Duration,
    /// `put` waits while this many bytes are queued or in flight.
    pub max_buffered_bytes: usize,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        RecordsConfig {
            max_batch_records: MAX_BATCH_RECORDS,
            max_batch_bytes: MAX_BATCH_BYTES,
            linger: Duration::from_millis(50),
            max_in_flight: 4,
            max_attempts: 10,
            max_backoff: Duration::from_secs(5),
            max_buffered_bytes: 64 << 20,
        }
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

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordsStats {
    pub records_put: u64,
    pub records_written: u64,
    /// Entries queued again after a failure (a record may count several times).
    pub retries: u64,
    pub records_failed: u64,
    pub requests: u64,
    /// Requests in which a key's later entry was written after an earlier one failed.
    pub order_violations: u64,
}

/// Resolves once the record is written or has failed for good.
#[derive(Debug)]
pub struct PutTicket(oneshot::Receiver<Result<Put, Error>>);

impl PutTicket {
    pub async fn wait(self) -> Result<Put, Error> {
        self.0
            .await
            .unwrap_or_else(|_| Err(Error::Closed("the records producer stopped".to_owned())))
    }
}

struct Item {
    key: String,
    explicit_hash_key: Option<String>,
    data: Bytes,
    reply: oneshot::Sender<Result<Put, Error>>,
    attempts: u32,
    queued_at: Instant,
    not_before: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Item {
    fn size(&self) -> usize {
        self.key.len() + self.data.len()
    }
}

enum Msg {
    Put(Item),
    Flush(oneshot::Sender<()>),
}

/// A handle to the producer; clones share it.
#[derive(Debug, Clone)]
pub struct RecordsProducer {
    tx: mpsc::UnboundedSender<Msg>,
    budget: Arc<Semaphore>,
    stats: Arc<Mutex<RecordsStats>>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl RecordsProducer {
    /// Starts the producer's task on the current tokio runtime.
    pub fn new(
        client: HttpClient,
        endpoint: Endpoint,
        stream: StreamRef,
        config: RecordsConfig,
    ) -> RecordsProducer {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(RecordsStats::default()));
        let budget = Arc::new(Semaphore::new(
            config.max_buffered_bytes.max(MAX_RECORD_BYTES),
        ));
        let dispatcher = Dispatcher {
            client,
            endpoint,
            stream,
            config,
            stats: stats.clone(),
            queue: BTreeMap::new(),
            next_seq: 0,
            busy_keys: HashMap::new(),
            in_flight: JoinSet::new(),
            in_flight_seqs: std::collections::BTreeSet::new(),
            flushes: Vec::new(),
        };
        let task = tokio::spawn(dispatcher.run(rx));
        RecordsProducer {
            tx,
            budget,
            stats,
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

    /// [`RecordsProducer::put`] with an `ExplicitHashKey` (a decimal 128-bit hash key).
    pub async fn put_with_hash_key(
        &self,
        partition_key: impl Into<String>,
        explicit_hash_key: Option<String>,
        data: impl Into<Bytes>,
    ) -> Result<PutTicket, Error> {
        let key = partition_key.into();
        let data = data.into();
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_PARTITION_KEY_CHARS {
            return Err(Error::Input(format!(
                "a partition key has 1 to {MAX_PARTITION_KEY_CHARS} characters; this one has {chars}"
            )));
        }
        let size = key.len() + data.len();
        if size > MAX_RECORD_BYTES {
            return Err(Error::Input(format!(
                "a record (data and partition key) is at most {MAX_RECORD_BYTES} bytes; this one is {size}"
            )));
        }
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(size.max(1) as u32)
            .await
            .map_err(|_| Error::Closed("the records producer is closed".to_owned()))?;
        let (reply, rx) = oneshot::channel();
        let now = Instant::now();
        self.tx
            .send(Msg::Put(Item {
                key,
                explicit_hash_key,
                data,
                reply,
                attempts: 0,
                queued_at: now,
                not_before: now,
                _permit: permit,
            }))
            .map_err(|_| Error::Closed("the records producer is closed".to_owned()))?;
        lock(&self.stats).records_put += 1;
        Ok(PutTicket(rx))
    }

    /// Sends everything queued so far without waiting for `linger`, and waits until each of
    /// those records is written or has failed.
    pub async fn flush(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(reply)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Flushes, then stops the producer's task.
    pub async fn close(self) {
        self.flush().await;
        self.budget.close();
        let task = lock(&self.task).take();
        drop(self.tx);
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    pub fn stats(&self) -> RecordsStats {
        lock(&self.stats).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Outcome = (Vec<(u64, Item)>, Result<Vec<Entry>, Error>);

struct Dispatcher {
    client: HttpClient,
    endpoint: Endpoint,
    stream: StreamRef,
    config: RecordsConfig,
    stats: Arc<Mutex<RecordsStats>>,
    /// Records waiting to be sent, by put order (a retried record keeps its number).
    queue: BTreeMap<u64, Item>,
    next_seq: u64,
    /// Keys with records in a request in flight.
    busy_keys: HashMap<String, usize>,
    in_flight: JoinSet<Outcome>,
    /// Sequence numbers of the records in flight.
    in_flight_seqs: std::collections::BTreeSet<u64>,
    /// Flushes waiting for every record put before them: (last seq, reply).
    flushes: Vec<(u64, oneshot::Sender<()>)>,
}

/// One entry of a PutRecords answer.
#[derive(Debug, Clone, Deserialize)]
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

impl Dispatcher {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut open = true;
        loop {
            self.dispatch(!open || !self.flushes.is_empty());
            self.resolve_flushes();
            if !open && self.queue.is_empty() && self.in_flight.is_empty() {
                return;
            }
            let wake = self.next_wake();
            tokio::select! {
                msg = rx.recv(), if open => match msg {
                    Some(Msg::Put(item)) => {
                        self.queue.insert(self.next_seq, item);
                        self.next_seq += 1;
                    }
                    Some(Msg::Flush(reply)) => {
                        self.flushes.push((self.next_seq, reply));
                    }
                    None => open = false,
                },
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    if let Ok((items, result)) = done {
                        self.complete(items, result);
                    }
                }
                () = sleep_until(wake) => {}
            }
        }
    }

    /// When a queued record may next be sent: the end of its linger or its backoff. A record
    /// that could go now but did not waits for a request to complete (room in flight, or its key
    /// free), which wakes the loop anyway.
    fn next_wake(&self) -> Option<Instant> {
        let now = Instant::now();
        self.queue
            .values()
            .map(|i| i.not_before.max(i.queued_at + self.config.linger))
            .filter(|at| *at > now)
            .min()
    }

    /// Answers the flushes whose records are all written or failed.
    fn resolve_flushes(&mut self) {
        let oldest_unresolved = [
            self.queue.keys().next().copied(),
            self.in_flight_seqs.iter().next().copied(),
        ]
        .into_iter()
        .flatten()
        .min();
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(upto, _)| oldest_unresolved.is_none_or(|oldest| oldest >= *upto));
        self.flushes = waiting;
        for (_, reply) in done {
            let _ = reply.send(());
        }
    }

    /// Sends requests while there is room in flight and a batch is ready.
    fn dispatch(&mut self, urgent: bool) {
        let now = Instant::now();
        while self.in_flight.len() < self.config.max_in_flight.max(1) {
            let mut blocked: HashSet<&str> = HashSet::new();
            let mut picked: Vec<u64> = Vec::new();
            let mut bytes = 0usize;
            let mut oldest: Option<Instant> = None;
            for (seq, item) in &self.queue {
                if picked.len() >= self.config.max_batch_records.clamp(1, MAX_BATCH_RECORDS) {
                    break;
                }
                let key = item.key.as_str();
                if blocked.contains(key)
                    || self.busy_keys.contains_key(key)
                    || item.not_before > now
                {
                    // Later records of this key wait behind this one.
                    blocked.insert(key);
                    continue;
                }
                if bytes + item.size() > self.config.max_batch_bytes.min(MAX_BATCH_BYTES)
                    && !picked.is_empty()
                {
                    break;
                }
                bytes += item.size();
                picked.push(*seq);
                oldest = Some(oldest.map_or(item.queued_at, |o: Instant| o.min(item.queued_at)));
            }
            if picked.is_empty() {
                return;
            }
            let full = picked.len() >= self.config.max_batch_records.clamp(1, MAX_BATCH_RECORDS)
                || bytes * 10 >= self.config.max_batch_bytes.min(MAX_BATCH_BYTES) * 9;
            let waited = oldest.is_some_and(|o| now >= o + self.config.linger);
            if !(full || waited || urgent) {
                return;
            }
            let items: Vec<(u64, Item)> = picked
                .into_iter()
                .filter_map(|seq| self.queue.remove(&seq).map(|i| (seq, i)))
                .collect();
            for (seq, item) in &items {
                *self.busy_keys.entry(item.key.clone()).or_insert(0) += 1;
                self.in_flight_seqs.insert(*seq);
            }
            lock(&self.stats).requests += 1;
            let body = self.body(&items);
            let client = self.client.clone();
            let endpoint = self.endpoint.clone();
            self.in_flight.spawn(async move {
                let result = send(&client, &endpoint, body).await;
                (items, result)
            });
        }
    }

    fn body(&self, items: &[(u64, Item)]) -> Bytes {
        let records: Vec<serde_json::Value> = items
            .iter()
            .map(|(_, i)| {
                let mut r = serde_json::json!({
                    "Data": base64::engine::general_purpose::STANDARD.encode(&i.data),
                    "PartitionKey": i.key,
                });
                if let Some(h) = &i.explicit_hash_key {
                    r["ExplicitHashKey"] = serde_json::json!(h);
                }
                r
            })
            .collect();
        let mut body = serde_json::json!({ "Records": records });
        match &self.stream {
            StreamRef::Name(n) => body["StreamName"] = serde_json::json!(n),
            StreamRef::Arn(a) => body["StreamARN"] = serde_json::json!(a),
        }
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let base = Duration::from_millis(100)
            .saturating_mul(1 << attempts.min(16))
            .min(self.config.max_backoff);
        let nanos = u64::from(chrono::Utc::now().timestamp_subsec_nanos());
        base + base.mul_f64((nanos % 1000) as f64 / 4000.0)
    }

    /// Applies a request's answer: replies, retries, failures.
    fn complete(&mut self, items: Vec<(u64, Item)>, result: Result<Vec<Entry>, Error>) {
        for (seq, item) in &items {
            self.in_flight_seqs.remove(seq);
            if let Some(n) = self.busy_keys.get_mut(&item.key) {
                *n -= 1;
                if *n == 0 {
                    self.busy_keys.remove(&item.key);
                }
            }
        }
        let now = Instant::now();
        let entries = match result {
            Ok(entries) if entries.len() == items.len() => entries,
            Ok(entries) => {
                let e = Error::protocol(
                    "PutRecords answer",
                    &format!("{} entries for {} records", entries.len(), items.len()),
                );
                return self.fail_or_retry(items, &e, now);
            }
            Err(e) => return self.fail_or_retry(items, &e, now),
        };
        let mut failed_keys: HashSet<String> = HashSet::new();
        let mut violation = false;
        let mut stats = RecordsStats::default();
        for ((seq, mut item), entry) in items.into_iter().zip(entries) {
            match (entry.error_code, entry.shard_id, entry.sequence_number) {
                (None, Some(shard_id), Some(sequence_number)) => {
                    violation |= failed_keys.contains(&item.key);
                    stats.records_written += 1;
                    let _ = item.reply.send(Ok(Put {
                        shard_id,
                        sequence_number,
                    }));
                }
                (code, _, _) => {
                    let code = code.unwrap_or_else(|| "MissingSequenceNumber".to_owned());
                    failed_keys.insert(item.key.clone());
                    let retriable = matches!(
                        code.as_str(),
                        "ProvisionedThroughputExceededException" | "InternalFailure"
                    );
                    item.attempts += 1;
                    if retriable && item.attempts < self.config.max_attempts {
                        stats.retries += 1;
                        item.not_before = now + self.backoff(item.attempts);
                        self.queue.insert(seq, item);
                    } else {
                        stats.records_failed += 1;
                        let _ = item.reply.send(Err(Error::Service {
                            operation: "PutRecords".to_owned(),
                            status: 200,
                            code,
                            message: entry.error_message.unwrap_or_default(),
                        }));
                    }
                }
            }
        }
        if violation {
            stats.order_violations += 1;
            tracing::warn!(
                "PutRecords wrote a record after an earlier record of its partition key failed: that key's order is broken"
            );
        }
        let mut s = lock(&self.stats);
        s.records_written += stats.records_written;
        s.retries += stats.retries;
        s.records_failed += stats.records_failed;
        s.order_violations += stats.order_violations;
    }

    fn fail_or_retry(&mut self, items: Vec<(u64, Item)>, error: &Error, now: Instant) {
        let mut s = lock(&self.stats);
        for (seq, mut item) in items {
            item.attempts += 1;
            if error.is_retriable() && item.attempts < self.config.max_attempts {
                s.retries += 1;
                item.not_before = now + self.backoff(item.attempts);
                self.queue.insert(seq, item);
            } else {
                s.records_failed += 1;
                let _ = item.reply.send(Err(copy_error(error)));
            }
        }
    }
}

/// The same error for every record of a failed request.
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
        Error::Timeout(what, d) => Error::Timeout(what.clone(), *d),
        other => Error::Closed(other.to_string()),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn send(client: &HttpClient, endpoint: &Endpoint, body: Bytes) -> Result<Vec<Entry>, Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        records: Vec<Entry>,
    }
    let answer = client
        .call_bytes(Api::Data, endpoint, "PutRecords", body)
        .await?;
    let answer: Answer =
        serde_json::from_slice(&answer).map_err(|e| Error::protocol("PutRecords answer", &e))?;
    Ok(answer.records)
}
