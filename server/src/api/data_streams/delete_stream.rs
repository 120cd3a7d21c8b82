//! DeleteStream: removes the stream and its data at once.

use serde::Deserialize;

use super::common::{Call, Empty, consumer_count, store_error, stream, stream_name};
use super::wire;
use timeshard_storage::StreamStatus;

use crate::api::{ApiError, ErrorKind, HandlerResult};
use crate::data::lifecycle::{Transition, finish_later};

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "EnforceConsumerDeletion")]
    enforce_consumer_deletion: Option<bool>,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let info = stream(call, &name)?;
    let consumers = consumer_count(&info.meta);
    if consumers > 0 && req.enforce_consumer_deletion != Some(true) {
        return Err(ApiError::new(
            ErrorKind::ResourceInUse,
            format!(
                "Stream {name} has {consumers} registered consumers; deregister them or set EnforceConsumerDeletion."
            ),
        ));
    }
    let delay = call.state.config().stream_status_delay;
    let store = call.state.store();
    if delay.is_zero() {
        store
            .delete_stream(&name)
            .await
            .map_err(|e| store_error(call, e))?;
    } else {
        store
            .update_stream(&name, None, |m| {
                m.status = StreamStatus::Deleting;
                Ok(())
            })
            .await
            .map_err(|e| store_error(call, e))?;
        finish_later(store.clone(), name, info.meta.id, delay, Transition::Delete);
    }
    Ok(wire::response(call.enc, &Empty {}))
}
