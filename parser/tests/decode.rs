//! FrameDecoder against ffmpeg: clips ffmpeg makes (testsrc, libx264, 4:2:0 with and without
//! B-frames) are rewritten as GetMedia bodies, one MKV document per fragment with the AWS tags,
//! read back with FragmentReader, decoded, and compared with ffmpeg's own decode of the same
//! clip (`-f rawvideo -pix_fmt rgb24`): PSNR at least 40 dB for every frame, and the same
//! counts and timestamps for every selection.
//!
//! Without ffmpeg the tests skip, unless TIMESHARD_REQUIRE_MEDIA_TOOLS is set (CI), where they
//! fail.
#![cfg(feature = "decode")]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::*;
use timeshard_parser::decode::{DecodeError, DecodedFrame, FrameDecoder, Selection, encode_jpeg};
use timeshard_parser::fragment::format_timestamp_ms;
use timeshard_parser::mkv::write;
use timeshard_parser::{Fragment, FragmentReader, Frame, SegmentInfo, SimpleTag, Track};

const SERVER_START_MS: i64 = 1_700_000_000_000;
/// The producer's clock runs 1234 ms behind the server's in these bodies.
const PRODUCER_START_MS: i64 = SERVER_START_MS - 1234;

/// Splits the frames into fragments at every key frame (or at every `cut`th frame when given),
/// as (server start, producer start, frames with ms offsets).
fn split(frames: &[(i64, Frame)], cut: Option<usize>) -> Vec<Vec<(i64, Frame)>> {
    let mut out: Vec<Vec<(i64, Frame)>> = Vec::new();
    for (i, (ts, f)) in frames.iter().enumerate() {
        let new = match cut {
            Some(n) => i % n == 0,
            None => f.key,
        };
        if new || out.is_empty() {
            out.push(Vec::new());
        }
        out.last_mut().expect("a fragment").push((*ts, f.clone()));
    }
    out
}

/// A GetMedia body: per fragment an MKV document with the fragment number and the server and
/// producer timestamps before its Cluster, and the continuation token after it. The Cluster
/// Timecode is the producer time (ABSOLUTE timecodes), the fragment starts at its first frame's
/// time (the smallest, with B-frames the first in decode order is the key frame).
fn get_media_body(tracks: &[Track], fragments: &[Vec<(i64, Frame)>], tags: bool) -> Vec<u8> {
    let mut body = Vec::new();
    for (n, frames) in fragments.iter().enumerate() {
        let start = frames.iter().map(|(ts, _)| *ts).min().expect("frames");
        write::ebml_header(&mut body);
        write::segment_start_unknown(&mut body);
        write::info(&mut body, &SegmentInfo::default());
        write::tracks(&mut body, tracks);
        let number = format!("9134385233318150666908441974989{n:05}");
        if tags {
            write::tags(
                &mut body,
                &[
                    SimpleTag::string("AWS_KINESISVIDEO_FRAGMENT_NUMBER", number.clone()),
                    SimpleTag::string(
                        "AWS_KINESISVIDEO_SERVER_TIMESTAMP",
                        format_timestamp_ms(SERVER_START_MS + start),
                    ),
                    SimpleTag::string(
                        "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP",
                        format_timestamp_ms(PRODUCER_START_MS + start),
                    ),
                ],
            );
        }
        let cluster = if tags {
            PRODUCER_START_MS + start
        } else {
            start
        };
        write::cluster_start_unknown(&mut body, cluster as u64);
        for (ts, f) in frames {
            let mut f = f.clone();
            f.timecode = i16::try_from(ts - start).expect("within a cluster");
            write::simple_block(&mut body, &f);
        }
        if tags {
            write::tags(
                &mut body,
                &[
                    SimpleTag::string("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW", "0"),
                    SimpleTag::string("AWS_KINESISVIDEO_CONTINUATION_TOKEN", number),
                ],
            );
        }
    }
    body
}

fn read(body: &[u8]) -> Vec<Fragment> {
    let mut reader = FragmentReader::new();
    reader.push(body);
    let mut out = Vec::new();
    while let Some(f) = reader.next_fragment().expect("valid") {
        out.push(f);
    }
    while let Some(f) = reader.finish().expect("valid") {
        out.push(f);
    }
    out
}

/// ffmpeg's clip as GetMedia fragments, one per key frame, with the AWS tags.
fn as_fragments(mkv: &[u8]) -> Vec<Fragment> {
    let (tracks, frames) = demux(mkv);
    read(&get_media_body(&tracks, &split(&frames, None), true))
}

/// ffmpeg's own decode as RGB24 pictures, in presentation order.
fn ffmpeg_rgb(mkv: &[u8], width: usize, height: usize) -> Vec<Vec<u8>> {
    static CLIPS: AtomicUsize = AtomicUsize::new(0);
    let n = CLIPS.fetch_add(1, Ordering::Relaxed);
    let path = temp_path(&format!("decode-ref-{n}.mkv"));
    std::fs::write(&path, mkv).expect("write clip");
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(&path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg decode");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success());
    assert_eq!(out.stdout.len() % (width * height * 3), 0);
    out.stdout
        .chunks(width * height * 3)
        .map(<[u8]>::to_vec)
        .collect()
}

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

fn decode_all(fragments: &[Fragment], selection: Selection) -> Vec<DecodedFrame> {
    let mut decoder = FrameDecoder::new(selection);
    let frames: Vec<DecodedFrame> = fragments
        .iter()
        .flat_map(|f| decoder.decode_fragment(f).expect("decodes"))
        .collect();
    assert_eq!(decoder.skipped_frames(), 0);
    frames
}

/// Whether frames come in an order other than their timestamps' (B-frames).
fn reordered(frames: &[(i64, Frame)]) -> bool {
    frames.windows(2).any(|w| w[1].0 < w[0].0)
}

const X264_420: [&str; 4] = ["-pix_fmt", "yuv420p", "-c:v", "libx264"];

#[test]
fn decoded_frames_match_ffmpeg() {
    if !have_ffmpeg() {
        return;
    }
    // 4 s at 25 fps, a key frame every 25 frames: 4 fragments of 1 s. libx264's default High
    // profile has B-frames; Baseline has none.
    for (what, extra, b_frames) in [
        ("High with B-frames", vec!["-g", "25"], true),
        (
            "Baseline",
            vec!["-g", "25", "-profile:v", "baseline"],
            false,
        ),
    ] {
        let mut args = X264_420.to_vec();
        args.extend(extra);
        let mkv = ffmpeg_clip("320x240", 100, &args);
        assert_eq!(reordered(&demux(&mkv).1), b_frames, "{what}");
        let fragments = as_fragments(&mkv);
        assert_eq!(fragments.len(), 4, "{what}");
        let reference = ffmpeg_rgb(&mkv, 320, 240);
        assert_eq!(reference.len(), 100, "{what}");

        let all = decode_all(&fragments, Selection::All);
        assert_eq!(all.len(), 100, "{what}");
        for (i, (frame, want)) in all.iter().zip(&reference).enumerate() {
            let n = i as i64;
            assert_eq!((frame.width, frame.height), (320, 240));
            assert_eq!(frame.rgb.len(), 320 * 240 * 3);
            assert_eq!(frame.track, 1);
            // Presentation order, each picture with its own frame's times.
            assert_eq!(
                (frame.timestamp_ms, frame.producer_timestamp_ms),
                (SERVER_START_MS + n * 40, Some(PRODUCER_START_MS + n * 40)),
                "{what} frame {i}"
            );
            assert_eq!(frame.key, i % 25 == 0, "{what} frame {i}");
            assert_eq!(
                frame.fragment_number.as_deref(),
                fragments[i / 25].fragment_number.as_deref()
            );
            let db = psnr(&frame.rgb, want);
            assert!(db >= 40.0, "{what} frame {i}: PSNR {db:.1} dB");
        }

        // Every Nth counts across fragments (25 frames each: 7 does not divide them).
        for n in [5, 7] {
            let picked = decode_all(&fragments, Selection::EveryNth(n));
            let want: Vec<_> = all.iter().step_by(n as usize).collect();
            assert_eq!(picked.len(), want.len(), "{what} every {n}");
            for (p, w) in picked.iter().zip(want) {
                assert_eq!(p, w, "{what} every {n}: same picture, same times");
            }
        }

        let keys = decode_all(&fragments, Selection::KeyFramesOnly);
        assert_eq!(
            keys.iter().map(|f| f.timestamp_ms).collect::<Vec<_>>(),
            (0..4)
                .map(|k| SERVER_START_MS + k * 1000)
                .collect::<Vec<_>>(),
            "{what}"
        );
        for (k, p) in keys.iter().enumerate() {
            assert!(p.key);
            let db = psnr(&p.rgb, &reference[k * 25]);
            assert!(db >= 40.0, "{what} key frame {k}: PSNR {db:.1} dB");
        }
    }
}

/// Key frames only gives the decoder nothing else: with every other frame replaced by junk,
/// it returns the same pictures, while decoding every frame does not.
#[test]
fn key_frames_only_never_feeds_other_frames() {
    if !have_ffmpeg() {
        return;
    }
    let mkv = ffmpeg_clip("320x240", 50, &[&X264_420[..], &["-g", "25"]].concat());
    let (tracks, frames) = demux(&mkv);
    let clean = read(&get_media_body(&tracks, &split(&frames, None), true));
    let mut rng = Rng(42);
    let junk: Vec<(i64, Frame)> = frames
        .iter()
        .map(|(ts, f)| {
            let mut f = f.clone();
            if !f.key {
                // A well-framed AVCC NAL unit: a non-IDR slice of random bytes.
                let mut data = vec![0, 0, 0, 200, 0x41];
                data.extend((0..199).map(|_| rng.next() as u8));
                f.data = Bytes::from(data);
            }
            (*ts, f)
        })
        .collect();
    let damaged = read(&get_media_body(&tracks, &split(&junk, None), true));
    let want = decode_all(&clean, Selection::KeyFramesOnly);
    assert_eq!(want.len(), 2);
    assert_eq!(decode_all(&damaged, Selection::KeyFramesOnly), want);

    let mut decoder = FrameDecoder::new(Selection::All);
    let all_clean = decode_all(&clean, Selection::All);
    let all_damaged: Vec<Result<Vec<DecodedFrame>, DecodeError>> =
        damaged.iter().map(|f| decoder.decode_fragment(f)).collect();
    let same = all_damaged
        .iter()
        .flatten()
        .flatten()
        .zip(&all_clean)
        .filter(|(a, b)| a == b)
        .count();
    assert!(
        same < all_clean.len(),
        "the junk frames matter when they are decoded"
    );
}

/// Sizes that are not multiples of 16 come out cropped, as ffmpeg's do.
#[test]
fn odd_sizes_come_out_cropped() {
    if !have_ffmpeg() {
        return;
    }
    for (size, w, h) in [("1366x768", 1366, 768), ("178x142", 178, 142)] {
        let mkv = ffmpeg_clip(size, 8, &[&X264_420[..], &["-g", "4"]].concat());
        let reference = ffmpeg_rgb(&mkv, w, h);
        let pictures = decode_all(&as_fragments(&mkv), Selection::All);
        assert_eq!(pictures.len(), 8, "{size}");
        for (i, (p, want)) in pictures.iter().zip(&reference).enumerate() {
            assert_eq!((p.width as usize, p.height as usize), (w, h), "{size}");
            let db = psnr(&p.rgb, want);
            assert!(db >= 40.0, "{size} frame {i}: PSNR {db:.1} dB");
        }
    }
}

/// Fragments cut in the middle of a GOP (an ffmpeg file's clusters, not GetMedia's): without
/// B-frames the decoder goes on across the cut; with them the rest of the GOP is skipped and
/// counted, and what is returned is still right. The bodies have no AWS tags, so the times are
/// the frames' MKV times.
#[test]
fn fragments_cut_inside_a_gop() {
    if !have_ffmpeg() {
        return;
    }
    for (what, extra) in [
        ("Baseline", vec!["-profile:v", "baseline"]),
        ("High with B-frames", vec![]),
    ] {
        let mut args = X264_420.to_vec();
        args.extend(["-g", "25"]);
        args.extend(extra);
        let mkv = ffmpeg_clip("320x240", 50, &args);
        let (tracks, frames) = demux(&mkv);
        let reference = ffmpeg_rgb(&mkv, 320, 240);
        // Fragments of 10 frames in decode order: frames 10, 20, 30 and 40 start fragments
        // without a key frame (0 and 25 are key frames).
        let fragments = read(&get_media_body(&tracks, &split(&frames, Some(10)), false));
        assert_eq!(fragments.len(), 5);
        assert!(fragments.iter().all(|f| f.server_timestamp_ms.is_none()));
        let mut decoder = FrameDecoder::new(Selection::All);
        let mut pictures = Vec::new();
        for f in &fragments {
            let got = decoder.decode_fragment(f).expect(what);
            assert!(
                got.windows(2)
                    .all(|w| w[0].timestamp_ms < w[1].timestamp_ms),
                "{what}: one call's pictures in presentation order"
            );
            pictures.extend(got);
        }
        let skipped = decoder.skipped_frames();
        assert_eq!(pictures.len() as u64 + skipped, 50, "{what}");
        if reordered(&frames) {
            assert!(skipped > 0, "{what}: openh264 cannot go on after a flush");
        } else {
            assert_eq!(skipped, 0, "{what}");
        }
        for p in &pictures {
            let i = (p.timestamp_ms / 40) as usize;
            assert_eq!(p.timestamp_ms, i as i64 * 40);
            let db = psnr(&p.rgb, &reference[i]);
            assert!(db >= 40.0, "{what} frame {i}: PSNR {db:.1} dB");
        }
        // Each picture once. (Across calls the order can differ from presentation order when
        // a cut falls between a B-frame and the later frame it refers to.)
        let mut times: Vec<i64> = pictures.iter().map(|p| p.timestamp_ms).collect();
        times.sort_unstable();
        times.dedup();
        assert_eq!(times.len(), pictures.len(), "{what}");

        // A stream first seen in the middle of a GOP starts at its next key frame.
        let mut late = FrameDecoder::new(Selection::All);
        let mut got = Vec::new();
        for f in &fragments[1..] {
            got.extend(late.decode_fragment(f).expect(what));
        }
        assert!(late.skipped_frames() >= 15, "{what}");
        assert!(got.iter().all(|p| p.timestamp_ms >= 1000), "{what}");
        assert_eq!(got.first().map(|p| p.key), Some(true), "{what}");
    }
}

#[test]
fn profiles_openh264_cannot_decode_are_named() {
    if !have_ffmpeg() {
        return;
    }
    for (pix_fmt, name, chroma) in [
        ("yuv444p", "High 4:4:4 Predictive", 3),
        ("yuv420p10le", "High 10", 1),
        ("yuv422p", "High 4:2:2", 2),
    ] {
        let mkv = ffmpeg_clip("320x240", 5, &["-pix_fmt", pix_fmt, "-c:v", "libx264"]);
        let fragments = as_fragments(&mkv);
        for selection in [Selection::All, Selection::KeyFramesOnly] {
            let err = FrameDecoder::new(selection)
                .decode_fragment(&fragments[0])
                .expect_err("not decodable");
            let DecodeError::UnsupportedProfile {
                profile,
                chroma_format_idc,
                ..
            } = &err
            else {
                panic!("{pix_fmt}: {err}");
            };
            assert_eq!((*profile, *chroma_format_idc), (name, chroma));
            let message = err.to_string();
            assert!(
                message.contains(name) && message.contains("only 8-bit 4:2:0"),
                "{message}"
            );
        }
    }
    let hevc = ffmpeg_clip(
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
        .decode_fragment(&as_fragments(&hevc)[0])
        .expect_err("H.265");
    assert_eq!(
        err,
        DecodeError::UnsupportedCodec("V_MPEGH/ISO/HEVC".to_owned())
    );
}

/// What fails without ffmpeg's help: a missing or broken avcC, and fragments without video.
#[test]
fn tracks_that_cannot_be_decoded_are_errors() {
    let (body, _) = kvs_style_document();
    let mut fragments = read(&body);
    assert!(!fragments.is_empty());
    // The document's avcC is a stub that holds no SPS.
    let err = FrameDecoder::new(Selection::All)
        .decode_fragment(&fragments[0])
        .expect_err("no SPS");
    assert!(matches!(err, DecodeError::Parameters(_)), "{err}");
    let mut tracks = (*fragments[0].tracks).clone();
    tracks[0].codec_private = None;
    fragments[0].tracks = tracks.into();
    let err = FrameDecoder::new(Selection::All)
        .decode_fragment(&fragments[0])
        .expect_err("no avcC");
    assert_eq!(err, DecodeError::MissingCodecPrivate);
    // Audio only: nothing to decode, no error.
    let audio: Vec<Track> = fragments[0]
        .tracks
        .iter()
        .filter(|t| t.track_type == 2)
        .cloned()
        .collect();
    fragments[0].tracks = audio.into();
    assert_eq!(
        FrameDecoder::new(Selection::All).decode_fragment(&fragments[0]),
        Ok(Vec::new())
    );
}

#[test]
fn jpeg_of_a_decoded_frame() {
    if !have_ffmpeg() {
        return;
    }
    let mkv = ffmpeg_clip("320x240", 1, &X264_420);
    let frame = decode_all(&as_fragments(&mkv), Selection::All).remove(0);
    let jpeg = encode_jpeg(&frame, 90).expect("jpeg");
    assert_eq!(&jpeg[..3], &[0xff, 0xd8, 0xff]);
    let back = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
        .expect("a JPEG")
        .to_rgb8();
    assert_eq!(back.dimensions(), (320, 240));
    let db = psnr(back.as_raw(), &frame.rgb);
    assert!(db >= 25.0, "JPEG at quality 90: PSNR {db:.1} dB");
    let small = encode_jpeg(&frame, 10).expect("jpeg");
    assert!(small.len() < jpeg.len());
    let bad = DecodedFrame {
        rgb: vec![0; 10],
        ..frame
    };
    assert!(matches!(encode_jpeg(&bad, 90), Err(DecodeError::Image(_))));
}
