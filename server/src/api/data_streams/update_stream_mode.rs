//! UpdateStreamMode: switches a stream between the PROVISIONED and ON_DEMAND capacity modes.
//!
//! The mode is the [`ATTR_STREAM_MODE`] attribute CreateStream sets and DescribeStream,
//! DescribeStreamSummary, ListStreams and DescribeLimits read. Nothing else changes: the stream
//! keeps its shards either way, as in Kinesis (ON_DEMAND's 4 shards are only where a new stream
//! starts), and a self-hosted server has no capacity to re-provision. `WarmThroughputMiBps` is
//! checked as the model says and otherwise ignored, for the same reason.
//!
//! Like the other changes Kinesis reports as UPDATING, the stream shows UPDATING for the
//! configured status delay (none by default) and then ACTIVE again; it must be ACTIVE to start.
//! Asking for the mode the stream already has changes nothing.

use serde::Deserialize;
use timeshard_storage::{StreamMeta, StreamStatus};

use super::common::{
    ATTR_STREAM_MODE, Call, Empty, in_range, missing, require_active, stream, stream_mode,
    stream_name, update_stream_if_unchanged, validation,
};
use super::wire;
use crate::api::{ApiError, HandlerResult};
use crate::data::lifecycle::{Transition, finish_later};

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "StreamModeDetails")]
    stream_mode_details: Option<ModeDetails>,
    #[serde(rename = "WarmThroughputMiBps")]
    warm_throughput_mibps: Option<i64>,
}

/// `StreamModeDetails` as a request gives it: the mode may be missing.
#[derive(Debug, Deserialize)]
struct ModeDetails {
    #[serde(rename = "StreamMode")]
    stream_mode: Option<String>,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = wire::decode(call.enc, body)?;
    let arn = req.stream_arn.ok_or_else(|| missing("streamARN"))?;
    let mode = req
        .stream_mode_details
        .ok_or_else(|| missing("streamModeDetails"))?
        .stream_mode
        .ok_or_else(|| missing("streamModeDetails.streamMode"))?;
    if !matches!(mode.as_str(), "PROVISIONED" | "ON_DEMAND") {
        return Err(validation(
            "streamModeDetails.streamMode",
            &mode,
            "Member must satisfy enum value set: [PROVISIONED, ON_DEMAND]",
        ));
    }
    let warm = in_range(
        "warmThroughputMiBps",
        req.warm_throughput_mibps,
        0,
        i64::MAX,
    )?;
    if warm.is_some() && mode != "ON_DEMAND" {
        return Err(ApiError::invalid_argument(
            "WarmThroughputMiBps can only be given when switching a stream to ON_DEMAND mode.",
        ));
    }
    let name = stream_name(call, None, Some(&arn))?;
    let delay = call.state.config().stream_status_delay;
    // Written at the version read, so the ACTIVE check holds at the write.
    let ((), written) = update_stream_if_unchanged(call, &name, || {
        let info = stream(call, &name)?;
        require_active(call, &info)?;
        let write = (stream_mode(&info.meta).stream_mode != mode).then(|| {
            let new_mode = mode.clone();
            move |meta: &mut StreamMeta| {
                meta.attributes
                    .insert(ATTR_STREAM_MODE.to_owned(), new_mode);
                if !delay.is_zero() {
                    meta.status = StreamStatus::Updating;
                }
                Ok(())
            }
        });
        Ok((info, (), write))
    })
    .await?;
    if let Some(meta) = written
        && !delay.is_zero()
    {
        finish_later(
            call.state.store().clone(),
            name,
            meta.id,
            delay,
            Transition::Activate,
        );
    }
    Ok(wire::response(call.enc, &Empty {}))
}
