//! MkvReader against real ffmpeg output, real AWS GetMedia captures, KVS-producer-style input,
//! any chunking of all of them, and bad input of every kind we could think of.

mod common;

use bytes::Bytes;
use common::*;
use timeshard_parser::mkv::{ids, write};
use timeshard_parser::{
    MkvErrorKind, MkvEvent, MkvReader, ReaderLimits, SegmentInfo, SimpleTag, TagValue,
};

// ---------------------------------------------------------------------------------------------
// Real input

#[test]
fn ffmpeg_pipe_output_video_only() {
    let input = sample(VIDEO_SAMPLE);
    let events = read_all(&input).expect("valid");
    let MkvEvent::Header(header) = &events[0] else {
        panic!("starts with {:?}", events[0])
    };
    assert_eq!(header.doc_type, "matroska");
    assert_eq!(events[1], MkvEvent::SegmentStart { size: None });
    let MkvEvent::Info(info) = &events[2] else {
        panic!("{:?}", events[2])
    };
    assert_eq!(info.timecode_scale, 1_000_000);
    assert_eq!(info.duration, Some(5000.0));
    let MkvEvent::Tracks(tracks) = &events[3] else {
        panic!("{:?}", events[3])
    };
    assert_eq!(tracks.len(), 1);
    assert_eq!(tracks[0].number, 1);
    assert_eq!(tracks[0].track_type, 1);
    assert_eq!(tracks[0].codec_id, "V_MPEG4/ISO/AVC");
    let video = tracks[0].video.as_ref().expect("video settings");
    assert_eq!((video.pixel_width, video.pixel_height), (320, 240));
    let avcc = tracks[0].codec_private.as_ref().expect("avcC");
    assert_eq!(avcc[0], 1, "avcC configurationVersion");

    assert_eq!(cluster_timecodes(&events), [0, 1000, 2000, 3000, 4000]);
    let frames = frames(&events);
    assert_eq!(frames.len(), 125);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.track, 1);
        assert_eq!(f.key, i % 25 == 0, "frame {i}: a key frame every 25");
        assert_eq!(i64::from(f.timecode), (i % 25) as i64 * 40, "frame {i}");
        assert!(!f.data.is_empty());
    }
    let count = |wanted: &MkvEvent| events.iter().filter(|e| *e == wanted).count();
    assert_eq!(count(&MkvEvent::ClusterEnd), 5);
    assert_eq!(events.last(), Some(&MkvEvent::SegmentEnd));
}

#[test]
fn ffmpeg_pipe_output_with_audio() {
    let events = read_all(&sample(AV_SAMPLE)).expect("valid");
    let MkvEvent::Tracks(tracks) = &events[3] else {
        panic!("{:?}", events[3])
    };
    assert_eq!(tracks.len(), 2);
    assert_eq!(tracks[1].codec_id, "A_AAC");
    assert_eq!(tracks[1].track_type, 2);
    let audio = tracks[1].audio.as_ref().expect("audio settings");
    assert_eq!((audio.sampling_frequency, audio.channels), (48_000.0, 1));
    let frames = frames(&events);
    // Packet counts as ffprobe reports them for this file.
    assert_eq!(frames.iter().filter(|f| f.track == 1).count(), 125);
    assert_eq!(frames.iter().filter(|f| f.track == 2).count(), 236);
    assert!(frames.iter().filter(|f| f.track == 2).all(|f| f.key));
    // With B-frames, relative timecodes go backwards within a cluster.
    let video: Vec<i16> = frames
        .iter()
        .filter(|f| f.track == 1)
        .map(|f| f.timecode)
        .collect();
    assert!(video.windows(2).any(|w| w[1] < w[0]));
}

#[test]
fn seekable_file_with_cues_and_block_groups() {
    let input = sample(FILE_SAMPLE);
    let events = read_all(&input).expect("valid");
    // EBML header (40 bytes) + Segment header (12) + the Segment's declared size = the file.
    assert_eq!(
        events[1],
        MkvEvent::SegmentStart {
            size: Some(input.len() as u64 - 52)
        }
    );
    assert_eq!(cluster_timecodes(&events), [0, 1000]);
    let subtitles: Vec<_> = frames(&events)
        .into_iter()
        .filter(|f| f.track == 2)
        .collect();
    assert_eq!(subtitles.len(), 2);
    assert_eq!(&subtitles[0].data[..], b"hello");
    assert_eq!(&subtitles[1].data[..], b"world");
    assert!(
        subtitles
            .iter()
            .all(|f| f.key && f.timecode == 0 && !f.discardable)
    );
    assert_eq!(events.last(), Some(&MkvEvent::SegmentEnd));
    // The Cues after the last Cluster are skipped, and consumed.
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == MkvEvent::ClusterEnd)
            .count(),
        2
    );
}

#[test]
fn aws_get_media_captures() {
    for name in AWS_FIXTURES {
        let input = aws_fixture(name);
        let events = read_all(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        let documents = events
            .iter()
            .filter(|e| matches!(e, MkvEvent::Header(_)))
            .count();
        let ends = events
            .iter()
            .filter(|e| **e == MkvEvent::SegmentEnd)
            .count();
        let clusters = cluster_timecodes(&events).len();
        assert_eq!(documents, ends, "{name}");
        assert_eq!(documents, clusters, "{name}: one cluster per document");
        let expected = match name {
            AWS_GET_MEDIA => 2,
            AWS_NON_INCREASING => 4,
            _ => 10,
        };
        assert_eq!(documents, expected, "{name}");
        let aws_tags = events
            .iter()
            .filter_map(|e| match e {
                MkvEvent::Tags(tags) => Some(tags),
                _ => None,
            })
            .flatten()
            .filter(|t| t.name.starts_with("AWS_KINESISVIDEO_"))
            .count();
        assert_eq!(
            aws_tags,
            5 * documents,
            "{name}: 3 before + 2 after each cluster"
        );
    }
    let events = read_all(&aws_fixture(AWS_NON_INCREASING)).expect("valid");
    assert_eq!(cluster_timecodes(&events), [10014, 0, 1001, 2003]);
}

#[test]
fn kvs_producer_style_unknown_size_clusters_and_tags() {
    let (input, expected) = kvs_style_document();
    assert_eq!(read_all(&input).expect("valid"), expected);
}

#[test]
fn positions_count_consumed_bytes() {
    for (name, input) in all_inputs() {
        let mut reader = MkvReader::new();
        reader.push(&input);
        let mut last = 0;
        let mut first = None;
        while let Some(event) = reader.finish().unwrap_or_else(|e| panic!("{name}: {e}")) {
            assert!(reader.position() >= last, "{name}: position went back");
            last = reader.position();
            first.get_or_insert((event, last));
        }
        assert_eq!(reader.position(), input.len() as u64, "{name}");
        let (event, at) = first.expect("events");
        assert!(matches!(event, MkvEvent::Header(_)));
        // After the EBML header comes the Segment.
        assert_eq!(
            input[at as usize..at as usize + 4],
            [0x18, 0x53, 0x80, 0x67],
            "{name}"
        );
    }
    // Frames are consumed one by one: the position after a frame is the end of its block.
    let (input, _) = kvs_style_document();
    let mut reader = MkvReader::new();
    reader.push(&input);
    while let Some(event) = reader.next_event().expect("valid") {
        if let MkvEvent::Frame(f) = event {
            let end = reader.position() as usize;
            assert_eq!(&input[end - f.data.len()..end], &f.data[..]);
        }
    }
}

#[test]
fn concatenated_documents() {
    let (kvs, kvs_events) = kvs_style_document();
    let video = sample(VIDEO_SAMPLE);
    let file = sample(FILE_SAMPLE);
    let mut input = video.clone();
    input.extend_from_slice(&kvs);
    input.extend_from_slice(&file);
    input.extend_from_slice(&kvs);
    let mut expected = read_all(&video).expect("valid");
    expected.extend(kvs_events.iter().cloned());
    expected.extend(read_all(&file).expect("valid"));
    expected.extend(kvs_events);
    assert_eq!(read_all(&input).expect("valid"), expected);
}

// ---------------------------------------------------------------------------------------------
// Chunking: the same events whatever the pieces

#[test]
fn one_byte_at_a_time_equals_one_push() {
    for (name, input) in all_inputs() {
        let whole = read_all(&input).expect("valid");
        let bytewise = read_chunked(&input, |_| 1).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(bytewise, whole, "{name}");
    }
}

#[test]
fn split_at_every_position_equals_one_push() {
    let (kvs, _) = kvs_style_document();
    let mixed = aws_fixture(AWS_MIXED_TAGS);
    // The first AWS document (up to the second EBML header), and a two-document input.
    let first_doc = mixed[..2618].to_vec();
    let mut two_docs = first_doc.clone();
    two_docs.extend_from_slice(&kvs[..kvs.len().min(1500)]);
    for (name, input) in [("kvs", kvs), ("aws doc", first_doc), ("two docs", two_docs)] {
        let whole = read_all(&input);
        for split in 0..=input.len() {
            let mut first = true;
            let split_read = read_chunked(&input, |_| {
                let size = if first { split } else { input.len() };
                first = false;
                size
            });
            assert_eq!(split_read, whole, "{name} split at {split}");
        }
    }
}

#[test]
fn random_chunking_equals_one_push() {
    let mut inputs = all_inputs();
    let mut concatenated = Vec::new();
    for (_, input) in &inputs {
        concatenated.extend_from_slice(input);
    }
    inputs.push(("all concatenated".to_owned(), concatenated));
    for (name, input) in inputs {
        let whole = read_all(&input).expect("valid");
        for (seed, max) in [
            (1u64, 7usize),
            (2, 188),
            (3, 4096),
            (4, 70_000),
            (5, 3),
            (6, 1500),
        ] {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let chunked = read_chunked(&input, |_| rng.size(max))
                .unwrap_or_else(|e| panic!("{name}, chunks up to {max}: {e}"));
            assert_eq!(chunked, whole, "{name}, chunks up to {max}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Skipped and less common elements

/// EBML header, unknown-size Segment, Info, and an unknown-size Cluster with Timecode 0.
fn open_cluster() -> Vec<u8> {
    let mut buf = Vec::new();
    write::ebml_header(&mut buf);
    write::segment_start_unknown(&mut buf);
    write::info(&mut buf, &SegmentInfo::default());
    write::cluster_start_unknown(&mut buf, 0);
    buf
}

fn unknown_element(buf: &mut Vec<u8>, len: usize) {
    write::binary_element(buf, 0x5A5A, &vec![0x42; len]);
}

#[test]
fn unknown_elements_are_skipped() {
    let (input, expected) = kvs_style_document();
    // Put an unknown element at the start of every Cluster and in every Tags element.
    let mut patched = Vec::new();
    let mut reader = MkvReader::new();
    reader.push(&input);
    let mut copied = 0;
    while let Some(event) = reader.finish().expect("valid") {
        if matches!(event, MkvEvent::ClusterStart { .. }) {
            let at = reader.position() as usize;
            patched.extend_from_slice(&input[copied..at]);
            unknown_element(&mut patched, 300);
            copied = at;
        }
    }
    patched.extend_from_slice(&input[copied..]);
    assert_eq!(read_all(&patched).expect("valid"), expected);

    // A known-size Segment may hold unknown level-1 elements.
    let mut doc = Vec::new();
    write::ebml_header(&mut doc);
    write::master_element(&mut doc, ids::SEGMENT, |s| {
        unknown_element(s, 10);
        write::info(s, &SegmentInfo::default());
        unknown_element(s, 1000);
        write::master_element(s, ids::CLUSTER, |c| {
            write::uint_element(c, ids::TIMECODE, 7);
            unknown_element(c, 5);
            write::simple_block(c, &frame(1, 0, true, b"x"));
        });
        unknown_element(s, 3);
    });
    let events = read_all(&doc).expect("valid");
    assert_eq!(cluster_timecodes(&events), [7]);
    assert_eq!(frames(&events).len(), 1);
    assert_eq!(events.last(), Some(&MkvEvent::SegmentEnd));

    // In an unknown-size Segment the decoder would take one for the Segment's end: refused.
    let mut doc = Vec::new();
    write::ebml_header(&mut doc);
    write::segment_start_unknown(&mut doc);
    let at = doc.len() as u64;
    unknown_element(&mut doc, 10);
    let e = first_error(&doc);
    assert_eq!((e.kind, e.offset), (MkvErrorKind::Invalid, at));
    assert_eq!(
        e.message,
        "unknown element 0x5A5A directly in an unknown-size Segment is not supported"
    );
}

#[test]
fn laced_blocks_yield_one_frame_per_laced_frame() {
    let mut buf = open_cluster();
    // Xiph lacing (flags 0x02), 3 frames of 2, 3 and 4 bytes, key frame.
    let payload = [
        0x81, 0x00, 0x0A, 0x82, 2, 2, 3, b'a', b'a', b'b', b'b', b'b', b'c', b'c', b'c', b'c',
    ];
    write::binary_element(&mut buf, ids::SIMPLE_BLOCK, &payload);
    let events = read_all(&buf).expect("valid");
    let frames = frames(&events);
    assert_eq!(frames.len(), 3);
    assert_eq!(
        frames.iter().map(|f| &f.data[..]).collect::<Vec<_>>(),
        [&b"aa"[..], b"bbb", b"cccc"]
    );
    assert!(
        frames
            .iter()
            .all(|f| f.key && f.timecode == 10 && f.track == 1)
    );
}

#[test]
fn block_groups_are_key_frames_unless_they_reference_another() {
    let mut buf = open_cluster();
    write::master_element(&mut buf, ids::BLOCK_GROUP, |g| {
        write::binary_element(g, ids::BLOCK, &[0x81, 0x00, 0x00, 0x00, b'k']);
        write::uint_element(g, 0x9B, 40); // BlockDuration
    });
    write::master_element(&mut buf, ids::BLOCK_GROUP, |g| {
        write::binary_element(g, ids::BLOCK, &[0x81, 0x00, 0x28, 0x08, b'p']);
        write::binary_element(g, ids::REFERENCE_BLOCK, &[0xD8]); // -40
    });
    let events = read_all(&buf).expect("valid");
    let frames = frames(&events);
    assert_eq!(frames.len(), 2);
    assert!(frames[0].key && !frames[0].invisible);
    assert!(!frames[1].key && frames[1].invisible && frames[1].timecode == 40);
}

#[test]
fn nested_simple_tags_come_in_document_order() {
    let mut buf = Vec::new();
    write::ebml_header(&mut buf);
    write::segment_start_unknown(&mut buf);
    write::master_element(&mut buf, ids::TAGS, |t| {
        write::master_element(t, ids::TAG, |t| {
            write::master_element(t, ids::SIMPLE_TAG, |s| {
                write::string_element(s, ids::TAG_NAME, "outer");
                write::master_element(s, ids::SIMPLE_TAG, |n| {
                    write::string_element(n, ids::TAG_NAME, "inner");
                    write::binary_element(n, ids::TAG_BINARY, &[1, 2]);
                });
                write::string_element(s, ids::TAG_STRING, "outer value");
            });
            write::master_element(t, ids::SIMPLE_TAG, |s| {
                write::string_element(s, ids::TAG_NAME, "empty");
            });
        });
    });
    let events = read_all(&buf).expect("valid");
    assert_eq!(
        events[2],
        MkvEvent::Tags(vec![
            SimpleTag::string("outer", "outer value"),
            SimpleTag {
                name: "inner".to_owned(),
                value: TagValue::Binary(Bytes::from_static(&[1, 2]))
            },
            SimpleTag::string("empty", ""),
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input: a specific error, no panic, bounded memory

fn first_error(input: &[u8]) -> timeshard_parser::MkvError {
    read_all(input).expect_err("must be rejected")
}

#[test]
fn garbage_is_rejected_at_its_first_byte() {
    let e = first_error(b"hello, this is not Matroska at all");
    assert_eq!((e.kind, e.offset), (MkvErrorKind::Invalid, 0));
    assert!(e.message.contains("must start with an EBML header"), "{e}");
    assert!(e.message.contains("68 65 6C 6C"), "{e}");

    // Known after one byte, without waiting for more.
    let mut reader = MkvReader::new();
    reader.push(&[0x00]);
    let e = reader.next_event().expect_err("not an EBML header");
    assert_eq!(e.kind, MkvErrorKind::Invalid);

    // A PNG, an MP4, random bytes.
    for input in [
        &b"\x89PNG\r\n\x1a\n"[..],
        b"\0\0\0\x20ftypisom",
        &[0x1A, 0x45, 0xDF, 0x00],
    ] {
        assert_eq!(first_error(input).kind, MkvErrorKind::Invalid);
    }
    let mut rng = Rng(99);
    for _ in 0..200 {
        let len = rng.size(300);
        let mut input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if rng.size(2) == 1 {
            // Garbage after a valid start.
            let mut prefix = open_cluster();
            prefix.append(&mut input);
            input = prefix;
        }
        // Any result is fine as long as it is not a panic; errors carry an offset in range.
        if let Err(e) = read_all(&input) {
            assert!(e.offset <= input.len() as u64, "{e}");
        }
    }
}

#[test]
fn garbage_after_a_document_is_rejected() {
    let mut input = sample(FILE_SAMPLE);
    let len = input.len() as u64;
    input.extend_from_slice(b"trailing junk");
    let e = first_error(&input);
    assert_eq!((e.kind, e.offset), (MkvErrorKind::Invalid, len));
    assert!(
        e.message.contains("expected a Segment after the Segment"),
        "{e}"
    );

    // After an unknown-size Segment, an unknown element just sits inside it, but a byte that
    // cannot start an element ID is still an error.
    let mut input = sample(VIDEO_SAMPLE);
    input.extend_from_slice(&[0x00, 0x01]);
    let e = first_error(&input);
    assert_eq!(e.kind, MkvErrorKind::Invalid);
    assert!(e.message.contains("cannot start an element ID"), "{e}");
}

#[test]
fn truncated_input_is_a_truncated_error() {
    let input = sample(VIDEO_SAMPLE);
    let mut errors = 0;
    for cut in (1..input.len()).step_by(97) {
        match read_all(&input[..cut]) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind, MkvErrorKind::Truncated, "cut at {cut}: {e}");
                assert!(e.offset < cut as u64, "cut at {cut}: {e}");
                errors += 1;
            }
        }
    }
    // ffmpeg's Clusters have known sizes: almost every cut falls inside one.
    assert!(errors > input.len() / 97 * 9 / 10, "{errors} errors");

    // Cut inside a SimpleBlock of an unknown-size Cluster.
    let (kvs, _) = kvs_style_document();
    let mut reader = MkvReader::new();
    reader.push(&kvs);
    let mut block_start = 0;
    let mut seen = 0;
    while let Some(event) = reader.next_event().expect("valid") {
        if matches!(event, MkvEvent::Frame(_)) {
            seen += 1;
            if seen == 3 {
                break;
            }
            block_start = reader.position();
        }
    }
    let e = first_error(&kvs[..block_start as usize + 10]);
    assert_eq!((e.kind, e.offset), (MkvErrorKind::Truncated, block_start));
    assert_eq!(e.path, "Segment/Cluster/SimpleBlock");
    assert!(e.message.contains("ends inside SimpleBlock"), "{e}");
    // A cut between elements of an unknown-size Cluster is a clean end.
    let events = read_all(&kvs[..block_start as usize]).expect("clean end");
    assert_eq!(
        &events[events.len() - 2..],
        [MkvEvent::ClusterEnd, MkvEvent::SegmentEnd]
    );
}

/// Pushes `input` and returns the first error, checking that the reader never buffered more
/// than `max_buffered` bytes.
fn pushed_error(
    reader: &mut MkvReader,
    input: &[u8],
    max_buffered: usize,
) -> timeshard_parser::MkvError {
    reader.push(input);
    loop {
        match reader.next_event() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("waiting for more input instead of rejecting"),
            Err(e) => {
                assert!(
                    reader.buffered_len() <= max_buffered,
                    "buffered {}",
                    reader.buffered_len()
                );
                return e;
            }
        }
    }
}

#[test]
fn a_one_terabyte_simple_block_is_rejected_from_its_header() {
    let mut input = open_cluster();
    let block_at = input.len() as u64;
    write::element_header(&mut input, ids::SIMPLE_BLOCK, Some(1_000_000_000_000));
    let e = pushed_error(&mut MkvReader::new(), &input, input.len());
    assert_eq!((e.kind, e.offset), (MkvErrorKind::TooLarge, block_at));
    assert_eq!(e.path, "Segment/Cluster/SimpleBlock");
    assert_eq!(
        e.message,
        "SimpleBlock of 931.3 GiB exceeds the 64 MiB element limit"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "invalid MKV at byte {block_at} (Segment/Cluster/SimpleBlock): SimpleBlock of \
             931.3 GiB exceeds the 64 MiB element limit"
        )
    );
}

#[test]
fn element_limits_are_configurable_and_exact() {
    let limits = ReaderLimits {
        max_element_bytes: 1000,
        max_buffered_bytes: 2000,
    };
    for (size, ok) in [(1000u64, true), (1001, false)] {
        let mut input = open_cluster();
        let mut block = vec![0x81, 0, 0, 0x80];
        block.resize(size as usize, 7);
        write::binary_element(&mut input, ids::SIMPLE_BLOCK, &block);
        let mut reader = MkvReader::with_limits(limits);
        reader.push(&input);
        let mut events = Vec::new();
        let result = finish(&mut reader, &mut events);
        assert_eq!(result.is_ok(), ok, "{size}: {result:?}");
        if !ok {
            let e = result.expect_err("too large");
            assert_eq!(e.kind, MkvErrorKind::TooLarge);
            assert_eq!(
                e.message,
                "SimpleBlock of 1001 bytes exceeds the 1000 bytes element limit"
            );
        }
    }
}

#[test]
fn size_bombs_in_other_elements_are_rejected() {
    let huge = Some(1u64 << 40);
    // A Tags element (read whole) declaring 1 TiB.
    let mut input = Vec::new();
    write::ebml_header(&mut input);
    write::segment_start_unknown(&mut input);
    let tags_at = input.len() as u64;
    write::element_header(&mut input, ids::TAGS, huge);
    let e = pushed_error(&mut MkvReader::new(), &input, input.len());
    assert_eq!((e.kind, e.offset), (MkvErrorKind::TooLarge, tags_at));
    assert_eq!(e.message, "Tags of 1 TiB exceeds the 64 MiB element limit");

    // A TagString inside a normal Tags element.
    let mut input = Vec::new();
    write::ebml_header(&mut input);
    write::segment_start_unknown(&mut input);
    write::element_header(&mut input, ids::TAGS, None);
    write::element_header(&mut input, ids::TAG, Some(100));
    write::element_header(&mut input, ids::SIMPLE_TAG, Some(90));
    write::element_header(&mut input, ids::TAG_STRING, huge);
    let e = pushed_error(&mut MkvReader::new(), &input, input.len());
    assert_eq!(e.kind, MkvErrorKind::TooLarge);
    assert!(e.message.starts_with("TagString of 1 TiB exceeds"), "{e}");

    // An unknown-size Tags element that keeps growing.
    let limits = ReaderLimits {
        max_element_bytes: 1000,
        max_buffered_bytes: 2000,
    };
    let mut input = Vec::new();
    write::ebml_header(&mut input);
    write::segment_start_unknown(&mut input);
    write::element_header(&mut input, ids::TAGS, None);
    for i in 0..100 {
        write::master_element(&mut input, ids::TAG, |t| {
            write::master_element(t, ids::SIMPLE_TAG, |s| {
                write::string_element(s, ids::TAG_NAME, &format!("tag {i}"));
                write::string_element(s, ids::TAG_STRING, "0123456789");
            });
        });
    }
    let e = pushed_error(&mut MkvReader::with_limits(limits), &input, input.len());
    assert_eq!(e.kind, MkvErrorKind::TooLarge);
    assert_eq!(
        e.message,
        "Tags of unknown size grows past the 1000 bytes element limit"
    );

    // A CodecPrivate in Tracks, and Tracks itself.
    let mut input = Vec::new();
    write::ebml_header(&mut input);
    write::segment_start_unknown(&mut input);
    write::element_header(&mut input, ids::TRACKS, huge);
    assert_eq!(
        pushed_error(&mut MkvReader::new(), &input, input.len()).kind,
        MkvErrorKind::TooLarge
    );

    // An unknown element inside a Cluster.
    let mut input = open_cluster();
    write::element_header(&mut input, 0x5A5A, huge);
    let e = pushed_error(&mut MkvReader::new(), &input, input.len());
    assert_eq!(e.kind, MkvErrorKind::TooLarge);
    assert!(e.message.starts_with("element 0x5A5A of 1 TiB"), "{e}");

    // The largest size an 8-byte field can hold, on a SimpleBlock.
    let mut input = open_cluster();
    input.extend_from_slice(&[0xA3, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]);
    assert_eq!(
        pushed_error(&mut MkvReader::new(), &input, input.len()).kind,
        MkvErrorKind::TooLarge
    );
}

#[test]
fn expansion_is_bounded() {
    // Masters nested deeper than any Matroska document needs.
    let mut input = Vec::new();
    write::ebml_header(&mut input);
    write::segment_start_unknown(&mut input);
    write::element_header(&mut input, ids::TAGS, Some(1 << 20));
    write::element_header(&mut input, ids::TAG, Some(1 << 19));
    let mut size = 1 << 18;
    for _ in 0..1000 {
        write::element_header(&mut input, ids::SIMPLE_TAG, Some(size));
        size -= 5; // Each child fits in its parent: 2 ID bytes and 3 size bytes less.
    }
    let e = pushed_error(&mut MkvReader::new(), &input, input.len());
    assert_eq!(e.kind, MkvErrorKind::Invalid);
    assert_eq!(e.message, "masters nested more than 32 deep");

    // Millions of empty SimpleTags would take 20 times their size in memory.
    let mut input = Vec::new();
    write::ebml_header(&mut input);
    write::segment_start_unknown(&mut input);
    write::element_header(&mut input, ids::TAGS, None);
    write::element_header(&mut input, ids::TAG, Some(3 * 200_000));
    for _ in 0..200_000 {
        write::element_header(&mut input, ids::SIMPLE_TAG, Some(0));
    }
    let e = pushed_error(&mut MkvReader::new(), &input, input.len());
    assert_eq!(e.kind, MkvErrorKind::TooLarge);
    assert_eq!(e.message, "Tags holds more than 100000 SimpleTags");
}

#[test]
fn huge_masters_that_are_streamed_are_not_buffered() {
    // A Cluster declaring 1 TiB streams its frames and only fails at the end of the input.
    let mut input = Vec::new();
    write::ebml_header(&mut input);
    write::segment_start_unknown(&mut input);
    write::element_header(&mut input, ids::CLUSTER, Some(1 << 40));
    write::uint_element(&mut input, ids::TIMECODE, 0);
    let mut reader = MkvReader::new();
    reader.push(&input);
    let mut events = Vec::new();
    drain(&mut reader, &mut events).expect("valid so far");
    let frame = frame(1, 0, true, &[9; 10_000]);
    let mut block = Vec::new();
    write::simple_block(&mut block, &frame);
    for _ in 0..1000 {
        reader.push(&block);
        drain(&mut reader, &mut events).expect("valid so far");
        assert_eq!(reader.buffered_len(), 0);
    }
    assert_eq!(frames(&events).len(), 1000);
    let e = finish(&mut reader, &mut events).expect_err("truncated");
    assert_eq!(e.kind, MkvErrorKind::Truncated);
    assert!(e.message.contains("ends inside Cluster"), "{e}");
}

#[test]
fn a_block_before_the_cluster_timecode_is_rejected() {
    let mut input = Vec::new();
    write::ebml_header(&mut input);
    write::segment_start_unknown(&mut input);
    write::element_header(&mut input, ids::CLUSTER, None);
    let block_at = input.len() as u64;
    write::simple_block(&mut input, &frame(1, 0, true, b"x"));
    write::uint_element(&mut input, ids::TIMECODE, 0);
    let e = first_error(&input);
    assert_eq!((e.kind, e.offset), (MkvErrorKind::Invalid, block_at));
    assert_eq!(e.path, "Segment/Cluster/SimpleBlock");
    assert_eq!(e.message, "SimpleBlock before the Cluster's Timecode");

    let mut input = Vec::new();
    write::ebml_header(&mut input);
    write::segment_start_unknown(&mut input);
    write::element_header(&mut input, ids::CLUSTER, None);
    write::master_element(&mut input, ids::BLOCK_GROUP, |g| {
        write::binary_element(g, ids::BLOCK, &[0x81, 0, 0, 0, 1]);
    });
    let e = first_error(&input);
    assert_eq!(e.message, "Block before the Cluster's Timecode");
    assert_eq!(e.path, "Segment/Cluster/BlockGroup/Block");
}

#[test]
fn structural_errors_are_specific() {
    let base = || {
        let mut b = Vec::new();
        write::ebml_header(&mut b);
        write::segment_start_unknown(&mut b);
        b
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "cluster without timecode",
            {
                let mut b = base();
                write::master_element(&mut b, ids::CLUSTER, |c| {
                    write::uint_element(c, ids::POSITION, 0)
                });
                b
            },
            "Cluster has no Timecode",
        ),
        (
            "two timecodes",
            {
                let mut b = base();
                write::cluster_start_unknown(&mut b, 1);
                write::uint_element(&mut b, ids::TIMECODE, 2);
                b
            },
            "second Timecode in one Cluster",
        ),
        (
            "block outside a cluster",
            {
                let mut b = base();
                write::simple_block(&mut b, &frame(1, 0, true, b"x"));
                b
            },
            "SimpleBlock is not allowed in Segment",
        ),
        (
            "cluster outside a segment",
            {
                let mut b = Vec::new();
                write::ebml_header(&mut b);
                write::cluster_start_unknown(&mut b, 0);
                b
            },
            "expected a Segment after the EBML header, found Cluster",
        ),
        (
            "doc type",
            {
                let mut b = Vec::new();
                write::master_element(&mut b, ids::EBML, |h| {
                    write::string_element(h, ids::DOC_TYPE, "mp4")
                });
                b
            },
            "DocType \"mp4\" is neither \"matroska\" nor \"webm\"",
        ),
        (
            "unknown-size block",
            {
                let mut b = base();
                write::cluster_start_unknown(&mut b, 0);
                write::element_header(&mut b, ids::SIMPLE_BLOCK, None);
                b
            },
            "SimpleBlock has an unknown size; only master elements may",
        ),
        (
            "short block",
            {
                let mut b = base();
                write::cluster_start_unknown(&mut b, 0);
                write::binary_element(&mut b, ids::SIMPLE_BLOCK, &[0x81, 0]);
                b
            },
            "block of 2 bytes is shorter than its header",
        ),
        (
            "bad lacing",
            {
                let mut b = base();
                write::cluster_start_unknown(&mut b, 0);
                write::binary_element(&mut b, ids::SIMPLE_BLOCK, &[0x81, 0, 0, 0x82, 1, 200, 1]);
                b
            },
            "lace sizes add up to more than the 1 bytes of frame data",
        ),
        (
            "utf-8",
            {
                let mut b = base();
                write::master_element(&mut b, ids::TAGS, |t| {
                    write::master_element(t, ids::TAG, |t| {
                        write::master_element(t, ids::SIMPLE_TAG, |s| {
                            write::binary_element(s, ids::TAG_NAME, &[0xFF, 0xFE]);
                        });
                    });
                });
                b
            },
            "TagName is not valid UTF-8",
        ),
        (
            "track number",
            {
                let mut b = base();
                write::master_element(&mut b, ids::TRACKS, |t| {
                    write::master_element(t, ids::TRACK_ENTRY, |e| {
                        write::string_element(e, ids::CODEC_ID, "A_AAC")
                    });
                });
                b
            },
            "TrackEntry has no TrackNumber (or TrackNumber 0)",
        ),
        (
            "timecode scale",
            {
                let mut b = base();
                write::master_element(&mut b, ids::INFO, |i| {
                    write::uint_element(i, ids::TIMECODE_SCALE, 0)
                });
                b
            },
            "TimecodeScale is 0",
        ),
        (
            "unknown-size Tag",
            {
                let mut b = base();
                write::element_header(&mut b, ids::TAGS, None);
                write::element_header(&mut b, ids::TAG, None);
                b
            },
            "Tag has an unknown size; only Segment, Cluster and level-1 elements may",
        ),
        (
            "oversized child",
            {
                let mut b = base();
                write::element_header(&mut b, ids::CLUSTER, Some(3));
                write::uint_element(&mut b, ids::TIMECODE, 0x1234);
                b
            },
            "Timecode of 2 bytes runs past the end of its parent",
        ),
        (
            "9-byte integer",
            {
                let mut b = base();
                write::cluster_start_unknown(&mut b, 0);
                write::binary_element(&mut b, ids::POSITION, &[0; 9]);
                b
            },
            "Position has an invalid size",
        ),
        (
            "size field",
            {
                let mut b = base();
                b.extend_from_slice(&[0xEC, 0x00]);
                b
            },
            "Void has an invalid size field (0x00 starts no size)",
        ),
    ];
    for (name, input, message) in cases {
        let e = first_error(&input);
        assert_eq!(e.kind, MkvErrorKind::Invalid, "{name}: {e}");
        assert_eq!(e.message, message, "{name}: {e}");
        assert!(e.offset < input.len() as u64, "{name}: {e}");
    }
}

#[test]
fn errors_are_final_and_input_after_finish_is_refused() {
    let mut reader = MkvReader::new();
    reader.push(b"junk");
    let e = reader.next_event().expect_err("junk");
    assert_eq!(reader.next_event().expect_err("still"), e);
    assert_eq!(reader.finish().expect_err("still"), e);

    let (input, expected) = kvs_style_document();
    let mut reader = MkvReader::new();
    reader.push(&input);
    let mut events = Vec::new();
    finish(&mut reader, &mut events).expect("valid");
    assert_eq!(events, expected);
    reader.push(&input);
    let e = reader.next_event().expect_err("pushed after finish");
    assert!(e.message.contains("after finish()"), "{e}");
}

#[test]
fn mutated_input_never_panics_and_chunking_does_not_change_the_outcome() {
    let (kvs, _) = kvs_style_document();
    let bases = [
        kvs,
        sample(FILE_SAMPLE),
        aws_fixture(AWS_MIXED_TAGS)[..2618].to_vec(),
    ];
    let mut rng = Rng(2024);
    for round in 0..300 {
        let mut input = bases[round % bases.len()].clone();
        for _ in 0..rng.size(4) {
            let at = rng.size(input.len()) - 1;
            match rng.size(4) {
                1 => input[at] ^= 1 << (rng.size(8) - 1),
                2 => input[at] = rng.next() as u8,
                3 => input.truncate(at),
                _ => {
                    let junk: Vec<u8> = (0..rng.size(16)).map(|_| rng.next() as u8).collect();
                    input.splice(at..at, junk);
                }
            }
            if input.is_empty() {
                break;
            }
        }
        let whole = read_all(&input);
        let max = rng.size(64);
        let chunked = read_chunked(&input, |_| rng.size(max));
        match (&whole, &chunked) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "round {round}"),
            (Err(a), Err(b)) => {
                assert_eq!(
                    (a.kind, a.offset, &a.path),
                    (b.kind, b.offset, &b.path),
                    "round {round}: {a} vs {b}: {:02X?}",
                    &input[..input.len().min(64)]
                );
            }
            _ => panic!("round {round}: {whole:?} vs {chunked:?}"),
        }
    }
}
