//! Archived media: ListFragments (`POST /listFragments`) and GetMediaForFragmentList
//! (`POST /getMediaForFragmentList`).
//!
//! ListFragments answers from the time index alone: a fragment's record key holds its duration
//! and size ([`crate::video::fragment::FragmentKey`]), so no fragment is read. Fragments come in
//! the order of the selected timestamp (then fragment number); `NextToken` resumes after the
//! last one returned.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::channel::Channel;
use serde::Deserialize;
use timeshard_storage::{IndexedRecord, SequenceNumber, TimeKind};

use super::common::{Call, decode, missing};
use super::get_media::{ChannelSink, MEDIA_CONTENT_TYPE, fragment_number, streaming_response};
use crate::api::data_streams::wire::{Timestamp, push_json_timestamp};
use crate::api::{ApiError, HandlerResult};
use crate::http::BoxError;
use crate::video::fragment::{FragmentKey, fragment_number as number_of};
use crate::video::media::{Ended, MediaReader, TagStyle};

const DEFAULT_MAX_RESULTS: usize = 100;
const MAX_RESULTS: i64 = 1000;
const MAX_FRAGMENT_LIST: usize = 1000;

#[derive(Debug, Deserialize)]
struct ListRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "MaxResults")]
    max_results: Option<i64>,
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
    #[serde(rename = "FragmentSelector")]
    fragment_selector: Option<FragmentSelector>,
}

#[derive(Debug, Deserialize)]
struct FragmentSelector {
    #[serde(rename = "FragmentSelectorType")]
    kind: Option<String>,
    #[serde(rename = "TimestampRange")]
    range: Option<TimestampRange>,
}

#[derive(Debug, Deserialize)]
struct TimestampRange {
    #[serde(rename = "StartTimestamp")]
    start: Option<Timestamp>,
    #[serde(rename = "EndTimestamp")]
    end: Option<Timestamp>,
}

/// The `Fragment` shape as the model has it; the answer is written by [`push_fragment`], and
/// this type checks it.
#[cfg(test)]
#[derive(Debug, serde::Serialize)]
struct Fragment {
    #[serde(rename = "FragmentNumber")]
    fragment_number: String,
    #[serde(rename = "FragmentSizeInBytes")]
    fragment_size_in_bytes: u64,
    #[serde(rename = "ProducerTimestamp")]
    producer_timestamp: Timestamp,
    #[serde(rename = "ServerTimestamp")]
    server_timestamp: Timestamp,
    #[serde(rename = "FragmentLengthInMilliseconds")]
    fragment_length_in_milliseconds: u64,
}

/// Where a listing stands: the selector and the last fragment returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    producer_time: bool,
    start_ms: i64,
    end_ms: i64,
    after: Option<(i64, u64)>,
}

const PAGE_VERSION: u8 = 1;

impl Page {
    fn encode(&self) -> String {
        let mut b = Vec::with_capacity(34);
        b.push(PAGE_VERSION);
        b.push(u8::from(self.producer_time));
        b.extend_from_slice(&self.start_ms.to_le_bytes());
        b.extend_from_slice(&self.end_ms.to_le_bytes());
        let (ts, offset) = self.after.unwrap_or((i64::MIN, u64::MAX));
        b.extend_from_slice(&ts.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        STANDARD.encode(b)
    }

    fn decode(token: &str) -> Option<Page> {
        let b = STANDARD.decode(token).ok()?;
        if b.len() != 34 || b[0] != PAGE_VERSION || b[1] > 1 {
            return None;
        }
        let i64_at = |i: usize| i64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let after_ts = i64_at(18);
        let after_offset = u64::from_le_bytes(b[26..34].try_into().unwrap_or([0; 8]));
        Some(Page {
            producer_time: b[1] == 1,
            start_ms: i64_at(2),
            end_ms: i64_at(10),
            after: (after_offset != u64::MAX).then_some((after_ts, after_offset)),
        })
    }
}

pub(crate) async fn list_fragments(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: ListRequest = decode(body)?;
    let limit = match req.max_results {
        None => DEFAULT_MAX_RESULTS,
        Some(n) if (1..=MAX_RESULTS).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid_argument(format!(
                "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and {MAX_RESULTS}"
            )));
        }
    };
    let page = match (&req.next_token, &req.fragment_selector) {
        (Some(token), _) => Page::decode(token)
            .ok_or_else(|| ApiError::invalid_argument("The NextToken is not valid."))?,
        (None, Some(selector)) => {
            let kind = selector
                .kind
                .as_deref()
                .ok_or_else(|| missing("FragmentSelector.FragmentSelectorType"))?;
            let producer_time = match kind {
                "PRODUCER_TIMESTAMP" => true,
                "SERVER_TIMESTAMP" => false,
                other => {
                    return Err(ApiError::invalid_argument(format!(
                        "1 validation error detected: Value '{other}' at 'fragmentSelector.fragmentSelectorType' failed to satisfy constraint: Member must satisfy enum value set: [PRODUCER_TIMESTAMP, SERVER_TIMESTAMP]"
                    )));
                }
            };
            let range = selector
                .range
                .as_ref()
                .ok_or_else(|| missing("FragmentSelector.TimestampRange"))?;
            let start_ms = range
                .start
                .ok_or_else(|| missing("FragmentSelector.TimestampRange.StartTimestamp"))?
                .millis();
            let end_ms = range
                .end
                .ok_or_else(|| missing("FragmentSelector.TimestampRange.EndTimestamp"))?
                .millis();
            if end_ms < start_ms {
                return Err(ApiError::invalid_argument(
                    "The EndTimestamp must not be before the StartTimestamp.",
                ));
            }
            Page {
                producer_time,
                start_ms,
                end_ms,
                after: None,
            }
        }
        (None, None) => return Err(missing("FragmentSelector")),
    };
    let stream = call.stream(req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let shard = stream.shard_uid;
    let kind = if page.producer_time {
        TimeKind::Producer
    } else {
        TimeKind::Server
    };
    // One more than asked, to know whether a next page exists.
    let mut found: Vec<IndexedRecord> = call
        .state
        .store()
        .time_range(
            shard,
            kind,
            page.start_ms,
            page.end_ms,
            page.after,
            limit + 1,
        )
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let more = found.len() > limit;
    found.truncate(limit);
    let next_token = match (more, found.last()) {
        (true, Some(last)) => Some(
            Page {
                after: Some((
                    if page.producer_time {
                        last.producer_ts_ms
                    } else {
                        last.server_ts_ms
                    },
                    last.offset,
                )),
                ..page
            }
            .encode(),
        ),
        _ => None,
    };
    let mut out = Vec::with_capacity(64 + found.len() * 200);
    out.extend_from_slice(b"{\"Fragments\":[");
    let mut first = true;
    for r in &found {
        let Ok(key) = FragmentKey::decode(&r.key) else {
            continue;
        };
        if !first {
            out.push(b',');
        }
        first = false;
        push_fragment(&mut out, number_of(shard, r.offset, &key), r, &key);
    }
    out.push(b']');
    if let Some(token) = &next_token {
        // Base64: nothing to escape.
        out.extend_from_slice(b",\"NextToken\":\"");
        out.extend_from_slice(token.as_bytes());
        out.push(b'"');
    }
    out.push(b'}');
    let mut response = http::Response::new(crate::http::full_body(out));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(crate::api::error::Protocol::RestJson.content_type()),
    );
    Ok(response)
}

/// One `Fragment` of a ListFragments answer, written by hand (an hour is 3,600 of them, and
/// through `serde_json` most of the time went to formatting and escaping fragment numbers). The
/// same JSON as [`Fragment`]'s `Serialize` impl (tested below).
fn push_fragment(out: &mut Vec<u8>, number: SequenceNumber, r: &IndexedRecord, key: &FragmentKey) {
    out.extend_from_slice(b"{\"FragmentNumber\":\"");
    number.write_digits(out);
    out.extend_from_slice(b"\",\"FragmentSizeInBytes\":");
    out.extend_from_slice(key.media_bytes.to_string().as_bytes());
    out.extend_from_slice(b",\"ProducerTimestamp\":");
    push_json_timestamp(out, Timestamp(r.producer_ts_ms));
    out.extend_from_slice(b",\"ServerTimestamp\":");
    push_json_timestamp(out, Timestamp(r.server_ts_ms));
    out.extend_from_slice(b",\"FragmentLengthInMilliseconds\":");
    out.extend_from_slice(key.duration_ms.to_string().as_bytes());
    out.push(b'}');
}

#[derive(Debug, Deserialize)]
struct MediaListRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "Fragments")]
    fragments: Option<Vec<String>>,
}

pub(crate) async fn get_media_for_fragment_list(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: MediaListRequest = decode(body)?;
    let numbers = req.fragments.ok_or_else(|| missing("Fragments"))?;
    if numbers.is_empty() || numbers.len() > MAX_FRAGMENT_LIST {
        return Err(ApiError::invalid_argument(format!(
            "1 validation error detected: Value at 'fragments' failed to satisfy constraint: Member must have length between 1 and {MAX_FRAGMENT_LIST}; {} were given.",
            numbers.len()
        )));
    }
    let stream = call.stream(req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let shard = stream.shard_uid;
    let parsed: Vec<SequenceNumber> = numbers
        .iter()
        .map(|n| fragment_number(shard, n, "Fragments member"))
        .collect::<Result<_, _>>()?;
    let mut reader = MediaReader::new(
        call.state.store().clone(),
        stream.id(),
        shard,
        TagStyle::FragmentList,
    );
    let (tx, channel) = Channel::<Bytes, BoxError>::new(8);
    tokio::spawn(async move {
        let mut sink = ChannelSink(tx);
        if let Err(Ended::Failed(why)) = reader.fragments(&parsed, &mut sink).await {
            tracing::warn!(error = %why, "GetMediaForFragmentList ended with an error");
        }
    });
    Ok(streaming_response(channel, MEDIA_CONTENT_TYPE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_match_the_model_pattern() {
        for page in [
            Page {
                producer_time: true,
                start_ms: -5,
                end_ms: i64::MAX,
                after: None,
            },
            Page {
                producer_time: false,
                start_ms: 1_700_000_000_000,
                end_ms: 1_700_000_360_000,
                after: Some((1_700_000_001_000, 42)),
            },
        ] {
            let token = page.encode();
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
            );
            assert_eq!(Page::decode(&token), Some(page));
        }
        assert_eq!(Page::decode("bm9wZQ=="), None);
        assert_eq!(Page::decode("!!"), None);
    }

    #[test]
    fn hand_written_fragments_match_serde() {
        let shard = timeshard_storage::ShardUid(7);
        for (offset, server, producer, size, length, live) in [
            (
                0u64,
                1_795_332_242_302i64,
                1_795_332_242_320i64,
                16_590u64,
                1_003u64,
                0u64,
            ),
            (41, 1_700_000_000_000, -1_500, 0, 0, 0),
            (3, 5, 1_795_332_840_054, 1, 999, 1_795_332_840_054_000),
        ] {
            let key = FragmentKey {
                session: 1,
                cluster_timecode: 0,
                duration_ms: length,
                media_bytes: size,
                frames: 1,
                live_number: live,
            };
            let r = IndexedRecord {
                offset,
                server_ts_ms: server,
                producer_ts_ms: producer,
                payload_len: 0,
                flags: 0,
                key: key.encode(),
            };
            let number = number_of(shard, offset, &key);
            let mut fast = Vec::new();
            push_fragment(&mut fast, number, &r, &key);
            let slow = serde_json::to_vec(&Fragment {
                fragment_number: number.to_string(),
                fragment_size_in_bytes: size,
                producer_timestamp: Timestamp(producer),
                server_timestamp: Timestamp(server),
                fragment_length_in_milliseconds: length,
            })
            .expect("serializes");
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&slow)
            );
        }
    }
}
