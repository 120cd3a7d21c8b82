//! The parser's FragmentReader on our own GetMedia and GetMediaForFragmentList output: read in one
//! piece and one byte at a time, it gives the same fragments, carrying the frames, timestamps
//! and producer tags uploaded.
//!
//! The upload is the committed sample with H.264 (B-frames) and AAC, rewritten the way the KVS
//! producer sends it (unknown-size Segment and Clusters, the producer's tags before each
//! Cluster) with RELATIVE timecodes from a known start, so every frame's producer timestamp is
//! known.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_kinesisvideomedia::types::{StartSelector, StartSelectorType};
use timeshard_parser::mkv::write;
use timeshard_parser::{
    Fragment, FragmentReader, Frame, MkvEvent, MkvReader, SegmentInfo, SimpleTag, TagValue, Track,
};
use timeshard_tests::putmedia::{AckEventType, BodySource, PutMedia};
use timeshard_tests::{
    TestServer, kinesis_video_archived_media_client, kinesis_video_media_client,
};

fn sample() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples/h264-aac-320x240.mkv");
    std::fs::read(path).expect("sample")
}

/// The producer's start: cluster timecodes count from here (RELATIVE).
const PRODUCER_START_MS: i64 = 1_700_000_000_000;

/// What was uploaded: the body and its clusters.
struct Upload {
    body: Vec<u8>,
    clusters: Vec<Cluster>,
}

/// One uploaded cluster.
struct Cluster {
    tags: Vec<SimpleTag>,
    /// Producer time of the Cluster's Timecode.
    start_ms: i64,
    /// The frames with their producer timestamps.
    frames: Vec<(i64, Frame)>,
}

/// The sample rewritten KVS-producer style, with two producer tags before each Cluster.
fn upload(mkv: &[u8]) -> Upload {
    let mut r = MkvReader::new();
    r.push(mkv);
    let mut info = SegmentInfo::default();
    let mut tracks: Vec<Track> = Vec::new();
    let mut clusters: Vec<(u64, Vec<Frame>)> = Vec::new();
    loop {
        let ev = match r.next_event().expect("valid") {
            Some(e) => Some(e),
            None => r.finish().expect("valid"),
        };
        match ev {
            Some(MkvEvent::Info(i)) => info = i,
            Some(MkvEvent::Tracks(t)) => tracks = t,
            Some(MkvEvent::ClusterStart { timecode }) => clusters.push((timecode, Vec::new())),
            Some(MkvEvent::Frame(f)) => clusters.last_mut().expect("a cluster").1.push(f),
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(info.timecode_scale, 1_000_000, "ms timecodes");
    let mut body = Vec::new();
    write::ebml_header(&mut body);
    write::segment_start_unknown(&mut body);
    write::info(&mut body, &info);
    write::tracks(&mut body, &tracks);
    let mut uploaded = Vec::new();
    for (n, (timecode, frames)) in clusters.into_iter().enumerate() {
        let tags = vec![
            SimpleTag::string("camera", format!("cluster {n}")),
            SimpleTag {
                name: "blob".to_owned(),
                value: TagValue::Binary(vec![n as u8; 5].into()),
            },
        ];
        write::tags(&mut body, &tags);
        write::cluster_start_unknown(&mut body, timecode);
        let mut timed = Vec::new();
        for f in frames {
            write::simple_block(&mut body, &f);
            timed.push((
                PRODUCER_START_MS + timecode as i64 + i64::from(f.timecode),
                f,
            ));
        }
        uploaded.push(Cluster {
            tags,
            start_ms: PRODUCER_START_MS + timecode as i64,
            frames: timed,
        });
    }
    Upload {
        body,
        clusters: uploaded,
    }
}

fn parse_whole(body: &[u8]) -> Vec<Fragment> {
    let mut r = FragmentReader::new();
    r.push(body);
    let mut out = Vec::new();
    while let Some(f) = r.next_fragment().expect("valid") {
        out.push(f);
    }
    while let Some(f) = r.finish().expect("valid") {
        out.push(f);
    }
    out
}

fn parse_bytewise(body: &[u8]) -> Vec<Fragment> {
    let mut r = FragmentReader::new();
    let mut out = Vec::new();
    for b in body {
        r.push(std::slice::from_ref(b));
        while let Some(f) = r.next_fragment().expect("valid") {
            out.push(f);
        }
    }
    while let Some(f) = r.finish().expect("valid") {
        out.push(f);
    }
    out
}

/// Checks the fragments are the uploaded clusters: the same producer tags, and the same frames
/// (track, key flag, data) at the same producer timestamps.
fn check_uploaded(fragments: &[Fragment], upload: &Upload, what: &str) {
    assert_eq!(fragments.len(), upload.clusters.len(), "{what}: fragments");
    for (i, (f, c)) in fragments.iter().zip(&upload.clusters).enumerate() {
        assert_eq!(f.producer_tags, c.tags, "{what}: fragment {i} tags");
        assert!(f.server_timestamp_ms.is_some(), "{what}: fragment {i}");
        // The Cluster's time (the video key frame's; an audio frame may come before it).
        assert_eq!(
            f.producer_timestamp_ms,
            Some(c.start_ms),
            "{what}: fragment {i} start"
        );
        assert_eq!(
            f.frames.len(),
            c.frames.len(),
            "{what}: fragment {i} frames"
        );
        for (j, (g, (ts, w))) in f.frames.iter().zip(&c.frames).enumerate() {
            assert_eq!(
                (g.track, g.key, &g.data),
                (w.track, w.key, &w.data),
                "{what}: fragment {i} frame {j}"
            );
            assert_eq!(
                f.frame_producer_timestamp_ms(g),
                Some(*ts),
                "{what}: fragment {i} frame {j} time"
            );
            assert_eq!(
                f.frame_server_timestamp_ms(g),
                f.server_timestamp_ms
                    .zip(f.producer_timestamp_ms)
                    .map(|(server, producer)| server + ts - producer),
                "{what}: fragment {i} frame {j} server time"
            );
        }
    }
}

/// The fields both APIs give a fragment (they differ in the trailing tags).
fn common_fields(f: &Fragment) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        &f.fragment_number,
        f.server_timestamp_ms,
        f.producer_timestamp_ms,
        &f.producer_tags,
        &f.tracks,
        f.cluster_timecode,
        &f.frames,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_read_the_same_whole_and_byte_by_byte() {
    let server = TestServer::start().await;
    let kv = server.kinesis_video_client();
    kv.create_stream()
        .stream_name("parsed")
        .data_retention_in_hours(24)
        .send()
        .await
        .expect("CreateStream");
    let upload = upload(&sample());
    let result = PutMedia::new(server.addr(), "parsed")
        .relative_to(PRODUCER_START_MS)
        .send(BodySource::chunks(upload.body.clone(), 4096))
        .await;
    let numbers: Vec<String> = result
        .acks_of(AckEventType::Persisted)
        .iter()
        .map(|a| a.fragment_number.clone().expect("a fragment number"))
        .collect();
    assert_eq!(numbers.len(), upload.clusters.len(), "{:?}", result.acks);

    // GetMediaForFragmentList: a finite body.
    let archived = kinesis_video_archived_media_client(&server.endpoint_url());
    let out = archived
        .get_media_for_fragment_list()
        .stream_name("parsed")
        .set_fragments(Some(numbers.clone()))
        .send()
        .await
        .expect("GetMediaForFragmentList");
    let body = out.payload.collect().await.expect("body").into_bytes();
    let listed = parse_whole(&body);
    assert_eq!(parse_bytewise(&body), listed);
    check_uploaded(&listed, &upload, "GetMediaForFragmentList");
    for (f, n) in listed.iter().zip(&numbers) {
        assert_eq!(f.fragment_number.as_ref(), Some(n));
    }

    // GetMedia from the earliest fragment: live, so read until every fragment has arrived.
    let media = kinesis_video_media_client(&server.endpoint_url());
    let mut out = media
        .get_media()
        .stream_name("parsed")
        .start_selector(
            StartSelector::builder()
                .start_selector_type(StartSelectorType::Earliest)
                .build()
                .expect("selector"),
        )
        .send()
        .await
        .expect("GetMedia");
    // A live document has no end of its own: the reader hands a fragment over when the next one
    // starts, so the last one is complete once the body has been quiet for a while.
    let mut body = Vec::new();
    let mut reader = FragmentReader::new();
    let mut seen = 0;
    loop {
        let wait = if seen + 1 >= numbers.len() { 1 } else { 10 };
        let Ok(chunk) = tokio::time::timeout(Duration::from_secs(wait), out.payload.next()).await
        else {
            assert!(
                seen + 1 >= numbers.len(),
                "GetMedia stalled after {seen} fragments"
            );
            break;
        };
        let chunk = chunk.expect("a chunk").expect("readable");
        body.extend_from_slice(&chunk);
        reader.push(&chunk);
        while reader.next_fragment().expect("valid").is_some() {
            seen += 1;
        }
    }
    drop(out);
    let whole = parse_whole(&body);
    assert_eq!(parse_bytewise(&body), whole);
    check_uploaded(&whole, &upload, "GetMedia");
    for (i, (f, n)) in whole.iter().zip(&numbers).enumerate() {
        assert_eq!(f.fragment_number.as_ref(), Some(n), "fragment {i}");
        assert_eq!(f.continuation_token.as_ref(), Some(n));
        assert!(f.millis_behind_now.is_some());
        assert_eq!(common_fields(f), common_fields(&listed[i]), "fragment {i}");
    }
    // Server timestamps increase with the fragments.
    assert!(
        whole
            .windows(2)
            .all(|w| w[0].server_timestamp_ms <= w[1].server_timestamp_ms)
    );
    server.shutdown().await;
}
