//! timeshard-tests: end-to-end tests that drive the real server with clients we did not write
//! (the official AWS SDK for Rust, boto3), see `tests/`.
//!
//! This library holds what those tests share, and nothing else:
//!
//! - [`TestServer`] starts the real server in-process on `127.0.0.1:0` with a temporary data
//!   directory and one static key pair ([`ACCESS_KEY_ID`], [`SECRET_ACCESS_KEY`]), so every
//!   request the SDK sends is SigV4-signed and verified. Each test starts its own server, so
//!   tests never see each other's streams.
//! - [`TestServer::kinesis_client`] builds an `aws-sdk-kinesis` client pointed at it: endpoint
//!   `http://<addr>`, region `us-east-1`, static credentials, plain HTTP (no TLS stack is
//!   compiled at all), the SDK's default retry policy (what real users get) and an operation
//!   timeout so a hung request fails the test instead of hanging it.
//! - [`TestServer::kinesis_video_client`] (control plane), [`kinesis_video_media_client`] and
//!   [`kinesis_video_archived_media_client`] build the Kinesis Video Streams SDK clients the same
//!   way; the media ones take the endpoint GetDataEndpoint returned, as applications do.
//! - [`raw_post`] sends one hand-written HTTP/1.1 request over a bare TCP socket, for what an
//!   SDK cannot send (malformed bodies) or hides (the exact status line).
//! - [`wait_for_stream_active`] and [`wait_for_stream_deleted`] poll DescribeStreamSummary every
//!   few milliseconds: the SDK's own `stream_exists` waiter sleeps at least 10 s between polls,
//!   too slow to use everywhere (one test does use it).
//!
//! Helpers panic with a message instead of returning errors: they only ever run inside tests,
//! where a panic is the failure report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::types::{StreamDescriptionSummary, StreamStatus};
use timeshard_server::RunningServer;
use timeshard_server::config::{Config, Credential};
use timeshard_server::state::AppState;
use timeshard_storage::clock::{Clock, SystemClock};
use timeshard_storage::options::SyncPolicy;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub mod putmedia;

/// The access key id every test server accepts.
pub const ACCESS_KEY_ID: &str = "AKIDTIMESHARDTESTS";
/// The secret access key paired with [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "timeshard-tests-secret-access-key";
/// The region the test servers claim to be in, and the clients sign for.
pub const REGION: &str = "us-east-1";
/// The account id in the ARNs of a test server (the server's default).
pub const ACCOUNT_ID: &str = "000000000000";

/// How long a single SDK operation may take before the test fails.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the wait helpers poll.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A real server running in this process on a loopback port, with its own temporary data
/// directory. Dropping it starts a shutdown without waiting; [`TestServer::shutdown`] waits.
#[derive(Debug)]
pub struct TestServer {
    // Field order is drop order: the server goes before its data directory is deleted.
    server: RunningServer,
    data_dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with the test credentials, `sync = never` (durability is not what these
    /// tests are about, and fsync per record would make them slow) and otherwise the defaults.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// [`TestServer::start`], letting `tweak` change the configuration before the server
    /// starts (the data directory and listen address are already set).
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_with_clock(Arc::new(SystemClock), tweak).await
    }

    /// [`TestServer::start_with`] on the given clock, e.g. a
    /// [`ManualClock`](timeshard_storage::clock::ManualClock) that expiry tests advance instead
    /// of sleeping. The SDK keeps signing with the real time, so a test that moves the server's
    /// clock by minutes must also raise `max_clock_skew`.
    pub async fn start_with_clock(
        clock: Arc<dyn Clock>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestServer {
        let data_dir = tempfile::Builder::new()
            .prefix("timeshard-tests-")
            .tempdir()
            .expect("creating a temporary data directory");
        let mut config = Config {
            data_dir: data_dir.path().join("data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            sync: SyncPolicy::Never,
            region: REGION.to_owned(),
            credentials: vec![Credential::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY)],
            ..Config::default()
        };
        tweak(&mut config);
        let server = timeshard_server::start_with_clock(config, clock)
            .await
            .unwrap_or_else(|e| panic!("starting the server: {e}"));
        TestServer { server, data_dir }
    }

    /// The loopback address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// `http://127.0.0.1:<port>`, the endpoint URL clients are given.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The running server's shared state (its store, configuration, clock), for tests that
    /// set up or check what no API exposes.
    pub fn state(&self) -> &AppState {
        self.server.state()
    }

    /// An `aws-sdk-kinesis` client for this server, signing with the test credentials.
    pub fn kinesis_client(&self) -> aws_sdk_kinesis::Client {
        self.kinesis_client_with(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "timeshard-tests",
        ))
    }

    /// An `aws-sdk-kinesis` client for this server signing with `credentials` (e.g. wrong
    /// ones, to check that the server refuses them).
    pub fn kinesis_client_with(&self, credentials: Credentials) -> aws_sdk_kinesis::Client {
        // The SDK's own hyper 1 client built without TLS: the same request path as the default
        // HTTPS client, minus rustls and its C crypto library. `build_http` is public but
        // `#[doc(hidden)]` in aws-smithy-http-client 1.5; should a release drop it, the
        // fallback is a small `HttpConnector` over hyper-util's client.
        let http_client = aws_smithy_http_client::Builder::new().build_http();
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(credentials)
            .endpoint_url(self.endpoint_url())
            .http_client(http_client)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            )
            .build();
        aws_sdk_kinesis::Client::from_conf(config)
    }

    /// An `aws-sdk-kinesisvideo` (control plane) client for this server, signing with the test
    /// credentials.
    pub fn kinesis_video_client(&self) -> aws_sdk_kinesisvideo::Client {
        let config = aws_sdk_kinesisvideo::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(test_credentials())
            .endpoint_url(self.endpoint_url())
            .http_client(plain_http_client())
            .timeout_config(operation_timeout())
            .build();
        aws_sdk_kinesisvideo::Client::from_conf(config)
    }

    /// Stops the server and waits until its store is closed; the data directory is deleted
    /// afterwards.
    pub async fn shutdown(self) {
        let TestServer { server, data_dir } = self;
        server.shutdown().await;
        drop(data_dir);
    }
}

fn test_credentials() -> Credentials {
    Credentials::new(
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        None,
        None,
        "timeshard-tests",
    )
}

/// The SDKs' own hyper 1 client without TLS (see [`TestServer::kinesis_client_with`]).
fn plain_http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_http()
}

fn operation_timeout() -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// An `aws-sdk-kinesisvideomedia` (GetMedia) client for `endpoint`, the `DataEndpoint` that
/// GetDataEndpoint returned for `GET_MEDIA`, signing with the test credentials.
///
/// Like every client here it has a 60 s operation timeout; a test that reads a live GetMedia
/// response for longer should build its own client.
pub fn kinesis_video_media_client(endpoint: &str) -> aws_sdk_kinesisvideomedia::Client {
    let config = aws_sdk_kinesisvideomedia::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(test_credentials())
        .endpoint_url(endpoint)
        .http_client(plain_http_client())
        .timeout_config(operation_timeout())
        .build();
    aws_sdk_kinesisvideomedia::Client::from_conf(config)
}

/// An `aws-sdk-kinesisvideoarchivedmedia` (ListFragments, GetMediaForFragmentList, GetClip,
/// HLS/DASH sessions, GetImages) client for `endpoint`, the `DataEndpoint` that GetDataEndpoint
/// returned for one of those APIs, signing with the test credentials.
pub fn kinesis_video_archived_media_client(
    endpoint: &str,
) -> aws_sdk_kinesisvideoarchivedmedia::Client {
    let config = aws_sdk_kinesisvideoarchivedmedia::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(test_credentials())
        .endpoint_url(endpoint)
        .http_client(plain_http_client())
        .timeout_config(operation_timeout())
        .build();
    aws_sdk_kinesisvideoarchivedmedia::Client::from_conf(config)
}

/// A response read by [`raw_post`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// The status code of the status line.
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body as sent (not de-chunked; the server's JSON answers carry a Content-Length).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends `POST <path>` with `body` and the given extra headers over a new TCP connection, as
/// bytes written by hand (HTTP/1.1, `Connection: close`), and reads the response to the end. No
/// signature: use it on a server started without credentials.
pub async fn raw_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    stream
        .write_all(&bytes)
        .await
        .unwrap_or_else(|e| panic!("writing the request: {e}"));
    let mut response = Vec::new();
    tokio::time::timeout(OPERATION_TIMEOUT, stream.read_to_end(&mut response))
        .await
        .unwrap_or_else(|_| panic!("no complete response to POST {path} in {OPERATION_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("reading the response: {e}"));
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(&response)
            )
        });
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        body: response[split + 4..].to_vec(),
    }
}

/// The ARN the server should give a stream named `name`.
pub fn stream_arn(name: &str) -> String {
    format!("arn:aws:kinesis:{REGION}:{ACCOUNT_ID}:stream/{name}")
}

/// Polls DescribeStreamSummary until the stream is ACTIVE, and returns that summary. Panics
/// after `timeout`, on any error, or if the stream shows a status other than CREATING or
/// UPDATING on the way.
pub async fn wait_for_stream_active(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    timeout: Duration,
) -> StreamDescriptionSummary {
    let deadline = Instant::now() + timeout;
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeStreamSummary {name}: {}", DisplayErrorContext(&e)))
            .stream_description_summary
            .unwrap_or_else(|| panic!("DescribeStreamSummary {name}: no StreamDescriptionSummary"));
        let status = summary.stream_status().clone();
        if status == StreamStatus::Active {
            return summary;
        }
        assert!(
            matches!(status, StreamStatus::Creating | StreamStatus::Updating),
            "stream {name} is {status:?} while waiting for it to become ACTIVE"
        );
        assert!(
            Instant::now() < deadline,
            "stream {name} still {status:?} after {timeout:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls DescribeStreamSummary until it answers ResourceNotFoundException. Panics after
/// `timeout`, on any other error, or if the stream shows a status other than DELETING.
pub async fn wait_for_stream_deleted(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        match client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
        {
            Ok(out) => {
                let status = out
                    .stream_description_summary
                    .map(|s| s.stream_status().clone());
                assert_eq!(
                    status,
                    Some(StreamStatus::Deleting),
                    "stream {name} after DeleteStream"
                );
            }
            Err(e) => {
                let e = e.into_service_error();
                assert!(
                    e.is_resource_not_found_exception(),
                    "DescribeStreamSummary {name} after DeleteStream: expected \
                     ResourceNotFoundException, got {}",
                    DisplayErrorContext(&e)
                );
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "stream {name} still DELETING after {timeout:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
