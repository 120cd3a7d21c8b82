//! UpdateStream: a new DeviceName and/or MediaType for an ACTIVE stream, guarded by
//! `CurrentVersion`. Produces a new Version; with `--stream-status-delay` the stream shows
//! UPDATING for that long.

use serde::Deserialize;
use timeshard_storage::StreamStatus;

use super::common::{
    Call, Empty, check_device_name, check_media_type, check_version, decode, missing, ok,
    parse_version, require_active, same_stream,
};
use crate::api::HandlerResult;
use crate::data::lifecycle::{Transition, finish_later};
use crate::video::stream::{ATTR_DEVICE_NAME, ATTR_MEDIA_TYPE, store_error};

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "CurrentVersion")]
    current_version: Option<String>,
    #[serde(rename = "DeviceName")]
    device_name: Option<String>,
    #[serde(rename = "MediaType")]
    media_type: Option<String>,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = decode(body)?;
    let version = req
        .current_version
        .ok_or_else(|| missing("currentVersion"))?;
    check_version(&version)?;
    if let Some(device) = &req.device_name {
        check_device_name(device)?;
    }
    if let Some(media_type) = &req.media_type {
        check_media_type(media_type)?;
    }
    let stream = call.stream(req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let expected = parse_version(&stream, &version)?;
    require_active(&stream)?;
    let delay = call.state.config().stream_status_delay;
    let id = stream.id();
    let (device, media_type) = (req.device_name, req.media_type);
    let store = call.state.store();
    store
        .update_stream(stream.catalog_name(), Some(expected), move |meta| {
            same_stream(meta, id)?;
            if let Some(device) = device {
                meta.attributes.insert(ATTR_DEVICE_NAME.to_string(), device);
            }
            if let Some(media_type) = media_type {
                meta.attributes
                    .insert(ATTR_MEDIA_TYPE.to_string(), media_type);
            }
            if !delay.is_zero() {
                meta.status = StreamStatus::Updating;
            }
            Ok(())
        })
        .await
        .map_err(store_error)?;
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
