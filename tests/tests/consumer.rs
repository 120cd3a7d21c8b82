//! The producer SDK's media client for consumers (`timeshard_producer::consumer`), end to end
//! against a real server: time ranges (ListFragments + GetMediaForFragmentList), live GetMedia
//! following an upload, and live reads across connections that break.
//!
//! The reference is the sample itself (`samples/h264-320x240-25fps-1s-gop.mkv`: 5 clusters of
//! 25 frames), read with the parser's `read_fragments`: every fragment the client hands out is
//! compared with the cluster it was uploaded from, frame by frame.
//!
//! Breaking connections: a small TCP proxy sits between the client and the server and cuts
//! every connection after a fixed number of bytes from the server, so GetMedia responses break
//! in the middle of fragments again and again. The server's `public_url` is the proxy, so
//! GetDataEndpoint sends the client's media calls through it, as a load balancer would.
//!
//! The decoded-frames API and the sample programs (behind the `decode` feature) are tested in
//! `samples/tests/`, the package that enables that feature.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use timeshard_parser::{Fragment, read_fragments};
use timeshard_producer::auth::Signer;
use timeshard_producer::consumer::{MediaOptions, TimestampType, compare_numbers};
use timeshard_producer::video::control::{CreateOptions, VideoControl};
use timeshard_producer::{Credentials, Endpoint, HttpClient, MediaClient, StartSelector};
use timeshard_tests::putmedia::{AckEventType, BodySource, PutMedia};
use timeshard_tests::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// 5 s of H.264, 25 fps, a key frame every second: 5 clusters of 25 frames.
const VIDEO: &str = "h264-320x240-25fps-1s-gop.mkv";
/// How long a test waits for the next fragment before it fails.
const NEXT_TIMEOUT: Duration = Duration::from_secs(30);

fn sample_bytes() -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("samples")
        .join(VIDEO);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path:?}: {e}")))
}

/// The sample's clusters, one fragment each.
fn sample_clusters(bytes: &Bytes) -> Vec<Fragment> {
    let clusters: Vec<Fragment> = read_fragments(&bytes[..])
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(clusters.len(), 5);
    clusters
}

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
        max_backoff: Duration::from_millis(500),
        ..MediaOptions::default()
    })
}

async fn create_stream(server: &TestServer, stream: &str) {
    let control = VideoControl::new(
        http_client(),
        Endpoint::parse(&server.endpoint_url()).unwrap(),
    );
    control
        .ensure_stream(stream, Some(&CreateOptions::default()))
        .await
        .unwrap();
}

/// Uploads the sample with RELATIVE timecodes from `start_ms`, `pace` between 4 KB chunks, and
/// checks that all 5 fragments were persisted.
async fn upload(server: &TestServer, stream: &str, start_ms: i64, pace: Option<Duration>) {
    let bytes = sample_bytes();
    let source = match pace {
        Some(pace) => BodySource::paced(bytes, 4096, pace),
        None => BodySource::chunks(bytes, 64 * 1024),
    };
    let result = PutMedia::new(server.addr(), stream)
        .relative_to(start_ms)
        .send(source)
        .await;
    assert_eq!(result.status, 200, "{}", result.error_body);
    assert_eq!(
        result.acks_of(AckEventType::Persisted).len(),
        5,
        "acks: {:?}",
        result.acks
    );
}

/// Checks that `got` are the sample's clusters, in order, uploaded from `start_ms`: the same
/// frames, producer timestamps from the cluster timecodes, fragment numbers increasing, each
/// with its continuation token.
fn check_fragments(got: &[Fragment], clusters: &[Fragment], start_ms: i64) {
    assert_eq!(got.len(), clusters.len(), "fragment count");
    for (i, (g, want)) in got.iter().zip(clusters).enumerate() {
        let want_start = start_ms + want.cluster_timecode as i64;
        assert_eq!(g.producer_timestamp_ms, Some(want_start), "fragment {i}");
        assert!(g.continuation_token.is_some(), "fragment {i}: no token");
        assert_eq!(g.frames.len(), want.frames.len(), "fragment {i}: frames");
        for (j, (gf, wf)) in g.frames.iter().zip(&want.frames).enumerate() {
            assert_eq!(gf.data, wf.data, "fragment {i} frame {j}: data");
            assert_eq!(gf.key, wf.key, "fragment {i} frame {j}: key flag");
            assert_eq!(
                g.frame_producer_timestamp_ms(gf),
                Some(want_start + i64::from(wf.timecode)),
                "fragment {i} frame {j}: timestamp"
            );
        }
    }
    for pair in got.windows(2) {
        let (a, b) = (
            pair[0].fragment_number.as_deref().unwrap(),
            pair[1].fragment_number.as_deref().unwrap(),
        );
        assert_eq!(
            compare_numbers(a, b),
            std::cmp::Ordering::Less,
            "{a} then {b}"
        );
    }
}

async fn collect_range(
    client: &MediaClient,
    clock: TimestampType,
    start_ms: i64,
    end_ms: i64,
) -> Vec<Fragment> {
    let mut range = client.range(clock, start_ms, end_ms).await.unwrap();
    let mut out = Vec::new();
    while let Some(f) = tokio::time::timeout(NEXT_TIMEOUT, range.next())
        .await
        .expect("range stalled")
    {
        out.push(f.unwrap());
    }
    assert_eq!(out.len(), range.listed().len(), "every listed fragment");
    out
}

#[tokio::test]
async fn range_returns_exactly_the_uploaded_frames_in_order() {
    let server = TestServer::start().await;
    let stream = "range-cam";
    create_stream(&server, stream).await;
    let start_ms = (now_ms() / 1000 - 3600) * 1000 + 123;
    upload(&server, stream, start_ms, None).await;
    let bytes = sample_bytes();
    let clusters = sample_clusters(&bytes);
    let client = media_client(&server, stream);

    // The whole upload by producer time.
    let by_producer =
        collect_range(&client, TimestampType::Producer, start_ms, start_ms + 5000).await;
    check_fragments(&by_producer, &clusters, start_ms);

    // The same fragments by server time.
    let first = by_producer[0].server_timestamp_ms.unwrap();
    let last = by_producer[4].server_timestamp_ms.unwrap();
    let by_server = collect_range(&client, TimestampType::Server, first, last).await;
    check_fragments(&by_server, &clusters, start_ms);

    // Batches of two fragment numbers per GetMediaForFragmentList give the same.
    let batched = client.clone().with_options(MediaOptions {
        fragment_list_batch: 2,
        ..MediaOptions::default()
    });
    let by_batches =
        collect_range(&batched, TimestampType::Producer, start_ms, start_ms + 5000).await;
    check_fragments(&by_batches, &clusters, start_ms);

    // A range inside the second second holds the fragment that started before it and the one
    // starting in it.
    let middle = collect_range(
        &client,
        TimestampType::Producer,
        start_ms + 1500,
        start_ms + 2500,
    )
    .await;
    check_fragments(&middle, &clusters[1..3], start_ms);

    // Nothing an hour earlier; an inverted range is refused.
    let before = collect_range(
        &client,
        TimestampType::Producer,
        start_ms - 3_600_000,
        start_ms - 3_000_000,
    )
    .await;
    assert!(before.is_empty());
    assert!(
        client
            .range(TimestampType::Server, start_ms, start_ms - 1)
            .await
            .is_err()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn live_follows_an_upload_in_progress() {
    let server = TestServer::start().await;
    let stream = "live-cam";
    create_stream(&server, stream).await;
    let client = media_client(&server, stream);
    // EARLIEST on an empty stream waits for the first fragment, so the reader cannot miss the
    // start of the upload however the two tasks are scheduled.
    let mut live = client.live(StartSelector::Earliest);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 5 {
            let next = tokio::time::timeout(NEXT_TIMEOUT, live.next())
                .await
                .expect("live read stalled");
            got.push(next.expect("live read ended").unwrap());
        }
        (got, live)
    });
    let start_ms = now_ms();
    // About twice real time: frames arrive while their fragments are being ingested.
    upload(&server, stream, start_ms, Some(Duration::from_millis(80))).await;
    // The fifth fragment comes without a sixth after it: complete at its trailing tags.
    let (got, mut live) = reader.await.unwrap();
    check_fragments(&got, &sample_clusters(&sample_bytes()), start_ms);
    assert_eq!(
        live.resume_selector(),
        &StartSelector::ContinuationToken(got[4].continuation_token.clone().unwrap())
    );
    // Nothing more: no repeat of the last fragment.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), live.next())
            .await
            .is_err(),
        "a sixth fragment"
    );
    server.shutdown().await;
}

/// What the proxy does to a connection once it has passed its byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Close it.
    Close,
    /// Pass nothing more but keep it open, like a peer that vanished without a word.
    Stall,
}

/// A TCP proxy that cuts each connection once it has passed `cut_after` bytes from the server to
/// the client. Counts the connections it cut.
async fn cutting_proxy(
    listener: TcpListener,
    target: SocketAddr,
    cut_after: usize,
    cut: Cut,
) -> Arc<AtomicU64> {
    let cuts = Arc::new(AtomicU64::new(0));
    let counter = cuts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let cuts = counter.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let upstream = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut sent = 0;
                let mut buf = vec![0u8; 8192];
                loop {
                    let n = match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(cut_after - sent),
                    };
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                    if sent >= cut_after {
                        cuts.fetch_add(1, Ordering::SeqCst);
                        if cut == Cut::Stall {
                            // The server's side is closed (so its shutdown never waits on this
                            // connection); the client's stays open and silent for good.
                            upstream.abort();
                            drop(server_read);
                            let _keep_open = client_write;
                            std::future::pending::<()>().await;
                        }
                        break;
                    }
                }
                upstream.abort();
            });
        }
    });
    cuts
}

#[tokio::test]
async fn live_resumes_across_broken_connections_without_skipping_or_repeating() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let server =
        TestServer::start_with(|c| c.public_url = Some(format!("http://{proxy_addr}"))).await;
    // A fragment of the sample is about 10 KB: every GetMedia response breaks within the
    // second fragment it sends, most within the first.
    let cuts = cutting_proxy(listener, server.addr(), 13_000, Cut::Close).await;
    let stream = "flaky-cam";
    create_stream(&server, stream).await;
    let client = media_client(&server, stream);
    let clusters = sample_clusters(&sample_bytes());

    // Stored fragments, read from the start.
    let start_ms = (now_ms() / 1000 - 60) * 1000;
    upload(&server, stream, start_ms, None).await;
    let mut live = client.live(StartSelector::Earliest);
    let mut got = Vec::new();
    while got.len() < 5 {
        let next = tokio::time::timeout(NEXT_TIMEOUT, live.next())
            .await
            .expect("live read stalled");
        got.push(next.expect("live read ended").unwrap());
    }
    check_fragments(&got, &clusters, start_ms);
    assert!(
        live.connections() >= 3,
        "{} connections, {} cut",
        live.connections(),
        cuts.load(Ordering::SeqCst)
    );

    // Then live: a second upload followed from the token of the last fragment, with the
    // proxy still cutting every connection.
    let mut follow = client.live(live.resume_selector().clone());
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 5 {
            let next = tokio::time::timeout(NEXT_TIMEOUT, follow.next())
                .await
                .expect("live read stalled");
            got.push(next.expect("live read ended").unwrap());
        }
        (got, follow.connections())
    });
    let second_start = start_ms + 10_000;
    upload(
        &server,
        stream,
        second_start,
        Some(Duration::from_millis(80)),
    )
    .await;
    let (second, connections) = reader.await.unwrap();
    check_fragments(&second, &clusters, second_start);
    assert!(
        compare_numbers(
            got[4].fragment_number.as_deref().unwrap(),
            second[0].fragment_number.as_deref().unwrap()
        ) == std::cmp::Ordering::Less
    );
    assert!(
        connections >= 3,
        "{connections} connections, {} cut",
        cuts.load(Ordering::SeqCst)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn live_reports_a_missing_stream_and_ends() {
    let server = TestServer::start().await;
    let client = media_client(&server, "no-such-stream");
    let mut live = client.live(StartSelector::Now);
    let first = tokio::time::timeout(NEXT_TIMEOUT, live.next())
        .await
        .unwrap()
        .expect("an error");
    let error = first.expect_err("no stream, no fragment");
    assert_eq!(error.code(), Some("ResourceNotFoundException"), "{error}");
    assert!(live.next().await.is_none());
    assert!(
        client
            .range(TimestampType::Server, 0, now_ms())
            .await
            .is_err()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn live_reopens_a_connection_that_goes_silent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let server =
        TestServer::start_with(|c| c.public_url = Some(format!("http://{proxy_addr}"))).await;
    let cuts = cutting_proxy(listener, server.addr(), 13_000, Cut::Stall).await;
    let stream = "silent-cam";
    create_stream(&server, stream).await;
    let start_ms = (now_ms() / 1000 - 60) * 1000;
    upload(&server, stream, start_ms, None).await;
    let client = media_client(&server, stream).with_options(MediaOptions {
        min_backoff: Duration::from_millis(20),
        idle_timeout: Some(Duration::from_millis(300)),
        ..MediaOptions::default()
    });
    let mut live = client.live(StartSelector::Earliest);
    let mut got = Vec::new();
    while got.len() < 5 {
        let next = tokio::time::timeout(NEXT_TIMEOUT, live.next())
            .await
            .expect("live read stalled");
        got.push(next.expect("live read ended").unwrap());
    }
    check_fragments(&got, &sample_clusters(&sample_bytes()), start_ms);
    assert!(
        live.connections() >= 3,
        "{} connections, {} stalled",
        live.connections(),
        cuts.load(Ordering::SeqCst)
    );
    server.shutdown().await;
}
