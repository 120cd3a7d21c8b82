//! Decoded frames and the sample programs, end to end against a real server.
//!
//! These tests live in this package rather than in `tests/` because they need the producer SDK's
//! `decode` feature, which this package turns on, and its binaries (`CARGO_BIN_EXE_*` only names
//! a package's own). The fragment-level consumer tests are in `tests/tests/consumer.rs`.
//!
//! The sample `samples/h264-320x240-25fps-1s-gop.mkv` (125 frames at 25 fps, a key frame every
//! 25) is uploaded with RELATIVE timecodes from a known start, so every frame's producer
//! timestamp is `start + 40 ms x index`; server timestamps are checked against the fragments'
//! own (as ListFragments reports them) plus the frame's offset in its fragment.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use timeshard_producer::auth::Signer;
use timeshard_producer::consumer::{
    DecodedFrame, FrameSource, ListedFragment, MediaOptions, Selection, TimestampType,
};
use timeshard_producer::video::control::{CreateOptions, VideoControl};
use timeshard_producer::{Credentials, Endpoint, HttpClient, MediaClient, StartSelector};
use timeshard_samples::motion::MotionLine;
use timeshard_tests::putmedia::{AckEventType, BodySource, PutMedia};
use timeshard_tests::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, TestServer};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const VIDEO: &str = "h264-320x240-25fps-1s-gop.mkv";
const FRAMES: usize = 125;
const FRAME_MS: i64 = 40;
const NEXT_TIMEOUT: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn http_client() -> HttpClient {
    HttpClient::new(Signer::new(
        Some(Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY)),
        REGION,
    ))
}

fn media_client(server: &TestServer, stream: &str) -> MediaClient {
    MediaClient::new(
        http_client(),
        Endpoint::parse(&server.endpoint_url()).unwrap(),
        stream,
    )
    .with_options(MediaOptions {
        min_backoff: Duration::from_millis(20),
        ..MediaOptions::default()
    })
}

/// A server with stream `stream` holding the sample, uploaded from `start_ms` (producer time);
/// `pace` slows the upload (for live readers).
async fn server_with_upload(stream: &str) -> (TestServer, i64) {
    let server = TestServer::start().await;
    create_stream(&server, stream).await;
    let start_ms = (now_ms() / 1000 - 600) * 1000 + 7;
    upload(&server, stream, start_ms, None).await;
    (server, start_ms)
}

async fn create_stream(server: &TestServer, stream: &str) {
    VideoControl::new(
        http_client(),
        Endpoint::parse(&server.endpoint_url()).unwrap(),
    )
    .ensure_stream(stream, Some(&CreateOptions::default()))
    .await
    .unwrap();
}

async fn upload(server: &TestServer, stream: &str, start_ms: i64, pace: Option<Duration>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(VIDEO);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"));
    let source = match pace {
        Some(pace) => BodySource::paced(bytes, 4096, pace),
        None => BodySource::chunks(bytes, 64 * 1024),
    };
    let result = PutMedia::new(server.addr(), stream)
        .relative_to(start_ms)
        .send(source)
        .await;
    assert_eq!(result.status, 200, "{}", result.error_body);
    assert_eq!(result.acks_of(AckEventType::Persisted).len(), 5);
}

/// The stream's fragments as ListFragments has them, in order.
async fn listed(client: &MediaClient, start_ms: i64) -> Vec<ListedFragment> {
    let range = client
        .range(TimestampType::Producer, start_ms, start_ms + 5000)
        .await
        .unwrap();
    assert_eq!(range.listed().len(), 5);
    range.listed().to_vec()
}

async fn collect(
    client: &MediaClient,
    source: FrameSource,
    selection: Selection,
) -> Vec<DecodedFrame> {
    let mut frames = client.frames(source, selection);
    let mut out = Vec::new();
    while let Some(next) = tokio::time::timeout(NEXT_TIMEOUT, frames.next())
        .await
        .expect("frames stalled")
    {
        out.push(next.unwrap());
    }
    out
}

/// Checks frames against the sample: frame `indexes[i]` of the upload, in order, with its
/// producer and server timestamps and fragment number.
fn check_frames(got: &[DecodedFrame], indexes: &[usize], start_ms: i64, listed: &[ListedFragment]) {
    let got_ms: Vec<Option<i64>> = got.iter().map(|f| f.producer_timestamp_ms).collect();
    let want_ms: Vec<Option<i64>> = indexes
        .iter()
        .map(|&i| Some(start_ms + i as i64 * FRAME_MS))
        .collect();
    assert_eq!(got_ms, want_ms, "producer timestamps");
    for (frame, &i) in got.iter().zip(indexes) {
        let fragment = &listed[i / 25];
        assert_eq!(
            frame.fragment_number.as_deref(),
            Some(fragment.fragment_number.as_str()),
            "frame {i}: fragment"
        );
        assert_eq!(
            frame.timestamp_ms,
            fragment.server_timestamp_ms + (i % 25) as i64 * FRAME_MS,
            "frame {i}: server timestamp"
        );
        assert_eq!(frame.key, i % 25 == 0, "frame {i}: key flag");
        assert_eq!((frame.width, frame.height), (320, 240), "frame {i}: size");
        assert_eq!(frame.rgb.len(), 320 * 240 * 3, "frame {i}: RGB bytes");
    }
}

#[tokio::test]
async fn frames_of_a_range_every_frame_every_nth_or_key_frames() {
    let (server, start_ms) = server_with_upload("frames-range").await;
    let client = media_client(&server, "frames-range");
    let listed = listed(&client, start_ms).await;
    let whole = FrameSource::Range {
        clock: TimestampType::Producer,
        start_ms,
        end_ms: start_ms + 5000,
    };

    let all = collect(&client, whole.clone(), Selection::All).await;
    check_frames(&all, &(0..FRAMES).collect::<Vec<_>>(), start_ms, &listed);

    let keys = collect(&client, whole.clone(), Selection::KeyFramesOnly).await;
    check_frames(&keys, &[0, 25, 50, 75, 100], start_ms, &listed);

    let fifth = collect(&client, whole, Selection::EveryNth(5)).await;
    check_frames(
        &fifth,
        &(0..FRAMES).step_by(5).collect::<Vec<_>>(),
        start_ms,
        &listed,
    );

    // A range inside the upload: only its frames, and every 5th counts from the first of them
    // (frame 38 at +1520 ms is the first at or after +1500).
    let inner = FrameSource::Range {
        clock: TimestampType::Producer,
        start_ms: start_ms + 1500,
        end_ms: start_ms + 2500,
    };
    let some = collect(&client, inner.clone(), Selection::All).await;
    check_frames(&some, &(38..=62).collect::<Vec<_>>(), start_ms, &listed);
    let some_fifth = collect(&client, inner, Selection::EveryNth(5)).await;
    check_frames(&some_fifth, &[38, 43, 48, 53, 58], start_ms, &listed);

    // The frames are pictures: the test source moves, so consecutive frames differ.
    assert_ne!(all[0].rgb, all[1].rgb);
    server.shutdown().await;
}

#[tokio::test]
async fn frames_follow_a_live_upload() {
    let server = TestServer::start().await;
    create_stream(&server, "frames-live").await;
    let client = media_client(&server, "frames-live");
    let mut frames = client.frames(
        FrameSource::Live(StartSelector::Earliest),
        Selection::EveryNth(5),
    );
    let start_ms = now_ms();
    let uploading = {
        let server_addr = server.addr();
        tokio::spawn(async move {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(VIDEO);
            let result = PutMedia::new(server_addr, "frames-live")
                .relative_to(start_ms)
                .send(BodySource::paced(
                    std::fs::read(path).unwrap(),
                    4096,
                    Duration::from_millis(80),
                ))
                .await;
            assert_eq!(result.status, 200);
        })
    };
    let mut got = Vec::new();
    while got.len() < FRAMES / 5 {
        let next = tokio::time::timeout(NEXT_TIMEOUT, frames.next())
            .await
            .expect("live frames stalled");
        got.push(next.expect("live frames ended").unwrap());
    }
    uploading.await.unwrap();
    let listed = listed(&client, start_ms).await;
    check_frames(
        &got,
        &(0..FRAMES).step_by(5).collect::<Vec<_>>(),
        start_ms,
        &listed,
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), frames.next())
            .await
            .is_err(),
        "a frame more than uploaded"
    );
    server.shutdown().await;
}

/// The connection flags the programs get.
fn connection_args(server: &TestServer, stream: &str) -> Vec<String> {
    [
        "--endpoint",
        &server.endpoint_url(),
        "--stream",
        stream,
        "--region",
        REGION,
        "--access-key-id",
        ACCESS_KEY_ID,
        "--secret-access-key",
        SECRET_ACCESS_KEY,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test]
async fn motion_prints_a_scored_line_per_frame_and_stops_on_ctrl_c() {
    let (server, start_ms) = server_with_upload("motion-cam").await;
    let listed = listed(&media_client(&server, "motion-cam"), start_ms).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_motion"))
        .args(connection_args(&server, "motion-cam"))
        .args(["--start", "earliest", "--every", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = Vec::new();
    while got.len() < FRAMES / 5 {
        let line = tokio::time::timeout(NEXT_TIMEOUT, lines.next_line())
            .await
            .expect("motion printed nothing")
            .unwrap()
            .expect("motion ended early");
        got.push(MotionLine::parse(&line).unwrap_or_else(|| panic!("bad line {line:?}")));
    }
    // Ctrl-C: a clean exit.
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("motion did not stop on SIGINT")
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "motion exited with {status}: {stderr}");
    assert!(stderr.contains("stopped after 25 frame(s)"), "{stderr}");

    for (n, line) in got.iter().enumerate() {
        let i = n * 5;
        let fragment = &listed[i / 25];
        assert_eq!(line.fragment_number, fragment.fragment_number, "line {n}");
        assert_eq!(
            line.timestamp_ms,
            fragment.server_timestamp_ms + (i % 25) as i64 * FRAME_MS,
            "line {n}"
        );
        assert!(
            (0.0..=255.0).contains(&line.score),
            "line {n}: {}",
            line.score
        );
    }
    assert_eq!(
        got[0].score, 0.0,
        "the first frame has nothing to compare with"
    );
    // testsrc moves every frame: five frames apart the picture has changed.
    assert!(got[1..].iter().all(|l| l.score > 0.0), "{got:?}");
    server.shutdown().await;
}

/// Runs save-jpegs with `extra` flags into a new directory; returns the files' names (sorted)
/// and stdout.
async fn save_jpegs(
    server: &TestServer,
    start_ms: i64,
    dir: &Path,
    extra: &[&str],
) -> (Vec<String>, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_save-jpegs"))
        .args(connection_args(server, "jpeg-cam"))
        .args([
            "--clock",
            "producer",
            "--start",
            &start_ms.to_string(),
            "--end",
            &(start_ms + 5000).to_string(),
            "--out",
        ])
        .arg(dir)
        .args(extra)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "save-jpegs {extra:?}: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        check_jpeg(&dir.join(name));
    }
    (names, stdout)
}

/// A JPEG of 320x240: SOI, a baseline or progressive SOF with those dimensions, EOI.
fn check_jpeg(path: &PathBuf) {
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[..3], [0xFF, 0xD8, 0xFF], "{path:?}: no JPEG magic");
    assert_eq!(&data[data.len() - 2..], [0xFF, 0xD9], "{path:?}: no EOI");
    let sof = data
        .windows(2)
        .position(|w| w[0] == 0xFF && (w[1] == 0xC0 || w[1] == 0xC2))
        .unwrap_or_else(|| panic!("{path:?}: no SOF marker"));
    let height = u16::from_be_bytes([data[sof + 5], data[sof + 6]]);
    let width = u16::from_be_bytes([data[sof + 7], data[sof + 8]]);
    assert_eq!((width, height), (320, 240), "{path:?}");
}

fn names_for(start_ms: i64, indexes: impl Iterator<Item = usize>) -> Vec<String> {
    let mut names: Vec<String> = indexes
        .map(|i| format!("{}.jpg", start_ms + i as i64 * FRAME_MS))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn save_jpegs_writes_one_file_per_selected_frame() {
    let (server, start_ms) = server_with_upload("jpeg-cam").await;
    let dirs = tempfile::tempdir().unwrap();

    let (keys, stdout) = save_jpegs(
        &server,
        start_ms,
        &dirs.path().join("keys"),
        &["--key-frames-only"],
    )
    .await;
    assert_eq!(keys, names_for(start_ms, (0..FRAMES).step_by(25)));
    assert!(stdout.contains("wrote 5 JPEG file(s)"), "{stdout}");
    assert!(stdout.contains("320x240"), "{stdout}");

    let (fifth, _) = save_jpegs(
        &server,
        start_ms,
        &dirs.path().join("fifth"),
        &["--every", "5"],
    )
    .await;
    assert_eq!(fifth, names_for(start_ms, (0..FRAMES).step_by(5)));

    let (all, stdout) = save_jpegs(&server, start_ms, &dirs.path().join("all"), &[]).await;
    assert_eq!(all, names_for(start_ms, 0..FRAMES));
    assert!(stdout.contains("wrote 125 JPEG file(s)"), "{stdout}");

    // Flags that contradict each other are refused before anything runs.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_save-jpegs"))
        .args(connection_args(&server, "jpeg-cam"))
        .args([
            "--start",
            "0",
            "--end",
            "1",
            "--out",
            "x",
            "--every",
            "2",
            "--key-frames-only",
        ])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    server.shutdown().await;
}
