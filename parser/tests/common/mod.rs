//! Helpers shared by the parser's integration tests. Each test file uses a subset.
#![allow(dead_code)]

use std::path::PathBuf;

use bytes::Bytes;
use timeshard_parser::mkv::write;
use timeshard_parser::{
    AudioSettings, Frame, MkvError, MkvEvent, MkvReader, SegmentInfo, SimpleTag, TagValue, Track,
    VideoSettings,
};

pub const VIDEO_SAMPLE: &str = "h264-320x240-25fps-1s-gop.mkv";
pub const AV_SAMPLE: &str = "h264-aac-320x240.mkv";
pub const FILE_SAMPLE: &str = "h264-srt-320x240-file.mkv";
pub const SAMPLES: [&str; 3] = [VIDEO_SAMPLE, AV_SAMPLE, FILE_SAMPLE];

pub const AWS_GET_MEDIA: &str = "output_get_media.mkv";
pub const AWS_NON_INCREASING: &str = "output-get-media-non-increasing-timecode.mkv";
pub const AWS_MIXED_TAGS: &str = "test_mixed_tags.mkv";
pub const AWS_FIXTURES: [&str; 3] = [AWS_GET_MEDIA, AWS_NON_INCREASING, AWS_MIXED_TAGS];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A committed sample from `samples/`.
pub fn sample(name: &str) -> Vec<u8> {
    let path = manifest_dir().join("../samples").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A committed AWS capture from `parser/tests/fixtures/aws/`.
pub fn aws_fixture(name: &str) -> Vec<u8> {
    let path = manifest_dir().join("tests/fixtures/aws").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every sample and fixture, by name.
pub fn all_inputs() -> Vec<(String, Vec<u8>)> {
    let mut inputs: Vec<(String, Vec<u8>)> =
        SAMPLES.iter().map(|n| (n.to_string(), sample(n))).collect();
    inputs.extend(
        AWS_FIXTURES
            .iter()
            .map(|n| (format!("aws/{n}"), aws_fixture(n))),
    );
    inputs.push(("kvs-style".to_owned(), kvs_style_document().0));
    inputs
}

/// Drains the reader's pending events into `out`.
pub fn drain(reader: &mut MkvReader, out: &mut Vec<MkvEvent>) -> Result<(), MkvError> {
    while let Some(event) = reader.next_event()? {
        out.push(event);
    }
    Ok(())
}

/// Ends the input and drains the rest.
pub fn finish(reader: &mut MkvReader, out: &mut Vec<MkvEvent>) -> Result<(), MkvError> {
    while let Some(event) = reader.finish()? {
        out.push(event);
    }
    Ok(())
}

/// All events of `input` pushed at once.
pub fn read_all(input: &[u8]) -> Result<Vec<MkvEvent>, MkvError> {
    read_chunked(input, |_| input.len().max(1))
}

/// All events of `input` pushed in chunks whose sizes `next_size` picks (given the offset).
pub fn read_chunked(
    input: &[u8],
    mut next_size: impl FnMut(usize) -> usize,
) -> Result<Vec<MkvEvent>, MkvError> {
    let mut reader = MkvReader::new();
    let mut events = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let end = (at + next_size(at).max(1)).min(input.len());
        reader.push(&input[at..end]);
        drain(&mut reader, &mut events)?;
        at = end;
    }
    finish(&mut reader, &mut events)?;
    Ok(events)
}

/// xorshift64*: deterministic chunk sizes without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In 1..=max.
    pub fn size(&mut self, max: usize) -> usize {
        (self.next() % max as u64) as usize + 1
    }
}

pub fn command_available(name: &str) -> bool {
    // ffmpeg's tools take `-version`, mkvtoolnix's `--version`.
    let flag = if name.starts_with("mkv") {
        "--version"
    } else {
        "-version"
    };
    std::process::Command::new(name)
        .arg(flag)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A unique path in the temp directory (removed by the caller).
pub fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("timeshard-parser-{}-{name}", std::process::id()))
}

pub fn video_track() -> Track {
    Track {
        number: 1,
        uid: Some(0x1234_5678_9ABC),
        track_type: 1,
        codec_id: "V_MPEG4/ISO/AVC".to_owned(),
        codec_private: Some(Bytes::from_static(&[1, 0x64, 0, 0x1F, 0xFF, 0xE1])),
        name: Some("camera".to_owned()),
        default_duration: Some(40_000_000),
        video: Some(VideoSettings {
            pixel_width: 1280,
            pixel_height: 720,
        }),
        audio: None,
    }
}

pub fn audio_track() -> Track {
    Track {
        number: 2,
        uid: Some(2),
        track_type: 2,
        codec_id: "A_AAC".to_owned(),
        codec_private: Some(Bytes::from_static(&[0x11, 0x90])),
        name: None,
        default_duration: None,
        video: None,
        audio: Some(AudioSettings {
            sampling_frequency: 48_000.0,
            channels: 2,
            bit_depth: Some(16),
        }),
    }
}

pub fn full_info() -> SegmentInfo {
    SegmentInfo {
        timecode_scale: 1_000_000,
        segment_uid: Some(Bytes::from_static(&[7; 16])),
        title: Some("Kinesis Video SDK".to_owned()),
        muxing_app: Some("timeshard".to_owned()),
        writing_app: Some("timeshard-tests".to_owned()),
        duration: Some(1234.5),
    }
}

pub fn frame(track: u64, timecode: i16, key: bool, data: &[u8]) -> Frame {
    Frame {
        track,
        timecode,
        key,
        invisible: false,
        discardable: false,
        data: Bytes::copy_from_slice(data),
    }
}

/// A PutMedia body in the KVS producer's shape, and the events it must read as: unknown-size
/// Segment and Clusters, producer tags before each Cluster and an end-of-fragment Tags after.
pub fn kvs_style_document() -> (Vec<u8>, Vec<MkvEvent>) {
    let tracks = vec![video_track(), audio_track()];
    let info = full_info();
    let mut buf = Vec::new();
    let mut events = Vec::new();
    write::ebml_header(&mut buf);
    events.push(MkvEvent::Header(timeshard_parser::EbmlHeader {
        doc_type: "matroska".to_owned(),
        doc_type_version: 2,
        doc_type_read_version: 2,
    }));
    write::segment_start_unknown(&mut buf);
    events.push(MkvEvent::SegmentStart { size: None });
    write::info(&mut buf, &info);
    events.push(MkvEvent::Info(info));
    write::tracks(&mut buf, &tracks);
    events.push(MkvEvent::Tracks(tracks));
    for cluster in 0..3u64 {
        let tags = vec![
            SimpleTag::string("camera", format!("cluster {cluster}")),
            SimpleTag {
                name: "blob".to_owned(),
                value: TagValue::Binary(Bytes::from(vec![cluster as u8; 3])),
            },
        ];
        write::tags(&mut buf, &tags);
        events.push(MkvEvent::Tags(tags));
        let timecode = 1_700_000_000_000 + cluster * 2000;
        write::cluster_start_unknown(&mut buf, timecode);
        events.push(MkvEvent::ClusterStart { timecode });
        for i in 0..12i16 {
            let mut f = if i % 3 == 2 {
                frame(2, i * 40 - 20, true, &[0xAA; 33])
            } else {
                frame(1, i * 40, i == 0, &vec![i as u8; 100 + i as usize * 37])
            };
            f.invisible = i == 5;
            f.discardable = i == 7;
            write::simple_block(&mut buf, &f);
            events.push(MkvEvent::Frame(f));
        }
        events.push(MkvEvent::ClusterEnd);
        let end = vec![SimpleTag::string("AWS_KINESISVIDEO_END_OF_FRAGMENT", "")];
        write::tags(&mut buf, &end);
        events.push(MkvEvent::Tags(end));
    }
    events.push(MkvEvent::SegmentEnd);
    (buf, events)
}

/// The events of a document up to (not including) its first Cluster, written back.
pub fn write_events(events: &[MkvEvent]) -> Vec<u8> {
    let mut buf = Vec::new();
    for event in events {
        match event {
            MkvEvent::Header(_) => write::ebml_header(&mut buf),
            MkvEvent::SegmentStart { .. } => write::segment_start_unknown(&mut buf),
            MkvEvent::Info(info) => write::info(&mut buf, info),
            MkvEvent::Tracks(tracks) => write::tracks(&mut buf, tracks),
            MkvEvent::Tags(tags) => write::tags(&mut buf, tags),
            MkvEvent::ClusterStart { timecode } => {
                write::cluster_start_unknown(&mut buf, *timecode)
            }
            MkvEvent::Frame(f) => write::simple_block(&mut buf, f),
            MkvEvent::ClusterEnd | MkvEvent::SegmentEnd => {}
        }
    }
    buf
}

/// The frames among `events`.
pub fn frames(events: &[MkvEvent]) -> Vec<&Frame> {
    events
        .iter()
        .filter_map(|e| match e {
            MkvEvent::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

/// Cluster timecodes among `events`.
pub fn cluster_timecodes(events: &[MkvEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            MkvEvent::ClusterStart { timecode } => Some(*timecode),
            _ => None,
        })
        .collect()
}

/// Whether ffmpeg can be run. Without it a test skips with a printed reason, unless
/// `TIMESHARD_REQUIRE_MEDIA_TOOLS` is set (CI), where it fails.
pub fn have_ffmpeg() -> bool {
    if command_available("ffmpeg") {
        return true;
    }
    assert!(
        std::env::var_os("TIMESHARD_REQUIRE_MEDIA_TOOLS").is_none(),
        "TIMESHARD_REQUIRE_MEDIA_TOOLS is set, but ffmpeg is missing"
    );
    println!("skipped: ffmpeg is not installed");
    false
}

/// An MKV made by ffmpeg from lavfi's testsrc: `size`, `frames` frames at 25 fps, then `args`
/// (codec options).
pub fn ffmpeg_clip(size: &str, frames: u32, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size={size}:rate=25"))
        .args(["-frames:v", &frames.to_string()])
        .args(args)
        .args(["-f", "matroska", "-"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("running ffmpeg");
    assert!(out.status.success(), "ffmpeg failed for {size} {args:?}");
    out.stdout
}

/// The tracks of an MKV file and every frame with its absolute timestamp (in TimecodeScale
/// units, ms for ffmpeg's files), in document order.
pub fn demux(mkv: &[u8]) -> (Vec<Track>, Vec<(i64, Frame)>) {
    let events = read_all(mkv).expect("the MKV reads");
    let mut tracks = Vec::new();
    let mut frames = Vec::new();
    let mut cluster = 0i64;
    for e in events {
        match e {
            MkvEvent::Tracks(t) => tracks = t,
            MkvEvent::ClusterStart { timecode } => cluster = timecode as i64,
            MkvEvent::Frame(f) => frames.push((cluster + i64::from(f.timecode), f)),
            _ => {}
        }
    }
    (tracks, frames)
}
