//! Data streams errors come back in the encoding the request used: a client that sent
//! `application/x-amz-cbor-1.1` (the AWS Java SDKs' default) gets a CBOR error body, whether the
//! request failed authentication, before dispatch, or in dispatch.

#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::{Response, StatusCode};
use support::*;

const CBOR: &str = "application/x-amz-cbor-1.1";

/// The `(__type, message)` of a CBOR error body.
fn cbor_error(response: &Response<Bytes>) -> (String, String) {
    assert_eq!(response.headers()["content-type"], CBOR);
    let body: ciborium::Value = ciborium::de::from_reader(&response.body()[..]).unwrap();
    let field = |name: &str| {
        body.as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_text() == Some(name))
            .and_then(|(_, v)| v.as_text())
            .unwrap()
            .to_owned()
    };
    let kind = field("__type");
    assert_eq!(response.headers()["x-amzn-errortype"], kind.as_str());
    (kind, field("message"))
}

#[tokio::test]
async fn cbor_requests_get_cbor_errors() {
    let (server, _dir) = start_server(true, |_| {}).await;
    let addr = server.local_addr();
    let headers = |op: &'static str| [("content-type", CBOR), ("x-amz-target", op)];
    let empty_map = [0xa0];

    // Refused by authentication, before the body is read.
    let r = send(
        addr,
        unsigned(
            addr,
            "POST",
            "/",
            &headers("Kinesis_20131202.ListStreams"),
            &empty_map,
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        cbor_error(&r).0,
        "MissingAuthenticationTokenException".to_owned()
    );
    assert!(r.headers().contains_key("x-amzn-requestid"));

    // Signed with the wrong secret.
    let r = send(
        addr,
        signed(
            addr,
            "/",
            &headers("Kinesis_20131202.ListStreams"),
            &empty_map,
            "kinesis",
            "not-the-secret",
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(cbor_error(&r).0, "InvalidSignatureException");

    // Authenticated, then refused by dispatch.
    let r = send(
        addr,
        signed(
            addr,
            "/",
            &headers("Kinesis_20131202.Frobnicate"),
            &empty_map,
            "kinesis",
            SECRET,
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (kind, message) = cbor_error(&r);
    assert_eq!(kind, "UnknownOperationException");
    assert!(message.contains("Frobnicate"), "{message}");

    // The same request in JSON still gets JSON.
    let r = send(
        addr,
        signed(
            addr,
            "/",
            &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", "Kinesis_20131202.Frobnicate"),
            ],
            b"{}",
            "kinesis",
            SECRET,
        ),
    )
    .await;
    assert_eq!(r.headers()["content-type"], "application/x-amz-json-1.1");
    assert_error_type(&r, "UnknownOperationException");

    server.shutdown().await;
}
