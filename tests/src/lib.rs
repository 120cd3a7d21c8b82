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
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::types::{StreamDescriptionSummary, StreamStatus};
use timeshard_server::RunningServer;
use timeshard_server::config::{Config, Credential};
use timeshard_storage::clock::{Clock, SystemClock};
use timeshard_storage::options::SyncPolicy;

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

    /// Stops the server and waits until its store is closed; the data directory is deleted
    /// afterwards.
    pub async fn shutdown(self) {
        let TestServer { server, data_dir } = self;
        server.shutdown().await;
        drop(data_dir);
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
