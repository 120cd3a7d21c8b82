//! DeleteStream: by StreamARN only (the model has no StreamName here), optionally guarded by
//! `CurrentVersion`. The stream shows DELETING and its data is gone at once, or, with
//! `--stream-status-delay`, after that long.

use serde::Deserialize;
use timeshard_storage::StreamStatus;

use super::common::{Call, Empty, check_version, decode, missing, ok, parse_version, same_stream};
use crate::api::{ApiError, ErrorKind, HandlerResult};
use crate::data::lifecycle::{Transition, finish_later};
use crate::video::stream::store_error;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "CurrentVersion")]
    current_version: Option<String>,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = decode(body)?;
    let arn = req.stream_arn.ok_or_else(|| missing("streamARN"))?;
    if let Some(version) = &req.current_version {
        check_version(version)?;
    }
    let stream = call.stream(None, Some(&arn))?;
    let expected = req
        .current_version
        .as_deref()
        .map(|v| parse_version(&stream, v))
        .transpose()?;
    if stream.status == StreamStatus::Deleting {
        return Err(ApiError::new(
            ErrorKind::ResourceInUse,
            format!("The stream {} is already being deleted.", stream.name),
        ));
    }
    let id = stream.id();
    let name = stream.catalog_name().to_string();
    let store = call.state.store();
    // DELETING first, under the version check; then gone (now or after the status delay).
    store
        .update_stream(&name, expected, move |meta| {
            same_stream(meta, id)?;
            meta.status = StreamStatus::Deleting;
            Ok(())
        })
        .await
        .map_err(store_error)?;
    let delay = call.state.config().stream_status_delay;
    if delay.is_zero() {
        store.delete_stream(&name).await.map_err(store_error)?;
    } else {
        finish_later(store.clone(), name, id, delay, Transition::Delete);
    }
    Ok(ok(&Empty {}))
}
