//! ListShards: a stream's shards in index order, filtered by ShardFilter and paged by
//! MaxResults and NextToken (which cannot be combined with StreamName or ExclusiveStartShardId,
//! and expires after 5 minutes).

use serde::{Deserialize, Serialize};
use timeshard_storage::ShardMeta;

use super::common::{Call, Shard, in_range, missing, stream, stream_name, validation};
use super::wire::{self, Timestamp};
use crate::api::{ApiError, ErrorKind, HandlerResult};
use crate::data::names::parse_shard_id;
use crate::data::tokens::{ShardPage, TokenError};

#[derive(Debug, Deserialize)]
struct Filter {
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "ShardId")]
    shard_id: Option<String>,
    #[serde(rename = "Timestamp")]
    timestamp: Option<Timestamp>,
}

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
    #[serde(rename = "ExclusiveStartShardId")]
    exclusive_start_shard_id: Option<String>,
    #[serde(rename = "MaxResults")]
    max_results: Option<i64>,
    #[serde(rename = "ShardFilter")]
    shard_filter: Option<Filter>,
}

#[derive(Debug, Serialize)]
struct Response {
    #[serde(rename = "Shards")]
    shards: Vec<Shard>,
    #[serde(rename = "NextToken", skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

/// Whether a shard held data (was open) at some moment of `[from, to]`.
fn open_during(s: &ShardMeta, from: i64, to: i64) -> bool {
    s.created_ms <= to && s.closed_ms.is_none_or(|c| c >= from)
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = wire::decode(call.enc, body)?;
    let max = in_range("maxResults", req.max_results, 1, 10_000)?;
    let tokens = &call.state.kinesis().tokens;
    let (name, after, max) = match &req.next_token {
        Some(token) => {
            if req.stream_name.is_some()
                || req.stream_arn.is_some()
                || req.exclusive_start_shard_id.is_some()
            {
                return Err(ApiError::invalid_argument(
                    "NextToken cannot be combined with StreamName, StreamARN or ExclusiveStartShardId.",
                ));
            }
            let page = tokens
                .parse_shard_page(token, call.now_ms)
                .map_err(|e| match e {
                    TokenError::Expired => {
                        ApiError::new(ErrorKind::ExpiredNextToken, "The NextToken has expired.")
                    }
                    TokenError::Invalid => ApiError::invalid_argument("Invalid NextToken."),
                })?;
            let name = call
                .state
                .store()
                .stream_by_id(page.stream_id)
                .map(|info| info.meta.name)
                .ok_or_else(|| {
                    ApiError::not_found("The stream of this NextToken no longer exists.")
                })?;
            (
                name,
                Some(page.after_index),
                max.map_or(page.max_results, |m| m as u32),
            )
        }
        None => {
            let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
            let after = req
                .exclusive_start_shard_id
                .as_deref()
                .and_then(parse_shard_id);
            (name, after, max.unwrap_or(1000) as u32)
        }
    };
    let max = max.clamp(1, 1000) as usize;
    let info = stream(call, &name)?;
    // The trim horizon in time: the oldest moment data may still be kept, which is never before
    // the stream existed (KCL lists shards AT_TRIM_HORIZON and needs the first ones).
    let retention_start = call
        .now_ms
        .saturating_sub(i64::try_from(info.meta.retention_ms).unwrap_or(i64::MAX))
        .max(info.meta.created_ms);
    let filter: Box<dyn Fn(&ShardMeta) -> bool> = match req.shard_filter {
        None => Box::new(|_| true),
        Some(f) => {
            let kind = f.kind.ok_or_else(|| missing("shardFilter.type"))?;
            match kind.as_str() {
                "AFTER_SHARD_ID" => {
                    let id = f.shard_id.ok_or_else(|| {
                        ApiError::invalid_argument("ShardFilter AFTER_SHARD_ID needs a ShardId.")
                    })?;
                    let index = parse_shard_id(&id).ok_or_else(|| {
                        ApiError::invalid_argument(format!("Invalid ShardId {id:?}."))
                    })?;
                    Box::new(move |s| s.index > index)
                }
                // Shards open at the trim horizon (the oldest data kept), or from it to the tip.
                "AT_TRIM_HORIZON" => {
                    Box::new(move |s| open_during(s, retention_start, retention_start))
                }
                "FROM_TRIM_HORIZON" => Box::new(move |s| open_during(s, retention_start, i64::MAX)),
                "AT_LATEST" => Box::new(|s| s.is_open()),
                "AT_TIMESTAMP" | "FROM_TIMESTAMP" => {
                    let t = f
                        .timestamp
                        .ok_or_else(|| {
                            ApiError::invalid_argument(format!(
                                "ShardFilter {kind} needs a Timestamp."
                            ))
                        })?
                        .0;
                    if kind == "AT_TIMESTAMP" {
                        Box::new(move |s| open_during(s, t, t))
                    } else {
                        Box::new(move |s| open_during(s, t, i64::MAX))
                    }
                }
                other => {
                    return Err(validation(
                        "shardFilter.type",
                        other,
                        "Member must satisfy enum value set: [AFTER_SHARD_ID, AT_TRIM_HORIZON, FROM_TRIM_HORIZON, AT_LATEST, AT_TIMESTAMP, FROM_TIMESTAMP]",
                    ));
                }
            }
        }
    };
    let matching: Vec<&ShardMeta> = info
        .shards
        .iter()
        .filter(|s| after.is_none_or(|a| s.index > a) && filter(s))
        .collect();
    let page = &matching[..matching.len().min(max)];
    let next_token = (matching.len() > max).then(|| {
        let last = page.last().map_or(0, |s| s.index);
        tokens.shard_page(&ShardPage {
            stream_id: info.meta.id,
            after_index: last,
            max_results: max as u32,
            issued_ms: call.now_ms,
        })
    });
    Ok(wire::response(
        call.enc,
        &Response {
            shards: page.iter().map(|s| Shard::of(s)).collect(),
            next_token,
        },
    ))
}
