//! End-to-end tests of the server skeleton: a real server in-process on 127.0.0.1:0, spoken to
//! over real sockets with hyper's client and requests signed by the real AWS signer.

#![allow(clippy::unwrap_used)]

mod support;

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use aws_sigv4::http_request::{SessionTokenMode, SignableBody, SigningSettings};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use support::*;
use timeshard_server::api::sigv4::EMPTY_SHA256;

const LIST_STREAMS: &[(&str, &str)] = &[
    ("content-type", "application/x-amz-json-1.1"),
    ("x-amz-target", "Kinesis_20131202.ListStreams"),
];

/// Sends a ListStreams whose body is `body`, signed for `service` with `secret`.
async fn send_list_streams(
    addr: SocketAddr,
    body: &[u8],
    service: &str,
    secret: &str,
) -> Response<Bytes> {
    send(addr, signed(addr, "/", LIST_STREAMS, body, service, secret)).await
}

#[tokio::test]
async fn authentication_routing_health_and_metrics() {
    let (server, _dir) = start_server(true, |_| {}).await;
    let addr = server.local_addr();
    let mut request_ids = HashSet::new();

    // /health is not authenticated.
    let r = send(addr, get(addr, "/health")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json(&r), serde_json::json!({ "status": "ok" }));
    assert!(request_ids.insert(r.headers()["x-amzn-requestid"].clone()));

    // Data streams, unsigned: JSON 1.1 error, 400.
    let r = send(addr, unsigned(addr, "POST", "/", LIST_STREAMS, b"{}")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["content-type"], "application/x-amz-json-1.1");
    assert_error_type(&r, "MissingAuthenticationTokenException");
    assert_eq!(error_message(&r), "Missing Authentication Token");
    assert!(request_ids.insert(r.headers()["x-amzn-requestid"].clone()));

    // Signed: through authentication to the operation.
    let r = send_list_streams(addr, b"{}", "kinesis", SECRET).await;
    assert_list_streams_ok(&r);
    assert!(request_ids.insert(r.headers()["x-amzn-requestid"].clone()));

    // A made-up operation, signed.
    let bogus = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", "Kinesis_20131202.Frobnicate"),
    ];
    let r = send(addr, signed(addr, "/", &bogus, b"{}", "kinesis", SECRET)).await;
    assert_error_type(&r, "UnknownOperationException");
    let message = error_message(&r);
    assert!(message.starts_with("Unknown operation"), "{message}");

    // Wrong secret, and a signature for the wrong service.
    let r = send_list_streams(addr, b"{}", "kinesis", "wrong").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_error_type(&r, "InvalidSignatureException");
    let r = send_list_streams(addr, b"{}", "kinesisvideo", SECRET).await;
    assert_error_type(&r, "InvalidSignatureException");

    // Video, unsigned: rest-json error with the type in the headers, 403.
    let describe = [("content-type", "application/json")];
    let r = send(
        addr,
        unsigned(
            addr,
            "POST",
            "/describeStream",
            &describe,
            br#"{"StreamName":"s"}"#,
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.headers()["x-amzn-errortype"],
        "MissingAuthenticationTokenException"
    );
    assert_eq!(
        r.headers()["x-amz-errortype"],
        "MissingAuthenticationTokenException"
    );
    assert_eq!(
        r.headers()["x-amz-requestid"],
        r.headers()["x-amzn-requestid"]
    );
    assert_eq!(json(&r)["Message"], "Missing Authentication Token");

    // Video, signed: a missing stream is 404 ResourceNotFoundException (the C producer reads
    // only the status).
    let r = send(
        addr,
        signed(
            addr,
            "/describeStream",
            &describe,
            br#"{"StreamName":"s"}"#,
            "kinesisvideo",
            SECRET,
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["x-amzn-errortype"], "ResourceNotFoundException");
    assert_error_type(&r, "ResourceNotFoundException");

    // Outside the API families.
    let r = send(addr, get(addr, "/no/such/path")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_error_type(&r, "NotFoundException");
    let r = send(addr, get(addr, "/createStream")).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
    let r = send(addr, unsigned(addr, "POST", "/health", &[], b"")).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "GET, HEAD");

    // /metrics: Prometheus text with the counters of the requests above and the store's.
    let r = send(addr, get(addr, "/metrics")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = std::str::from_utf8(r.body()).unwrap();
    for line in [
        "timeshard_http_requests_total{route=\"health\",status=\"200\"} 1\n",
        // unsigned + wrong secret + wrong service; the signed one succeeded
        "timeshard_http_requests_total{route=\"kinesis:ListStreams\",status=\"400\"} 3\n",
        "timeshard_http_requests_total{route=\"kinesis:ListStreams\",status=\"200\"} 1\n",
        "timeshard_http_requests_total{route=\"kinesis:unknown\",status=\"400\"} 1\n",
        "timeshard_http_requests_total{route=\"video:describeStream\",status=\"403\"} 1\n",
        "timeshard_http_requests_total{route=\"video:describeStream\",status=\"404\"} 1\n",
        "timeshard_http_requests_total{route=\"not_found\",status=\"404\"} 1\n",
        "timeshard_http_requests_total{route=\"method_not_allowed\",status=\"405\"} 2\n",
        "# TYPE timeshard_storage_appends_total counter\n",
        "# TYPE timeshard_storage_fsync_seconds histogram\n",
        "# TYPE timeshard_http_open_connections gauge\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let counter = |name: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // Request bodies read: "{}" for the signed ListStreams, Frobnicate and wrong-secret
    // requests, plus the signed describeStream's 18 bytes. The unsigned requests and the one
    // scoped to the wrong service were refused before their bodies were read.
    assert_eq!(counter("timeshard_http_request_bytes_total"), 3 * 2 + 18);
    assert!(counter("timeshard_http_response_bytes_total") > 0);
    assert_eq!(server.state().http_metrics().requests("health", 200), 1);

    server.shutdown().await;
}

/// PutMedia signed the C producer's way, sent the way it sends it: a chunked body over
/// HTTP/1.1 with `connection` and `transfer-encoding` in SignedHeaders. The server must see
/// those headers exactly as sent and must not need the body to authenticate.
#[tokio::test]
async fn put_media_is_authenticated_from_headers_with_the_body_streaming() {
    let (server, _dir) = start_server(true, |_| {}).await;
    let addr = server.local_addr();

    let put_media = |secret: &'static str| {
        let (mut tx, body) = body_channel(4);
        let mut req = Request::post("/putMedia")
            .header("host", addr.to_string())
            .header("user-agent", "AWS-SDK-KVS-CPP-CLIENT/3.4.1")
            .header("x-amzn-stream-name", "cam-1")
            .header("x-amzn-fragment-timecode-type", "ABSOLUTE")
            .header("x-amzn-producer-start-timestamp", "1714564800.5")
            .header("x-amzn-fragment-acknowledgment-required", "1")
            .header("transfer-encoding", "chunked")
            .header("connection", "keep-alive")
            .body(body)
            .unwrap();
        let mut settings = SigningSettings::default();
        settings.excluded_headers = Some(vec![Cow::Borrowed("authorization")]);
        settings.session_token_mode = SessionTokenMode::Exclude;
        sign_now(
            &mut req,
            "kinesisvideo",
            secret,
            SignableBody::Precomputed(EMPTY_SHA256.to_owned()),
            settings,
        );
        let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
        assert!(
            auth.contains("connection;host;transfer-encoding;user-agent"),
            "{auth}"
        );
        req.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        // Some MKV bytes are on their way; the body never ends before the response comes.
        tx.try_send(hyper::body::Frame::data(Bytes::from_static(
            b"\x1a\x45\xdf\xa3",
        )))
        .unwrap();
        (tx, req)
    };

    for (secret, status, error_type) in [
        // Signed right: authenticated from the headers alone and handed to PutMedia, which
        // finds no stream `cam-1` (a 404, as the C producer expects).
        (SECRET, StatusCode::NOT_FOUND, "ResourceNotFoundException"),
        ("wrong", StatusCode::FORBIDDEN, "InvalidSignatureException"),
    ] {
        let (tx, req) = put_media(secret);
        let mut sender = connect_http1(addr).await;
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let response = collect(response).await;
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["x-amzn-errortype"], error_type);
        if status == StatusCode::NOT_FOUND {
            let message = error_message(&response);
            assert!(message.contains("cam-1"), "{message}");
        }
        drop(tx);
    }
    assert_eq!(
        server
            .state()
            .http_metrics()
            .requests("video:putMedia", 404),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn json_bodies_are_capped() {
    let (server, _dir) = start_server(true, |c| c.max_request_bytes = 1024).await;
    let addr = server.local_addr();
    let big = vec![b' '; 2000];

    // Declared by Content-Length: refused before reading.
    let r = send_list_streams(addr, &big, "kinesis", SECRET).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_error_type(&r, "RequestEntityTooLargeException");
    let message = error_message(&r);
    assert!(message.contains("1024"), "{message}");

    // Chunked, no length: refused once the limit is crossed.
    let (mut tx, body) = body_channel(8);
    let mut req = Request::post("/describeStream")
        .header("host", addr.to_string())
        .body(body)
        .unwrap();
    sign_now(
        &mut req,
        "kinesisvideo",
        SECRET,
        SignableBody::Bytes(&big),
        SigningSettings::default(),
    );
    tokio::spawn(async move {
        for chunk in big.chunks(500) {
            if tx.send_data(Bytes::copy_from_slice(chunk)).await.is_err() {
                break;
            }
        }
    });
    let r = send(addr, req).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        r.headers()["x-amzn-errortype"],
        "RequestEntityTooLargeException"
    );

    // At the limit: fine (whitespace around an empty body is an empty request).
    let ok = vec![b' '; 1024];
    let r = send_list_streams(addr, &ok, "kinesis", SECRET).await;
    assert_list_streams_ok(&r);
    server.shutdown().await;
}

#[tokio::test]
async fn without_credentials_requests_are_not_authenticated_and_h2c_works() {
    let (server, _dir) = start_server(false, |_| {}).await;
    let addr = server.local_addr();
    assert!(server.state().verifier().is_none());
    assert_eq!(server.public_url(), format!("http://{addr}"));

    let r = send(addr, unsigned(addr, "POST", "/", LIST_STREAMS, b"{}")).await;
    assert_list_streams_ok(&r);

    // A POST / without a target.
    let r = send(addr, unsigned(addr, "POST", "/", &[], b"{}")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let message = error_message(&r);
    assert!(message.contains("Missing X-Amz-Target"), "{message}");

    // HTTP/2 with prior knowledge (the Java SDK v2 and KCL speak HTTP/2).
    let req = Request::get(format!("http://{addr}/health"))
        .body(timeshard_server::http::empty_body())
        .unwrap();
    let r = send_h2(addr, req).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), http::Version::HTTP_2);
    let req = Request::post(format!("http://{addr}/"))
        .header("x-amz-target", "Kinesis_20131202.PutRecord")
        .body(timeshard_server::http::full_body("{}"))
        .unwrap();
    let r = send_h2(addr, req).await;
    // Over h2c to the operation itself, which wants a stream.
    assert_error_type(&r, "InvalidArgumentException");
    server.shutdown().await;
}

/// h2c requests carry the host in `:authority`, not a `host` header; signatures still verify.
#[tokio::test]
async fn signed_h2c_request_uses_the_authority_as_host() {
    let (server, _dir) = start_server(true, |_| {}).await;
    let addr = server.local_addr();
    let mut req = Request::post(format!("http://{addr}/"))
        .header("host", addr.to_string())
        .header("x-amz-target", "Kinesis_20131202.ListStreams")
        .body(timeshard_server::http::full_body("{}"))
        .unwrap();
    sign_now(
        &mut req,
        "kinesis",
        SECRET,
        SignableBody::Bytes(b"{}"),
        SigningSettings::default(),
    );
    // hyper's HTTP/2 client turns the URI authority into `:authority`; drop the header copy.
    req.headers_mut().remove("host");
    let r = send_h2(addr, req).await;
    assert_list_streams_ok(&r);
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish_then_closes_the_store() {
    let (server, _dir) = start_server(false, |_| {}).await;
    let addr = server.local_addr();

    // A request whose body is still arriving when shutdown starts.
    let (mut tx, body) = body_channel(4);
    let req = Request::post("/")
        .header("host", addr.to_string())
        .header("x-amz-target", "Kinesis_20131202.ListStreams")
        .body(body)
        .unwrap();
    let mut sender = connect_http1(addr).await;
    tx.send_data(Bytes::from_static(b"{")).await.unwrap();
    let in_flight =
        tokio::spawn(async move { collect(sender.send_request(req).await.unwrap()).await });
    // Let the server start reading the request.
    while server.state().http_metrics().bytes_in() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let state = server.state().clone();
    let shutdown = tokio::spawn(server.shutdown());
    // The listener closes: new connections are refused.
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener still accepts during shutdown");
    assert!(
        !shutdown.is_finished(),
        "shutdown did not wait for the in-flight request"
    );

    // The in-flight request completes normally.
    tx.send_data(Bytes::from_static(b"}")).await.unwrap();
    drop(tx);
    let response = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_list_streams_ok(&response);
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !state.store().is_healthy(),
        "the store is closed after shutdown"
    );
}

#[tokio::test]
async fn shutdown_is_bounded_by_the_grace_period() {
    let (server, _dir) =
        start_server(false, |c| c.shutdown_grace = Duration::from_millis(200)).await;
    let addr = server.local_addr();
    // A request that never finishes sending its body.
    let (tx, body) = body_channel(4);
    let req = Request::post("/")
        .header("host", addr.to_string())
        .body(body)
        .unwrap();
    let mut sender = connect_http1(addr).await;
    let _in_flight = tokio::spawn(async move { sender.send_request(req).await });
    while server.state().http_metrics().open_connections() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let state = server.state().clone();
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .unwrap();
    assert!(!state.store().is_healthy());
    assert_eq!(state.http_metrics().open_connections(), 0);
    drop(tx);
}

#[tokio::test]
async fn refuses_to_start_on_a_public_address_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let config = timeshard_server::Config {
        data_dir: dir.path().to_path_buf(),
        listen: "0.0.0.0:0".parse().unwrap(),
        ..Default::default()
    };
    let err = timeshard_server::start(config).await.unwrap_err();
    assert!(matches!(
        err,
        timeshard_server::StartError::Config(
            timeshard_server::config::ConfigError::UnauthenticatedNonLoopback { .. }
        )
    ));
}
