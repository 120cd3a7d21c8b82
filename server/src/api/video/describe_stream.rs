//! DescribeStream: a stream's `StreamInfo`, by StreamName or StreamARN, in any status.

use serde::{Deserialize, Serialize};

use super::common::{Call, StreamInfo, decode, ok};
use crate::api::HandlerResult;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
}

#[derive(Debug, Serialize)]
struct Response {
    #[serde(rename = "StreamInfo")]
    stream_info: StreamInfo,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = decode(body)?;
    let stream = call.stream(req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    Ok(ok(&Response {
        stream_info: StreamInfo::of(stream),
    }))
}
