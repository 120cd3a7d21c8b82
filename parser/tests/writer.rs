//! The writer: what it writes reads back equal, and ffmpeg, ffprobe and mkvinfo accept it.

mod common;

use std::process::Command;

use bytes::Bytes;
use common::*;
use timeshard_parser::mkv::write;
use timeshard_parser::{EbmlHeader, Frame, MkvEvent, SegmentInfo, SimpleTag, TagValue};

#[test]
fn write_then_read_gives_the_same_events() {
    let (input, expected) = kvs_style_document();
    assert_eq!(read_all(&input).expect("valid"), expected);

    // Every field set, and unusual values: an empty frame, the extreme relative timecodes, a
    // track number that needs a 2-byte vint, binary tags, an empty tag value.
    let mut tracks = vec![video_track(), audio_track()];
    tracks[1].number = 200;
    let info = full_info();
    let mut buf = Vec::new();
    write::ebml_header(&mut buf);
    write::segment_start_unknown(&mut buf);
    write::info(&mut buf, &info);
    write::tracks(&mut buf, &tracks);
    let tags = vec![
        SimpleTag::string(
            "AWS_KINESISVIDEO_FRAGMENT_NUMBER",
            "91343852333181432392682062607743920146159169392",
        ),
        SimpleTag::string("empty", ""),
        SimpleTag {
            name: "bin".to_owned(),
            value: TagValue::Binary(Bytes::from_static(&[0, 255, 1])),
        },
    ];
    write::tags(&mut buf, &tags);
    write::cluster_start_unknown(&mut buf, u64::MAX >> 8);
    let frames = vec![
        Frame {
            invisible: true,
            ..frame(1, i16::MIN, true, b"")
        },
        Frame {
            discardable: true,
            ..frame(200, i16::MAX, false, &[3; 70_000])
        },
        frame(1, -1, false, &[1]),
    ];
    for f in &frames {
        write::simple_block(&mut buf, f);
    }
    let mut second = Vec::new();
    write::ebml_header(&mut second);
    write::segment_start_unknown(&mut second);
    write::cluster_start_unknown(&mut second, 0);
    write::simple_block(&mut second, &frames[2]);
    buf.extend_from_slice(&second);

    let header = MkvEvent::Header(EbmlHeader {
        doc_type: "matroska".to_owned(),
        doc_type_version: 2,
        doc_type_read_version: 2,
    });
    let mut expected = vec![
        header.clone(),
        MkvEvent::SegmentStart { size: None },
        MkvEvent::Info(info),
        MkvEvent::Tracks(tracks),
        MkvEvent::Tags(tags),
        MkvEvent::ClusterStart {
            timecode: u64::MAX >> 8,
        },
    ];
    expected.extend(frames.iter().cloned().map(MkvEvent::Frame));
    expected.extend([
        MkvEvent::ClusterEnd,
        MkvEvent::SegmentEnd,
        header,
        MkvEvent::SegmentStart { size: None },
        MkvEvent::ClusterStart { timecode: 0 },
        MkvEvent::Frame(frames[2].clone()),
        MkvEvent::ClusterEnd,
        MkvEvent::SegmentEnd,
    ]);
    assert_eq!(read_all(&buf).expect("valid"), expected);
}

#[test]
fn info_without_optional_fields_round_trips() {
    let mut buf = Vec::new();
    write::ebml_header(&mut buf);
    write::segment_start_unknown(&mut buf);
    let info = SegmentInfo {
        timecode_scale: 100_000,
        ..SegmentInfo::default()
    };
    write::info(&mut buf, &info);
    write::tracks(&mut buf, &[]);
    let events = read_all(&buf).expect("valid");
    assert_eq!(events[2], MkvEvent::Info(info));
    assert_eq!(events[3], MkvEvent::Tracks(vec![]));
}

#[test]
fn samples_rewritten_kvs_style_read_back_the_same_frames() {
    for name in SAMPLES {
        let events = read_all(&sample(name)).expect("valid");
        let rewritten = write_events(&events);
        let reread = read_all(&rewritten).expect("valid");
        assert_eq!(frames(&reread), frames(&events), "{name}");
        assert_eq!(
            cluster_timecodes(&reread),
            cluster_timecodes(&events),
            "{name}"
        );
    }
}

/// Runs a tool on a file; `None` (with a note) when the tool is not installed.
fn run(tool: &str, args: &[&str]) -> Option<std::process::Output> {
    if !command_available(tool) {
        // CI installs the tools and sets this, so these checks never pass there by skipping.
        assert!(
            std::env::var_os("TIMESHARD_REQUIRE_MEDIA_TOOLS").is_none(),
            "TIMESHARD_REQUIRE_MEDIA_TOOLS is set, but {tool} is not installed"
        );
        println!("skipped: {tool} is not installed");
        return None;
    }
    Some(Command::new(tool).args(args).output().expect("tool runs"))
}

/// The sample rewritten by our writer in the KVS producer's shape: unknown-size Segment and
/// Clusters (Timecode + Position 0), Tags with the AWS fragment tags before each Cluster and an
/// end-of-fragment Tags after it.
fn kvs_rewrite(name: &str) -> (Vec<u8>, usize) {
    let events = read_all(&sample(name)).expect("valid");
    let mut buf = Vec::new();
    let mut fragment = 0u64;
    for event in &events {
        match event {
            MkvEvent::Header(_) => write::ebml_header(&mut buf),
            MkvEvent::SegmentStart { .. } => write::segment_start_unknown(&mut buf),
            MkvEvent::Info(info) => write::info(&mut buf, info),
            MkvEvent::Tracks(tracks) => write::tracks(&mut buf, tracks),
            MkvEvent::Tags(tags) => write::tags(&mut buf, tags),
            MkvEvent::ClusterStart { timecode } => {
                fragment += 1;
                write::tags(
                    &mut buf,
                    &[
                        SimpleTag::string("AWS_KINESISVIDEO_FRAGMENT_NUMBER", fragment.to_string()),
                        SimpleTag::string("AWS_KINESISVIDEO_SERVER_TIMESTAMP", "1726677687.758"),
                    ],
                );
                write::cluster_start_unknown(&mut buf, *timecode);
            }
            MkvEvent::Frame(f) => write::simple_block(&mut buf, f),
            MkvEvent::ClusterEnd => {
                write::tags(
                    &mut buf,
                    &[SimpleTag::string("AWS_KINESISVIDEO_END_OF_FRAGMENT", "")],
                );
            }
            MkvEvent::SegmentEnd => {}
        }
    }
    (buf, frames(&events).len())
}

#[test]
fn ffmpeg_decodes_the_writers_output() {
    for name in [VIDEO_SAMPLE, AV_SAMPLE] {
        let (mkv, frame_count) = kvs_rewrite(name);
        let path = temp_path(&format!("rewritten-{name}"));
        std::fs::write(&path, &mkv).expect("temp file");
        let file = path.to_str().expect("utf-8 temp path");

        let Some(decode) = run("ffmpeg", &["-v", "error", "-i", file, "-f", "null", "-"]) else {
            std::fs::remove_file(&path).ok();
            return;
        };
        let stderr = String::from_utf8_lossy(&decode.stderr).to_string();
        assert!(
            decode.status.success() && stderr.is_empty(),
            "{name}: ffmpeg says {stderr}"
        );

        // ffprobe sees every packet we wrote.
        let probe = run(
            "ffprobe",
            &[
                "-v",
                "error",
                "-show_entries",
                "packet=stream_index",
                "-of",
                "csv=p=0",
                file,
            ],
        )
        .expect("ffprobe comes with ffmpeg");
        assert!(
            probe.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&probe.stderr)
        );
        let packets = String::from_utf8_lossy(&probe.stdout).lines().count();
        assert_eq!(packets, frame_count, "{name}");

        // The decoded pictures are those of the original file.
        let original = manifest_sample_path(name);
        let md5 = |input: &str| {
            let out = run(
                "ffmpeg",
                &["-v", "error", "-i", input, "-map", "0:v", "-f", "md5", "-"],
            )
            .expect("ffmpeg");
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        assert_eq!(md5(file), md5(&original), "{name}: decoded video differs");

        if let Some(info) = run("mkvinfo", &[file]) {
            assert!(
                info.status.success(),
                "{name}: mkvinfo: {}",
                String::from_utf8_lossy(&info.stdout)
            );
            let text = String::from_utf8_lossy(&info.stdout);
            assert!(text.contains("Segment: size unknown"), "{text}");
        }
        std::fs::remove_file(&path).ok();
    }
}

fn manifest_sample_path(name: &str) -> String {
    format!("{}/../samples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn ffmpeg_reads_a_getmedia_style_document() {
    // One fragment as GetMedia sends it: AWS tags before and after the Cluster.
    let events = read_all(&sample(VIDEO_SAMPLE)).expect("valid");
    let mut buf = Vec::new();
    write::ebml_header(&mut buf);
    write::segment_start_unknown(&mut buf);
    for event in &events {
        match event {
            MkvEvent::Info(info) => write::info(&mut buf, info),
            MkvEvent::Tracks(tracks) => write::tracks(&mut buf, tracks),
            _ => {}
        }
    }
    write::tags(
        &mut buf,
        &[
            SimpleTag::string(
                "AWS_KINESISVIDEO_FRAGMENT_NUMBER",
                "91343852333181432392682062607743920146159169392",
            ),
            SimpleTag::string("AWS_KINESISVIDEO_SERVER_TIMESTAMP", "1726677687.758"),
            SimpleTag::string("AWS_KINESISVIDEO_PRODUCER_TIMESTAMP", "1726677687.000"),
        ],
    );
    write::cluster_start_unknown(&mut buf, 1_726_677_687_000);
    let first_gop: Vec<&Frame> = frames(&events).into_iter().take(25).collect();
    for f in &first_gop {
        write::simple_block(&mut buf, f);
    }
    write::tags(
        &mut buf,
        &[
            SimpleTag::string("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW", "12"),
            SimpleTag::string(
                "AWS_KINESISVIDEO_CONTINUATION_TOKEN",
                "91343852333181432392682062607743920146159169392",
            ),
        ],
    );
    let path = temp_path("getmedia-style.mkv");
    std::fs::write(&path, &buf).expect("temp file");
    let file = path.to_str().expect("utf-8 temp path");
    if let Some(out) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            file,
        ],
    ) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "25");
    }
    std::fs::remove_file(&path).ok();
}
