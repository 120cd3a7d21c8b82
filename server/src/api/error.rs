//! The server's one error vocabulary, and the two tables that turn it into wire errors.
//!
//! Handlers and domain code speak only [`ErrorKind`]: "not found", "invalid argument", ... The
//! AWS exception names and HTTP statuses appear exactly once per wire protocol, in
//! [`aws_json_11`] (Kinesis Data Streams, JSON 1.1 and CBOR 1.1 alike) and [`rest_json`] (Kinesis
//! Video Streams), so a kind cannot drift into two different names inside one protocol, and
//! adding a kind is a compile error until both tables say what it looks like on the wire.
//!
//! The two protocols disagree in ways real clients depend on (see
//! `shared/reference/aws-protocol.md` sections D and E.1):
//! - Data streams (JSON 1.1) models declare no status for their exceptions, so every client error
//!   is 400 and only `InternalFailureException` is 500; the code is read from `__type`. A client
//!   that sent CBOR (`application/x-amz-cbor-1.1`, the AWS Java SDKs' default) gets the same
//!   body as a CBOR map.
//! - Video (rest-json) declares 404 for ResourceNotFound and 401 for NotAuthorized, and the C
//!   producer reads *only* the status (a missing stream must be 404, or it never creates it);
//!   botocore reads the code from the `x-amzn-ErrorType` header, not from `__type`.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::api::request_id::RequestId;
use crate::http::{Body, full_body};

/// What went wrong, independent of any wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    // ---- resource state ----
    /// The named stream, shard, consumer or fragment does not exist.
    NotFound,
    /// A request field is out of range or inconsistent.
    InvalidArgument,
    /// A request field violates a constraint of the API model (length, pattern, range) that
    /// newer Kinesis operations report as `ValidationException` rather than InvalidArgument.
    Validation,
    /// The resource exists but is in a state that forbids the call (e.g. still CREATING).
    ResourceInUse,
    /// An account-wide limit on resources (streams, shards, consumers) is reached.
    LimitExceeded,
    /// Too many tags on one resource.
    TagsLimitExceeded,
    /// The `CurrentVersion` given does not match the stream's version.
    VersionMismatch,
    /// An ARN or similar identifier is malformed.
    InvalidResourceFormat,
    /// Data was requested from a stream that keeps none (retention 0).
    NoDataRetention,
    /// A shard iterator is older than its 5-minute lifetime.
    ExpiredIterator,
    /// A pagination token is older than its lifetime.
    ExpiredNextToken,
    // ---- throttling ----
    /// Per-shard write or read throughput exceeded.
    ProvisionedThroughputExceeded,
    /// Call-rate limit exceeded.
    ClientLimitExceeded,
    /// Too many concurrent connections for one stream (PutMedia, GetMedia).
    ConnectionLimitExceeded,
    // ---- authorization ----
    /// The caller is known but may not perform this call.
    NotAuthorized,
    /// The caller is known but the resource policy denies access.
    AccessDenied,
    // ---- authentication (SigV4) ----
    /// No `Authorization` header and no presigned query parameters.
    MissingAuthenticationToken,
    /// The `Authorization` header (or presigned query) is malformed or incomplete.
    IncompleteSignature,
    /// The access key id is not one the server knows.
    UnrecognizedClient,
    /// The signature does not match the one the server computed.
    InvalidSignature,
    /// `X-Amz-Date` is further from the server's clock than the allowed skew, or a presigned
    /// request is past its expiry.
    SignatureExpired,
    // ---- protocol ----
    /// The operation (X-Amz-Target or `/<action>` path) is unknown or not implemented.
    UnknownOperation,
    /// The request body is not valid JSON of the expected shape.
    Serialization,
    /// The request body is larger than the server accepts for this API.
    PayloadTooLarge,
    /// The path is not one the server serves (outside any API family).
    RouteNotFound,
    /// The path exists but not for this HTTP method.
    MethodNotAllowed,
    // ---- server ----
    /// A bug or an I/O failure on the server side.
    Internal,
    /// The server is shutting down or its storage is unavailable.
    ServiceUnavailable,
}

impl ErrorKind {
    /// Every kind, for exhaustive table tests.
    pub const ALL: [ErrorKind; 28] = [
        ErrorKind::NotFound,
        ErrorKind::InvalidArgument,
        ErrorKind::Validation,
        ErrorKind::ResourceInUse,
        ErrorKind::LimitExceeded,
        ErrorKind::TagsLimitExceeded,
        ErrorKind::VersionMismatch,
        ErrorKind::InvalidResourceFormat,
        ErrorKind::NoDataRetention,
        ErrorKind::ExpiredIterator,
        ErrorKind::ExpiredNextToken,
        ErrorKind::ProvisionedThroughputExceeded,
        ErrorKind::ClientLimitExceeded,
        ErrorKind::ConnectionLimitExceeded,
        ErrorKind::NotAuthorized,
        ErrorKind::AccessDenied,
        ErrorKind::MissingAuthenticationToken,
        ErrorKind::IncompleteSignature,
        ErrorKind::UnrecognizedClient,
        ErrorKind::InvalidSignature,
        ErrorKind::SignatureExpired,
        ErrorKind::UnknownOperation,
        ErrorKind::Serialization,
        ErrorKind::PayloadTooLarge,
        ErrorKind::RouteNotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::Internal,
        ErrorKind::ServiceUnavailable,
    ];

    /// True for kinds that are the server's fault (logged at error level, status 5xx).
    pub fn is_server_fault(self) -> bool {
        matches!(self, ErrorKind::Internal | ErrorKind::ServiceUnavailable)
    }
}

/// An error a request ends with: a kind and a message for the client.
///
/// The message is sent to the client verbatim, so it must not leak secrets; it should say what
/// was wrong with the request precisely enough to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::NotFound, message)
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::InvalidArgument, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Internal, message)
    }

    /// Renders this error as `protocol` prescribes, tagged with `request_id`.
    pub fn to_response(&self, protocol: Protocol, request_id: &RequestId) -> Response<Body> {
        protocol.error_response(self, request_id)
    }
}

/// The wire protocols the server speaks, each with its own error table and error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Kinesis Data Streams: `POST /` with `X-Amz-Target`, `application/x-amz-json-1.1`.
    AwsJson11,
    /// Kinesis Data Streams requested with `Content-Type: application/x-amz-cbor-1.1`: the JSON
    /// 1.1 table and error shape, the body a CBOR map instead of a JSON object.
    AwsCbor11,
    /// Kinesis Video Streams (control plane, media, archived media): `POST /<action>`.
    /// Also used for requests that belong to no API family (unknown paths, wrong methods),
    /// because its error carries the type in a header *and* the body, which any client reads.
    RestJson,
}

/// The data streams (JSON 1.1 and CBOR 1.1) table: kind -> (`__type`, HTTP status).
///
/// Every client error is 400 because the Kinesis model declares no status for its exceptions
/// (kinesalite does the same); `InternalFailureException` is the only modelled fault (500).
/// Exceptions the Kinesis model lacks map to the nearest one it has, so SDKs that generate types
/// from the model still recognise the code.
pub fn aws_json_11(kind: ErrorKind) -> (&'static str, StatusCode) {
    use ErrorKind as K;
    const BAD: StatusCode = StatusCode::BAD_REQUEST;
    match kind {
        K::NotFound => ("ResourceNotFoundException", BAD),
        K::InvalidArgument => ("InvalidArgumentException", BAD),
        K::Validation => ("ValidationException", BAD),
        K::ResourceInUse => ("ResourceInUseException", BAD),
        K::LimitExceeded => ("LimitExceededException", BAD),
        // Kinesis answers too many tags with InvalidArgumentException ("exceeds the limit").
        K::TagsLimitExceeded => ("InvalidArgumentException", BAD),
        // Kinesis has no stream versions; a stale precondition is an invalid argument.
        K::VersionMismatch => ("InvalidArgumentException", BAD),
        K::InvalidResourceFormat => ("InvalidArgumentException", BAD),
        K::NoDataRetention => ("InvalidArgumentException", BAD),
        K::ExpiredIterator => ("ExpiredIteratorException", BAD),
        K::ExpiredNextToken => ("ExpiredNextTokenException", BAD),
        K::ProvisionedThroughputExceeded => ("ProvisionedThroughputExceededException", BAD),
        K::ClientLimitExceeded => ("LimitExceededException", BAD),
        K::ConnectionLimitExceeded => ("LimitExceededException", BAD),
        K::NotAuthorized => ("AccessDeniedException", BAD),
        K::AccessDenied => ("AccessDeniedException", BAD),
        // The protocol errors below are the ones kinesalite (and the real service) send.
        K::MissingAuthenticationToken => ("MissingAuthenticationTokenException", BAD),
        K::IncompleteSignature => ("IncompleteSignatureException", BAD),
        K::UnrecognizedClient => ("UnrecognizedClientException", BAD),
        K::InvalidSignature => ("InvalidSignatureException", BAD),
        // AWS reports a skewed or expired signature as InvalidSignatureException with the
        // message "Signature expired: ...".
        K::SignatureExpired => ("InvalidSignatureException", BAD),
        K::UnknownOperation => ("UnknownOperationException", BAD),
        K::Serialization => ("SerializationException", BAD),
        // The one client error that is not 400: an oversized body is refused before it is read,
        // and 413 tells generic HTTP tooling why; SDKs still read the code from `__type`.
        K::PayloadTooLarge => (
            "RequestEntityTooLargeException",
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        // JSON 1.1 knows only `POST /` plus a target; anything else is an unknown operation.
        K::RouteNotFound => ("UnknownOperationException", BAD),
        K::MethodNotAllowed => ("UnknownOperationException", BAD),
        K::Internal => (
            "InternalFailureException",
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        K::ServiceUnavailable => (
            "ServiceUnavailableException",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    }
}

/// The video (rest-json) table: kind -> (`x-amzn-ErrorType`, HTTP status).
///
/// Statuses follow the models' `error.httpStatusCode`: ResourceNotFound 404, NotAuthorized and
/// AccessDenied 401, other modelled exceptions 400. Authentication failures follow the KVS
/// developer guide's common errors (MissingAuthenticationToken and InvalidClientTokenId 403,
/// IncompleteSignature 400); a bad or expired signature is 403 as on AWS's rest-json front end.
/// 401 and 403 are what the C producer treats as "not authorized, do not retry".
pub fn rest_json(kind: ErrorKind) -> (&'static str, StatusCode) {
    use ErrorKind as K;
    const BAD: StatusCode = StatusCode::BAD_REQUEST;
    const FORBIDDEN: StatusCode = StatusCode::FORBIDDEN;
    match kind {
        K::NotFound => ("ResourceNotFoundException", StatusCode::NOT_FOUND),
        K::InvalidArgument => ("InvalidArgumentException", BAD),
        // The video models have no ValidationException; their constraint errors are this.
        K::Validation => ("InvalidArgumentException", BAD),
        K::ResourceInUse => ("ResourceInUseException", BAD),
        K::LimitExceeded => ("AccountStreamLimitExceededException", BAD),
        K::TagsLimitExceeded => ("TagsPerResourceExceededLimitException", BAD),
        K::VersionMismatch => ("VersionMismatchException", BAD),
        K::InvalidResourceFormat => ("InvalidResourceFormatException", BAD),
        K::NoDataRetention => ("NoDataRetentionException", BAD),
        // Video has no iterators; archived media reports a stale token as an invalid argument.
        K::ExpiredIterator => ("InvalidArgumentException", BAD),
        K::ExpiredNextToken => ("InvalidArgumentException", BAD),
        K::ProvisionedThroughputExceeded => ("ClientLimitExceededException", BAD),
        K::ClientLimitExceeded => ("ClientLimitExceededException", BAD),
        K::ConnectionLimitExceeded => ("ConnectionLimitExceededException", BAD),
        K::NotAuthorized => ("NotAuthorizedException", StatusCode::UNAUTHORIZED),
        K::AccessDenied => ("AccessDeniedException", StatusCode::UNAUTHORIZED),
        K::MissingAuthenticationToken => ("MissingAuthenticationTokenException", FORBIDDEN),
        K::IncompleteSignature => ("IncompleteSignatureException", BAD),
        K::UnrecognizedClient => ("InvalidClientTokenIdException", FORBIDDEN),
        K::InvalidSignature => ("InvalidSignatureException", FORBIDDEN),
        K::SignatureExpired => ("InvalidSignatureException", FORBIDDEN),
        // An unknown rest-json path is 404 UnknownOperationException, as AWS's rest-json
        // services answer it. The C producer reads only the status; 404 means "no such thing".
        K::UnknownOperation => ("UnknownOperationException", StatusCode::NOT_FOUND),
        K::Serialization => ("SerializationException", BAD),
        K::PayloadTooLarge => (
            "RequestEntityTooLargeException",
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        K::RouteNotFound => ("NotFoundException", StatusCode::NOT_FOUND),
        K::MethodNotAllowed => ("MethodNotAllowedException", StatusCode::METHOD_NOT_ALLOWED),
        K::Internal => ("InternalFailure", StatusCode::INTERNAL_SERVER_ERROR),
        K::ServiceUnavailable => ("ServiceUnavailable", StatusCode::SERVICE_UNAVAILABLE),
    }
}

impl Protocol {
    /// The (name, status) this protocol's table gives `kind`.
    pub fn lookup(self, kind: ErrorKind) -> (&'static str, StatusCode) {
        match self {
            Protocol::AwsJson11 | Protocol::AwsCbor11 => aws_json_11(kind),
            Protocol::RestJson => rest_json(kind),
        }
    }

    /// The content type of this protocol's bodies.
    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::AwsJson11 => "application/x-amz-json-1.1",
            Protocol::AwsCbor11 => "application/x-amz-cbor-1.1",
            Protocol::RestJson => "application/json",
        }
    }

    /// Builds the full error response: status, type header(s), request id header(s), body.
    pub fn error_response(self, err: &ApiError, request_id: &RequestId) -> Response<Body> {
        let mut response = self.error_response_without_id(err);
        request_id.insert_headers(self, response.headers_mut());
        response
    }

    /// [`Self::error_response`] without the request id headers, for code that has no request
    /// id at hand (the router adds them to every response it returns).
    pub fn error_response_without_id(self, err: &ApiError) -> Response<Body> {
        let (name, status) = self.lookup(err.kind);
        let bytes = match self {
            Protocol::AwsJson11 => Bytes::from(
                serde_json::json!({ "__type": name, "message": err.message }).to_string(),
            ),
            Protocol::AwsCbor11 => cbor_error_body(name, &err.message),
            // botocore reads `message` or `Message`; some SDKs only the capitalised one.
            Protocol::RestJson => Bytes::from(
                serde_json::json!({
                    "__type": name,
                    "message": err.message,
                    "Message": err.message,
                })
                .to_string(),
            ),
        };
        let mut response = Response::new(full_body(bytes));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type()),
        );
        headers.insert("x-amzn-errortype", HeaderValue::from_static(name));
        if self == Protocol::RestJson {
            // The KVS developer guide spells the media-API headers without the "n"; send both.
            headers.insert("x-amz-errortype", HeaderValue::from_static(name));
        }
        response
    }
}

/// `{"__type": name, "message": message}` as a CBOR map, as the AWS Java SDKs' CBOR protocol
/// reads errors.
fn cbor_error_body(name: &str, message: &str) -> Bytes {
    #[derive(serde::Serialize)]
    struct ErrorBody<'a> {
        #[serde(rename = "__type")]
        kind: &'a str,
        message: &'a str,
    }
    let mut out = Vec::new();
    // Writing two text strings into a Vec cannot fail; should it, an empty map is still CBOR.
    if ciborium::ser::into_writer(
        &ErrorBody {
            kind: name,
            message,
        },
        &mut out,
    )
    .is_err()
    {
        return Bytes::from_static(&[0xa0]);
    }
    Bytes::from(out)
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::AwsJson11 => "awsJson1_1",
            Protocol::AwsCbor11 => "awsCbor1_1",
            Protocol::RestJson => "restJson1",
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use http_body_util::BodyExt;

    /// Asserts that `table` gives each kind in `expected` its (name, status).
    #[track_caller]
    fn assert_table(
        table: fn(ErrorKind) -> (&'static str, StatusCode),
        expected: &[(ErrorKind, &str, u16)],
    ) {
        for &(kind, name, status) in expected {
            let (actual_name, actual_status) = table(kind);
            assert_eq!(
                (actual_name, actual_status.as_u16()),
                (name, status),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn data_streams_table_is_400_except_faults() {
        for kind in ErrorKind::ALL {
            let (name, status) = aws_json_11(kind);
            assert!(name.ends_with("Exception"), "{kind:?} -> {name}");
            match kind {
                ErrorKind::Internal => {
                    assert_eq!((name, status.as_u16()), ("InternalFailureException", 500))
                }
                ErrorKind::ServiceUnavailable => assert_eq!(status.as_u16(), 503),
                ErrorKind::PayloadTooLarge => assert_eq!(status.as_u16(), 413),
                _ => assert_eq!(status.as_u16(), 400, "{kind:?}"),
            }
        }
        #[rustfmt::skip]
        let expected = [
            (ErrorKind::NotFound,                      "ResourceNotFoundException",              400),
            (ErrorKind::InvalidArgument,               "InvalidArgumentException",               400),
            (ErrorKind::Validation,                    "ValidationException",                    400),
            (ErrorKind::ExpiredIterator,               "ExpiredIteratorException",               400),
            (ErrorKind::ExpiredNextToken,              "ExpiredNextTokenException",              400),
            (ErrorKind::ProvisionedThroughputExceeded, "ProvisionedThroughputExceededException", 400),
            (ErrorKind::UnknownOperation,              "UnknownOperationException",              400),
            (ErrorKind::MissingAuthenticationToken,    "MissingAuthenticationTokenException",    400),
            (ErrorKind::UnrecognizedClient,            "UnrecognizedClientException",            400),
            (ErrorKind::SignatureExpired,              "InvalidSignatureException",              400),
        ];
        assert_table(aws_json_11, &expected);
        // CBOR 1.1 shares the JSON 1.1 table.
        for kind in ErrorKind::ALL {
            assert_eq!(
                Protocol::AwsCbor11.lookup(kind),
                aws_json_11(kind),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn video_table_statuses_follow_the_models() {
        #[rustfmt::skip]
        let expected = [
            (ErrorKind::NotFound,                   "ResourceNotFoundException",           404),
            (ErrorKind::InvalidArgument,            "InvalidArgumentException",            400),
            (ErrorKind::Validation,                 "InvalidArgumentException",            400),
            (ErrorKind::NotAuthorized,              "NotAuthorizedException",              401),
            (ErrorKind::AccessDenied,               "AccessDeniedException",               401),
            (ErrorKind::MissingAuthenticationToken, "MissingAuthenticationTokenException", 403),
            (ErrorKind::UnrecognizedClient,         "InvalidClientTokenIdException",       403),
            (ErrorKind::InvalidSignature,           "InvalidSignatureException",           403),
            (ErrorKind::IncompleteSignature,        "IncompleteSignatureException",        400),
            (ErrorKind::UnknownOperation,           "UnknownOperationException",           404),
            (ErrorKind::Internal,                   "InternalFailure",                     500),
            (ErrorKind::VersionMismatch,            "VersionMismatchException",            400),
            (ErrorKind::ConnectionLimitExceeded,    "ConnectionLimitExceededException",    400),
            (ErrorKind::ClientLimitExceeded,        "ClientLimitExceededException",        400),
        ];
        assert_table(rest_json, &expected);
        // Every kind is a 4xx or 5xx, and 5xx exactly for the server's faults.
        for kind in ErrorKind::ALL {
            let (name, status) = rest_json(kind);
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{kind:?}"
            );
            assert_eq!(
                status.is_server_error(),
                kind.is_server_fault(),
                "{kind:?} -> {name}"
            );
        }
    }

    async fn body_json(resp: Response<Body>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn data_streams_error_response_shape() {
        let id = RequestId::generate();
        let err = ApiError::not_found("Stream s under account 000000000000 not found.");
        let resp = err.to_response(Protocol::AwsJson11, &id);
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/x-amz-json-1.1");
        assert_eq!(h["x-amzn-errortype"], "ResourceNotFoundException");
        assert_eq!(h["x-amzn-requestid"], id.as_str());
        assert!(h.get("x-amz-errortype").is_none());
        let body = body_json(resp).await;
        assert_eq!(
            body,
            serde_json::json!({
                "__type": "ResourceNotFoundException",
                "message": "Stream s under account 000000000000 not found."
            })
        );
    }

    #[tokio::test]
    async fn data_streams_cbor_error_response_shape() {
        let id = RequestId::generate();
        let err = ApiError::new(ErrorKind::Validation, "bad \"name\"\n");
        let resp = err.to_response(Protocol::AwsCbor11, &id);
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/x-amz-cbor-1.1");
        assert_eq!(h["x-amzn-errortype"], "ValidationException");
        assert_eq!(h["x-amzn-requestid"], id.as_str());
        assert!(h.get("x-amz-errortype").is_none());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body: ciborium::Value = ciborium::de::from_reader(&bytes[..]).unwrap();
        use ciborium::Value::Text;
        assert_eq!(
            body,
            ciborium::Value::Map(vec![
                (Text("__type".into()), Text("ValidationException".into())),
                (Text("message".into()), Text("bad \"name\"\n".into())),
            ])
        );
        // The exact bytes: a definite map of two text pairs.
        assert_eq!(&bytes[..2], &[0xa2, 0x66]);
        assert_eq!(&bytes[2..8], b"__type");
    }

    #[tokio::test]
    async fn video_error_response_shape() {
        let id = RequestId::generate();
        let err = ApiError::not_found("The requested stream is not found or not active.");
        let resp = err.to_response(Protocol::RestJson, &id);
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-amzn-errortype"], "ResourceNotFoundException");
        assert_eq!(h["x-amz-errortype"], "ResourceNotFoundException");
        assert_eq!(h["x-amzn-requestid"], id.as_str());
        assert_eq!(h["x-amz-requestid"], id.as_str());
        let body = body_json(resp).await;
        assert_eq!(body["__type"], "ResourceNotFoundException");
        assert_eq!(
            body["message"],
            "The requested stream is not found or not active."
        );
        assert_eq!(body["Message"], body["message"]);
    }

    #[tokio::test]
    async fn message_is_escaped_as_json() {
        let id = RequestId::generate();
        let err = ApiError::invalid_argument("bad \"name\"\n\u{0}");
        let body = body_json(err.to_response(Protocol::AwsJson11, &id)).await;
        assert_eq!(body["message"], "bad \"name\"\n\u{0}");
    }
}
