//! H.264/H.265 helpers and the decoder against what ffmpeg makes and decodes.
//!
//! The clips are made by ffmpeg at test time (testsrc, libx264/libx265). Without ffmpeg the tests
//! skip, unless TIMESHARD_REQUIRE_MEDIA_TOOLS is set (CI), where they fail.

mod common;

use std::process::{Command, Stdio};

use bytes::Bytes;
use common::*;
use timeshard_parser::h26x::{
    AvcConfig, H264Sps, H265Sps, HevcConfig, annex_b_nal_units, annex_b_to_avcc, avcc_to_annex_b,
};
#[cfg(feature = "decode")]
use timeshard_parser::mkv::write;
#[cfg(feature = "decode")]
use timeshard_parser::{FragmentReader, SegmentInfo};
use timeshard_parser::{Frame, MkvEvent, Track};

fn have_ffmpeg() -> bool {
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
fn clip(size: &str, frames: u32, args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size={size}:rate=25"))
        .args(["-frames:v", &frames.to_string()])
        .args(args)
        .args(["-f", "matroska", "-"])
        .stderr(Stdio::inherit())
        .output()
        .expect("running ffmpeg");
    assert!(out.status.success(), "ffmpeg failed for {size} {args:?}");
    out.stdout
}

/// The tracks and every frame with its absolute ms timestamp.
fn demux(mkv: &[u8]) -> (Vec<Track>, Vec<(i64, Frame)>) {
    let events = read_all(mkv).expect("ffmpeg's MKV reads");
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

fn codec_private(mkv: &[u8]) -> Bytes {
    demux(mkv).0[0].codec_private.clone().expect("CodecPrivate")
}

#[test]
fn h264_sps_sizes_profiles_and_chroma() {
    if !have_ffmpeg() {
        return;
    }
    for (size, w, h) in [
        ("320x240", 320, 240),
        ("1366x768", 1366, 768),
        ("1920x1080", 1920, 1080),
        ("178x142", 178, 142),
    ] {
        let mkv = clip(size, 1, &["-pix_fmt", "yuv420p", "-c:v", "libx264"]);
        let config = AvcConfig::parse(&codec_private(&mkv)).expect("avcC");
        assert_eq!(config.length_size, 4);
        let sps = H264Sps::parse(&config.sps[0]).expect("SPS");
        // Not a multiple of 16: the SPS crops.
        assert_eq!((sps.width, sps.height), (w, h), "{size}");
        assert_eq!(
            (sps.profile_idc, sps.chroma_format_idc, sps.bit_depth_luma),
            (100, 1, 8)
        );
        assert_eq!(sps.profile_name(), "High");
        // The record re-encodes to what ffmpeg wrote.
        assert_eq!(
            config.to_bytes().expect("encode"),
            codec_private(&mkv).to_vec(),
            "{size}"
        );
    }
    let baseline = clip(
        "640x360",
        1,
        &[
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
        ],
    );
    let sps = H264Sps::parse(
        &AvcConfig::parse(&codec_private(&baseline))
            .expect("avcC")
            .sps[0],
    )
    .expect("SPS");
    assert_eq!((sps.profile_idc, sps.width, sps.height), (66, 640, 360));

    let hi444 = clip("320x240", 1, &["-pix_fmt", "yuv444p", "-c:v", "libx264"]);
    let sps = H264Sps::parse(&AvcConfig::parse(&codec_private(&hi444)).expect("avcC").sps[0])
        .expect("SPS");
    assert_eq!((sps.profile_idc, sps.chroma_format_idc), (244, 3));
    assert_eq!(sps.profile_name(), "High 4:4:4 Predictive");
    assert_eq!((sps.width, sps.height), (320, 240));

    let hi10 = clip(
        "320x240",
        1,
        &["-pix_fmt", "yuv420p10le", "-c:v", "libx264"],
    );
    let sps = H264Sps::parse(&AvcConfig::parse(&codec_private(&hi10)).expect("avcC").sps[0])
        .expect("SPS");
    assert_eq!((sps.profile_idc, sps.bit_depth_luma), (110, 10));
}

#[test]
fn h265_records_and_sps() {
    if !have_ffmpeg() {
        return;
    }
    for (size, w, h) in [("1366x768", 1366, 768), ("320x240", 320, 240)] {
        let mkv = clip(
            size,
            1,
            &[
                "-pix_fmt",
                "yuv420p",
                "-c:v",
                "libx265",
                "-x265-params",
                "log-level=error",
            ],
        );
        let (tracks, frames) = demux(&mkv);
        assert_eq!(tracks[0].codec_id, "V_MPEGH/ISO/HEVC");
        let config =
            HevcConfig::parse(tracks[0].codec_private.as_ref().expect("hvcC")).expect("hvcC");
        assert_eq!(
            (config.vps.len(), config.sps.len(), config.pps.len()),
            (1, 1, 1)
        );
        assert_eq!(config.chroma_format_idc, 1);
        let sps = H265Sps::parse(&config.sps[0]).expect("SPS");
        assert_eq!(
            (sps.width, sps.height, sps.chroma_format_idc),
            (w, h, 1),
            "{size}"
        );
        assert_eq!(sps.general_profile_idc, 1, "Main");
        // The key frame converts to Annex B NAL units of known types.
        let mut annex_b = Vec::new();
        avcc_to_annex_b(&frames[0].1.data, config.length_size, &mut annex_b).expect("AVCC");
        let types: Vec<u8> = annex_b_nal_units(&annex_b)
            .iter()
            .map(|u| (u[0] >> 1) & 0x3f)
            .collect();
        assert!(
            types.iter().any(|t| (16..=21).contains(t)),
            "an IRAP slice: {types:?}"
        );
    }
}

#[test]
fn avcc_and_annex_b_round_trip() {
    if !have_ffmpeg() {
        return;
    }
    let mkv = clip("320x240", 10, &["-pix_fmt", "yuv420p", "-c:v", "libx264"]);
    let (tracks, frames) = demux(&mkv);
    let config = AvcConfig::parse(tracks[0].codec_private.as_ref().expect("avcC")).expect("avcC");
    for (_, f) in &frames {
        let mut annex_b = Vec::new();
        avcc_to_annex_b(&f.data, config.length_size, &mut annex_b).expect("AVCC");
        assert_eq!(annex_b_to_avcc(&annex_b), f.data.to_vec());
    }
    // An encoder's SPS and PPS make the same record ffmpeg wrote (profile, level, sets).
    let built = AvcConfig::from_parameter_sets(&config.sps[0], &config.pps[0]).expect("build");
    assert_eq!(built, config);
    // 3-byte start codes and trailing zeros.
    let units = annex_b_nal_units(&[0, 0, 1, 0x67, 1, 0, 0, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65]);
    assert_eq!(units, vec![&[0x67, 1][..], &[0x68, 2][..], &[0x65][..]]);
    // Truncated input is an error, not a panic.
    let mut out = Vec::new();
    assert!(avcc_to_annex_b(&[0, 0, 0, 9, 1, 2], 4, &mut out).is_err());
    assert!(avcc_to_annex_b(&[0, 0], 4, &mut out).is_err());
    assert!(AvcConfig::parse(&[1, 100, 0, 30, 0xff, 0xe1, 0, 20, 0x67]).is_err());
    assert!(H264Sps::parse(&[0x67, 100]).is_err());
    assert!(H265Sps::parse(&[0x42, 1, 1]).is_err());
}

/// Rewrites ffmpeg's MKV as a KVS-style stream, one cluster per key frame with absolute
/// timecodes from `start_ms`, and reads it back as fragments.
#[cfg(feature = "decode")]
fn as_fragments(mkv: &[u8], start_ms: i64) -> Vec<timeshard_parser::Fragment> {
    let (tracks, frames) = demux(mkv);
    let mut doc = Vec::new();
    write::ebml_header(&mut doc);
    write::segment_start_unknown(&mut doc);
    write::info(&mut doc, &SegmentInfo::default());
    write::tracks(&mut doc, &tracks);
    let mut cluster = 0i64;
    for (ts, f) in frames {
        if f.key {
            cluster = start_ms + ts;
            write::cluster_start_unknown(&mut doc, cluster as u64);
        }
        let mut f = f.clone();
        f.timecode = i16::try_from(start_ms + ts - cluster).expect("within a cluster");
        write::simple_block(&mut doc, &f);
    }
    let mut reader = FragmentReader::new();
    reader.push(&doc);
    let mut out = Vec::new();
    while let Some(f) = reader.next_fragment().expect("valid") {
        out.push(f);
    }
    while let Some(f) = reader.finish().expect("valid") {
        out.push(f);
    }
    out
}

/// ffmpeg's own decode as RGB24 frames, in presentation order.
#[cfg(feature = "decode")]
fn ffmpeg_rgb(mkv: &[u8], width: usize, height: usize) -> Vec<Vec<u8>> {
    let path = temp_path("decode-ref.mkv");
    std::fs::write(&path, mkv).expect("write clip");
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(&path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg decode");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success());
    out.stdout
        .chunks(width * height * 3)
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(feature = "decode")]
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

#[cfg(feature = "decode")]
#[test]
fn decoded_frames_match_ffmpeg() {
    use timeshard_parser::decode::{FrameDecoder, Selection, encode_jpeg};
    if !have_ffmpeg() {
        return;
    }
    let start = 1_700_000_000_000;
    // With B-frames (libx264's default), 2 s GOPs of 25 frames, then Baseline without.
    for args in [
        vec!["-pix_fmt", "yuv420p", "-c:v", "libx264", "-g", "25"],
        vec![
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-g",
            "25",
            "-profile:v",
            "baseline",
        ],
    ] {
        let mkv = clip("320x240", 75, &args);
        let fragments = as_fragments(&mkv, start);
        assert_eq!(fragments.len(), 3);
        let reference = ffmpeg_rgb(&mkv, 320, 240);
        assert_eq!(reference.len(), 75);

        let mut all = Vec::new();
        let mut decoder = FrameDecoder::new(Selection::All);
        for f in &fragments {
            all.extend(decoder.decode_fragment(f).expect("decodes"));
        }
        assert_eq!(all.len(), 75, "{args:?}");
        for (i, (frame, want)) in all.iter().zip(&reference).enumerate() {
            assert_eq!((frame.width, frame.height), (320, 240));
            assert_eq!(
                frame.timestamp_ms,
                start + i as i64 * 40,
                "{args:?} frame {i}"
            );
            assert_eq!(frame.key, i % 25 == 0);
            let db = psnr(&frame.rgb, want);
            assert!(db >= 40.0, "{args:?} frame {i}: PSNR {db:.1} dB");
        }

        let mut every = FrameDecoder::new(Selection::EveryNth(7));
        let picked: Vec<_> = fragments
            .iter()
            .flat_map(|f| every.decode_fragment(f).expect("decodes"))
            .collect();
        let want: Vec<_> = all.iter().step_by(7).collect();
        assert_eq!(picked.len(), want.len());
        for (p, w) in picked.iter().zip(want) {
            assert_eq!(p.timestamp_ms, w.timestamp_ms);
            assert!(psnr(&p.rgb, &w.rgb) >= 60.0);
        }

        let mut keys = FrameDecoder::new(Selection::KeyFramesOnly);
        let picked: Vec<_> = fragments
            .iter()
            .flat_map(|f| keys.decode_fragment(f).expect("decodes"))
            .collect();
        assert_eq!(
            picked.iter().map(|f| f.timestamp_ms).collect::<Vec<_>>(),
            vec![start, start + 1000, start + 2000]
        );
        for (k, p) in picked.iter().enumerate() {
            assert!(p.key);
            let db = psnr(&p.rgb, &reference[k * 25]);
            assert!(db >= 40.0, "key frame {k}: PSNR {db:.1} dB");
        }
        let jpeg = encode_jpeg(&picked[0], 85).expect("jpeg");
        assert_eq!(&jpeg[..3], &[0xff, 0xd8, 0xff]);
    }
}

#[cfg(feature = "decode")]
#[test]
fn profiles_openh264_cannot_decode_are_named() {
    use timeshard_parser::decode::{DecodeError, FrameDecoder, Selection};
    if !have_ffmpeg() {
        return;
    }
    for (pix_fmt, name) in [
        ("yuv444p", "High 4:4:4 Predictive"),
        ("yuv420p10le", "High 10"),
    ] {
        let mkv = clip("320x240", 5, &["-pix_fmt", pix_fmt, "-c:v", "libx264"]);
        let fragments = as_fragments(&mkv, 0);
        let err = FrameDecoder::new(Selection::All)
            .decode_fragment(&fragments[0])
            .expect_err("not decodable");
        assert!(
            matches!(err, DecodeError::UnsupportedProfile { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
    let hevc = clip(
        "320x240",
        5,
        &[
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx265",
            "-x265-params",
            "log-level=error",
        ],
    );
    let err = FrameDecoder::new(Selection::All)
        .decode_fragment(&as_fragments(&hevc, 0)[0])
        .expect_err("H.265");
    assert!(matches!(err, DecodeError::UnsupportedCodec(_)), "{err}");
}
