//! PutMedia: `POST /putMedia`, one long chunked upload of MKV, answered at once with `200` and
//! a body of acks that streams back while the upload goes on (full duplex).
//!
//! The headers name the stream (`x-amzn-stream-name` or `x-amzn-stream-arn`) and how to read
//! timecodes (`x-amzn-fragment-timecode-type`, `x-amzn-producer-start-timestamp`); problems with
//! them are ordinary HTTP errors. Everything after that is reported in acks: see
//! [`crate::video::ingest`].

use bytes::Bytes;
use http::{HeaderMap, Request, header};
use http_body_util::channel::{Channel, Sender};

use super::get_media::streaming_response;
use crate::api::{ApiError, HandlerResult, RequestContext};
use crate::http::{Body, BoxError};
use crate::state::AppState;
use crate::video::VideoStream;
use crate::video::ingest::{self, Ack, AckError, AckSink, Ingest, Target, TimecodeType, Timing};

/// Acks waiting for a slow client; past this, acks are dropped rather than stalling ingest.
const ACK_BUFFER: usize = 256;

pub(crate) async fn handle(
    state: &AppState,
    _ctx: &RequestContext,
    req: Request<Body>,
) -> HandlerResult {
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let name = text_header(headers, "x-amzn-stream-name")?;
    let arn = text_header(headers, "x-amzn-stream-arn")?;
    if name.is_none() && arn.is_none() {
        return Err(ApiError::invalid_argument(
            "PutMedia needs the x-amzn-stream-name or the x-amzn-stream-arn header.",
        ));
    }
    let stream = VideoStream::find(state, name, arn)?;
    let now_ms = state.now_ms();
    let timing = timing(headers, now_ms)?;
    let limits = state.ingest_limits().clone();

    let (tx, channel) = Channel::<Bytes, BoxError>::new(ACK_BUFFER);
    let mut sink = ChannelAcks {
        tx,
        dropped: 0,
        quiet: !wants_acks(headers),
        stream: stream.name.clone(),
    };
    if !stream.is_usable() {
        sink.send(Ack {
            event: ingest::AckEvent::Error,
            timecode: None,
            fragment_number: None,
            error: Some(AckError::StreamNotActive),
        });
        return Ok(streaming_response(channel, "application/json"));
    }
    let target = Target {
        stream_id: stream.id(),
        shard: stream.shard_uid,
        live_only: stream.retention_ms() == 0,
    };
    let slot = state.uploads().claim(target.stream_id);
    let ingest = Ingest::new(state.store().clone(), target, timing, limits);
    let mut shutdown = state.shutdown_signal();
    let stream_name = stream.name.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
        };
        ingest::run(ingest, body, &mut sink, &slot, shutdown).await;
        if sink.dropped > 0 {
            tracing::info!(stream = %stream_name, dropped = sink.dropped, "PutMedia client did not read its acks; some were dropped");
        }
    });
    Ok(streaming_response(channel, "application/json"))
}

/// Whether the client reads acks. Not when it says so
/// (`x-amzn-fragment-acknowledgment-required: 0`), and not ffmpeg (`User-Agent: Lavf/...`):
/// it never reads the response until it closes, and then reads at most 1 KiB of it. Acks piled
/// up unread make that close a TCP reset, and a reset loses the end of the upload still in the
/// server's receive buffer: the last fragment. So ffmpeg gets no acks (ERROR acks are logged
/// instead), and its uploads end cleanly.
fn wants_acks(headers: &HeaderMap) -> bool {
    let required = headers
        .get("x-amzn-fragment-acknowledgment-required")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let ffmpeg = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("Lavf/"));
    required != Some("0") && !ffmpeg
}

/// Acks into the response body, never waiting for the client.
struct ChannelAcks {
    tx: Sender<Bytes, BoxError>,
    dropped: u64,
    /// The client does not read acks: send none ([`wants_acks`]).
    quiet: bool,
    stream: String,
}

impl AckSink for ChannelAcks {
    fn send(&mut self, ack: Ack) {
        if self.quiet {
            if let Some(e) = ack.error {
                tracing::warn!(stream = %self.stream, error_id = e.id(), error = e.code(), timecode = ?ack.timecode, "PutMedia error (the client takes no acks)");
            }
            return;
        }
        if self
            .tx
            .try_send(hyper::body::Frame::data(ack.to_line()))
            .is_err()
        {
            self.dropped += 1;
        }
    }
}

fn text_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
            ApiError::invalid_argument(format!("The {name} header is not valid text."))
        }),
    }
}

/// Reads the timecode headers. Without `x-amzn-fragment-timecode-type` (ffmpeg sends none),
/// timecodes count from the request's arrival, like RELATIVE without a start timestamp.
fn timing(headers: &HeaderMap, now_ms: i64) -> Result<Timing, ApiError> {
    let timecode_type = match text_header(headers, "x-amzn-fragment-timecode-type")? {
        None => TimecodeType::Relative,
        Some(t) if t.eq_ignore_ascii_case("ABSOLUTE") => TimecodeType::Absolute,
        Some(t) if t.eq_ignore_ascii_case("RELATIVE") => TimecodeType::Relative,
        Some(other) => {
            return Err(ApiError::invalid_argument(format!(
                "x-amzn-fragment-timecode-type must be ABSOLUTE or RELATIVE, not {other:?}."
            )));
        }
    };
    let start_ms = match text_header(headers, "x-amzn-producer-start-timestamp")? {
        None => now_ms,
        Some(s) => parse_epoch_seconds(s).ok_or_else(|| {
            ApiError::invalid_argument(format!(
                "x-amzn-producer-start-timestamp must be epoch seconds such as 1732012345.678, not {s:?}."
            ))
        })?,
    };
    Ok(Timing {
        timecode_type,
        start_ms,
    })
}

/// `"1732012345.678"` (decimal epoch seconds) to epoch ms, exactly (no float rounding).
fn parse_epoch_seconds(s: &str) -> Option<i64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let mut ms_digits: String = frac.chars().take(3).collect();
    while ms_digits.len() < 3 {
        ms_digits.push('0');
    }
    let ms: i64 = ms_digits.parse().ok()?;
    secs.checked_mul(1000)?.checked_add(ms)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn producer_start_timestamps_are_decimal_seconds() {
        assert_eq!(
            parse_epoch_seconds("1732012345.678"),
            Some(1_732_012_345_678)
        );
        assert_eq!(parse_epoch_seconds("1732012345.5"), Some(1_732_012_345_500));
        assert_eq!(parse_epoch_seconds("1732012345"), Some(1_732_012_345_000));
        assert_eq!(
            parse_epoch_seconds("1732012345.6789"),
            Some(1_732_012_345_678)
        );
        assert_eq!(parse_epoch_seconds("-5"), None);
        assert_eq!(parse_epoch_seconds("abc"), None);
        assert_eq!(parse_epoch_seconds(".5"), None);
    }

    #[test]
    fn ffmpeg_and_clients_that_decline_get_no_acks() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            wants_acks(&h)
        };
        assert!(with(&[]));
        assert!(with(&[("x-amzn-fragment-acknowledgment-required", "1")]));
        assert!(with(&[(
            "user-agent",
            "AWS-SDK-KVS/3.4.1 GCC/9.4.0 Linux/5.15"
        )]));
        assert!(!with(&[("x-amzn-fragment-acknowledgment-required", "0")]));
        assert!(!with(&[("user-agent", "Lavf/59.27.100")]));
    }

    #[test]
    fn timecode_type_defaults_to_relative_from_arrival() {
        let t = timing(&HeaderMap::new(), 42).expect("valid");
        assert_eq!(t.timecode_type, TimecodeType::Relative);
        assert_eq!(t.start_ms, 42);
        let mut h = HeaderMap::new();
        h.insert(
            "x-amzn-fragment-timecode-type",
            HeaderValue::from_static("bogus"),
        );
        assert!(timing(&h, 0).is_err());
    }
}
