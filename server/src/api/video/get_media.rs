//! GetMedia (`POST /getMedia`): a stream's fragments as MKV, from a start selector on, then
//! live, as one long response ([`crate::video::media`]).
//!
//! Start selectors (`shared/reference/aws-protocol.md` B):
//! - `NOW`: the fragment being ingested, from its first frame, or else the next one;
//! - `EARLIEST`: the oldest stored fragment;
//! - `FRAGMENT_NUMBER`: the fragment after `AfterFragmentNumber`;
//! - `SERVER_TIMESTAMP` / `PRODUCER_TIMESTAMP`: the fragment containing `StartTimestamp`, or the
//!   first one after it;
//! - `CONTINUATION_TOKEN`: the fragment after the one whose tags carried the token.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use http_body_util::channel::{Channel, Sender};
use serde::Deserialize;
use timeshard_storage::{SequenceNumber, ShardUid, Store, TimeKind};

use super::common::{Call, decode, missing};
use crate::api::data_streams::wire::Timestamp;
use crate::api::{ApiError, HandlerResult};
use crate::http::{Body, BoxError};
use crate::video::media::{Ended, Gone, MediaReader, MediaSink, Start, TagStyle};

/// How far back a fragment may start and still contain a requested time. Fragments are at most
/// this long under the self-hosted limits' 32.7 s block-timecode reach at 1 ms, with margin.
const LOOK_BACK_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "StartSelector")]
    start_selector: Option<StartSelector>,
}

#[derive(Debug, Deserialize)]
struct StartSelector {
    #[serde(rename = "StartSelectorType")]
    kind: Option<String>,
    #[serde(rename = "AfterFragmentNumber")]
    after_fragment_number: Option<String>,
    #[serde(rename = "StartTimestamp")]
    start_timestamp: Option<Timestamp>,
    #[serde(rename = "ContinuationToken")]
    continuation_token: Option<String>,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = decode(body)?;
    let selector = req.start_selector.ok_or_else(|| missing("StartSelector"))?;
    let kind = selector
        .kind
        .as_deref()
        .ok_or_else(|| missing("StartSelector.StartSelectorType"))?;
    let stream = call.stream(req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let store = call.state.store().clone();
    let shard = stream.shard_uid;
    let start = match kind {
        "NOW" => Start::Now,
        "EARLIEST" => Start::At(0),
        "FRAGMENT_NUMBER" => {
            let n = selector
                .after_fragment_number
                .as_deref()
                .ok_or_else(|| missing("StartSelector.AfterFragmentNumber"))?;
            Start::At(after(shard, n, "AfterFragmentNumber")?)
        }
        "CONTINUATION_TOKEN" => {
            let token = selector
                .continuation_token
                .as_deref()
                .ok_or_else(|| missing("StartSelector.ContinuationToken"))?;
            Start::At(after(shard, token, "ContinuationToken")?)
        }
        "SERVER_TIMESTAMP" | "PRODUCER_TIMESTAMP" => {
            let at = selector
                .start_timestamp
                .ok_or_else(|| missing("StartSelector.StartTimestamp"))?
                .millis();
            let time = if kind == "SERVER_TIMESTAMP" {
                TimeKind::Server
            } else {
                TimeKind::Producer
            };
            Start::At(containing(&store, shard, time, at).await?)
        }
        other => {
            return Err(ApiError::invalid_argument(format!(
                "1 validation error detected: Value '{other}' at 'startSelector.startSelectorType' failed to satisfy constraint: Member must satisfy enum value set: [FRAGMENT_NUMBER, SERVER_TIMESTAMP, PRODUCER_TIMESTAMP, NOW, EARLIEST, CONTINUATION_TOKEN]"
            )));
        }
    };
    let mut reader = MediaReader::new(store, stream.id(), shard, TagStyle::GetMedia);
    let (tx, channel) = Channel::<Bytes, BoxError>::new(8);
    let mut shutdown = call.state.shutdown_signal();
    tokio::spawn(async move {
        let mut sink = ChannelSink(tx);
        tokio::select! {
            ended = reader.stream(start, &mut sink) => {
                if let Err(Ended::Failed(why)) = ended {
                    tracing::warn!(error = %why, "GetMedia ended with an error");
                }
            }
            _ = shutdown.wait_for(|stopping| *stopping) => {}
        }
    });
    Ok(streaming_response(channel, MEDIA_CONTENT_TYPE))
}

/// A `200` of `content_type` whose body is whatever is sent into `channel` (MKV documents here,
/// PutMedia's acks), streamed as it comes.
pub(crate) fn streaming_response(
    channel: Channel<Bytes, BoxError>,
    content_type: &'static str,
) -> Response<Body> {
    let mut response = Response::new(channel.boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The content type of GetMedia and GetMediaForFragmentList bodies.
pub(crate) const MEDIA_CONTENT_TYPE: &str = "video/webm";

/// Media into a response body; waits while the client catches up (a slow reader slows only
/// itself).
pub(crate) struct ChannelSink(pub Sender<Bytes, BoxError>);

impl MediaSink for ChannelSink {
    async fn send(&mut self, chunk: Bytes) -> Result<(), Gone> {
        self.0.send_data(chunk).await.map_err(|_| Gone)
    }
}

/// A fragment number of this stream, as the offset after it.
fn after(shard: ShardUid, number: &str, field: &str) -> Result<u64, ApiError> {
    let n = fragment_number(shard, number, field)?;
    Ok(n.after_offset())
}

/// Parses a fragment number that must belong to this stream.
pub(crate) fn fragment_number(
    shard: ShardUid,
    number: &str,
    field: &str,
) -> Result<SequenceNumber, ApiError> {
    let parsed: SequenceNumber = number.parse().map_err(|_| {
        ApiError::invalid_argument(format!(
            "{field} {number:?} is not a fragment number of this server."
        ))
    })?;
    if parsed.shard != shard {
        return Err(ApiError::invalid_argument(format!(
            "{field} {number} is not a fragment of this stream."
        )));
    }
    Ok(parsed)
}

/// The offset of the fragment containing `at_ms` (the last one starting at or before it, if it
/// has not ended before it), or else of the first starting after it.
async fn containing(
    store: &Store,
    shard: ShardUid,
    time: TimeKind,
    at_ms: i64,
) -> Result<u64, ApiError> {
    let internal = |e: timeshard_storage::StoreError| ApiError::internal(e.to_string());
    let before = store
        .time_range(
            shard,
            time,
            at_ms.saturating_sub(LOOK_BACK_MS),
            at_ms,
            None,
            10_000,
        )
        .await
        .map_err(internal)?;
    if let Some(last) = before.last() {
        let ts = match time {
            TimeKind::Server => last.server_ts_ms,
            TimeKind::Producer => last.producer_ts_ms,
        };
        let duration = crate::video::fragment::FragmentKey::decode(&last.key)
            .map_or(0, |k| k.duration_ms as i64);
        if ts == at_ms || ts + duration > at_ms {
            return Ok(last.offset);
        }
    }
    let later = store
        .time_range(shard, time, at_ms.saturating_add(1), i64::MAX, None, 1)
        .await
        .map_err(internal)?;
    match later.first() {
        Some(r) => Ok(r.offset),
        // Nothing stored from then on yet: start with what comes next.
        None => Ok(store.tail(shard).map_err(internal)?.next_offset),
    }
}
