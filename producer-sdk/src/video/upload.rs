//! The upload task: one PutMedia connection at a time, resending from the first fragment not
//! persisted after every reconnect.
//!
//! A session sends the header of its first fragment, then fragments in backlog order, each chunk
//! as soon as it exists, so live frames go out as they arrive. It ends when:
//! - the input is done and every fragment is persisted (the producer is finished);
//! - the next fragment has different tracks: the body ends cleanly and the next session starts
//!   with the new header, because an upload carries one MKV document;
//! - the connection breaks, the response ends, an ERROR ack arrives, or a fragment sent in full
//!   gets no PERSISTED ack within the ack timeout. Then it reconnects after a backoff.
//!
//! PutMedia is full duplex: the body is fed through a channel while a second task reads ack
//! lines from the response and applies them to the backlog directly, so acks are handled while
//! the sender waits on a slow socket.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, TRANSFER_ENCODING, USER_AGENT};
use http_body_util::BodyExt as _;
use http_body_util::channel::{Channel, Sender};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::auth::EMPTY_SHA256;
use crate::client::{USER_AGENT_VALUE, error_chain, service_error};
use crate::error::Error;
use crate::video::acks::{Ack, ErrorAction, classify};
use crate::video::buffer::Dropped;
use crate::video::control::{MediaApi, VideoControl};
use crate::video::producer::{Event, ProducerConfig, Shared, now_ms};

/// Exponential backoff with jitter: 200 ms, doubling, capped.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(max: Duration) -> Backoff {
        Backoff {
            next: Duration::from_millis(200),
            max,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Duration::from_millis(200);
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        // Up to +25% jitter, from the clock's nanoseconds: enough to spread producers out.
        let nanos = u64::from(chrono::Utc::now().timestamp_subsec_nanos());
        let jitter = base.mul_f64((nanos % 1000) as f64 / 4000.0);
        base + jitter
    }
}

/// How a session ended.
#[derive(Debug)]
enum SessionEnd {
    /// Input done, backlog empty.
    Finished,
    /// Start the next session at once (the tracks changed).
    NewHeader,
    /// Reconnect after a backoff.
    Retry(String),
    /// Stop the producer.
    Fatal(Error),
}

/// Runs sessions until the producer is finished or a fatal error.
pub(crate) async fn run(
    shared: Arc<Shared>,
    control: VideoControl,
    config: ProducerConfig,
    mut stream_ready: bool,
) {
    let mut backoff = Backoff::new(config.max_backoff);
    let mut endpoint = None;
    let mut last_progress = Instant::now();
    let mut persisted_seen = 0;
    loop {
        // Wait for something to send.
        loop {
            let changed = shared.changed.notified();
            {
                let st = shared.lock();
                if st.backlog.is_empty() && st.input_done {
                    drop(st);
                    shared.progress.notify_waiters();
                    return;
                }
                if st.backlog.entries().next().is_some() {
                    break;
                }
            }
            last_progress = Instant::now();
            changed.await;
        }
        let mut not_ready = None;
        if !stream_ready {
            match control
                .ensure_stream(&config.stream, config.create.as_ref())
                .await
            {
                Ok(_) => stream_ready = true,
                Err(e) if e.is_retriable() => not_ready = Some(e.to_string()),
                Err(e) => {
                    fail(&shared, &e.to_string());
                    return;
                }
            }
        }
        let end = match &endpoint {
            _ if !stream_ready => SessionEnd::Retry(not_ready.take().unwrap_or_default()),
            Some(e) => session(&shared, &control, e, &config).await,
            None => match control
                .data_endpoint(&config.stream, MediaApi::PutMedia)
                .await
            {
                Ok(e) => {
                    endpoint = Some(e.clone());
                    session(&shared, &control, &e, &config).await
                }
                Err(e) if e.is_retriable() => SessionEnd::Retry(e.to_string()),
                Err(e) => SessionEnd::Fatal(e),
            },
        };
        {
            let mut st = shared.lock();
            st.stats.connected = false;
            if st.stats.fragments_persisted != persisted_seen {
                persisted_seen = st.stats.fragments_persisted;
                last_progress = Instant::now();
                backoff.reset();
            }
        }
        match end {
            SessionEnd::Finished => {
                shared.progress.notify_waiters();
                return;
            }
            SessionEnd::NewHeader => {}
            SessionEnd::Fatal(e) => {
                fail(&shared, &e.to_string());
                return;
            }
            SessionEnd::Retry(reason) => {
                if let Some(limit) = config.give_up_after
                    && last_progress.elapsed() > limit
                {
                    fail(
                        &shared,
                        &format!(
                            "nothing persisted for {limit:?}; giving up. Last error: {reason}"
                        ),
                    );
                    return;
                }
                // The data endpoint may have moved (a restarted server on another port).
                endpoint = None;
                let (fragments, bytes) = {
                    let st = shared.lock();
                    (st.backlog.len(), st.backlog.total_bytes())
                };
                shared.emit(&[
                    Event::Error {
                        message: reason,
                        will_retry: true,
                    },
                    Event::Buffering { fragments, bytes },
                ]);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

fn fail(shared: &Shared, message: &str) {
    shared.lock().fatal = Some(message.to_owned());
    shared.emit(&[Event::Error {
        message: message.to_owned(),
        will_retry: false,
    }]);
    shared.progress.notify_waiters();
}

/// How long to wait for the response head of PutMedia.
const RESPONSE_HEAD_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for the last acks once the body has ended.
const FINAL_ACKS_TIMEOUT: Duration = Duration::from_secs(30);

/// What the ack reader tells the sender.
#[derive(Debug, Clone, Default)]
enum AckState {
    #[default]
    Running,
    /// The response ended or failed, or an ERROR ack asks for a new connection.
    Ended(String),
    /// The stream cannot take data.
    Fatal(String),
}

async fn session(
    shared: &Arc<Shared>,
    control: &VideoControl,
    endpoint: &crate::client::Endpoint,
    config: &ProducerConfig,
) -> SessionEnd {
    let stream = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(&endpoint.authority),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return SessionEnd::Retry(format!("connecting to {}: {e}", endpoint.authority));
        }
        Err(_) => {
            return SessionEnd::Retry(format!("connecting to {}: timed out", endpoint.authority));
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => return SessionEnd::Retry(format!("PutMedia handshake: {}", error_chain(&e))),
    };
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let _conn_guard = AbortOnDrop(conn);

    let (body_tx, body) = Channel::<Bytes, Infallible>::new(4);
    let start_ts = now_ms();
    let mut request = match http::Request::post(format!("{}/putMedia", endpoint.url))
        .header(HOST, endpoint.authority.as_str())
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header("x-amzn-stream-name", config.stream.as_str())
        .header("x-amzn-fragment-timecode-type", "ABSOLUTE")
        .header(
            "x-amzn-producer-start-timestamp",
            format!("{}.{:03}", start_ts / 1000, start_ts % 1000),
        )
        .header("x-amzn-fragment-acknowledgment-required", "1")
        .header(TRANSFER_ENCODING, "chunked")
        .body(body)
    {
        Ok(r) => r,
        Err(e) => return SessionEnd::Fatal(Error::Config(format!("PutMedia request: {e}"))),
    };
    if let Err(e) = control
        .client()
        .signer()
        .sign(&mut request, "kinesisvideo", EMPTY_SHA256)
    {
        return SessionEnd::Fatal(e);
    }
    request.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );

    // The server answers before reading the body, so the head arrives even while nothing is
    // sent; a first chunk is not needed.
    let response =
        match tokio::time::timeout(RESPONSE_HEAD_TIMEOUT, sender.send_request(request)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return SessionEnd::Retry(format!("PutMedia: {}", error_chain(&e))),
            Err(_) => {
                return SessionEnd::Retry(format!(
                    "PutMedia: no response within {RESPONSE_HEAD_TIMEOUT:?}"
                ));
            }
        };
    if !response.status().is_success() {
        let status = response.status().as_u16();
        let code = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or(v).to_owned());
        let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let err = service_error("PutMedia", status, code, &body);
        return if err.is_retriable() {
            SessionEnd::Retry(err.to_string())
        } else {
            SessionEnd::Fatal(err)
        };
    }

    let resending = {
        let mut st = shared.lock();
        st.stats.connections += 1;
        st.stats.connected = true;
        st.backlog.entries().filter(|e| e.complete).count()
    };
    shared.emit(&[Event::Connected {
        endpoint: endpoint.url.clone(),
        resending,
    }]);

    let (ack_tx, mut ack_rx) = watch::channel(AckState::Running);
    let reader = tokio::spawn(read_acks(shared.clone(), response.into_body(), ack_tx));
    let _reader_guard = AbortOnDrop(reader);

    send_backlog(shared, body_tx, &mut ack_rx, config.ack_timeout).await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The next thing to send.
enum Next {
    /// The MKV header, first in every session.
    Header(Bytes),
    Chunks {
        seq: u64,
        chunks: Vec<Bytes>,
        next_chunk: usize,
        complete: bool,
    },
    /// A fragment that lives only in its file.
    FromDisk(u64),
    /// The next fragment has other tracks than this session's.
    HeaderChange,
    /// Nothing to send now; input continues.
    Wait,
    /// Input done, all sent.
    Done,
}

async fn send_backlog(
    shared: &Arc<Shared>,
    body_tx: Sender<Bytes, Infallible>,
    ack_rx: &mut watch::Receiver<AckState>,
    ack_timeout: Duration,
) -> SessionEnd {
    let mut body_tx = Some(body_tx);
    let mut header_id: Option<u64> = None;
    // Where the sender is: fragment seq and chunk index.
    let mut cursor_seq = 0u64;
    let mut cursor_chunk = 0usize;
    // Bytes of the cursor's fragment already sent: a fragment whose chunks left memory for its
    // file while it was half sent goes on from there.
    let mut cursor_bytes = 0usize;
    // Fragments sent in full and not yet acked, with when they were sent.
    let mut awaiting: VecDeque<(u64, Instant)> = VecDeque::new();
    loop {
        if let Some(end) = ack_end(ack_rx) {
            return end;
        }
        // Ack timeout: the oldest fragment sent in full still waiting.
        {
            let st = shared.lock();
            while let Some((seq, _)) = awaiting.front() {
                if st.backlog.get(*seq).is_some() {
                    break;
                }
                awaiting.pop_front();
            }
            if let Some((seq, at)) = awaiting.front()
                && at.elapsed() > ack_timeout
            {
                let tc = st.backlog.get(*seq).map_or(0, |e| e.timecode_ms);
                return SessionEnd::Retry(format!(
                    "no PERSISTED ack for the fragment at {tc} within {ack_timeout:?}"
                ));
            }
        }
        let changed = shared.changed.notified();
        let next = {
            let st = shared.lock();
            match st.backlog.first_at_or_after(cursor_seq) {
                None if st.input_done => Next::Done,
                None => Next::Wait,
                Some(e) if header_id.is_some_and(|h| h != e.header.id) => Next::HeaderChange,
                Some(e) => {
                    if e.seq != cursor_seq {
                        cursor_seq = e.seq;
                        cursor_chunk = 0;
                        cursor_bytes = 0;
                    }
                    if header_id.is_none() {
                        header_id = Some(e.header.id);
                        // The document header goes first.
                        Next::Header(e.header.bytes.clone())
                    } else if !e.resident {
                        Next::FromDisk(e.seq)
                    } else if cursor_chunk < e.chunks.len() || e.complete {
                        Next::Chunks {
                            seq: e.seq,
                            chunks: e.chunks[cursor_chunk.min(e.chunks.len())..].to_vec(),
                            next_chunk: e.chunks.len(),
                            complete: e.complete,
                        }
                    } else {
                        Next::Wait
                    }
                }
            }
        };
        match next {
            Next::Header(bytes) => {
                if !send(&mut body_tx, bytes).await {
                    return broken(ack_rx).await;
                }
            }
            Next::Chunks {
                seq,
                chunks,
                next_chunk,
                complete,
            } => {
                let bytes: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                for c in chunks {
                    if !send(&mut body_tx, c).await {
                        return broken(ack_rx).await;
                    }
                }
                let mut st = shared.lock();
                st.stats.bytes_sent += bytes;
                if complete {
                    st.stats.fragments_sent += 1;
                    awaiting.push_back((seq, Instant::now()));
                    cursor_seq = seq + 1;
                    cursor_chunk = 0;
                    cursor_bytes = 0;
                } else {
                    cursor_chunk = next_chunk;
                    cursor_bytes += bytes as usize;
                }
            }
            Next::FromDisk(seq) => {
                let disk = shared.lock().disk_buffer.clone();
                let Some(disk) = disk else {
                    return SessionEnd::Fatal(Error::Closed(
                        "a buffered fragment has no buffer directory".to_owned(),
                    ));
                };
                let read = tokio::task::spawn_blocking(move || disk.read(seq)).await;
                match read {
                    Ok(Ok(data)) => {
                        let data = data.slice(cursor_bytes.min(data.len())..);
                        let len = data.len() as u64;
                        if !send(&mut body_tx, data).await {
                            return broken(ack_rx).await;
                        }
                        let mut st = shared.lock();
                        st.stats.bytes_sent += len;
                        st.stats.fragments_sent += 1;
                        awaiting.push_back((seq, Instant::now()));
                        cursor_seq = seq + 1;
                        cursor_chunk = 0;
                        cursor_bytes = 0;
                    }
                    Ok(Err(e)) => {
                        // The file went bad under us: this fragment cannot be sent.
                        let mut st = shared.lock();
                        let removed = st.forget(seq);
                        st.stats.fragments_dropped += 1;
                        drop(st);
                        let dropped = removed.map_or(Dropped::default(), |e| Dropped {
                            fragments: 1,
                            bytes: e.len_bytes,
                            first_timecode_ms: e.timecode_ms,
                            last_timecode_ms: e.timecode_ms,
                        });
                        shared.emit(&[Event::Dropping {
                            dropped,
                            reason: e.to_string(),
                        }]);
                        if cursor_bytes > 0 {
                            // Part of it is already on the wire: end this upload so the server
                            // drops the partial fragment.
                            return SessionEnd::Retry(
                                "a half-sent fragment was unreadable".to_owned(),
                            );
                        }
                        cursor_seq = seq + 1;
                        cursor_chunk = 0;
                    }
                    Err(e) => return SessionEnd::Retry(format!("reading the buffer: {e}")),
                }
            }
            Next::HeaderChange | Next::Done => {
                // End the body and wait for the acks of what was sent.
                drop(body_tx.take());
                let deadline = Instant::now() + FINAL_ACKS_TIMEOUT;
                loop {
                    let changed = shared.changed.notified();
                    let all_acked = {
                        let st = shared.lock();
                        awaiting
                            .iter()
                            .all(|(seq, _)| st.backlog.get(*seq).is_none())
                    };
                    if all_acked {
                        let st = shared.lock();
                        return if matches!(next, Next::Done)
                            && st.backlog.is_empty()
                            && st.input_done
                        {
                            SessionEnd::Finished
                        } else {
                            SessionEnd::NewHeader
                        };
                    }
                    if let Some(end) = ack_end(ack_rx) {
                        return end;
                    }
                    tokio::select! {
                        () = changed => {}
                        _ = ack_rx.changed() => {}
                        () = tokio::time::sleep_until(deadline) => {
                            return SessionEnd::Retry(format!(
                                "acks missing {FINAL_ACKS_TIMEOUT:?} after the upload ended"
                            ));
                        }
                    }
                }
            }
            Next::Wait => {
                tokio::select! {
                    () = changed => {}
                    _ = ack_rx.changed() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn send(body_tx: &mut Option<Sender<Bytes, Infallible>>, chunk: Bytes) -> bool {
    match body_tx.as_mut() {
        Some(tx) => tx.send_data(chunk).await.is_ok(),
        None => false,
    }
}

fn ack_end(ack_rx: &watch::Receiver<AckState>) -> Option<SessionEnd> {
    match &*ack_rx.borrow() {
        AckState::Running => None,
        AckState::Ended(reason) => Some(SessionEnd::Retry(reason.clone())),
        AckState::Fatal(reason) => Some(SessionEnd::Fatal(Error::Closed(reason.clone()))),
    }
}

/// The body could not take more: the connection is gone. Prefer the ack reader's reason.
async fn broken(ack_rx: &mut watch::Receiver<AckState>) -> SessionEnd {
    let _ = tokio::time::timeout(Duration::from_millis(200), ack_rx.changed()).await;
    ack_end(ack_rx).unwrap_or_else(|| SessionEnd::Retry("the PutMedia connection broke".to_owned()))
}

/// Reads ack lines and applies them to the backlog.
async fn read_acks(
    shared: Arc<Shared>,
    mut body: hyper::body::Incoming,
    state: watch::Sender<AckState>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let end = loop {
        match body.frame().await {
            None => break AckState::Ended("the PutMedia response ended".to_owned()),
            Some(Err(e)) => {
                break AckState::Ended(format!("reading PutMedia acks: {}", error_chain(&e)));
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                pending.extend_from_slice(&data);
                let mut stop = None;
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&line[..nl]);
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    if let Some(s) = apply_ack(&shared, line) {
                        stop = Some(s);
                        break;
                    }
                }
                if let Some(s) = stop {
                    break s;
                }
            }
        }
    };
    let _ = state.send(end);
    shared.changed.notify_one();
}

/// Applies one ack line; returns how the session must end, if it must.
fn apply_ack(shared: &Shared, line: &str) -> Option<AckState> {
    let ack = match Ack::parse(line) {
        Ok(a) => a,
        Err(e) => return Some(AckState::Ended(e.to_string())),
    };
    let mut events = Vec::new();
    let mut end = None;
    {
        let mut st = shared.lock();
        match ack.event.as_str() {
            "PERSISTED" => {
                if let Some(tc) = ack.timecode
                    && let Some(seq) = st.backlog.find_by_timecode(tc)
                    && st.backlog.get(seq).is_some_and(|e| e.complete)
                {
                    st.forget(seq);
                    st.stats.fragments_persisted += 1;
                    events.push(Event::Persisted {
                        timecode_ms: tc,
                        fragment_number: ack.fragment_number.clone().unwrap_or_default(),
                    });
                }
            }
            "ERROR" => {
                let id = ack.error_id.unwrap_or(0);
                let (meaning, action) = classify(id);
                let tc = ack.timecode;
                let message = format!(
                    "PutMedia ERROR {id} ({meaning}) for the fragment at {}",
                    tc.map_or_else(|| "?".to_owned(), |t| t.to_string())
                );
                match action {
                    ErrorAction::Reconnect => end = Some(AckState::Ended(message)),
                    ErrorAction::Fatal => end = Some(AckState::Fatal(message)),
                    ErrorAction::DropFragment => {
                        if let Some(tc) = tc
                            && let Some(seq) = st.backlog.find_by_timecode(tc)
                            && let Some(e) = st.forget(seq)
                        {
                            st.stats.fragments_dropped += 1;
                            events.push(Event::Dropping {
                                dropped: Dropped {
                                    fragments: 1,
                                    bytes: e.len_bytes,
                                    first_timecode_ms: tc,
                                    last_timecode_ms: tc,
                                },
                                reason: message.clone(),
                            });
                        }
                        events.push(Event::Error {
                            message: message.clone(),
                            will_retry: true,
                        });
                        end = Some(AckState::Ended(message));
                    }
                }
            }
            _ => {}
        }
    }
    shared.emit(&events);
    shared.changed.notify_one();
    shared.progress.notify_waiters();
    end
}
