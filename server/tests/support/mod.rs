//! Shared helpers of the server's integration tests: start a real server in-process on
//! 127.0.0.1:0, a minimal HTTP client (hyper's own, HTTP/1.1 or h2c), and signing with the
//! real AWS signer.

#![allow(dead_code, clippy::unwrap_used)]

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use http_body_util::channel::{Channel, Sender};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use timeshard_server::config::{Config, Credential};
use timeshard_server::http::{BoxError, full_body};
use timeshard_server::{Body, RunningServer};
use timeshard_storage::options::SyncPolicy;

pub const AKID: &str = "AKIDTIMESHARDE2E";
pub const SECRET: &str = "e2e-secret-access-key";

/// Starts a server on 127.0.0.1:0 in a fresh temporary data directory.
pub async fn start_server(
    with_credentials: bool,
    tweak: impl FnOnce(&mut Config),
) -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        sync: SyncPolicy::Never,
        ..Config::default()
    };
    if with_credentials {
        config.credentials = vec![Credential::new(AKID, SECRET)];
    }
    tweak(&mut config);
    let server = timeshard_server::start(config).await.unwrap();
    (server, dir)
}

/// Opens a fresh HTTP/1.1 connection to `addr`, driven by a background task.
pub async fn connect_http1(addr: SocketAddr) -> SendRequest<Body> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends one request on a fresh HTTP/1.1 connection and reads the whole response.
pub async fn send(addr: SocketAddr, req: Request<Body>) -> Response<Bytes> {
    let response = connect_http1(addr).await.send_request(req).await.unwrap();
    collect(response).await
}

/// Sends one request on a fresh h2c (HTTP/2 prior knowledge) connection.
pub async fn send_h2(addr: SocketAddr, req: Request<Body>) -> Response<Bytes> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(req).await.unwrap();
    collect(response).await
}

pub async fn collect(response: Response<hyper::body::Incoming>) -> Response<Bytes> {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

pub fn json(response: &Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(response.body()).unwrap_or_else(|e| panic!("{e}: {:?}", response.body()))
}

/// Asserts that `response` has a JSON body whose `__type` is `expected`; shows the body if not.
#[track_caller]
pub fn assert_error_type(response: &Response<Bytes>, expected: &str) {
    let body = json(response);
    assert_eq!(body["__type"], expected, "{body}");
}

/// A successful ListStreams answer: the request got through authentication and routing.
#[track_caller]
pub fn assert_list_streams_ok(response: &Response<Bytes>) {
    let body = json(response);
    assert_eq!(response.status(), http::StatusCode::OK, "{body}");
    assert!(body["StreamNames"].is_array(), "{body}");
}

/// The `message` string of an error response's JSON body.
#[track_caller]
pub fn error_message(response: &Response<Bytes>) -> String {
    let body = json(response);
    match body["message"].as_str() {
        Some(message) => message.to_owned(),
        None => panic!("no message in {body}"),
    }
}

/// A streaming request body and the sender that feeds it, `capacity` frames buffered.
pub fn body_channel(capacity: usize) -> (Sender<Bytes, BoxError>, Body) {
    let (tx, body) = Channel::<Bytes, BoxError>::new(capacity);
    (tx, body.boxed_unsync())
}

pub fn get(addr: SocketAddr, path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", addr.to_string())
        .body(full_body(Bytes::new()))
        .unwrap()
}

/// An unsigned request with the given headers and body.
pub fn unsigned(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder
        .body(full_body(Bytes::copy_from_slice(body)))
        .unwrap()
}

/// Signs `req` (whose body is `body_for_signing`) now, with aws-sigv4.
pub fn sign_now<B>(
    req: &mut Request<B>,
    service: &str,
    secret: &str,
    body_for_signing: SignableBody<'_>,
    settings: SigningSettings,
) {
    let identity: Identity = Credentials::new(AKID, secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(service)
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let host = req.headers()["host"].to_str().unwrap().to_owned();
    let uri = format!("http://{host}{}", req.uri().path_and_query().unwrap());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let signable = SignableRequest::new(
        req.method().as_str(),
        Cow::Owned(uri),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        body_for_signing,
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    instructions.apply_to_request_http1x(req);
}

/// A signed JSON request (payload hash = SHA-256 of `body`).
pub fn signed(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    service: &str,
    secret: &str,
) -> Request<Body> {
    let mut req = unsigned(addr, "POST", path, headers, body);
    sign_now(
        &mut req,
        service,
        secret,
        SignableBody::Bytes(body),
        SigningSettings::default(),
    );
    req
}
