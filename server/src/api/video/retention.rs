//! UpdateDataRetention: raises or lowers an ACTIVE stream's retention by
//! `DataRetentionChangeInHours`, guarded by `CurrentVersion`. The result must stay within 0 to
//! 87,600 hours. A decrease applies at once: a retention pass runs before the call returns, so
//! fragments older than the new retention are gone when the client hears back.

use serde::Deserialize;
use timeshard_storage::StreamStatus;

use super::common::{
    Call, Empty, check_version, decode, missing, ok, parse_version, require_active, same_stream,
};
use crate::api::data_streams::common::validation;
use crate::api::{ApiError, HandlerResult};
use crate::data::lifecycle::{Transition, finish_later};
use crate::video::stream::{HOUR_MS, MAX_RETENTION_HOURS, store_error};

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "CurrentVersion")]
    current_version: Option<String>,
    #[serde(rename = "Operation")]
    operation: Option<String>,
    #[serde(rename = "DataRetentionChangeInHours")]
    data_retention_change_in_hours: Option<i64>,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = decode(body)?;
    let version = req
        .current_version
        .ok_or_else(|| missing("currentVersion"))?;
    check_version(&version)?;
    let operation = req.operation.ok_or_else(|| missing("operation"))?;
    let increase = match operation.as_str() {
        "INCREASE_DATA_RETENTION" => true,
        "DECREASE_DATA_RETENTION" => false,
        other => {
            return Err(validation(
                "operation",
                other,
                "Member must satisfy enum value set: [INCREASE_DATA_RETENTION, DECREASE_DATA_RETENTION]",
            ));
        }
    };
    let change = req
        .data_retention_change_in_hours
        .ok_or_else(|| missing("dataRetentionChangeInHours"))?;
    if change < 1 {
        return Err(validation(
            "dataRetentionChangeInHours",
            change,
            "Member must have value greater than or equal to 1",
        ));
    }
    let stream = call.stream(req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let expected = parse_version(&stream, &version)?;
    require_active(&stream)?;
    let current = i64::try_from(stream.data_retention_hours).unwrap_or(i64::MAX);
    let target = if increase {
        current.saturating_add(change)
    } else {
        current - change
    };
    if target < 0 || target > MAX_RETENTION_HOURS as i64 {
        return Err(ApiError::invalid_argument(format!(
            "The stream {} keeps data for {current} hours; {} by {change} hours would make it {target}, outside 0 to {MAX_RETENTION_HOURS} hours.",
            stream.name,
            if increase { "increasing" } else { "decreasing" },
        )));
    }
    let new_ms = target.unsigned_abs() * HOUR_MS;
    let delay = call.state.config().stream_status_delay;
    let id = stream.id();
    let store = call.state.store();
    store
        .update_stream(stream.catalog_name(), Some(expected), move |meta| {
            same_stream(meta, id)?;
            meta.retention_ms = new_ms;
            if !delay.is_zero() {
                meta.status = StreamStatus::Updating;
            }
            Ok(())
        })
        .await
        .map_err(store_error)?;
    if !increase && let Err(e) = store.enforce_retention().await {
        // The new retention is in place; the periodic pass removes the data later.
        tracing::warn!(stream = %stream.name, "retention pass after a decrease failed: {e}");
    }
    if !delay.is_zero() {
        finish_later(
            store.clone(),
            stream.catalog_name().to_string(),
            id,
            delay,
            Transition::Activate,
        );
    }
    Ok(ok(&Empty {}))
}
