//! GetShardIterator: a tamper-proof token for a position in a shard, valid for 5 minutes.

use serde::{Deserialize, Serialize};

use super::common::{
    Call, missing, shard, starting_position, store_error, stream_name, usable_stream,
};
use super::wire::{self, Timestamp};
use crate::api::{ApiError, HandlerResult};
use crate::data::names::shard_id;
use crate::data::tokens::ShardIterator;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "ShardId")]
    shard_id: Option<String>,
    #[serde(rename = "ShardIteratorType")]
    shard_iterator_type: Option<String>,
    #[serde(rename = "StartingSequenceNumber")]
    starting_sequence_number: Option<String>,
    #[serde(rename = "Timestamp")]
    timestamp: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
struct Response {
    #[serde(rename = "ShardIterator")]
    shard_iterator: String,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let id = req.shard_id.ok_or_else(|| missing("shardId"))?;
    let kind = req
        .shard_iterator_type
        .ok_or_else(|| missing("shardIteratorType"))?;
    let info = usable_stream(call, &name)?;
    let target = shard(call, &info, &id)?;
    let position = starting_position(
        "shardIteratorType",
        &kind,
        req.starting_sequence_number.as_deref(),
        req.timestamp,
        target,
    )?;
    let offset = call
        .state
        .store()
        .resolve(target.uid, position)
        .await
        .map_err(|e| store_error(call, e))?;
    let tail = call
        .state
        .store()
        .tail(target.uid)
        .map_err(|e| store_error(call, e))?
        .next_offset;
    if offset > tail {
        return Err(ApiError::invalid_argument(format!(
            "StartingSequenceNumber used in GetShardIterator on shard {} in stream {name} is beyond the last record of the shard.",
            shard_id(target.index)
        )));
    }
    let token = call.state.kinesis().tokens.shard_iterator(&ShardIterator {
        stream_id: info.meta.id,
        shard: target.uid,
        offset,
        issued_ms: call.now_ms,
    });
    Ok(wire::response(
        call.enc,
        &Response {
            shard_iterator: token,
        },
    ))
}
