//! HTTP routing: which API family a request belongs to, authentication, body limits, and the
//! conversion of handler errors into each family's wire format.
//!
//! Routing (see DESIGN.md, "HTTP, errors, security"):
//! - `GET|HEAD /health`, `GET|HEAD /metrics`: operational endpoints, never authenticated.
//! - any request with `X-Amz-Target` (and a bare `POST /`): Kinesis Data Streams, JSON 1.1 or,
//!   with `Content-Type: application/x-amz-cbor-1.1`, CBOR 1.1 ([`data_streams`]), signed for
//!   service `kinesis`. Errors come back in the encoding the request used.
//! - `POST /putMedia`: the long streaming upload of Kinesis Video Streams; its body goes to
//!   [`video::put_media`] still streaming, never buffered, never size-capped.
//! - `POST /<action>`: the other video APIs, rest-json ([`video`]), signed for `kinesisvideo`.
//! - anything else: a JSON error (404 unknown path, 405 wrong method).
//!
//! For the JSON APIs the signature is checked in two steps (see [`sigv4`]): headers first, so an
//! unauthenticated client is refused before its body is read, then the body hash once the
//! (capped) body is buffered. Handlers therefore receive only authenticated requests.
//!
//! Handlers return [`HandlerResult`]; an `Err(ApiError)` becomes the family's error response
//! here, with the request id every response carries.

pub mod data_streams;
pub mod error;
pub mod request_id;
pub mod sigv4;
pub mod video;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tracing::{debug, error};

pub use self::error::{ApiError, ErrorKind, Protocol};
pub use self::request_id::RequestId;
use self::sigv4::{Payload, Principal, SigningService};
use crate::http::{Body, full_body};
use crate::state::AppState;

/// What a handler returns: a response, or an error the router renders per protocol.
pub type HandlerResult = Result<Response<Body>, ApiError>;

/// The metrics label of the route a response came from, attached to the response's extensions
/// by [`handle`] and read by the HTTP layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLabel(pub &'static str);

/// Per-request facts handlers may need besides the request itself.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: RequestId,
    /// Who signed the request; `None` when authentication is disabled.
    pub principal: Option<Principal>,
}

/// Where a request goes, decided from the method, path and `X-Amz-Target` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Metrics,
    DataStreams,
    PutMedia,
    Video,
    NotFound,
    MethodNotAllowed(&'static str),
}

fn classify(method: &Method, path: &str, headers: &HeaderMap) -> Route {
    let readable = method == Method::GET || method == Method::HEAD;
    match path {
        "/health" if readable => return Route::Health,
        "/metrics" if readable => return Route::Metrics,
        "/health" | "/metrics" => return Route::MethodNotAllowed("GET, HEAD"),
        _ => {}
    }
    // JSON 1.1 clients post to the endpoint's path (normally `/`); the target decides.
    if headers.contains_key("x-amz-target") {
        return if method == Method::POST {
            Route::DataStreams
        } else {
            Route::MethodNotAllowed("POST")
        };
    }
    let single_segment = path
        .strip_prefix('/')
        .is_some_and(|rest| !rest.contains('/'));
    if !single_segment {
        return Route::NotFound;
    }
    if method != Method::POST {
        return Route::MethodNotAllowed("POST");
    }
    match path {
        // A JSON 1.1 request that forgot its target: the data streams family says so.
        "/" => Route::DataStreams,
        "/putMedia" => Route::PutMedia,
        _ => Route::Video,
    }
}

/// Routes one request and always produces a response (errors included), tagged with a request
/// id header and a [`RouteLabel`].
pub async fn handle(state: &Arc<AppState>, req: Request<Body>) -> Response<Body> {
    let started = Instant::now();
    let request_id = RequestId::generate();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = classify(&method, &path, req.headers());

    let (label, protocol, result) = match route {
        Route::Health => ("health", Protocol::RestJson, Ok(health(state))),
        Route::Metrics => ("metrics", Protocol::RestJson, Ok(metrics(state))),
        Route::DataStreams => {
            let target = req
                .headers()
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let label = data_streams::route_label(target.as_deref());
            // Decided before authentication, so that even a signature error reaches a CBOR
            // client as CBOR.
            let protocol = data_streams::wire::Encoding::from_content_type(
                req.headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
            )
            .protocol();
            let result = data_streams_request(state, &request_id, target.as_deref(), req).await;
            (label, protocol, result)
        }
        Route::Video => {
            let action = path.trim_start_matches('/');
            let label = video::route_label(action);
            let result = video_request(state, &request_id, action, req).await;
            (label, Protocol::RestJson, result)
        }
        Route::PutMedia => {
            let result = put_media_request(state, &request_id, req).await;
            ("video:putMedia", Protocol::RestJson, result)
        }
        Route::NotFound => (
            "not_found",
            Protocol::RestJson,
            Err(ApiError::new(
                ErrorKind::RouteNotFound,
                format!("No route for {method} {path}."),
            )),
        ),
        Route::MethodNotAllowed(_) => (
            "method_not_allowed",
            Protocol::RestJson,
            Err(ApiError::new(
                ErrorKind::MethodNotAllowed,
                format!("{method} is not allowed on {path}."),
            )),
        ),
    };

    let mut response = match result {
        Ok(response) => response,
        Err(err) => {
            if err.kind.is_server_fault() {
                error!(%request_id, %method, %path, kind = ?err.kind, "{}", err.message);
            } else {
                debug!(%request_id, %method, %path, kind = ?err.kind, "{}", err.message);
            }
            err.to_response(protocol, &request_id)
        }
    };
    if let Route::MethodNotAllowed(allow) = route {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    request_id.insert_headers(protocol, response.headers_mut());
    response.extensions_mut().insert(RouteLabel(label));
    debug!(
        %request_id, %method, %path, route = label, status = response.status().as_u16(),
        elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

/// A data streams request: authenticate (service `kinesis`), buffer the body, dispatch.
async fn data_streams_request(
    state: &AppState,
    request_id: &RequestId,
    target: Option<&str>,
    req: Request<Body>,
) -> HandlerResult {
    let (ctx, parts, body) =
        buffered_request(state, request_id, req, SigningService::Kinesis).await?;
    data_streams::dispatch(state, &ctx, target, &parts, &body).await
}

/// A video JSON request: authenticate (service `kinesisvideo`), buffer the body, dispatch.
async fn video_request(
    state: &AppState,
    request_id: &RequestId,
    action: &str,
    req: Request<Body>,
) -> HandlerResult {
    let (ctx, parts, body) =
        buffered_request(state, request_id, req, SigningService::KinesisVideo).await?;
    video::dispatch(state, &ctx, action, &parts, &body).await
}

/// PutMedia: authenticate from the headers alone and hand over the body still streaming.
async fn put_media_request(
    state: &AppState,
    request_id: &RequestId,
    req: Request<Body>,
) -> HandlerResult {
    let (parts, body) = req.into_parts();
    let principal = match state.verifier() {
        Some(verifier) => Some(verifier.verify(
            &parts,
            SigningService::KinesisVideo,
            Payload::Streaming,
            state.now_ms(),
        )?),
        None => None,
    };
    let ctx = RequestContext {
        request_id: request_id.clone(),
        principal,
    };
    video::put_media(state, &ctx, Request::from_parts(parts, body)).await
}

/// Authenticates a JSON API request and buffers its body (up to `max_request_bytes`).
async fn buffered_request(
    state: &AppState,
    request_id: &RequestId,
    req: Request<Body>,
    service: SigningService,
) -> Result<(RequestContext, Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    // Refuse a missing or bad signature before reading a body that may be large.
    let pending = match state.verifier() {
        Some(verifier) => Some(verifier.begin(&parts, service, state.now_ms())?),
        None => None,
    };
    let body = read_capped(body, &parts.headers, state.config().max_request_bytes).await?;
    let principal = match pending {
        Some(pending) => Some(pending.finish(&parts, Payload::Buffered(&body))?),
        None => None,
    };
    let ctx = RequestContext {
        request_id: request_id.clone(),
        principal,
    };
    Ok((ctx, parts, body))
}

/// Reads a whole body, refusing more than `max` bytes: up front from `Content-Length`, or as
/// soon as a chunked body crosses the limit.
async fn read_capped(body: Body, headers: &HeaderMap, max: u64) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("The request body exceeds the limit of {max} bytes."),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large());
    }
    // Read frame by frame rather than through `Limited`, whose boxed error type trips the
    // compiler's `Send` inference for the service future.
    // A body that arrives in one frame is returned as it is; a longer one is gathered into a
    // buffer sized from `Content-Length` up front (at most 16 MiB ahead of the data), so it is
    // not regrown and recopied along the way.
    let mut body = body;
    let mut first: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                ErrorKind::Serialization,
                format!("Could not read the request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if (first.as_ref().map_or(0, Bytes::len) + buf.len() + data.len()) as u64 > max {
            return Err(too_large());
        }
        if first.is_none() && buf.is_empty() {
            first = Some(data);
            continue;
        }
        if let Some(first) = first.take() {
            let expected = declared.unwrap_or(0).min(16 << 20) as usize;
            buf.reserve(expected.max(first.len() + data.len()));
            buf.extend_from_slice(&first);
        }
        buf.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// A JSON response with the given status, in `protocol`'s content type. For the JSON protocols
/// only; data streams responses go through [`data_streams::wire::response`], which also speaks
/// CBOR.
pub fn json_response(
    protocol: Protocol,
    status: StatusCode,
    value: &serde_json::Value,
) -> Response<Body> {
    let mut response = Response::new(full_body(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(protocol.content_type()),
    );
    response
}

/// `/health`: 200 while the store accepts writes, 503 otherwise (for load balancers and
/// orchestrators, which look only at the status).
fn health(state: &AppState) -> Response<Body> {
    if state.store().is_healthy() {
        json_response(
            Protocol::RestJson,
            StatusCode::OK,
            &serde_json::json!({ "status": "ok" }),
        )
    } else {
        json_response(
            Protocol::RestJson,
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "unavailable", "message": "the store is not accepting writes" }),
        )
    }
}

/// `/metrics`: Prometheus text format 0.0.4, HTTP metrics then storage metrics.
fn metrics(state: &AppState) -> Response<Body> {
    let mut out = String::with_capacity(4096);
    state.http_metrics().render_prometheus(&mut out);
    state.store().metrics().render_prometheus(&mut out);
    let mut response = Response::new(full_body(out));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &Method, path: &str, target: bool) -> Route {
        let mut headers = HeaderMap::new();
        if target {
            headers.insert(
                "x-amz-target",
                HeaderValue::from_static("Kinesis_20131202.ListStreams"),
            );
        }
        classify(method, path, &headers)
    }

    #[test]
    fn routes() {
        assert_eq!(route(&Method::GET, "/health", false), Route::Health);
        assert_eq!(route(&Method::HEAD, "/health", false), Route::Health);
        assert_eq!(route(&Method::GET, "/metrics", false), Route::Metrics);
        assert_eq!(
            route(&Method::POST, "/health", false),
            Route::MethodNotAllowed("GET, HEAD")
        );
        assert_eq!(route(&Method::POST, "/", true), Route::DataStreams);
        assert_eq!(route(&Method::POST, "/", false), Route::DataStreams);
        assert_eq!(
            route(&Method::GET, "/", true),
            Route::MethodNotAllowed("POST")
        );
        assert_eq!(route(&Method::POST, "/putMedia", false), Route::PutMedia);
        assert_eq!(route(&Method::POST, "/createStream", false), Route::Video);
        assert_eq!(route(&Method::POST, "/TagResource", false), Route::Video);
        assert_eq!(
            route(&Method::GET, "/createStream", false),
            Route::MethodNotAllowed("POST")
        );
        assert_eq!(
            route(&Method::GET, "/", false),
            Route::MethodNotAllowed("POST")
        );
        assert_eq!(route(&Method::POST, "/a/b", false), Route::NotFound);
        assert_eq!(
            route(&Method::GET, "/hls/v1/x.m3u8", false),
            Route::NotFound
        );
        // The target wins over the path: an endpoint configured with a path prefix still works.
        assert_eq!(route(&Method::POST, "/kinesis/", true), Route::DataStreams);
    }
}
