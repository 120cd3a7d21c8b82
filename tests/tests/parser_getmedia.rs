//! The parser's FragmentReader on our own GetMedia and GetMediaForFragmentList output: read in one
//! piece and one byte at a time, it gives the same fragments, carrying the frames uploaded.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_kinesisvideomedia::types::{StartSelector, StartSelectorType};
use timeshard_parser::{Fragment, FragmentReader, Frame, MkvEvent, MkvReader};
use timeshard_tests::putmedia::{AckEventType, BodySource, PutMedia};
use timeshard_tests::{
    TestServer, kinesis_video_archived_media_client, kinesis_video_media_client,
};

fn sample() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples/h264-aac-320x240.mkv");
    std::fs::read(path).expect("sample")
}

/// The sample's frames in document order.
fn uploaded_frames(mkv: &[u8]) -> Vec<Frame> {
    let mut r = MkvReader::new();
    r.push(mkv);
    let mut out = Vec::new();
    loop {
        let ev = match r.next_event().expect("valid") {
            Some(e) => Some(e),
            None => r.finish().expect("valid"),
        };
        match ev {
            Some(MkvEvent::Frame(f)) => out.push(f),
            Some(_) => {}
            None => return out,
        }
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

/// Checks the fragments carry the uploaded frames (data, tracks, key flags) in order.
fn check_frames(fragments: &[Fragment], want: &[Frame], what: &str) {
    let got: Vec<&Frame> = fragments.iter().flat_map(|f| &f.frames).collect();
    assert_eq!(got.len(), want.len(), "{what}: frame count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            (g.track, g.key, &g.data),
            (w.track, w.key, &w.data),
            "{what}: frame {i}"
        );
    }
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
    let mkv = sample();
    let want = uploaded_frames(&mkv);
    let result = PutMedia::new(server.addr(), "parsed")
        .send(BodySource::chunks(mkv.clone(), 4096))
        .await;
    let numbers: Vec<String> = result
        .acks_of(AckEventType::Persisted)
        .iter()
        .map(|a| a.fragment_number.clone().expect("a fragment number"))
        .collect();
    assert!(numbers.len() >= 3, "{:?}", result.acks);

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
    let whole = parse_whole(&body);
    assert_eq!(whole.len(), numbers.len());
    assert_eq!(parse_bytewise(&body), whole);
    check_frames(&whole, &want, "GetMediaForFragmentList");
    for (f, n) in whole.iter().zip(&numbers) {
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
    assert_eq!(whole.len(), numbers.len());
    check_frames(&whole, &want, "GetMedia");
    for (i, (f, n)) in whole.iter().zip(&numbers).enumerate() {
        assert_eq!(f.fragment_number.as_ref(), Some(n), "fragment {i}");
        assert!(f.server_timestamp_ms.is_some() && f.producer_timestamp_ms.is_some());
        assert_eq!(f.continuation_token.as_ref(), Some(n));
        assert!(f.millis_behind_now.is_some());
    }
    server.shutdown().await;
}
