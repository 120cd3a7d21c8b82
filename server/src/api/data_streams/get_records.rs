//! GetRecords: records from a shard iterator's position, at most 10,000 records and 10 MiB,
//! with the iterator for the next call. At the end of a closed shard the next iterator is null
//! and the child shards are named.

use serde::{Deserialize, Serialize};
use timeshard_storage::{Position, ReadLimits};

use super::common::{
    Call, ChildShard, KinesisRecord, child_shards, encryption_type, in_range, kinesis_records,
    millis_behind, missing, store_error,
};
use super::wire;
use crate::api::{ApiError, ErrorKind, HandlerResult};
use crate::data::tokens::{ShardIterator, TOKEN_TTL_MS, TokenError};

const MAX_BYTES: usize = 10 << 20;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "ShardIterator")]
    shard_iterator: Option<String>,
    #[serde(rename = "Limit")]
    limit: Option<i64>,
}

#[derive(Debug, Serialize)]
struct Response {
    #[serde(rename = "Records")]
    records: Vec<KinesisRecord>,
    #[serde(rename = "NextShardIterator", skip_serializing_if = "Option::is_none")]
    next_shard_iterator: Option<String>,
    #[serde(rename = "MillisBehindLatest")]
    millis_behind_latest: i64,
    #[serde(rename = "ChildShards", skip_serializing_if = "Option::is_none")]
    child_shards: Option<Vec<ChildShard>>,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = wire::decode(call.enc, body)?;
    let token = req.shard_iterator.ok_or_else(|| missing("shardIterator"))?;
    let limit = in_range("limit", req.limit, 1, 10_000)?.unwrap_or(10_000) as usize;
    let tokens = &call.state.kinesis().tokens;
    let it = tokens.parse_shard_iterator(&token, call.now_ms).map_err(|e| match e {
        TokenError::Expired => ApiError::new(
            ErrorKind::ExpiredIterator,
            format!("Iterator expired. The iterator was created more than {TOKEN_TTL_MS} milliseconds ago."),
        ),
        TokenError::Invalid => ApiError::invalid_argument("Invalid ShardIterator."),
    })?;
    let info = call
        .state
        .store()
        .stream_by_id(it.stream_id)
        .ok_or_else(|| {
            ApiError::not_found("The stream of this shard iterator no longer exists.")
        })?;
    let shard = info
        .shards
        .iter()
        .find(|s| s.uid == it.shard)
        .ok_or_else(|| ApiError::not_found("The shard of this shard iterator no longer exists."))?;
    let quotas = call.state.shard_quotas();
    if quotas.is_some_and(|q| !q.try_read(it.shard, call.now_ms)) {
        return Err(ApiError::new(
            ErrorKind::ProvisionedThroughputExceeded,
            format!(
                "Rate exceeded for shard {} in stream {} under account {}.",
                crate::data::names::shard_id(shard.index),
                info.meta.name,
                call.state.kinesis().account.account_id
            ),
        ));
    }
    let batch = call
        .state
        .store()
        .read(
            it.shard,
            Position::At(it.offset),
            ReadLimits::new(limit, MAX_BYTES),
        )
        .await
        .map_err(|e| store_error(call, e))?;
    if let Some(q) = quotas {
        let bytes = batch
            .records
            .iter()
            .map(|r| r.payload.len() + r.key.len())
            .sum();
        q.charge_read(it.shard, bytes, call.now_ms);
    }
    let tail = call
        .state
        .store()
        .tail(it.shard)
        .map_err(|e| store_error(call, e))?;
    let millis_behind_latest = millis_behind(&batch, tail.last_server_ts_ms);
    let encryption = encryption_type(&info.meta);
    let next_offset = batch.next_offset;
    let records = kinesis_records(
        it.shard,
        batch,
        (encryption != "NONE").then_some(encryption.as_str()),
    );
    let at_end_of_closed = shard.closed_at.is_some_and(|end| next_offset >= end);
    let (next_shard_iterator, child_shards) = if at_end_of_closed {
        let children = child_shards(&info, shard.index);
        (None, Some(children))
    } else {
        let next = ShardIterator {
            stream_id: it.stream_id,
            shard: it.shard,
            offset: next_offset,
            issued_ms: call.now_ms,
        };
        (Some(tokens.shard_iterator(&next)), None)
    };
    Ok(wire::response(
        call.enc,
        &Response {
            records,
            next_shard_iterator,
            millis_behind_latest,
            child_shards,
        },
    ))
}
