//! GetDataEndpoint: where a stream's media APIs are served. This server serves every API on one
//! listener, so the answer is its public URL (`--public-url`, or `http://<bound address>`),
//! without a path or a trailing slash: clients append `/putMedia`, `/getMedia`, ... themselves.

use serde::{Deserialize, Serialize};

use super::common::{Call, decode, missing, ok};
use crate::api::HandlerResult;
use crate::api::data_streams::common::validation;

/// The model's `APIName` values.
const API_NAMES: [&str; 8] = [
    "PUT_MEDIA",
    "GET_MEDIA",
    "LIST_FRAGMENTS",
    "GET_MEDIA_FOR_FRAGMENT_LIST",
    "GET_HLS_STREAMING_SESSION_URL",
    "GET_DASH_STREAMING_SESSION_URL",
    "GET_CLIP",
    "GET_IMAGES",
];

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "APIName")]
    api_name: Option<String>,
}

#[derive(Debug, Serialize)]
struct Response<'a> {
    #[serde(rename = "DataEndpoint")]
    data_endpoint: &'a str,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = decode(body)?;
    let api_name = req.api_name.ok_or_else(|| missing("APIName"))?;
    if !API_NAMES.contains(&api_name.as_str()) {
        return Err(validation(
            "APIName",
            &api_name,
            &format!(
                "Member must satisfy enum value set: [{}]",
                API_NAMES.join(", ")
            ),
        ));
    }
    call.stream(req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    Ok(ok(&Response {
        data_endpoint: call.state.public_url(),
    }))
}
