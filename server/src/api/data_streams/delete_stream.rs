//! DeleteStream: removes the stream and its data at once.

use serde::Deserialize;

use super::common::{Call, Empty, store_error, stream, stream_name};
use super::wire;
use crate::api::HandlerResult;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    stream(call, &name)?;
    call.state
        .store()
        .delete_stream(&name)
        .await
        .map_err(|e| store_error(call, e))?;
    Ok(wire::response(call.enc, &Empty {}))
}
