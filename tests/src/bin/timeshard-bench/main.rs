//! `timeshard-bench`: load tools whose figures go in `docs/BENCHMARKS.md`.
//!
//! `timeshard-bench records` measures the data streams path end to end over HTTP on loopback:
//!
//! 1. CreateStream, then DescribeStreamSummary every 20 ms until ACTIVE, then ListShards.
//! 2. Put phase: `--connections` tasks, each on its own HTTP/1.1 connection, send PutRecords
//!    back to back for `--duration` seconds. Every response is checked (status 200 and
//!    `FailedRecordCount`); failures are counted and reported, never ignored.
//! 3. Read phase: for every shard, GetShardIterator TRIM_HORIZON then GetRecords (`Limit`
//!    10000) until a call returns no records; shards are spread over the connections. The
//!    records read must equal the records acknowledged, and every payload must have the size
//!    that was put.
//!
//! The client is kept cheap because it shares the machine with the server under test: each
//! connection encodes its PutRecords body once (payloads and partition keys vary across the
//! batch, so every shard gets data) and sends the same bytes again and again; it talks to
//! hyper's low-level HTTP/1.1 client directly instead of going through an SDK; it reads
//! `FailedRecordCount` out of a PutRecords answer without parsing the 500 result entries, and
//! finds the payloads of a GetRecords answer with memchr instead of a JSON parser (the payload
//! size follows from the length of its base64 text; a full parse is the fallback).
//!
//! Without `--endpoint` the tool starts a timeshard server in this process (the same
//! `timeshard_server::start` the tests use) on `127.0.0.1:0`, with a fresh data directory under
//! `target/bench-data` and the default durable sync policy `always`. That server gets its own
//! runtime, with threads named like the real binary's (`timeshard`), so the CPU time of the
//! server's threads can be told apart from the client's (`bench-client` and the main thread).
//! With `--endpoint` and `--server-pid` the tool reads the CPU time of that process instead.
//!
//! Requests are unsigned (timeshard accepts that on loopback when it has no credentials).
//! kinesalite wants an `Authorization` header to exist and never checks it: `--fake-auth` sends
//! a well-formed AWS4-HMAC-SHA256 header with a dummy signature, and `X-Amz-Date`.
//!
//! The results are printed as Markdown table rows in the style of `docs/BENCHMARKS.md`, and a
//! last `result ...` line of `key=value` pairs for scripts (`tests/bench/records-vs-kinesalite.sh`,
//! `tests/bench/video.sh`).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use timeshard_storage::options::SyncPolicy;
use tokio::net::TcpStream;

mod list_fragments;
mod records_producer;
mod video;

/// Thread name of the client runtime; the in-process server's threads are named `timeshard`.
const CLIENT_THREAD_NAME: &str = "bench-client";
/// How often stream creation is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long a stream may take to become ACTIVE.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
const JSON_1_1: &str = "application/x-amz-json-1.1";

#[derive(Debug, Parser)]
#[command(
    name = "timeshard-bench",
    about = "Load tools for timeshard (and for servers speaking the same protocols)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// PutRecords then GetRecords throughput and latency over HTTP/1.1 (Kinesis Data Streams).
    Records(RecordsArgs),
    /// PutMedia ingest (throughput, PERSISTED latency) and live GetMedia frame latency over
    /// HTTP/1.1 (Kinesis Video Streams).
    Video(video::VideoArgs),
    /// ListFragments of one hour out of many stored fragments (in-process server only).
    ListFragments(list_fragments::ListFragmentsArgs),
    /// Records/s through the SDK's batching records producer (PutRecords on loopback).
    RecordsProducer(records_producer::RecordsProducerArgs),
}

#[derive(Debug, Clone, Args)]
struct RecordsArgs {
    /// Server to load, e.g. http://127.0.0.1:4567. Default: start timeshard in this process on
    /// 127.0.0.1:0 with a fresh data directory under target/bench-data.
    #[arg(long)]
    endpoint: Option<String>,
    /// Concurrent HTTP/1.1 connections, one request in flight on each.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Length of the put phase, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Records per PutRecords call.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Shards of the stream the tool creates.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Stream name. Default: bench-records-<unix time in ms>.
    #[arg(long)]
    stream: Option<String>,
    /// GetRecords `Limit`.
    #[arg(long, default_value_t = 10_000)]
    read_limit: u32,
    /// Send a well-formed AWS4-HMAC-SHA256 Authorization header with a dummy signature (for
    /// kinesalite, which requires one and does not verify it).
    #[arg(long)]
    fake_auth: bool,
    /// Name of the server in the output (default: timeshard in-process, else the endpoint).
    #[arg(long)]
    label: Option<String>,
    /// With --endpoint: the server's process id, to report its CPU time from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// In-process server only: sync policy (always, never, batch:<delay>).
    #[arg(long, default_value = "always")]
    sync: SyncPolicy,
    /// In-process server only: directory to create the temporary data directory in.
    /// Default: target/bench-data next to this executable.
    #[arg(long)]
    data_parent: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Records(args) => records(&args),
        Command::Video(args) => video::run(&args),
        Command::ListFragments(args) => list_fragments::run(&args),
        Command::RecordsProducer(args) => records_producer::run(&args),
    }
}

/// The server the bench talks to: an external endpoint, or one started here.
struct Target {
    endpoint: Endpoint,
    label: String,
    cpu: CpuSource,
    /// Keeps an in-process server (its runtime, its data directory) alive.
    local: Option<LocalServer>,
}

struct LocalServer {
    runtime: tokio::runtime::Runtime,
    server: timeshard_server::RunningServer,
    data_dir: tempfile::TempDir,
}

impl LocalServer {
    /// A fresh temporary data directory in `parent` (default: target/bench-data), removed when
    /// dropped.
    fn new_data_dir(parent: Option<&Path>, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
        let parent = parent.map_or_else(default_data_parent, Path::to_path_buf);
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&parent)
            .with_context(|| format!("creating a data directory in {}", parent.display()))
    }

    /// Where the server keeps its store inside `data_dir`.
    fn store_dir(data_dir: &tempfile::TempDir) -> PathBuf {
        data_dir.path().join("data")
    }

    /// Starts timeshard on 127.0.0.1:0 over `data_dir` (fresh, or left by an earlier server).
    fn start(data_dir: tempfile::TempDir, sync: SyncPolicy) -> anyhow::Result<LocalServer> {
        // Like the `timeshard` binary: a multi-threaded runtime with one worker per core.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("timeshard")
            .build()
            .context("starting the server runtime")?;
        let config = timeshard_server::Config {
            data_dir: LocalServer::store_dir(&data_dir),
            listen: "127.0.0.1:0".parse()?,
            sync,
            ..Default::default()
        };
        let server = runtime
            .block_on(timeshard_server::start(config))
            .context("starting the in-process timeshard server")?;
        Ok(LocalServer {
            runtime,
            server,
            data_dir,
        })
    }

    fn url(&self) -> String {
        format!("http://{}", self.server.local_addr())
    }

    /// Stops the server and closes its store; the data directory is handed back (drop it to
    /// remove it).
    fn shutdown(self) -> tempfile::TempDir {
        let LocalServer {
            runtime,
            server,
            data_dir,
        } = self;
        runtime.block_on(server.shutdown());
        drop(runtime);
        data_dir
    }
}

/// `target/bench-data` of the target directory this executable was built in, else the system
/// temporary directory.
fn default_data_parent() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|p| p.file_name().is_some_and(|n| n == "target"))
                .map(Path::to_path_buf)
        })
        .map_or_else(std::env::temp_dir, |t| t.join("bench-data"))
}

fn records(args: &RecordsArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.batch == 0 || args.shards == 0 || args.duration <= 0.0 {
        bail!("--connections, --batch, --shards and --duration must be positive");
    }
    let target = match &args.endpoint {
        Some(url) => Target {
            endpoint: Endpoint::parse(url, args.fake_auth)?,
            label: args.label.clone().unwrap_or_else(|| url.clone()),
            cpu: match args.server_pid {
                Some(pid) => CpuSource::Pid(pid),
                None => CpuSource::None,
            },
            local: None,
        },
        None => {
            let data_dir = LocalServer::new_data_dir(args.data_parent.as_deref(), "records-")?;
            let local = LocalServer::start(data_dir, args.sync)?;
            let url = local.url();
            Target {
                endpoint: Endpoint::parse(&url, args.fake_auth)?,
                label: args
                    .label
                    .clone()
                    .unwrap_or_else(|| format!("timeshard (in-process, sync {})", args.sync)),
                cpu: CpuSource::InProcess,
                local: Some(local),
            }
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(CLIENT_THREAD_NAME)
        .build()
        .context("starting the client runtime")?;
    let endpoint = Arc::new(target.endpoint.clone());
    let outcome = runtime.block_on(run(args, endpoint, &target));
    drop(runtime);
    if let Some(local) = target.local {
        drop(local.shutdown());
    }
    let report = outcome?;
    println!("{}", report.markdown);
    println!("{}", report.result_line);
    if !report.problems.is_empty() {
        bail!("the run had problems: {}", report.problems.join("; "));
    }
    Ok(())
}

struct Report {
    markdown: String,
    result_line: String,
    problems: Vec<String>,
}

async fn run(
    args: &RecordsArgs,
    endpoint: Arc<Endpoint>,
    target: &Target,
) -> anyhow::Result<Report> {
    let stream = args
        .stream
        .clone()
        .unwrap_or_else(|| format!("bench-records-{}", chrono::Utc::now().timestamp_millis()));
    let mut control = Conn::open(&endpoint).await?;
    let created = Instant::now();
    let shard_ids = create_stream(&mut control, &stream, args.shards).await?;
    let create_ms = created.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "{}: stream {stream} ACTIVE with {} shards after {create_ms:.0} ms; putting for {} s on {} connections",
        target.label,
        shard_ids.len(),
        args.duration,
        args.connections
    );

    let put = put_phase(args, &endpoint, &stream, &target.cpu).await?;
    eprintln!(
        "{}: put {} records in {:.2} s; reading back",
        target.label, put.ok_records, put.elapsed_s
    );
    let read = read_phase(args, &endpoint, &stream, shard_ids, &target.cpu).await?;

    if target.local.is_none() {
        // An external server keeps what it was given; leave it as it was found.
        let _ = control
            .call_json("DeleteStream", &json!({ "StreamName": stream }))
            .await;
    }

    let mut problems = Vec::new();
    if put.failed_calls > 0 || put.failed_records > 0 {
        problems.push(format!(
            "{} PutRecords calls failed, {} records failed (first error: {})",
            put.failed_calls,
            put.failed_records,
            put.first_error.as_deref().unwrap_or("-")
        ));
    }
    if read.records != put.ok_records {
        problems.push(format!(
            "read {} records back, {} were acknowledged",
            read.records, put.ok_records
        ));
    }
    if read.wrong_size > 0 {
        problems.push(format!(
            "{} records read back had a payload size other than {}",
            read.wrong_size, args.record_bytes
        ));
    }
    Ok(report(args, target, &put, &read, problems))
}

fn report(
    args: &RecordsArgs,
    target: &Target,
    put: &PutOutcome,
    read: &ReadOutcome,
    problems: Vec<String>,
) -> Report {
    let put_rps = put.ok_records as f64 / put.elapsed_s;
    let put_mbps = put.ok_records as f64 * args.record_bytes as f64 / put.elapsed_s / 1e6;
    let read_rps = read.records as f64 / read.elapsed_s;
    let read_mbps = read.payload_bytes as f64 / read.elapsed_s / 1e6;
    let size = if args.record_bytes.is_multiple_of(1024) {
        format!("{} KiB", args.record_bytes / 1024)
    } else {
        format!("{} B", args.record_bytes)
    };
    let label = &target.label;
    let mut md = String::new();
    md.push_str("| benchmark | result | notes |\n|---|---|---|\n");
    md.push_str(&format!(
        "| {label}: PutRecords {} x {size}, {} connections, {} shards | **{put_rps:.0} records/s** | \
         {put_mbps:.0} MB/s of payload; per call p50 {:.1} ms, p99 {:.1} ms; {} calls in {:.1} s; \
         {} failed calls, {} failed records; {} |\n",
        args.batch,
        args.connections,
        args.shards,
        put.latency.p50_ms(),
        put.latency.p99_ms(),
        put.latency.count(),
        put.elapsed_s,
        put.failed_calls,
        put.failed_records,
        put.cpu.describe(put.elapsed_s),
    ));
    md.push_str(&format!(
        "| {label}: GetRecords Limit {}, {} shards over {} connections | **{read_mbps:.0} MB/s** | \
         {read_rps:.0} records/s; per call p50 {:.1} ms, p99 {:.1} ms; {} calls; {} of {} records \
         read back in {:.1} s; {} |",
        args.read_limit,
        args.shards,
        read.workers,
        read.latency.p50_ms(),
        read.latency.p99_ms(),
        read.latency.count(),
        read.records,
        put.ok_records,
        read.elapsed_s,
        read.cpu.describe(read.elapsed_s),
    ));
    let result_line = format!(
        "result label={:?} put_records_per_s={put_rps:.0} put_mb_per_s={put_mbps:.1} \
         put_p50_ms={:.2} put_p99_ms={:.2} read_mb_per_s={read_mbps:.1} \
         read_records_per_s={read_rps:.0} get_p50_ms={:.2} get_p99_ms={:.2} \
         put_server_cpu_s={} read_server_cpu_s={} problems={}",
        label,
        put.latency.p50_ms(),
        put.latency.p99_ms(),
        read.latency.p50_ms(),
        read.latency.p99_ms(),
        put.cpu
            .server_s()
            .map_or("-".to_owned(), |s| format!("{s:.2}")),
        read.cpu
            .server_s()
            .map_or("-".to_owned(), |s| format!("{s:.2}")),
        problems.len(),
    );
    Report {
        markdown: md,
        result_line,
        problems,
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// Where requests go, and the headers every request carries.
#[derive(Debug, Clone)]
struct Endpoint {
    /// `host:port` to connect to.
    authority: String,
    host: HeaderValue,
    /// `(Authorization, X-Amz-Date)` with `--fake-auth`.
    fake_auth: Option<(HeaderValue, HeaderValue)>,
}

impl Endpoint {
    fn parse(url: &str, fake_auth: bool) -> anyhow::Result<Endpoint> {
        let uri: Uri = url.parse().with_context(|| format!("endpoint {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("endpoint {url:?}: only http:// is supported");
        }
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow!("endpoint {url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let fake_auth = fake_auth.then(|| {
            let now = chrono::Utc::now();
            let date = now.format("%Y%m%dT%H%M%SZ").to_string();
            let day = now.format("%Y%m%d");
            let auth = format!(
                "AWS4-HMAC-SHA256 Credential=AKIDTIMESHARDBENCH/{day}/us-east-1/kinesis/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={}",
                "0".repeat(64)
            );
            (auth, date)
        });
        let fake_auth = match fake_auth {
            Some((auth, date)) => {
                Some((HeaderValue::from_str(&auth)?, HeaderValue::from_str(&date)?))
            }
            None => None,
        };
        Ok(Endpoint {
            authority: format!("{}:{port}", authority.host()),
            host: HeaderValue::from_str(authority.as_str())?,
            fake_auth,
        })
    }
}

/// One HTTP/1.1 connection with at most one request in flight.
struct Conn {
    endpoint: Arc<Endpoint>,
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(endpoint: &Arc<Endpoint>) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(&endpoint.authority)
            .await
            .with_context(|| format!("connecting to {}", endpoint.authority))?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(tcp))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            // Ends with an error only when the server drops the connection; the next request
            // on it then fails and says so.
            let _ = connection.await;
        });
        Ok(Conn {
            endpoint: endpoint.clone(),
            sender,
        })
    }

    /// One Kinesis JSON 1.1 call: the status and the whole response body.
    async fn call(&mut self, operation: &str, body: Bytes) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut req = Request::post("/")
            .header(HOST, self.endpoint.host.clone())
            .header(CONTENT_TYPE, JSON_1_1)
            .header("x-amz-target", format!("Kinesis_20131202.{operation}"))
            .body(Full::new(body))?;
        if let Some((auth, date)) = &self.endpoint.fake_auth {
            req.headers_mut().insert(AUTHORIZATION, auth.clone());
            req.headers_mut().insert("x-amz-date", date.clone());
        }
        self.send(operation, req).await
    }

    /// One REST-JSON call (the Kinesis Video Streams APIs): `POST <path>` with a JSON body; the
    /// status and the whole response body.
    async fn post(&mut self, path: &str, body: Bytes) -> anyhow::Result<(StatusCode, Bytes)> {
        let req = Request::post(path)
            .header(HOST, self.endpoint.host.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        self.send(path, req).await
    }

    /// `GET <path>`: the status and the whole response body.
    async fn get(&mut self, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        let req = Request::get(path)
            .header(HOST, self.endpoint.host.clone())
            .body(Full::new(Bytes::new()))?;
        self.send(path, req).await
    }

    /// A REST-JSON call whose answer is parsed as JSON; anything but 200 is an error.
    async fn post_json(&mut self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let (status, resp) = self
            .post(path, Bytes::from(serde_json::to_vec(body)?))
            .await?;
        if status != StatusCode::OK {
            bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&resp));
        }
        serde_json::from_slice(&resp).with_context(|| format!("{path}: answer is not JSON"))
    }

    async fn send(
        &mut self,
        what: &str,
        req: Request<Full<Bytes>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender
            .ready()
            .await
            .with_context(|| format!("{what}: connection lost"))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .with_context(|| format!("{what}: sending the request"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .with_context(|| format!("{what}: reading the response"))?
            .to_bytes();
        Ok((status, body))
    }

    /// A control-plane call whose answer is parsed as JSON; anything but 200 is an error.
    async fn call_json(&mut self, operation: &str, body: &Value) -> anyhow::Result<Value> {
        let (status, resp) = self
            .call(operation, Bytes::from(serde_json::to_vec(body)?))
            .await?;
        if status != StatusCode::OK {
            bail!(
                "{operation}: HTTP {status}: {}",
                String::from_utf8_lossy(&resp)
            );
        }
        if resp.is_empty() {
            // kinesalite answers CreateStream and DeleteStream with no body at all.
            return Ok(Value::Null);
        }
        serde_json::from_slice(&resp).with_context(|| format!("{operation}: answer is not JSON"))
    }
}

/// CreateStream, wait until ACTIVE, and list the shard ids.
async fn create_stream(conn: &mut Conn, name: &str, shards: u32) -> anyhow::Result<Vec<String>> {
    conn.call_json(
        "CreateStream",
        &json!({ "StreamName": name, "ShardCount": shards }),
    )
    .await?;
    let deadline = Instant::now() + CREATE_TIMEOUT;
    loop {
        let summary = conn
            .call_json("DescribeStreamSummary", &json!({ "StreamName": name }))
            .await?;
        let status = summary["StreamDescriptionSummary"]["StreamStatus"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        match status.as_str() {
            "ACTIVE" => break,
            "CREATING" if Instant::now() < deadline => tokio::time::sleep(POLL_INTERVAL).await,
            _ => bail!("stream {name} is {status} while waiting for ACTIVE"),
        }
    }
    let listed = conn
        .call_json("ListShards", &json!({ "StreamName": name }))
        .await?;
    let ids: Vec<String> = listed["Shards"]
        .as_array()
        .ok_or_else(|| anyhow!("ListShards: no Shards in {listed}"))?
        .iter()
        .filter_map(|s| s["ShardId"].as_str().map(str::to_owned))
        .collect();
    if ids.len() != shards as usize {
        bail!(
            "ListShards named {} shards, {shards} were created",
            ids.len()
        );
    }
    Ok(ids)
}

// ---------------------------------------------------------------------------------------------
// Put phase

#[derive(Default)]
struct PutStats {
    ok_records: u64,
    failed_records: u64,
    failed_calls: u64,
    first_error: Option<String>,
    latency: Latencies,
}

struct PutOutcome {
    ok_records: u64,
    failed_records: u64,
    failed_calls: u64,
    first_error: Option<String>,
    latency: Latencies,
    elapsed_s: f64,
    cpu: CpuUse,
}

/// A PutRecords body of `batch` records of `record_bytes` pseudo-random bytes, partition keys
/// `pk-<conn>-<i>` (spread over the hash space by MD5, so over all shards).
fn put_records_body(stream: &str, conn: usize, batch: usize, record_bytes: usize) -> Bytes {
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ (conn as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut payload = vec![0u8; record_bytes];
    let records: Vec<Value> = (0..batch)
        .map(|i| {
            for chunk in payload.chunks_mut(8) {
                // xorshift64: cheap bytes that do not compress to nothing.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                chunk.copy_from_slice(&rng.to_le_bytes()[..chunk.len()]);
            }
            json!({
                "Data": base64::engine::general_purpose::STANDARD.encode(&payload),
                "PartitionKey": format!("pk-{conn}-{i}"),
            })
        })
        .collect();
    let body = json!({ "StreamName": stream, "Records": records });
    Bytes::from(body.to_string())
}

async fn put_phase(
    args: &RecordsArgs,
    endpoint: &Arc<Endpoint>,
    stream: &str,
    cpu: &CpuSource,
) -> anyhow::Result<PutOutcome> {
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let body = put_records_body(stream, i, args.batch, args.record_bytes);
        conns.push((Conn::open(endpoint).await?, body));
    }
    let duration = Duration::from_secs_f64(args.duration);
    let batch = args.batch as u64;
    let cpu_before = cpu.sample();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (mut conn, body) in conns {
        tasks.spawn(async move {
            let mut stats = PutStats::default();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let (status, resp) = conn.call("PutRecords", body.clone()).await?;
                stats.latency.add(sent.elapsed());
                let failed = if status == StatusCode::OK {
                    failed_record_count(&resp)
                } else {
                    None
                };
                match failed {
                    Some(0) => stats.ok_records += batch,
                    Some(n) => {
                        stats.ok_records += batch.saturating_sub(n);
                        stats.failed_records += n;
                        stats.first_error.get_or_insert_with(|| {
                            format!("FailedRecordCount {n}: {}", snippet(&resp))
                        });
                    }
                    None => {
                        stats.failed_calls += 1;
                        stats.failed_records += batch;
                        stats
                            .first_error
                            .get_or_insert_with(|| format!("HTTP {status}: {}", snippet(&resp)));
                    }
                }
            }
            anyhow::Ok(stats)
        });
    }
    let mut total = PutStats::default();
    while let Some(joined) = tasks.join_next().await {
        let stats = joined.context("put task")??;
        total.ok_records += stats.ok_records;
        total.failed_records += stats.failed_records;
        total.failed_calls += stats.failed_calls;
        if total.first_error.is_none() {
            total.first_error = stats.first_error;
        }
        total.latency.merge(stats.latency);
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let cpu = cpu.since(cpu_before);
    Ok(PutOutcome {
        ok_records: total.ok_records,
        failed_records: total.failed_records,
        failed_calls: total.failed_calls,
        first_error: total.first_error,
        latency: total.latency,
        elapsed_s,
        cpu,
    })
}

/// `FailedRecordCount` of a PutRecords answer, found without parsing the result entries.
fn failed_record_count(body: &[u8]) -> Option<u64> {
    const FIELD: &[u8] = b"\"FailedRecordCount\"";
    let at = body.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let rest = body[at..].trim_ascii_start().strip_prefix(b":")?;
    let rest = rest.trim_ascii_start();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.into_owned()
}

// ---------------------------------------------------------------------------------------------
// Read phase

struct ReadOutcome {
    records: u64,
    payload_bytes: u64,
    wrong_size: u64,
    workers: usize,
    latency: Latencies,
    elapsed_s: f64,
    cpu: CpuUse,
}

#[derive(Default)]
struct ReadStats {
    records: u64,
    payload_bytes: u64,
    wrong_size: u64,
    latency: Latencies,
}

/// What the tool needs of a GetRecords answer.
#[derive(Debug, PartialEq, Eq)]
struct RecordsPage {
    /// The decoded size of each record's `Data`.
    payload_sizes: Vec<usize>,
    next_shard_iterator: Option<String>,
}

/// Reads a compact JSON GetRecords answer (what timeshard and kinesalite send) without a JSON
/// parser: every record has exactly one `"Data":"` key, which cannot occur inside a JSON
/// string (its quotes would be escaped there), and base64 text holds no quote or escape, so a
/// payload ends at the next quote. Scanning with memchr keeps the client's share of the read
/// phase small. Anything unexpected (another layout, whitespace, a count that does not match
/// the sequence numbers) returns `None`, and the caller parses the answer properly instead.
fn scan_get_records(body: &[u8]) -> Option<RecordsPage> {
    const DATA: &[u8] = b"\"Data\":\"";
    const SEQUENCE_NUMBER: &[u8] = b"\"SequenceNumber\":\"";
    const NEXT: &[u8] = b"\"NextShardIterator\":\"";
    if body.first() != Some(&b'{') || memchr::memmem::find(body, b"\"Records\":[").is_none() {
        return None;
    }
    let mut payload_sizes = Vec::new();
    for at in memchr::memmem::find_iter(body, DATA) {
        let start = at + DATA.len();
        let len = memchr::memchr(b'"', &body[start..])?;
        payload_sizes.push(base64_decoded_len(&body[start..start + len]));
    }
    if memchr::memmem::find_iter(body, SEQUENCE_NUMBER).count() != payload_sizes.len() {
        return None;
    }
    let next_shard_iterator = match memchr::memmem::find(body, NEXT) {
        Some(at) => {
            let start = at + NEXT.len();
            let len = memchr::memchr(b'"', &body[start..])?;
            Some(
                std::str::from_utf8(&body[start..start + len])
                    .ok()?
                    .to_owned(),
            )
        }
        None => None,
    };
    Some(RecordsPage {
        payload_sizes,
        next_shard_iterator,
    })
}

/// [`scan_get_records`]'s slow and sure twin: a real JSON parse.
fn parse_get_records(body: &[u8]) -> serde_json::Result<RecordsPage> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(rename = "Records", borrow)]
        records: Vec<Record<'a>>,
        #[serde(rename = "NextShardIterator")]
        next_shard_iterator: Option<String>,
    }
    #[derive(Deserialize)]
    struct Record<'a> {
        #[serde(rename = "Data", borrow)]
        data: Cow<'a, str>,
    }
    let answer: Answer<'_> = serde_json::from_slice(body)?;
    Ok(RecordsPage {
        payload_sizes: answer
            .records
            .iter()
            .map(|r| base64_decoded_len(r.data.as_bytes()))
            .collect(),
        next_shard_iterator: answer.next_shard_iterator,
    })
}

/// Bytes encoded by a padded base64 text.
fn base64_decoded_len(text: &[u8]) -> usize {
    let padding = text.iter().rev().take_while(|&&b| b == b'=').count();
    (text.len() / 4 * 3).saturating_sub(padding)
}

async fn read_phase(
    args: &RecordsArgs,
    endpoint: &Arc<Endpoint>,
    stream: &str,
    shard_ids: Vec<String>,
    cpu: &CpuSource,
) -> anyhow::Result<ReadOutcome> {
    let workers = args.connections.min(shard_ids.len());
    let queue = Arc::new(Mutex::new(VecDeque::from(shard_ids)));
    let mut conns = Vec::with_capacity(workers);
    for _ in 0..workers {
        conns.push(Conn::open(endpoint).await?);
    }
    let cpu_before = cpu.sample();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in conns {
        let queue = queue.clone();
        let stream = stream.to_owned();
        let limit = args.read_limit;
        let record_bytes = args.record_bytes;
        tasks.spawn(async move {
            let mut stats = ReadStats::default();
            loop {
                let next = queue.lock().map_err(|_| anyhow!("poisoned"))?.pop_front();
                let Some(shard) = next else { break };
                read_shard(&mut conn, &stream, &shard, limit, record_bytes, &mut stats).await?;
            }
            anyhow::Ok(stats)
        });
    }
    let mut total = ReadStats::default();
    while let Some(joined) = tasks.join_next().await {
        let stats = joined.context("read task")??;
        total.records += stats.records;
        total.payload_bytes += stats.payload_bytes;
        total.wrong_size += stats.wrong_size;
        total.latency.merge(stats.latency);
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    Ok(ReadOutcome {
        records: total.records,
        payload_bytes: total.payload_bytes,
        wrong_size: total.wrong_size,
        workers,
        latency: total.latency,
        elapsed_s,
        cpu: cpu.since(cpu_before),
    })
}

/// Reads one shard from TRIM_HORIZON until a GetRecords call returns no records.
async fn read_shard(
    conn: &mut Conn,
    stream: &str,
    shard: &str,
    limit: u32,
    record_bytes: usize,
    stats: &mut ReadStats,
) -> anyhow::Result<()> {
    let answer = conn
        .call_json(
            "GetShardIterator",
            &json!({ "StreamName": stream, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON" }),
        )
        .await?;
    let mut iterator = answer["ShardIterator"]
        .as_str()
        .ok_or_else(|| anyhow!("GetShardIterator {shard}: no ShardIterator in {answer}"))?
        .to_owned();
    loop {
        let body = serde_json::to_vec(&json!({ "ShardIterator": iterator, "Limit": limit }))?;
        let sent = Instant::now();
        let (status, resp) = conn.call("GetRecords", Bytes::from(body)).await?;
        stats.latency.add(sent.elapsed());
        if status != StatusCode::OK {
            bail!("GetRecords {shard}: HTTP {status}: {}", snippet(&resp));
        }
        let page = match scan_get_records(&resp) {
            Some(page) => page,
            None => parse_get_records(&resp)
                .with_context(|| format!("GetRecords {shard}: unexpected answer"))?,
        };
        if page.payload_sizes.is_empty() {
            return Ok(());
        }
        for &len in &page.payload_sizes {
            stats.payload_bytes += len as u64;
            if len != record_bytes {
                stats.wrong_size += 1;
            }
        }
        stats.records += page.payload_sizes.len() as u64;
        iterator = page
            .next_shard_iterator
            .ok_or_else(|| anyhow!("GetRecords {shard}: no NextShardIterator on an open shard"))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Latencies

/// Call latencies in microseconds.
#[derive(Default)]
struct Latencies(Vec<u32>);

impl Latencies {
    fn add(&mut self, d: Duration) {
        self.0
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    fn count(&self) -> usize {
        self.0.len()
    }

    /// Nearest-rank percentile, in milliseconds.
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1e3
    }

    fn p50_ms(&self) -> f64 {
        self.percentile_ms(50.0)
    }

    fn p99_ms(&self) -> f64 {
        self.percentile_ms(99.0)
    }

    fn max_ms(&self) -> f64 {
        self.0
            .iter()
            .max()
            .map_or(f64::NAN, |&us| f64::from(us) / 1e3)
    }
}

// ---------------------------------------------------------------------------------------------
// CPU time, from /proc

/// Whose CPU time a phase reports.
#[derive(Debug, Clone, Copy)]
enum CpuSource {
    None,
    /// This process: server and client together, with the client's threads counted apart.
    InProcess,
    /// An external server process.
    Pid(u32),
}

#[derive(Debug, Clone, Copy, Default)]
struct CpuSample {
    /// Seconds of CPU (user + system) of the process, exited threads included.
    process_s: f64,
    /// Seconds of CPU of the client's threads (in-process only).
    client_s: f64,
}

/// CPU used during a phase.
#[derive(Debug, Clone, Copy)]
enum CpuUse {
    Unknown,
    InProcess { process_s: f64, client_s: f64 },
    Pid { pid: u32, server_s: f64 },
}

impl CpuSource {
    fn sample(&self) -> Option<CpuSample> {
        match self {
            CpuSource::None => None,
            CpuSource::InProcess => Some(CpuSample {
                process_s: proc_cpu_s(Path::new("/proc/self/stat"))?,
                client_s: client_threads_cpu_s()?,
            }),
            CpuSource::Pid(pid) => Some(CpuSample {
                process_s: proc_cpu_s(&PathBuf::from(format!("/proc/{pid}/stat")))?,
                client_s: 0.0,
            }),
        }
    }

    fn since(&self, before: Option<CpuSample>) -> CpuUse {
        let (Some(before), Some(after)) = (before, self.sample()) else {
            return CpuUse::Unknown;
        };
        match self {
            CpuSource::None => CpuUse::Unknown,
            CpuSource::InProcess => CpuUse::InProcess {
                process_s: after.process_s - before.process_s,
                client_s: after.client_s - before.client_s,
            },
            CpuSource::Pid(pid) => CpuUse::Pid {
                pid: *pid,
                server_s: after.process_s - before.process_s,
            },
        }
    }
}

impl CpuUse {
    fn client_s(&self) -> Option<f64> {
        match *self {
            CpuUse::InProcess { client_s, .. } => Some(client_s),
            CpuUse::Unknown | CpuUse::Pid { .. } => None,
        }
    }

    fn server_s(&self) -> Option<f64> {
        match *self {
            CpuUse::Unknown => None,
            CpuUse::InProcess {
                process_s,
                client_s,
            } => Some(process_s - client_s),
            CpuUse::Pid { server_s, .. } => Some(server_s),
        }
    }

    fn describe(&self, elapsed_s: f64) -> String {
        match *self {
            CpuUse::Unknown => "server CPU not measured".to_owned(),
            CpuUse::InProcess {
                process_s,
                client_s,
            } => format!(
                "CPU of the whole process (client + server) {process_s:.1} s = {:.0}% of one core, \
                 of which server threads {:.1} s ({:.0}%) and client threads {client_s:.1} s",
                process_s / elapsed_s * 100.0,
                process_s - client_s,
                (process_s - client_s) / elapsed_s * 100.0,
            ),
            CpuUse::Pid { pid, server_s } => format!(
                "server process (pid {pid}) CPU {server_s:.1} s = {:.0}% of one core",
                server_s / elapsed_s * 100.0
            ),
        }
    }
}

/// Clock ticks per second of /proc times, from the auxiliary vector (AT_CLKTCK), else 100.
fn clock_ticks_per_s() -> f64 {
    const AT_CLKTCK: u64 = 17;
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 100.0;
    };
    auxv.chunks_exact(16)
        .find_map(|pair| {
            let key = u64::from_ne_bytes(pair[..8].try_into().ok()?);
            let value = u64::from_ne_bytes(pair[8..].try_into().ok()?);
            (key == AT_CLKTCK && value > 0).then_some(value as f64)
        })
        .unwrap_or(100.0)
}

/// utime + stime of a `/proc/.../stat` file, in seconds.
fn proc_cpu_s(stat: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: state is
    // field 3 of proc(5), utime 14, stime 15.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_s())
}

/// CPU seconds of this process's client threads: the main thread and the `bench-client`
/// runtime's threads.
fn client_threads_cpu_s() -> Option<f64> {
    let pid = std::process::id().to_string();
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = entry.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let is_main = dir.file_name().is_some_and(|n| n == pid.as_str());
        if is_main || comm.trim_end().starts_with(CLIENT_THREAD_NAME) {
            // A thread may exit between the listing and the read: count it as 0.
            total += proc_cpu_s(&dir.join("stat")).unwrap_or(0.0);
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_failed_record_count() {
        assert_eq!(
            failed_record_count(br#"{"FailedRecordCount":0,"Records":[]}"#),
            Some(0)
        );
        assert_eq!(
            failed_record_count(br#"{"Records":[], "FailedRecordCount" : 12}"#),
            Some(12)
        );
        assert_eq!(failed_record_count(br#"{"__type":"X"}"#), None);
    }

    #[test]
    fn base64_lengths() {
        let b64 = base64::engine::general_purpose::STANDARD;
        for n in [0, 1, 2, 3, 1023, 1024, 1025] {
            assert_eq!(base64_decoded_len(b64.encode(vec![7u8; n]).as_bytes()), n);
        }
    }

    #[test]
    fn scanning_agrees_with_parsing() {
        let timeshard = br#"{"Records":[{"SequenceNumber":"1","ApproximateArrivalTimestamp":1.5,"Data":"AAAA","PartitionKey":"a"},{"SequenceNumber":"2","ApproximateArrivalTimestamp":1.5,"Data":"AA==","PartitionKey":"\"Data\":\"x"}],"NextShardIterator":"it/1+","MillisBehindLatest":0}"#;
        let kinesalite = br#"{"MillisBehindLatest":0,"NextShardIterator":"it2","Records":[]}"#;
        let closed = br#"{"Records":[],"MillisBehindLatest":0,"ChildShards":[]}"#;
        for body in [&timeshard[..], kinesalite, closed] {
            let parsed = parse_get_records(body).expect("valid JSON");
            assert_eq!(scan_get_records(body).as_ref(), Some(&parsed));
        }
        let page = scan_get_records(timeshard).expect("scannable");
        assert_eq!(page.payload_sizes, [3, 1]);
        assert_eq!(page.next_shard_iterator.as_deref(), Some("it/1+"));
        // Pretty-printed JSON is not scanned but still parsed.
        let pretty = b"{ \"Records\": [ { \"SequenceNumber\": \"1\", \"Data\": \"AAAA\" } ] }";
        assert_eq!(scan_get_records(pretty), None);
        assert_eq!(parse_get_records(pretty).expect("valid").payload_sizes, [3]);
    }

    #[test]
    fn percentiles() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.add(Duration::from_millis(ms));
        }
        assert_eq!(l.p50_ms(), 50.0);
        assert_eq!(l.p99_ms(), 99.0);
    }
}
