//! FragmentReader and read_fragments on real AWS GetMedia captures and on bodies we write.

mod common;

use std::io::Read;
use std::sync::Arc;

use common::*;
use timeshard_parser::fragment::{Fragment, FragmentReader, format_timestamp_ms, read_fragments};
use timeshard_parser::mkv::write;
use timeshard_parser::{MkvError, MkvErrorKind, ReaderLimits, SegmentInfo, SimpleTag};

fn all_fragments(input: &[u8]) -> Result<Vec<Fragment>, MkvError> {
    let mut reader = FragmentReader::new();
    reader.push(input);
    let mut out = Vec::new();
    while let Some(f) = reader.next_fragment()? {
        out.push(f);
    }
    while let Some(f) = reader.finish()? {
        out.push(f);
    }
    Ok(out)
}

#[test]
fn aws_get_media_capture() {
    let fragments = all_fragments(&aws_fixture(AWS_GET_MEDIA)).expect("valid");
    assert_eq!(fragments.len(), 2);
    let f = &fragments[0];
    assert_eq!(
        f.fragment_number.as_deref(),
        Some("91343852333181432392682062607743920146159169392")
    );
    assert_eq!(f.server_timestamp_ms, Some(1_511_852_109_126));
    assert_eq!(f.producer_timestamp_ms, Some(1_511_852_108_513));
    assert_eq!(f.millis_behind_now, Some(15_858));
    assert_eq!(f.continuation_token, f.fragment_number);
    assert_eq!((f.error_code.as_deref(), f.error_id), (None, None));
    assert!(f.has_cluster);
    assert_eq!(f.cluster_timecode, 0);
    assert_eq!(f.info.timecode_scale, 1_000_000);
    assert_eq!(f.info.muxing_app.as_deref(), Some("Lavf57.71.100"));
    assert_eq!(f.tracks.len(), 1);
    assert_eq!(f.tracks[0].codec_id, "V_MPEG4/ISO/AVC");
    let video = f.tracks[0].video.as_ref().expect("video");
    assert_eq!((video.pixel_width, video.pixel_height), (640, 360));
    // The file's own tags (from the MP4 it was made from) are producer tags.
    let names: Vec<&str> = f.producer_tags.iter().map(|t| t.name.as_str()).collect();
    assert!(names.starts_with(&[
        "COMPATIBLE_BRANDS",
        "MAJOR_BRAND",
        "MINOR_VERSION",
        "ENCODER"
    ]));
    assert!(!names.iter().any(|n| n.starts_with("AWS_")));
    // 4 frames kept by the trim, the first a key frame.
    assert_eq!(f.frames.len(), 4);
    assert!(f.frames[0].key && !f.frames[1].key);
    assert_eq!(f.frame_timestamp_ms(&f.frames[1]), 33);
    assert_eq!(
        f.frame_producer_timestamp_ms(&f.frames[1]),
        Some(1_511_852_108_546)
    );

    let g = &fragments[1];
    assert_eq!(g.cluster_timecode, 2000);
    assert_eq!(g.server_timestamp_ms, Some(1_511_852_110_915));
    assert_eq!(g.millis_behind_now, Some(14_155));
    assert_eq!(g.frame_timestamp_ms(&g.frames[1]), 2033);
    // Same tracks in both documents: one shared allocation.
    assert!(Arc::ptr_eq(&f.tracks, &g.tracks));
}

#[test]
fn aws_capture_with_non_increasing_timecodes() {
    let fragments = all_fragments(&aws_fixture(AWS_NON_INCREASING)).expect("valid");
    let timecodes: Vec<u64> = fragments.iter().map(|f| f.cluster_timecode).collect();
    assert_eq!(timecodes, [10014, 0, 1001, 2003]);
    let server: Vec<i64> = fragments
        .iter()
        .map(|f| f.server_timestamp_ms.expect("set"))
        .collect();
    assert!(server.windows(2).all(|w| w[0] <= w[1]), "{server:?}");
    // Fragment numbers increase as big integers (same length here, so as strings).
    let numbers: Vec<&str> = fragments
        .iter()
        .map(|f| f.fragment_number.as_deref().expect("set"))
        .collect();
    assert!(
        numbers
            .windows(2)
            .all(|w| w[0].len() == w[1].len() && w[0] < w[1]),
        "{numbers:?}"
    );
    assert!(
        fragments
            .iter()
            .all(|f| f.frames.len() == 6 && f.continuation_token.is_some())
    );
}

#[test]
fn aws_capture_with_mixed_tags() {
    let fragments = all_fragments(&aws_fixture(AWS_MIXED_TAGS)).expect("valid");
    assert_eq!(fragments.len(), 10);
    for (i, f) in fragments.iter().enumerate() {
        // testTag_0..4 after each cluster, and in the first document before it too.
        let names: Vec<&str> = f.producer_tags.iter().map(|t| t.name.as_str()).collect();
        let once = [
            "testTag_0",
            "testTag_1",
            "testTag_2",
            "testTag_3",
            "testTag_4",
        ];
        let expected = if i == 0 {
            [once, once].concat()
        } else {
            once.to_vec()
        };
        assert_eq!(names, expected, "fragment {i}");
        assert_eq!(f.producer_tags[2].value_str(), Some("testTag_2_Value"));
        assert_eq!(
            f.producer_timestamp_ms,
            Some(i as i64 * 5000),
            "fragment {i}"
        );
        assert_eq!(f.cluster_timecode, i as u64 * 5000);
        assert_eq!(f.frames.len(), 10);
        assert_eq!(f.tracks[0].codec_id, "V_MS/VFW/FOURCC");
        assert_eq!(f.info.title.as_deref(), Some("Kinesis Video SDK"));
    }
    assert_eq!(fragments[0].server_timestamp_ms, Some(1_537_574_915_281));
    assert_eq!(fragments[0].millis_behind_now, Some(910));
}

/// One GetMedia-style document with these tags before and after its Cluster.
fn document(buf: &mut Vec<u8>, before: &[SimpleTag], cluster: Option<u64>, after: &[SimpleTag]) {
    write::ebml_header(buf);
    write::segment_start_unknown(buf);
    write::info(buf, &SegmentInfo::default());
    write::tracks(buf, &[video_track()]);
    write::tags(buf, before);
    if let Some(timecode) = cluster {
        write::cluster_start_unknown(buf, timecode);
        write::simple_block(buf, &frame(1, 0, true, b"key"));
        write::simple_block(buf, &frame(1, 40, false, b"delta"));
    }
    write::tags(buf, after);
}

fn tag(name: &str, value: &str) -> SimpleTag {
    SimpleTag::string(name, value)
}

#[test]
fn fragment_list_spellings_and_errors() {
    let mut body = Vec::new();
    document(
        &mut body,
        &[
            tag("AWS_KINESISVIDEO_FRAGMENT_NUMBER", "5"),
            tag("AWS_KINESISVIDEO_SERVER_SIDE_TIMESTAMP", "1700000000.5"),
            tag("AWS_KINESISVIDEO_PRODUCER_SIDE_TIMESTAMP", "1699999999"),
        ],
        Some(1_699_999_999_000),
        &[
            tag("AWS_KINESISVIDEO_EXCEPTION_ERROR_CODE", "KMS_KEY_DISABLED"),
            tag("AWS_KINESISVIDEO_EXCEPTION_MESSAGE", "key disabled"),
        ],
    );
    // A document that only reports an error.
    document(
        &mut body,
        &[tag("AWS_KINESISVIDEO_FRAGMENT_NUMBER", "6")],
        None,
        &[
            tag("AWS_KINESISVIDEO_ERROR_CODE", "MISSING_FRAGMENT"),
            tag("AWS_KINESISVIDEO_ERROR_ID", "4000"),
        ],
    );
    // An empty document yields nothing.
    document(&mut body, &[], None, &[]);
    let fragments = all_fragments(&body).expect("valid");
    assert_eq!(fragments.len(), 2);
    let f = &fragments[0];
    assert_eq!(f.server_timestamp_ms, Some(1_700_000_000_500));
    assert_eq!(f.producer_timestamp_ms, Some(1_699_999_999_000));
    assert_eq!(f.error_code.as_deref(), Some("KMS_KEY_DISABLED"));
    assert_eq!(f.error_message.as_deref(), Some("key disabled"));
    assert_eq!(f.frame_timestamp_ms(&f.frames[1]), 1_699_999_999_040);
    let e = &fragments[1];
    assert!(!e.has_cluster && e.frames.is_empty());
    assert_eq!(e.fragment_number.as_deref(), Some("6"));
    assert_eq!(
        (e.error_code.as_deref(), e.error_id),
        (Some("MISSING_FRAGMENT"), Some(4000))
    );
}

#[test]
fn malformed_aws_values_are_errors() {
    for (name, value) in [
        ("AWS_KINESISVIDEO_SERVER_TIMESTAMP", "yesterday"),
        ("AWS_KINESISVIDEO_PRODUCER_TIMESTAMP", "1.2.3"),
        ("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW", "12ms"),
        ("AWS_KINESISVIDEO_ERROR_ID", "x"),
    ] {
        let mut body = Vec::new();
        document(&mut body, &[tag(name, value)], Some(0), &[]);
        let e = all_fragments(&body).expect_err("rejected");
        assert_eq!(e.kind, MkvErrorKind::Invalid);
        assert!(e.message.contains(name) && e.message.contains(value), "{e}");
    }
}

#[test]
fn a_file_with_many_clusters_yields_one_fragment_per_cluster() {
    let fragments = all_fragments(&sample(VIDEO_SAMPLE)).expect("valid");
    assert_eq!(fragments.len(), 5);
    for (i, f) in fragments.iter().enumerate() {
        assert_eq!(f.cluster_timecode, i as u64 * 1000);
        assert_eq!(f.frames.len(), 25);
        assert!(f.frames[0].key);
        assert_eq!(f.frame_timestamp_ms(&f.frames[24]), i as i64 * 1000 + 960);
        assert!(Arc::ptr_eq(&f.tracks, &fragments[0].tracks));
        assert_eq!(f.info.duration, Some(5000.0));
    }
    // The file's Tags come before the first Cluster.
    assert_eq!(fragments[0].producer_tags.len(), 1);
    assert!(fragments[1].producer_tags.is_empty());

    // With the tags between Clusters: fragment tags go to the next, others to the previous.
    let mut body = Vec::new();
    write::ebml_header(&mut body);
    write::segment_start_unknown(&mut body);
    for n in 0..3u64 {
        write::tags(
            &mut body,
            &[tag("AWS_KINESISVIDEO_FRAGMENT_NUMBER", &n.to_string())],
        );
        write::cluster_start_unknown(&mut body, n * 10);
        write::simple_block(&mut body, &frame(1, 0, true, b"f"));
        write::tags(
            &mut body,
            &[
                tag("note", &format!("after {n}")),
                tag("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW", &n.to_string()),
            ],
        );
    }
    let fragments = all_fragments(&body).expect("valid");
    assert_eq!(fragments.len(), 3);
    for (n, f) in fragments.iter().enumerate() {
        assert_eq!(f.fragment_number.as_deref(), Some(n.to_string().as_str()));
        assert_eq!(f.millis_behind_now, Some(n as i64));
        assert_eq!(f.producer_tags, vec![tag("note", &format!("after {n}"))]);
    }
}

#[test]
fn a_fragment_is_delivered_when_the_next_document_starts() {
    let mut first = Vec::new();
    document(
        &mut first,
        &[tag("AWS_KINESISVIDEO_FRAGMENT_NUMBER", "1")],
        Some(0),
        &[tag("AWS_KINESISVIDEO_CONTINUATION_TOKEN", "1")],
    );
    let mut second = Vec::new();
    document(
        &mut second,
        &[tag("AWS_KINESISVIDEO_FRAGMENT_NUMBER", "2")],
        Some(1000),
        &[],
    );
    let mut reader = FragmentReader::new();
    reader.push(&first);
    assert_eq!(
        reader.next_fragment().expect("valid"),
        None,
        "trailing tags may still come"
    );
    // The next document's first element header (ID and size) completes the previous fragment.
    reader.push(&second[..4]);
    assert_eq!(reader.next_fragment().expect("valid"), None);
    reader.push(&second[4..5]);
    let f = reader.next_fragment().expect("valid").expect("complete");
    assert_eq!(f.continuation_token.as_deref(), Some("1"));
    reader.push(&second[5..]);
    assert_eq!(reader.next_fragment().expect("valid"), None);
    let g = reader.finish().expect("valid").expect("last fragment");
    assert_eq!(g.fragment_number.as_deref(), Some("2"));
    assert_eq!(reader.finish().expect("valid"), None);
}

#[test]
fn chunking_does_not_change_fragments() {
    let mut body = aws_fixture(AWS_MIXED_TAGS);
    body.extend_from_slice(&aws_fixture(AWS_GET_MEDIA));
    let whole = all_fragments(&body).expect("valid");
    let mut rng = Rng(7);
    let mut reader = FragmentReader::new();
    let mut chunked = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let end = (at + rng.size(5000)).min(body.len());
        reader.push(&body[at..end]);
        while let Some(f) = reader.next_fragment().expect("valid") {
            chunked.push(f);
        }
        at = end;
    }
    while let Some(f) = reader.finish().expect("valid") {
        chunked.push(f);
    }
    assert_eq!(chunked, whole);
}

/// A `Read` that hands out at most `max` bytes per call and can fail after `fail_after` bytes.
struct Trickle<'a> {
    data: &'a [u8],
    max: usize,
    fail_after: Option<usize>,
    served: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.fail_after.is_some_and(|n| self.served >= n) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset",
            ));
        }
        let n = self.data.len().min(buf.len()).min(self.max);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.served += n;
        Ok(n)
    }
}

#[test]
fn read_fragments_over_a_blocking_reader() {
    let body = aws_fixture(AWS_MIXED_TAGS);
    let expected = all_fragments(&body).expect("valid");
    let source = Trickle {
        data: &body,
        max: 333,
        fail_after: None,
        served: 0,
    };
    let got: Vec<Fragment> = read_fragments(source)
        .collect::<Result<_, _>>()
        .expect("valid");
    assert_eq!(got, expected);

    // A failed read ends the iteration with an error after the fragments read so far.
    let source = Trickle {
        data: &body,
        max: 1000,
        fail_after: Some(7000),
        served: 0,
    };
    let results: Vec<Result<Fragment, MkvError>> = read_fragments(source).collect();
    let (last, complete) = results.split_last().expect("items");
    assert!(complete.iter().all(Result::is_ok) && !complete.is_empty());
    let e = last.as_ref().expect_err("read error");
    assert_eq!(e.kind, MkvErrorKind::Truncated);
    assert!(e.message.contains("connection reset"), "{e}");

    // Invalid input: one error, then the end.
    let mut errors = read_fragments(&b"not mkv"[..]);
    assert!(errors.next().expect("an item").is_err());
    assert!(errors.next().is_none());
}

#[test]
fn fragment_size_is_bounded() {
    let mut body = Vec::new();
    document(&mut body, &[], Some(0), &[]);
    let mut reader = FragmentReader::with_limits(ReaderLimits::default(), 100);
    reader.push(&body);
    let e = reader
        .finish()
        .expect_err("two frames are more than 100 bytes in memory");
    assert_eq!(e.kind, MkvErrorKind::TooLarge);

    // A flood of empty frames in one fragment is bounded too.
    let mut body = Vec::new();
    write::ebml_header(&mut body);
    write::segment_start_unknown(&mut body);
    write::cluster_start_unknown(&mut body, 0);
    let mut reader = FragmentReader::with_limits(ReaderLimits::default(), 1 << 20);
    reader.push(&body);
    let mut block = Vec::new();
    write::simple_block(&mut block, &frame(1, 0, true, b""));
    let blocks = block.repeat(1000);
    let e = loop {
        reader.push(&blocks);
        match reader.next_fragment() {
            Ok(None) => {}
            Ok(Some(_)) => panic!("no fragment is complete"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.kind, MkvErrorKind::TooLarge);
    assert!(e.message.contains("fragment limit"), "{e}");
}

#[test]
fn timestamps_written_by_format_read_back() {
    let mut body = Vec::new();
    let ms = 1_726_677_687_758;
    document(
        &mut body,
        &[tag(
            "AWS_KINESISVIDEO_SERVER_TIMESTAMP",
            &format_timestamp_ms(ms),
        )],
        Some(0),
        &[],
    );
    let f = all_fragments(&body).expect("valid");
    assert_eq!(f[0].server_timestamp_ms, Some(ms));
}

/// Every AWS capture, fed one byte at a time, gives the same fragments as in one push.
#[test]
fn aws_captures_one_byte_at_a_time() {
    for name in AWS_FIXTURES {
        let input = aws_fixture(name);
        let whole = all_fragments(&input).expect("valid");
        let mut reader = FragmentReader::new();
        let mut bytewise = Vec::new();
        for b in &input {
            reader.push(std::slice::from_ref(b));
            while let Some(f) = reader.next_fragment().expect("valid") {
                bytewise.push(f);
            }
        }
        while let Some(f) = reader.finish().expect("valid") {
            bytewise.push(f);
        }
        assert!(!whole.is_empty(), "{name}");
        assert_eq!(bytewise, whole, "{name}");
    }
}
