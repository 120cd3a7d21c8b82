//! The producer against the real server: the CLI as a process, the server in-process or as a
//! child process killed with SIGKILL, ffmpeg as the source.
//!
//! The child server is this test binary run again with `--ignored --exact child_server` and its
//! settings in the environment, so no other binary has to be built first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timeshard_parser::{MkvReader, Track};
use timeshard_producer::auth::Signer;
use timeshard_producer::client::{Endpoint, HttpClient};
use timeshard_producer::video::control::{ListedFragment, TimestampType, list_fragments};
use timeshard_producer::video::input::{Demuxed, MkvDemuxer};
use timeshard_producer::video::producer::EventCallback;
use timeshard_producer::video::{BufferConfig, Event, MediaFrame, ProducerConfig, VideoProducer};
use timeshard_server::config::{Config, Credential};

const CHILD_DIR: &str = "TIMESHARD_TEST_CHILD_DATA_DIR";
const CHILD_LISTEN: &str = "TIMESHARD_TEST_CHILD_LISTEN";
const CHILD_ADDR_FILE: &str = "TIMESHARD_TEST_CHILD_ADDR_FILE";
const AUDIO_VIDEO_SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../samples/h264-aac-320x240.mkv"
);
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../samples/h264-320x240-25fps-1s-gop.mkv"
);

/// The child server's entry point; does nothing unless run by [`ChildServer::start`].
#[test]
#[ignore = "entry point of the child server process that tests kill"]
fn child_server() {
    let (Ok(dir), Ok(listen)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_LISTEN)) else {
        return;
    };
    let config = Config {
        data_dir: PathBuf::from(dir),
        listen: listen.parse().expect("listen address"),
        ..Config::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let server = timeshard_server::start(config)
            .await
            .expect("starting the child server");
        if let Ok(file) = std::env::var(CHILD_ADDR_FILE) {
            std::fs::write(file, server.local_addr().to_string()).expect("address file");
        }
        std::future::pending::<()>().await;
    });
}

struct ChildServer {
    child: Child,
}

impl ChildServer {
    /// Starts a child server on `addr`, or on a port of its choosing when `None`. Returns the
    /// server and its address. A restart on a known address retries while the port is still
    /// taken (a client socket of a parallel test may hold it for a moment).
    fn start(data_dir: &Path, addr: Option<SocketAddr>) -> (ChildServer, SocketAddr) {
        let addr_file = data_dir.with_extension("addr");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let _ = std::fs::remove_file(&addr_file);
            let listen = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
            let mut child = Command::new(std::env::current_exe().expect("test binary"))
                .args(["--ignored", "--exact", "child_server", "--nocapture"])
                .env(CHILD_DIR, data_dir)
                .env(CHILD_LISTEN, listen.to_string())
                .env(CHILD_ADDR_FILE, &addr_file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting the child server");
            loop {
                if let Some(bound) = std::fs::read_to_string(&addr_file)
                    .ok()
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                {
                    return (ChildServer { child }, bound);
                }
                if child.try_wait().expect("try_wait").is_some() {
                    break; // it could not bind (or failed): try again
                }
                assert!(Instant::now() < deadline, "the child server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(Instant::now() < deadline, "the child server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill(mut self) {
        self.child.kill().expect("kill -9 the server");
        self.child.wait().expect("reaping the server");
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have_ffmpeg() -> bool {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("TIMESHARD_REQUIRE_MEDIA_TOOLS").is_none(),
            "TIMESHARD_REQUIRE_MEDIA_TOOLS is set, but ffmpeg is missing"
        );
        println!("skipped: ffmpeg is not installed");
    }
    ok
}

/// An H.264 clip with a key frame every second, so `secs` fragments.
fn clip(dir: &Path, name: &str, secs: u32) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg("testsrc=size=320x240:rate=25")
        .args([
            "-t",
            &secs.to_string(),
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
        ])
        .args([
            "-g",
            "25",
            "-keyint_min",
            "25",
            "-sc_threshold",
            "0",
            "-bf",
            "0",
        ])
        .args(["-f", "matroska"])
        .arg(&path)
        .status()
        .expect("running ffmpeg");
    assert!(status.success(), "ffmpeg failed making {name}");
    path
}

fn put_cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_timeshard-put"));
    // No credentials from the developer's environment or files.
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ] {
        c.env_remove(var);
    }
    c.env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_CONFIG_FILE", "/nonexistent");
    c
}

/// Waits for a child with a timeout; returns its status and stderr.
fn wait(mut child: Child, timeout: Duration, stderr: &Path) -> (ExitStatus, String) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (status, std::fs::read_to_string(stderr).unwrap_or_default());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "timeshard-put did not finish in {timeout:?}; stderr:\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_put(args: &[&str], stderr: &Path) -> Child {
    put_cli()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).expect("stderr file"))
        .spawn()
        .expect("running timeshard-put")
}

fn list(endpoint: &str, stream: &str) -> Vec<ListedFragment> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = HttpClient::new(Signer::new(None, "us-east-1"));
        let endpoint = Endpoint::parse(endpoint).expect("endpoint");
        list_fragments(
            &client,
            &endpoint,
            stream,
            TimestampType::Server,
            0,
            i64::MAX / 2000,
        )
        .await
        .expect("ListFragments")
    })
}

/// No producer timestamp twice; returns them sorted.
fn assert_once_each(fragments: &[ListedFragment]) -> Vec<i64> {
    let mut ts: Vec<i64> = fragments.iter().map(|f| f.producer_timestamp_ms).collect();
    ts.sort_unstable();
    let mut dedup = ts.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), ts.len(), "a fragment is listed twice: {ts:?}");
    ts
}

/// Consecutive fragments of a 1 s GOP clip are 1000 ms apart: no gap, nothing missing.
fn assert_contiguous(ts: &[i64]) {
    for w in ts.windows(2) {
        assert!(
            (w[1] - w[0] - 1000).abs() <= 2,
            "a gap or an extra fragment between {} and {}: {ts:?}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn server_killed_mid_upload_then_restarted() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let source = clip(dir.path(), "ten.mkv", 10);
    let (server, addr) = ChildServer::start(&data, None);
    let endpoint = format!("http://{addr}");
    let stderr = dir.path().join("put.log");
    let put = spawn_put(
        &[
            "--endpoint",
            &endpoint,
            "--stream",
            "killed",
            "--ffmpeg-input",
            source.to_str().expect("utf-8 path"),
            "--realtime",
        ],
        &stderr,
    );
    std::thread::sleep(Duration::from_millis(4500));
    server.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let _server = ChildServer::start(&data, Some(addr));
    let (status, log) = wait(put, Duration::from_secs(90), &stderr);
    assert!(status.success(), "timeshard-put failed: {status}\n{log}");
    assert!(
        log.matches("connected to").count() >= 2,
        "it reconnected:\n{log}"
    );
    let fragments = list(&endpoint, "killed");
    let ts = assert_once_each(&fragments);
    assert_eq!(ts.len(), 10, "every fragment of the 10 s clip:\n{log}");
    assert_contiguous(&ts);
}

/// Timecodes of the fragments waiting in a buffer directory (offset 16 of each file).
fn buffered_timecodes(buffer: &Path) -> Vec<i64> {
    let mut out: Vec<i64> = std::fs::read_dir(buffer.join("fragments"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".frag"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter(|raw| raw.len() > 24)
                .map(|raw| i64::from_le_bytes(raw[16..24].try_into().expect("8 bytes")))
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

#[test]
fn producer_killed_with_a_buffer_dir_then_restarted() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let buffer = dir.path().join("buffer");
    let long = clip(dir.path(), "twelve.mkv", 12);
    let short = clip(dir.path(), "three.mkv", 3);
    let (server, addr) = ChildServer::start(&data, None);
    let endpoint = format!("http://{addr}");
    let log1 = dir.path().join("put1.log");
    let args = |source: &Path| {
        vec![
            "--endpoint".to_owned(),
            endpoint.clone(),
            "--stream".to_owned(),
            "buffered".to_owned(),
            "--buffer-dir".to_owned(),
            buffer.to_string_lossy().into_owned(),
            "--ffmpeg-input".to_owned(),
            source.to_string_lossy().into_owned(),
            "--realtime".to_owned(),
        ]
    };
    let a1 = args(&long);
    let mut put1 = spawn_put(&a1.iter().map(String::as_str).collect::<Vec<_>>(), &log1);
    // Three seconds uploaded, then an outage: the producer buffers to disk.
    std::thread::sleep(Duration::from_secs(3));
    server.kill();
    std::thread::sleep(Duration::from_millis(4500));
    put1.kill().expect("kill -9 the producer");
    put1.wait().expect("reap");
    let backlog = buffered_timecodes(&buffer);
    assert!(
        backlog.len() >= 2,
        "fragments wait in the buffer: {backlog:?}\n{}",
        std::fs::read_to_string(&log1).unwrap_or_default()
    );

    let _server = ChildServer::start(&data, Some(addr));
    let log2 = dir.path().join("put2.log");
    let a2 = args(&short);
    let started = chrono::Utc::now().timestamp_millis();
    let put2 = spawn_put(&a2.iter().map(String::as_str).collect::<Vec<_>>(), &log2);
    let (status, log) = wait(put2, Duration::from_secs(60), &log2);
    assert!(status.success(), "timeshard-put failed: {status}\n{log}");
    assert!(log.contains("from an earlier run"), "{log}");

    let fragments = list(&endpoint, "buffered");
    let ts = assert_once_each(&fragments);
    for t in &backlog {
        assert!(ts.contains(t), "buffered fragment {t} arrived: {ts:?}");
    }
    let (first_run, second_run): (Vec<i64>, Vec<i64>) = ts.iter().partition(|t| **t < started);
    assert_contiguous(&first_run);
    // What was persisted before the outage, then the backlog.
    assert!(first_run.len() > backlog.len(), "{first_run:?} {backlog:?}");
    assert_eq!(second_run.len(), 3, "{second_run:?}");
    assert!(
        buffered_timecodes(&buffer).is_empty(),
        "persisted fragments leave the buffer"
    );
}

/// A server in this process, without credentials unless given.
async fn in_process_server(
    data_dir: &Path,
    credentials: Option<(&str, &str)>,
) -> timeshard_server::RunningServer {
    let config = Config {
        data_dir: data_dir.to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        credentials: credentials
            .map(|(id, secret)| vec![Credential::new(id, secret)])
            .unwrap_or_default(),
        ..Config::default()
    };
    timeshard_server::start(config).await.expect("server")
}

/// The sample's tracks and frames, timestamps from `start_ms`.
fn sample_frames(start_ms: i64) -> (Vec<Track>, Vec<MediaFrame>) {
    file_frames(SAMPLE, start_ms)
}

fn file_frames(path: &str, start_ms: i64) -> (Vec<Track>, Vec<MediaFrame>) {
    let mut reader = MkvReader::new();
    reader.push(&std::fs::read(path).expect("sample"));
    let mut demuxer = MkvDemuxer::new();
    let mut tracks = Vec::new();
    let mut frames = Vec::new();
    loop {
        let ev = match reader.next_event().expect("valid sample") {
            Some(e) => Some(e),
            None => reader.finish().expect("valid sample"),
        };
        let Some(ev) = ev else { break };
        match demuxer.event(ev, start_ms) {
            Some(Demuxed::Tracks(t)) => tracks = t,
            Some(Demuxed::Frame(f)) => frames.push(f),
            None => {}
        }
    }
    (tracks, frames)
}

fn collect_events() -> (Arc<Mutex<Vec<Event>>>, EventCallback) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (
        events,
        Arc::new(move |e: &Event| sink.lock().expect("lock").push(e.clone())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_going_backwards_are_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = in_process_server(&dir.path().join("data"), None).await;
    let endpoint = format!("http://{}", server.local_addr());
    let (events, sink) = collect_events();
    let mut config = ProducerConfig::new(&endpoint, "backwards");
    config.on_event = Some(sink);
    let producer = VideoProducer::start(config).await.expect("start");
    let start = chrono::Utc::now().timestamp_millis() - 60_000;
    let (tracks, frames) = sample_frames(start);
    producer.set_tracks(tracks).expect("tracks");
    // The source plays the clip twice with the same timestamps, as a camera whose clock resets.
    for f in frames.iter().chain(frames.iter()) {
        producer.put_frame(f).expect("frame");
    }
    let summary = producer
        .finish(Some(Duration::from_secs(30)))
        .await
        .expect("every fragment persisted");
    assert_eq!(summary.stats.fragments_persisted, 10);
    assert_eq!(summary.stats.timestamp_repairs, 1);
    let repairs = events
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| matches!(e, Event::TimestampRepaired(_)))
        .count();
    assert_eq!(repairs, 1, "one report for the reset, not one per frame");

    let endpoint_for_list = endpoint.clone();
    let listed = tokio::task::spawn_blocking(move || list(&endpoint_for_list, "backwards"))
        .await
        .expect("list");
    let ts = assert_once_each(&listed);
    assert_eq!(ts.len(), 10);
    assert_eq!(ts[0], start);
    assert!(ts[5] > ts[4], "the second pass comes after the first");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_drops_the_oldest_fragments_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = in_process_server(&dir.path().join("data"), None).await;
    let endpoint = format!("http://{}", server.local_addr());
    let (events, sink) = collect_events();
    let mut config = ProducerConfig::new(&endpoint, "bounded");
    config.on_event = Some(sink);
    config.buffer = BufferConfig {
        max_bytes: 25_000,
        ..BufferConfig::default()
    };
    let producer = VideoProducer::start(config).await.expect("start");
    // The stream exists; now the server goes away and the backlog grows.
    server.shutdown().await;
    let (tracks, frames) = sample_frames(1_700_000_000_000);
    producer.set_tracks(tracks).expect("tracks");
    for f in &frames {
        producer.put_frame(f).expect("frame");
    }
    let stats = producer.stats();
    assert!(stats.fragments_dropped >= 2, "{stats:?}");
    assert!(stats.backlog_bytes <= 25_000 + 12_000, "{stats:?}");
    let dropped: u64 = events
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|e| match e {
            Event::Dropping { dropped, reason } => {
                assert!(reason.contains("bound"), "{reason}");
                Some(dropped.fragments)
            }
            _ => None,
        })
        .sum();
    assert_eq!(dropped, stats.fragments_dropped);
    let err = producer
        .finish(Some(Duration::from_secs(1)))
        .await
        .expect_err("the server is gone");
    assert!(err.to_string().contains("did not finish"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_streams_and_wrong_credentials_fail_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server =
        in_process_server(&dir.path().join("data"), Some(("AKIDGOOD", "good-secret"))).await;
    let endpoint = format!("http://{}", server.local_addr());
    let run = |args: Vec<String>, env: Vec<(&'static str, &'static str)>| {
        let mut c = put_cli();
        c.args(&args).arg(SAMPLE);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("running timeshard-put")
    };
    let base = move |stream: &str| {
        vec![
            "--endpoint".to_owned(),
            endpoint.clone(),
            "--stream".to_owned(),
            stream.to_owned(),
        ]
    };
    let (out_wrong, out_none, out_missing, out_ok) = tokio::task::spawn_blocking(move || {
        let mut wrong = base("s1");
        wrong.extend(
            ["--access-key-id", "AKIDGOOD", "--secret-access-key", "bad"].map(String::from),
        );
        let mut missing = base("not-there");
        missing.push("--no-create".to_owned());
        (
            run(wrong, vec![]),
            run(base("s1"), vec![]),
            run(
                missing,
                vec![
                    ("AWS_ACCESS_KEY_ID", "AKIDGOOD"),
                    ("AWS_SECRET_ACCESS_KEY", "good-secret"),
                ],
            ),
            run(
                base("s1"),
                vec![
                    ("AWS_ACCESS_KEY_ID", "AKIDGOOD"),
                    ("AWS_SECRET_ACCESS_KEY", "good-secret"),
                ],
            ),
        )
    })
    .await
    .expect("runs");
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    assert_eq!(out_wrong.status.code(), Some(1), "{}", stderr(&out_wrong));
    assert!(
        stderr(&out_wrong).contains("refused the credentials"),
        "{}",
        stderr(&out_wrong)
    );
    assert!(
        stderr(&out_wrong).contains("signature"),
        "{}",
        stderr(&out_wrong)
    );

    assert_eq!(out_none.status.code(), Some(1), "{}", stderr(&out_none));
    assert!(
        stderr(&out_none).contains("unsigned"),
        "{}",
        stderr(&out_none)
    );

    assert_eq!(
        out_missing.status.code(),
        Some(1),
        "{}",
        stderr(&out_missing)
    );
    assert!(
        stderr(&out_missing).contains("does not exist"),
        "{}",
        stderr(&out_missing)
    );

    // Right keys from the environment: the stream is created and every fragment persisted.
    assert!(out_ok.status.success(), "{}", stderr(&out_ok));
    assert!(
        stderr(&out_ok).contains("5 fragment(s) persisted"),
        "{}",
        stderr(&out_ok)
    );
    server.shutdown().await;
}

#[test]
fn the_blocking_producer_uploads_audio_and_video() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = runtime.block_on(in_process_server(&dir.path().join("data"), None));
    let endpoint = format!("http://{}", server.local_addr());
    let producer = timeshard_producer::video::blocking::VideoProducer::start(ProducerConfig::new(
        &endpoint, "blocking",
    ))
    .expect("start");
    let (tracks, frames) = file_frames(AUDIO_VIDEO_SAMPLE, 1_700_000_000_000);
    assert_eq!(tracks.len(), 2);
    let key_frames = frames.iter().filter(|f| f.track == 1 && f.key).count();
    producer.set_tracks(tracks).expect("tracks");
    for f in &frames {
        producer.put_frame(f).expect("frame");
    }
    let summary = producer
        .finish(Some(Duration::from_secs(30)))
        .expect("every fragment persisted");
    assert_eq!(summary.stats.fragments_persisted, key_frames as u64);
    assert_eq!(summary.stats.frames_dropped_waiting_for_key_frame, 0);
    let listed = list(&endpoint, "blocking");
    assert_eq!(assert_once_each(&listed).len(), key_frames);
    runtime.block_on(server.shutdown());
}

/// The frame API fed the way an encoder hands frames out: Annex B access units.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annex_b_frames_from_an_encoder_are_uploaded() {
    if !have_ffmpeg() {
        return;
    }
    use timeshard_producer::video::tracks::{h264_frame, h264_track};
    // 50 frames, a key frame every 25, an access unit delimiter (NAL type 9) before each frame.
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg("testsrc=size=320x240:rate=25")
        .args(["-frames:v", "50", "-pix_fmt", "yuv420p", "-c:v", "libx264"])
        .args([
            "-g",
            "25",
            "-bf",
            "0",
            "-x264-params",
            "aud=1",
            "-f",
            "h264",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success());
    let stream = out.stdout;
    let mut starts: Vec<usize> = (0..stream.len().saturating_sub(4))
        .filter(|&i| stream[i..i + 4] == [0, 0, 0, 1] && stream[i + 4] & 0x1f == 9)
        .collect();
    starts.push(stream.len());
    let units: Vec<&[u8]> = starts.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
    assert_eq!(units.len(), 50);

    let dir = tempfile::tempdir().expect("tempdir");
    let server = in_process_server(&dir.path().join("data"), None).await;
    let endpoint = format!("http://{}", server.local_addr());
    let producer = VideoProducer::start(ProducerConfig::new(&endpoint, "annexb"))
        .await
        .expect("start");
    producer
        .set_tracks(vec![
            h264_track(1, units[0]).expect("a track from the key frame"),
        ])
        .expect("tracks");
    let start = 1_700_000_000_000;
    for (i, unit) in units.iter().enumerate() {
        let frame = h264_frame(1, start + i as i64 * 40, unit);
        assert_eq!(frame.key, i % 25 == 0, "frame {i}");
        producer.put_frame(&frame).expect("frame");
    }
    let summary = producer
        .finish(Some(Duration::from_secs(30)))
        .await
        .expect("persisted");
    assert_eq!(summary.stats.fragments_persisted, 2);
    let listed = tokio::task::spawn_blocking(move || list(&endpoint, "annexb"))
        .await
        .expect("list");
    assert_eq!(assert_once_each(&listed), vec![start, start + 1000]);
    server.shutdown().await;
}

/// Fragments that left memory for their files (a backlog bigger than `max_resident_bytes`) are
/// read back and sent when the server returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_fragments_are_sent_from_their_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = |listen: SocketAddr| Config {
        data_dir: data.clone(),
        listen,
        ..Config::default()
    };
    let server = timeshard_server::start(config(SocketAddr::from(([127, 0, 0, 1], 0))))
        .await
        .expect("server");
    let addr = server.local_addr();
    let mut producer_config = ProducerConfig::new(format!("http://{addr}"), "evicted");
    producer_config.buffer = BufferConfig {
        dir: Some(dir.path().join("buffer")),
        max_resident_bytes: 5_000,
        ..BufferConfig::default()
    };
    let producer = VideoProducer::start(producer_config).await.expect("start");
    server.shutdown().await;

    let (tracks, frames) = sample_frames(1_700_000_000_000);
    producer.set_tracks(tracks).expect("tracks");
    for f in &frames {
        producer.put_frame(f).expect("frame");
    }
    producer.end_fragment();
    // Once in their files, all but the oldest fragment leave memory.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = producer.stats();
        if buffered_timecodes(&dir.path().join("buffer")).len() == 5
            && stats.backlog_resident_bytes < stats.backlog_bytes / 2
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backlog left memory: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The same address again; a client socket of a parallel test may hold it for a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    let server = loop {
        match timeshard_server::start(config(addr)).await {
            Ok(server) => break server,
            Err(e) => {
                assert!(Instant::now() < deadline, "restarting on {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let summary = producer
        .finish(Some(Duration::from_secs(30)))
        .await
        .expect("persisted");
    assert_eq!(summary.stats.fragments_persisted, 5);
    let endpoint = format!("http://{addr}");
    let listed = tokio::task::spawn_blocking(move || list(&endpoint, "evicted"))
        .await
        .expect("list");
    assert_eq!(assert_once_each(&listed).len(), 5);
    server.shutdown().await;
}
