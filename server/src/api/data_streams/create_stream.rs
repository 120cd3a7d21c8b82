//! CreateStream: a stream with evenly split shards, ACTIVE at once.

use std::collections::BTreeMap;

use serde::Deserialize;
use timeshard_storage::{NewShard, NewStream, StreamKind, StreamStatus};

use super::common::{
    ATTR_STREAM_MODE, Call, Empty, HOUR_MS, StreamModeDetails, in_range, missing, store_error,
    validation,
};
use super::wire;
use crate::api::{ApiError, ErrorKind, HandlerResult};
use crate::data::hashing::even_ranges;
use crate::data::lifecycle::{Transition, finish_later};
use crate::data::names::check_stream_name;

/// Shards a stream starts with in ON_DEMAND mode, as Kinesis does.
const ON_DEMAND_SHARDS: i64 = 4;
/// Most shards one stream may have: a self-hosted server's own protection, not an AWS quota.
pub(crate) const MAX_SHARDS_PER_STREAM: i64 = 10_000;
pub(crate) const MAX_TAGS: usize = 50;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "ShardCount")]
    shard_count: Option<i64>,
    #[serde(rename = "StreamModeDetails")]
    stream_mode_details: Option<StreamModeDetails>,
    #[serde(rename = "Tags")]
    tags: Option<BTreeMap<String, String>>,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = wire::decode(call.enc, body)?;
    let name = req.stream_name.ok_or_else(|| missing("streamName"))?;
    check_stream_name(&name).map_err(|e| {
        ApiError::new(
            ErrorKind::Validation,
            format!("1 validation error detected: {e}"),
        )
    })?;
    let mode = req
        .stream_mode_details
        .map_or_else(|| "PROVISIONED".to_string(), |d| d.stream_mode);
    let shards = match (
        mode.as_str(),
        in_range("shardCount", req.shard_count, 1, i64::MAX)?,
    ) {
        ("PROVISIONED", Some(n)) => n,
        ("PROVISIONED", None) => {
            return Err(ApiError::invalid_argument(
                "ShardCount is required for a PROVISIONED stream.",
            ));
        }
        ("ON_DEMAND", n) => n.unwrap_or(ON_DEMAND_SHARDS),
        (other, _) => {
            return Err(validation(
                "streamModeDetails.streamMode",
                other,
                "Member must satisfy enum value set: [PROVISIONED, ON_DEMAND]",
            ));
        }
    };
    if shards > MAX_SHARDS_PER_STREAM {
        return Err(ApiError::new(
            ErrorKind::LimitExceeded,
            format!(
                "This server allows at most {MAX_SHARDS_PER_STREAM} shards per stream; {shards} were requested."
            ),
        ));
    }
    let tags = req.tags.unwrap_or_default();
    let delay = call.state.config().stream_status_delay;
    check_tags("stream", &tags)?;
    let mut attributes = BTreeMap::new();
    attributes.insert(ATTR_STREAM_MODE.to_string(), mode);
    let new = NewStream {
        tags,
        attributes,
        status: if delay.is_zero() {
            StreamStatus::Active
        } else {
            StreamStatus::Creating
        },
        ..NewStream::new(
            name,
            StreamKind::Data,
            24 * HOUR_MS,
            even_ranges(shards as u32)
                .into_iter()
                .map(|(hash_start, hash_end)| NewShard {
                    hash_start,
                    hash_end,
                    parent: None,
                    adjacent_parent: None,
                    closed: false,
                })
                .collect(),
        )
    };
    let created = call
        .state
        .store()
        .create_stream(new)
        .await
        .map_err(|e| store_error(call, e))?;
    if !delay.is_zero() {
        let store = call.state.store().clone();
        finish_later(
            store,
            created.meta.name,
            created.meta.id,
            delay,
            Transition::Activate,
        );
    }
    Ok(wire::response(call.enc, &Empty {}))
}

/// Tag keys 1-128 and values 0-256 characters; at most 50 tags on a resource (a stream or a
/// consumer, as `resource` says in the message).
pub(crate) fn check_tags(resource: &str, tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::invalid_argument(format!(
            "A {resource} can have at most {MAX_TAGS} tags; {} were given.",
            tags.len()
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(validation(
                "tags",
                k,
                "Member must have length between 1 and 128",
            ));
        }
        if v.chars().count() > 256 {
            return Err(validation(
                "tags",
                v,
                "Member must have length less than or equal to 256",
            ));
        }
    }
    Ok(())
}
