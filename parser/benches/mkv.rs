//! Reader, fragment reader and writer throughput on generated input (plain `std::time`, no
//! harness): `cargo bench -p timeshard-parser --bench mkv`.
//!
//! Inputs are built with our writer: a KVS-producer-style PutMedia body (unknown-size Segment and
//! Clusters, Tags between Clusters) and a GetMedia-style body (one document per fragment with the
//! AWS tags). Each measurement runs 3 rounds and reports the best.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use timeshard_parser::mkv::write;
use timeshard_parser::{
    FragmentReader, Frame, MkvEvent, MkvReader, SegmentInfo, SimpleTag, Track, VideoSettings,
};

const TOTAL_BYTES: usize = 100 << 20;
const CHUNK: usize = 64 << 10;
const FRAMES_PER_CLUSTER: usize = 25;

fn track() -> Track {
    Track {
        number: 1,
        uid: Some(1),
        track_type: 1,
        codec_id: "V_MPEG4/ISO/AVC".to_owned(),
        codec_private: Some(Bytes::from_static(&[1, 100, 0, 31, 255])),
        name: None,
        default_duration: None,
        video: Some(VideoSettings {
            pixel_width: 1920,
            pixel_height: 1080,
        }),
        audio: None,
    }
}

fn frame(i: usize, payload: &Bytes) -> Frame {
    Frame {
        track: 1,
        timecode: (i % FRAMES_PER_CLUSTER * 40) as i16,
        key: i.is_multiple_of(FRAMES_PER_CLUSTER),
        invisible: false,
        discardable: false,
        data: payload.clone(),
    }
}

/// One document, unknown-size Clusters of 25 frames, an end-of-fragment Tags after each.
fn putmedia_body(frame_len: usize) -> Vec<u8> {
    let payload = Bytes::from((0..frame_len).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
    let mut buf = Vec::with_capacity(TOTAL_BYTES + (1 << 20));
    write::ebml_header(&mut buf);
    write::segment_start_unknown(&mut buf);
    write::info(&mut buf, &SegmentInfo::default());
    write::tracks(&mut buf, &[track()]);
    let mut i = 0;
    while buf.len() < TOTAL_BYTES {
        if i % FRAMES_PER_CLUSTER == 0 {
            if i > 0 {
                write::tags(
                    &mut buf,
                    &[SimpleTag::string("AWS_KINESISVIDEO_END_OF_FRAGMENT", "")],
                );
            }
            write::cluster_start_unknown(&mut buf, (i / FRAMES_PER_CLUSTER * 1000) as u64);
        }
        write::simple_block(&mut buf, &frame(i, &payload));
        i += 1;
    }
    buf
}

/// One document per fragment, with the GetMedia tags before and after each Cluster.
fn getmedia_body(frame_len: usize) -> Vec<u8> {
    let payload = Bytes::from(vec![0x5Au8; frame_len]);
    let mut buf = Vec::with_capacity(TOTAL_BYTES + (1 << 20));
    let mut fragment = 0u64;
    while buf.len() < TOTAL_BYTES {
        write::ebml_header(&mut buf);
        write::segment_start_unknown(&mut buf);
        write::info(&mut buf, &SegmentInfo::default());
        write::tracks(&mut buf, &[track()]);
        let ts = format!("{}.000", 1_700_000_000 + fragment);
        write::tags(
            &mut buf,
            &[
                SimpleTag::string("AWS_KINESISVIDEO_FRAGMENT_NUMBER", fragment.to_string()),
                SimpleTag::string("AWS_KINESISVIDEO_SERVER_TIMESTAMP", ts.clone()),
                SimpleTag::string("AWS_KINESISVIDEO_PRODUCER_TIMESTAMP", ts),
            ],
        );
        write::cluster_start_unknown(&mut buf, fragment * 1000);
        for i in 0..FRAMES_PER_CLUSTER {
            write::simple_block(&mut buf, &frame(i, &payload));
        }
        write::tags(
            &mut buf,
            &[
                SimpleTag::string("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW", "0"),
                SimpleTag::string("AWS_KINESISVIDEO_CONTINUATION_TOKEN", fragment.to_string()),
            ],
        );
        fragment += 1;
    }
    buf
}

fn best_of_3(mut run: impl FnMut() -> usize) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut count = 0;
    for _ in 0..3 {
        let start = Instant::now();
        count = black_box(run());
        best = best.min(start.elapsed());
    }
    (best, count)
}

fn report(name: &str, bytes: usize, (time, count): (Duration, usize), unit: &str) {
    let mb_s = bytes as f64 / 1e6 / time.as_secs_f64();
    println!(
        "{name:<58} {:>8.1} MB/s  ({:.1} MB in {:>6.1} ms, {count} {unit})",
        mb_s,
        bytes as f64 / 1e6,
        time.as_secs_f64() * 1e3
    );
}

fn read_events(input: &[u8], chunk: usize) -> usize {
    let mut reader = MkvReader::new();
    let mut frames = 0;
    for piece in input.chunks(chunk) {
        reader.push(piece);
        while let Some(event) = reader.next_event().expect("valid input") {
            if let MkvEvent::Frame(f) = event {
                frames += 1;
                black_box(&f.data);
            }
        }
    }
    while let Some(event) = reader.finish().expect("valid input") {
        frames += usize::from(matches!(event, MkvEvent::Frame(_)));
    }
    frames
}

fn read_fragment_count(input: &[u8], chunk: usize) -> usize {
    let mut reader = FragmentReader::new();
    let mut fragments = 0;
    for piece in input.chunks(chunk) {
        reader.push(piece);
        while let Some(f) = reader.next_fragment().expect("valid input") {
            fragments += 1;
            black_box(&f.frames);
        }
    }
    while let Some(f) = reader.finish().expect("valid input") {
        fragments += 1;
        black_box(&f.frames);
    }
    fragments
}

fn main() {
    for frame_len in [100_000usize, 1_000] {
        let body = putmedia_body(frame_len);
        let label = format!("{} KB frames", frame_len / 1000);
        report(
            &format!("MkvReader, PutMedia-style, {label}, 64 KiB pushes"),
            body.len(),
            best_of_3(|| read_events(&body, CHUNK)),
            "frames",
        );
        report(
            &format!("MkvReader, PutMedia-style, {label}, one push"),
            body.len(),
            best_of_3(|| read_events(&body, body.len())),
            "frames",
        );
        let body = getmedia_body(frame_len);
        report(
            &format!("FragmentReader, GetMedia-style, {label}, 64 KiB pushes"),
            body.len(),
            best_of_3(|| read_fragment_count(&body, CHUNK)),
            "fragments",
        );
    }

    // Writer: SimpleBlocks of 100 KB frames into a reused buffer.
    let payload = Bytes::from(vec![1u8; 100_000]);
    let frames: Vec<Frame> = (0..1000).map(|i| frame(i, &payload)).collect();
    let mut out = Vec::with_capacity(TOTAL_BYTES + (1 << 20));
    let written = frames.iter().map(write::simple_block_len).sum();
    report(
        "write::simple_block, 100 KB frames",
        written,
        best_of_3(|| {
            out.clear();
            for f in &frames {
                write::simple_block(&mut out, f);
            }
            out.len()
        }),
        "bytes",
    );
}
