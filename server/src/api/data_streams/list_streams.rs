//! ListStreams: names and summaries in name order, paged by ExclusiveStartStreamName or
//! NextToken.

use serde::{Deserialize, Serialize};
use timeshard_storage::StreamKind;

use super::common::{Call, StreamModeDetails, in_range, status, stream_mode};
use super::wire::{self, Timestamp};
use crate::api::{ApiError, ErrorKind, HandlerResult};
use crate::data::tokens::TokenError;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "Limit")]
    limit: Option<i64>,
    #[serde(rename = "ExclusiveStartStreamName")]
    exclusive_start_stream_name: Option<String>,
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
}

#[derive(Debug, Serialize)]
struct Summary {
    #[serde(rename = "StreamName")]
    stream_name: String,
    #[serde(rename = "StreamARN")]
    stream_arn: String,
    #[serde(rename = "StreamStatus")]
    stream_status: &'static str,
    #[serde(rename = "StreamModeDetails")]
    stream_mode_details: StreamModeDetails,
    #[serde(rename = "StreamCreationTimestamp")]
    stream_creation_timestamp: Timestamp,
}

#[derive(Debug, Serialize)]
struct Response {
    #[serde(rename = "StreamNames")]
    stream_names: Vec<String>,
    #[serde(rename = "HasMoreStreams")]
    has_more_streams: bool,
    #[serde(rename = "NextToken", skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
    #[serde(rename = "StreamSummaries")]
    stream_summaries: Vec<Summary>,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = wire::decode(call.enc, body)?;
    let limit = in_range("limit", req.limit, 1, 10_000)?.unwrap_or(100) as usize;
    let tokens = &call.state.kinesis().tokens;
    let after =
        match (&req.next_token, &req.exclusive_start_stream_name) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_argument(
                    "NextToken and ExclusiveStartStreamName cannot be combined.",
                ));
            }
            (Some(t), None) => Some(tokens.parse_stream_page(t, call.now_ms).map_err(
                |e| match e {
                    TokenError::Expired => {
                        ApiError::new(ErrorKind::ExpiredNextToken, "The NextToken has expired.")
                    }
                    TokenError::Invalid => ApiError::invalid_argument("Invalid NextToken."),
                },
            )?),
            (None, name) => name.clone(),
        };
    let account = &call.state.kinesis().account;
    let streams: Vec<_> = call
        .state
        .store()
        .list_streams()
        .into_iter()
        .filter(|m| {
            m.kind == StreamKind::Data
                && after.as_ref().is_none_or(|a| m.name.as_str() > a.as_str())
        })
        .collect();
    let page = &streams[..streams.len().min(limit)];
    let has_more = streams.len() > limit;
    let response = Response {
        stream_names: page.iter().map(|m| m.name.clone()).collect(),
        has_more_streams: has_more,
        next_token: has_more
            .then(|| {
                page.last()
                    .map(|m| tokens.stream_page(&m.name, call.now_ms))
            })
            .flatten(),
        stream_summaries: page
            .iter()
            .map(|m| Summary {
                stream_name: m.name.clone(),
                stream_arn: account.stream_arn(&m.name),
                stream_status: status(m.status),
                stream_mode_details: stream_mode(m),
                stream_creation_timestamp: Timestamp(m.created_ms),
            })
            .collect(),
    };
    Ok(wire::response(call.enc, &response))
}
