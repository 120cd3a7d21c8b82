//! ListStreams: video streams in name order, optionally those whose name begins with a prefix
//! (`StreamNameCondition`), paged by `MaxResults` (1 to 10,000, default 10,000) and `NextToken`.
//!
//! The token is the data streams' sealed page token holding the catalog name of the last stream
//! listed, so it cannot be forged and a data streams token is refused here.

use serde::{Deserialize, Serialize};
use timeshard_storage::StreamKind;

use super::common::{Call, StreamInfo, check_next_token, check_stream_name, decode, ok};
use crate::api::data_streams::common::{in_range, validation};
use crate::api::{ApiError, ErrorKind, HandlerResult};
use crate::data::tokens::TokenError;
use crate::video::VideoStream;
use crate::video::stream::CATALOG_PREFIX;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "MaxResults")]
    max_results: Option<i64>,
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
    #[serde(rename = "StreamNameCondition")]
    stream_name_condition: Option<StreamNameCondition>,
}

#[derive(Debug, Deserialize)]
struct StreamNameCondition {
    #[serde(rename = "ComparisonOperator")]
    comparison_operator: Option<String>,
    #[serde(rename = "ComparisonValue")]
    comparison_value: Option<String>,
}

#[derive(Debug, Serialize)]
struct Response {
    #[serde(rename = "StreamInfoList")]
    stream_info_list: Vec<StreamInfo>,
    #[serde(rename = "NextToken", skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = decode(body)?;
    let limit = in_range("maxResults", req.max_results, 1, 10_000)?.unwrap_or(10_000) as usize;
    let prefix = match req.stream_name_condition {
        None => String::new(),
        Some(condition) => {
            if let Some(op) = &condition.comparison_operator
                && op != "BEGINS_WITH"
            {
                return Err(validation(
                    "streamNameCondition.comparisonOperator",
                    op,
                    "Member must satisfy enum value set: [BEGINS_WITH]",
                ));
            }
            match condition.comparison_value {
                Some(value) => {
                    check_stream_name("streamNameCondition.comparisonValue", &value)?;
                    value
                }
                None if condition.comparison_operator.is_some() => {
                    return Err(ApiError::invalid_argument(
                        "StreamNameCondition.ComparisonOperator needs a ComparisonValue.",
                    ));
                }
                None => String::new(),
            }
        }
    };
    let tokens = &call.state.kinesis().tokens;
    let after = match &req.next_token {
        None => None,
        // Some SDKs send an empty token for "from the start".
        Some(t) if t.is_empty() => None,
        Some(t) => {
            check_next_token(t)?;
            let after = tokens
                .parse_stream_page(t, call.now_ms)
                .map_err(|e| match e {
                    TokenError::Expired => ApiError::new(
                        ErrorKind::ExpiredNextToken,
                        "The NextToken has expired; list again from the start.",
                    ),
                    TokenError::Invalid => {
                        ApiError::invalid_argument("The NextToken is not one this server issued.")
                    }
                })?;
            if !after.starts_with(CATALOG_PREFIX) {
                return Err(ApiError::invalid_argument(
                    "The NextToken is not one this server issued for ListStreams.",
                ));
            }
            Some(after)
        }
    };
    let wanted = format!("{CATALOG_PREFIX}{prefix}");
    let store = call.state.store();
    let names: Vec<String> = store
        .list_streams()
        .into_iter()
        .filter(|m| {
            m.kind == StreamKind::Video
                && m.name.starts_with(&wanted)
                && after.as_ref().is_none_or(|a| m.name.as_str() > a.as_str())
        })
        .map(|m| m.name)
        .collect();
    let has_more = names.len() > limit;
    let page = &names[..names.len().min(limit)];
    let account = &call.state.kinesis().account;
    let stream_info_list = page
        .iter()
        .filter_map(|name| store.stream(name))
        .filter_map(|info| VideoStream::from_info(account, info))
        .map(StreamInfo::of)
        .collect();
    let next_token = has_more
        .then(|| {
            page.last()
                .map(|name| tokens.stream_page(name, call.now_ms))
        })
        .flatten();
    Ok(ok(&Response {
        stream_info_list,
        next_token,
    }))
}
