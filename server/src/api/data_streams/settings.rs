//! Stream settings: retention (Increase/DecreaseStreamRetentionPeriod), encryption
//! (Start/StopStreamEncryption) and enhanced monitoring (Enable/DisableEnhancedMonitoring).
//!
//! Encryption and monitoring are accepted and reflected in Describe* and in records'
//! EncryptionType; records are not encrypted at rest with KMS keys and no CloudWatch metrics
//! exist on a self-hosted server (the Prometheus `/metrics` endpoint is where metrics live).

use serde::{Deserialize, Serialize};

use super::common::{
    ATTR_ENCRYPTION, ATTR_KEY_ID, ATTR_SHARD_METRICS, Call, Empty, HOUR_MS, missing,
    require_active, retention_hours, shard_level_metrics, store_error, stream, stream_name,
    updating_for_a_while, validation,
};
use super::wire;
use crate::api::{ApiError, HandlerResult};

const MIN_RETENTION_HOURS: i64 = 24;
const MAX_RETENTION_HOURS: i64 = 8760;
const METRICS: [&str; 7] = [
    "IncomingBytes",
    "IncomingRecords",
    "OutgoingBytes",
    "OutgoingRecords",
    "WriteProvisionedThroughputExceeded",
    "ReadProvisionedThroughputExceeded",
    "IteratorAgeMilliseconds",
];

#[derive(Debug, Deserialize)]
struct RetentionRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "RetentionPeriodHours")]
    retention_period_hours: Option<i64>,
}

async fn retention(call: &Call<'_>, body: &[u8], increase: bool) -> HandlerResult {
    let req: RetentionRequest = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let hours = req
        .retention_period_hours
        .ok_or_else(|| missing("retentionPeriodHours"))?;
    if !(MIN_RETENTION_HOURS..=MAX_RETENTION_HOURS).contains(&hours) {
        return Err(ApiError::invalid_argument(format!(
            "Minimum allowed retention period is {MIN_RETENTION_HOURS} hours. Maximum allowed retention period is {MAX_RETENTION_HOURS} hours. Requested retention period ({hours} hours) is out of range."
        )));
    }
    let current = retention_hours(&stream(call, &name)?.meta) as i64;
    if increase && hours < current {
        return Err(ApiError::invalid_argument(format!(
            "Requested retention period ({hours} hours) for stream {name} can not be shorter than existing retention period ({current} hours). Use DecreaseRetentionPeriod API."
        )));
    }
    if !increase && hours > current {
        return Err(ApiError::invalid_argument(format!(
            "Requested retention period ({hours} hours) for stream {name} can not be longer than existing retention period ({current} hours). Use IncreaseRetentionPeriod API."
        )));
    }
    let store = call.state.store();
    store
        .update_stream(&name, None, move |meta| {
            meta.retention_ms = hours as u64 * HOUR_MS;
            Ok(())
        })
        .await
        .map_err(|e| store_error(call, e))?;
    if !increase {
        // Data older than the new period goes now, not at the next periodic pass.
        store
            .enforce_retention()
            .await
            .map_err(|e| store_error(call, e))?;
    }
    Ok(wire::response(call.enc, &Empty {}))
}

pub(crate) async fn increase_retention(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    retention(call, body, true).await
}

pub(crate) async fn decrease_retention(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    retention(call, body, false).await
}

#[derive(Debug, Deserialize)]
struct EncryptionRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "EncryptionType")]
    encryption_type: Option<String>,
    #[serde(rename = "KeyId")]
    key_id: Option<String>,
}

async fn encryption(call: &Call<'_>, body: &[u8], start: bool) -> HandlerResult {
    let req: EncryptionRequest = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let kind = req
        .encryption_type
        .ok_or_else(|| missing("encryptionType"))?;
    let key = req.key_id.ok_or_else(|| missing("keyId"))?;
    // Stopping may name NONE or KMS; starting needs KMS.
    let allowed = kind == "KMS" || (!start && kind == "NONE");
    if !allowed {
        return Err(validation(
            "encryptionType",
            &kind,
            "Member must satisfy enum value set: [KMS]",
        ));
    }
    if key.is_empty() || key.len() > 2048 {
        return Err(validation(
            "keyId",
            &key,
            "Member must have length between 1 and 2048",
        ));
    }
    require_active(call, &stream(call, &name)?)?;
    call.state
        .store()
        .update_stream(&name, None, move |meta| {
            if start {
                meta.attributes.insert(ATTR_ENCRYPTION.into(), "KMS".into());
                meta.attributes.insert(ATTR_KEY_ID.into(), key);
            } else {
                meta.attributes.remove(ATTR_ENCRYPTION);
                meta.attributes.remove(ATTR_KEY_ID);
            }
            Ok(())
        })
        .await
        .map_err(|e| store_error(call, e))?;
    updating_for_a_while(call, &name).await?;
    Ok(wire::response(call.enc, &Empty {}))
}

pub(crate) async fn start_encryption(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    encryption(call, body, true).await
}

pub(crate) async fn stop_encryption(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    encryption(call, body, false).await
}

#[derive(Debug, Deserialize)]
struct MonitoringRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "ShardLevelMetrics")]
    shard_level_metrics: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
struct MonitoringResponse {
    #[serde(rename = "StreamName")]
    stream_name: String,
    #[serde(rename = "StreamARN")]
    stream_arn: String,
    #[serde(rename = "CurrentShardLevelMetrics")]
    current: Vec<String>,
    #[serde(rename = "DesiredShardLevelMetrics")]
    desired: Vec<String>,
}

async fn monitoring(call: &Call<'_>, body: &[u8], enable: bool) -> HandlerResult {
    let req: MonitoringRequest = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let asked = req
        .shard_level_metrics
        .ok_or_else(|| missing("shardLevelMetrics"))?;
    if asked.is_empty() || asked.len() > 7 {
        return Err(validation(
            "shardLevelMetrics",
            format!("{asked:?}"),
            "Member must have length between 1 and 7",
        ));
    }
    let mut names: Vec<&str> = Vec::new();
    for m in &asked {
        match m.as_str() {
            "ALL" => names.extend(METRICS),
            m if METRICS.contains(&m) => names.push(m),
            other => {
                return Err(validation(
                    "shardLevelMetrics",
                    other,
                    "Member must satisfy enum value set: [IncomingBytes, IncomingRecords, OutgoingBytes, OutgoingRecords, WriteProvisionedThroughputExceeded, ReadProvisionedThroughputExceeded, IteratorAgeMilliseconds, ALL]",
                ));
            }
        }
    }
    let current = shard_level_metrics(&stream(call, &name)?.meta);
    let desired: Vec<String> = METRICS
        .iter()
        .filter(|m| {
            if enable {
                current.iter().any(|c| c == *m) || names.contains(m)
            } else {
                current.iter().any(|c| c == *m) && !names.contains(m)
            }
        })
        .map(|m| m.to_string())
        .collect();
    let stored = desired.join(",");
    call.state
        .store()
        .update_stream(&name, None, move |meta| {
            meta.attributes.insert(ATTR_SHARD_METRICS.into(), stored);
            Ok(())
        })
        .await
        .map_err(|e| store_error(call, e))?;
    let stream_arn = call.state.kinesis().account.stream_arn(&name);
    Ok(wire::response(
        call.enc,
        &MonitoringResponse {
            stream_name: name,
            stream_arn,
            current,
            desired,
        },
    ))
}

pub(crate) async fn enable_monitoring(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    monitoring(call, body, true).await
}

pub(crate) async fn disable_monitoring(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    monitoring(call, body, false).await
}

#[derive(Debug, Serialize)]
struct LimitsResponse {
    #[serde(rename = "ShardLimit")]
    shard_limit: i64,
    #[serde(rename = "OpenShardCount")]
    open_shard_count: usize,
    #[serde(rename = "OnDemandStreamCount")]
    on_demand_stream_count: usize,
    #[serde(rename = "OnDemandStreamCountLimit")]
    on_demand_stream_count_limit: i64,
}

/// What DescribeLimits reports for a limit this server does not have: the largest value the
/// model's 32-bit `Integer` fields hold (SDKs refuse anything larger).
const NO_LIMIT: i64 = i32::MAX as i64;

/// DescribeLimits: this server's own limits (a shard cap per stream protects it; there is no
/// account-wide quota) and current counts.
pub(crate) async fn describe_limits(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let _: Empty = wire::decode(call.enc, body)?;
    let store = call.state.store();
    let mut open = 0;
    let mut on_demand = 0;
    for meta in store
        .list_streams()
        .into_iter()
        .filter(|m| m.kind == timeshard_storage::StreamKind::Data)
    {
        if super::common::stream_mode(&meta).stream_mode == "ON_DEMAND" {
            on_demand += 1;
        }
        if let Some(info) = store.stream(&meta.name) {
            open += info.shards.iter().filter(|s| s.is_open()).count();
        }
    }
    Ok(wire::response(
        call.enc,
        &LimitsResponse {
            shard_limit: NO_LIMIT,
            open_shard_count: open,
            on_demand_stream_count: on_demand,
            on_demand_stream_count_limit: NO_LIMIT,
        },
    ))
}
