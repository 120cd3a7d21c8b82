//! DescribeStream (with shard paging) and DescribeStreamSummary.

use serde::{Deserialize, Serialize};

use super::common::{
    Call, EnhancedMetrics, Shard, StreamModeDetails, consumer_count, encryption_type, in_range,
    key_id, retention_hours, shard_level_metrics, status, stream, stream_mode, stream_name,
};
use super::wire::{self, Timestamp};
use crate::api::HandlerResult;
use crate::data::names::parse_shard_id;

/// DescribeStream returns at most this many shards per call, whatever the Limit.
const MAX_SHARDS_PER_DESCRIBE: i64 = 100;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "Limit")]
    limit: Option<i64>,
    #[serde(rename = "ExclusiveStartShardId")]
    exclusive_start_shard_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct Description {
    #[serde(rename = "StreamName")]
    stream_name: String,
    #[serde(rename = "StreamARN")]
    stream_arn: String,
    #[serde(rename = "StreamStatus")]
    stream_status: &'static str,
    #[serde(rename = "StreamModeDetails")]
    stream_mode_details: StreamModeDetails,
    #[serde(rename = "Shards")]
    shards: Vec<Shard>,
    #[serde(rename = "HasMoreShards")]
    has_more_shards: bool,
    #[serde(rename = "RetentionPeriodHours")]
    retention_period_hours: u64,
    #[serde(rename = "StreamCreationTimestamp")]
    stream_creation_timestamp: Timestamp,
    #[serde(rename = "EnhancedMonitoring")]
    enhanced_monitoring: Vec<EnhancedMetrics>,
    #[serde(rename = "EncryptionType")]
    encryption_type: String,
    #[serde(rename = "KeyId", skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
}

// Responses are typed to the end (no serde_json::Value in between) so timestamps and blobs keep
// their CBOR forms.
#[derive(Debug, Serialize)]
struct Response {
    #[serde(rename = "StreamDescription")]
    description: Description,
}

#[derive(Debug, Serialize)]
struct SummaryResponse {
    #[serde(rename = "StreamDescriptionSummary")]
    summary: Summary,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let limit = in_range("limit", req.limit, 1, 10_000)?
        .unwrap_or(100)
        .min(MAX_SHARDS_PER_DESCRIBE) as usize;
    let info = stream(call, &name)?;
    // An ExclusiveStartShardId need not exist; shards are listed after its index.
    let after = req
        .exclusive_start_shard_id
        .as_deref()
        .and_then(parse_shard_id);
    let rest: Vec<_> = info
        .shards
        .iter()
        .filter(|s| after.is_none_or(|a| s.index > a))
        .collect();
    let meta = &info.meta;
    let description = Description {
        stream_name: meta.name.clone(),
        stream_arn: call.state.kinesis().account.stream_arn(&meta.name),
        stream_status: status(meta.status),
        stream_mode_details: stream_mode(meta),
        shards: rest.iter().take(limit).map(|s| Shard::of(s)).collect(),
        has_more_shards: rest.len() > limit,
        retention_period_hours: retention_hours(meta),
        stream_creation_timestamp: Timestamp(meta.created_ms),
        enhanced_monitoring: vec![EnhancedMetrics {
            shard_level_metrics: shard_level_metrics(meta),
        }],
        encryption_type: encryption_type(meta),
        key_id: key_id(meta),
    };
    Ok(wire::response(call.enc, &Response { description }))
}

#[derive(Debug, Deserialize)]
struct SummaryRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
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
    #[serde(rename = "RetentionPeriodHours")]
    retention_period_hours: u64,
    #[serde(rename = "StreamCreationTimestamp")]
    stream_creation_timestamp: Timestamp,
    #[serde(rename = "EnhancedMonitoring")]
    enhanced_monitoring: Vec<EnhancedMetrics>,
    #[serde(rename = "EncryptionType")]
    encryption_type: String,
    #[serde(rename = "KeyId", skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(rename = "OpenShardCount")]
    open_shard_count: usize,
    #[serde(rename = "ConsumerCount")]
    consumer_count: usize,
}

pub(crate) async fn handle_summary(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: SummaryRequest = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let info = stream(call, &name)?;
    let meta = &info.meta;
    let summary = Summary {
        stream_name: meta.name.clone(),
        stream_arn: call.state.kinesis().account.stream_arn(&meta.name),
        stream_status: status(meta.status),
        stream_mode_details: stream_mode(meta),
        retention_period_hours: retention_hours(meta),
        stream_creation_timestamp: Timestamp(meta.created_ms),
        enhanced_monitoring: vec![EnhancedMetrics {
            shard_level_metrics: shard_level_metrics(meta),
        }],
        encryption_type: encryption_type(meta),
        key_id: key_id(meta),
        open_shard_count: info.shards.iter().filter(|s| s.is_open()).count(),
        consumer_count: consumer_count(meta),
    };
    Ok(wire::response(call.enc, &SummaryResponse { summary }))
}
