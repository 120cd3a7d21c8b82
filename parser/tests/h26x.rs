//! H.264/H.265 helpers on parameter sets from real encoders: the committed samples, bytes
//! ffmpeg 5.1 wrote (libx264, libx265; checked against ffprobe's width, height, profile and
//! pixel format), SPSs built bit by bit for what encoders rarely write (scaling lists,
//! pic_order_cnt_type 1, interlaced crop), and clips ffmpeg makes at test time.
//!
//! The ffmpeg tests skip when ffmpeg is missing, unless TIMESHARD_REQUIRE_MEDIA_TOOLS is set
//! (CI), where they fail.

mod common;

use bytes::Bytes;
use common::*;
use timeshard_parser::h26x::{
    AvcConfig, H26xError, H264Sps, H265Sps, HevcConfig, annex_b_nal_units, annex_b_to_avcc,
    avcc_to_annex_b, h264_nal_type, h265_nal_type, rbsp,
};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn codec_private(mkv: &[u8]) -> Bytes {
    demux(mkv).0[0].codec_private.clone().expect("CodecPrivate")
}

/// What an H.264 SPS says, for comparing.
#[derive(Debug, PartialEq)]
struct Picture {
    profile_idc: u8,
    chroma_format_idc: u8,
    bit_depth: u8,
    frame_mbs_only: bool,
    width: u32,
    height: u32,
}

const fn picture(
    profile_idc: u8,
    chroma_format_idc: u8,
    bit_depth: u8,
    frame_mbs_only: bool,
    width: u32,
    height: u32,
) -> Picture {
    Picture {
        profile_idc,
        chroma_format_idc,
        bit_depth,
        frame_mbs_only,
        width,
        height,
    }
}

impl From<&H264Sps> for Picture {
    fn from(sps: &H264Sps) -> Picture {
        assert_eq!(sps.bit_depth_luma, sps.bit_depth_chroma);
        picture(
            sps.profile_idc,
            sps.chroma_format_idc,
            sps.bit_depth_luma,
            sps.frame_mbs_only,
            sps.width,
            sps.height,
        )
    }
}

/// avcC records ffmpeg 5.1 + libx264 wrote for testsrc, and what ffprobe says about them.
const AVCC_RECORDS: [(&str, &str, Picture); 5] = [
    (
        "Main 1366x768 (cropped from 1376x768)",
        "014d4020ffe1001a674d4020eca02b030f3780880000030008000003019078c18cb001000568ebe3cb20",
        picture(77, 1, 8, true, 1366, 768),
    ),
    (
        "High 1920x1080 interlaced (-flags +ildct+ilme; 1088 cropped)",
        "01640028ffe1001a67640028acd94078044fde0220000003002000000643e2c5b2c001000668fba3cb22c0fdf8f800",
        picture(100, 1, 8, false, 1920, 1080),
    ),
    (
        "High 4:4:4 Predictive 320x240",
        "01f4000dffe1001967f4000d919b28283f6022000003000200000300641e28532c01000668ebe3c44844fff8f800",
        picture(244, 3, 8, true, 320, 240),
    ),
    (
        "High 10 320x240",
        "016e000dffe10019676e000da6cd94141fb011000003000100000300320f14299601000668ebe3cb22c0fdfafa00",
        picture(110, 1, 10, true, 320, 240),
    ),
    (
        "High 4:2:2 320x240",
        "017a000dffe10019677a000dbcd94141fb011000000300100000030320f142996001000668ebe3cb22c0fef8f800",
        picture(122, 2, 8, true, 320, 240),
    ),
];

#[test]
fn h264_records_ffmpeg_wrote() {
    for (name, record, want) in AVCC_RECORDS {
        let record = hex(record);
        let config = AvcConfig::parse(&record).expect(name);
        assert_eq!(config.length_size, 4, "{name}");
        assert_eq!((config.sps.len(), config.pps.len()), (1, 1), "{name}");
        assert_eq!(config.profile_idc, want.profile_idc, "{name}");
        let sps = H264Sps::parse(&config.sps[0]).expect(name);
        assert_eq!(Picture::from(&sps), want, "{name}");
        assert!(name.starts_with(sps.profile_name()), "{name}");
        // Written back byte for byte, the High profiles' chroma/bit-depth extension included.
        assert_eq!(config.to_bytes().expect(name), record, "{name}");
        // Parameter sets for a decoder: start code, SPS, start code, PPS.
        let prefix = config.annex_b_parameter_sets();
        let units = annex_b_nal_units(&prefix);
        assert_eq!(
            units,
            vec![&config.sps[0][..], &config.pps[0][..]],
            "{name}"
        );
        assert_eq!(&prefix[..4], &[0, 0, 0, 1]);
    }
}

#[test]
fn h264_records_of_the_committed_samples() {
    for name in SAMPLES {
        let record = codec_private(&sample(name));
        let config = AvcConfig::parse(&record).expect(name);
        let sps = H264Sps::parse(&config.sps[0]).expect(name);
        assert_eq!(
            (
                sps.width,
                sps.height,
                sps.chroma_format_idc,
                sps.bit_depth_luma
            ),
            (320, 240, 1, 8),
            "{name}"
        );
        assert!(
            matches!(sps.profile_idc, 66 | 77 | 100),
            "{name}: {}",
            sps.profile_idc
        );
        assert_eq!(config.to_bytes().expect(name), record.to_vec(), "{name}");
        let pps = &config.pps[0];
        assert_eq!(
            AvcConfig::from_parameter_sets(&config.sps[0], pps).expect(name),
            config,
            "{name}: the record an encoder's SPS and PPS make"
        );
    }
}

/// HEVCDecoderConfigurationRecord of ffmpeg 5.1 + libx265 (1366x768 Main 10): its header and its
/// VPS, SPS and PPS, followed here by a short SEI array (x265 writes a long one) that the parser
/// must step over.
fn hvcc_main10_1366x768() -> Vec<u8> {
    let mut r = hex("01022000000090000000000078f000fcfdfafa00000f");
    r.push(4); // numOfArrays
    for (nal_type, unit) in [
        (0x20, "40010c01ffff022000000300900000030000030078959809"),
        (
            0x21,
            "420101022000000300900000030000030078a002ac80301d6d96566924caf0168080000003008000000c84",
        ),
        (0x22, "4401c172b46240"),
        (0x27, "4e0105ffffffffffff80"),
    ] {
        let unit = hex(unit);
        r.push(0x80 | nal_type); // array_completeness
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&(unit.len() as u16).to_be_bytes());
        r.extend_from_slice(&unit);
    }
    r
}

#[test]
fn h265_parameter_sets_ffmpeg_wrote() {
    let config = HevcConfig::parse(&hvcc_main10_1366x768()).expect("hvcC");
    assert_eq!(
        (
            config.general_profile_idc,
            config.general_level_idc,
            config.chroma_format_idc,
            config.length_size
        ),
        (2, 120, 1, 4)
    );
    assert_eq!(
        (config.vps.len(), config.sps.len(), config.pps.len()),
        (1, 1, 1)
    );
    assert_eq!(h265_nal_type(&config.vps[0]), Some(32));
    assert_eq!(h265_nal_type(&config.pps[0]), Some(34));
    let prefix = config.annex_b_parameter_sets();
    let types: Vec<_> = annex_b_nal_units(&prefix)
        .iter()
        .map(|u| h265_nal_type(u))
        .collect();
    assert_eq!(types, vec![Some(32), Some(33), Some(34)]);

    // (what, SPS, profile, chroma, bit depth, width, height)
    let cases = [
        (
            "Main 1920x1080",
            "420101016000000300900000030000030078a003c08010e596566924caf0168080000003008000000c84",
            1,
            1,
            8,
            1920,
            1080,
        ),
        (
            "Main 10 1366x768 (conformance window from 1368)",
            "420101022000000300900000030000030078a002ac80301d6d96566924caf0168080000003008000000c84",
            2,
            1,
            10,
            1366,
            768,
        ),
        (
            "RExt 4:4:4 320x240",
            "4201010408000003009e0800000300003c90014101e2cb2b349265780b4040000003004000000642",
            4,
            3,
            8,
            320,
            240,
        ),
        (
            "Main 640x360 with two temporal sub-layers",
            "42010201600000030090000003000003003f0000a005020169659598acd24995e02d010000030001000003001908",
            1,
            1,
            8,
            640,
            360,
        ),
    ];
    for (what, sps, profile, chroma, depth, w, h) in cases {
        let sps = H265Sps::parse(&hex(sps)).expect(what);
        assert_eq!(
            (
                sps.general_profile_idc,
                sps.chroma_format_idc,
                sps.bit_depth_luma,
                sps.bit_depth_chroma,
                sps.width,
                sps.height
            ),
            (profile, chroma, depth, depth, w, h),
            "{what}"
        );
    }
    assert_eq!(
        H265Sps::parse(&config.sps[0]).expect("SPS").width,
        1366,
        "the record's SPS"
    );
}

/// Writes bits and Exp-Golomb codes, then the RBSP trailing bits.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    fn u(&mut self, n: u32, v: u64) {
        for i in (0..n).rev() {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if v >> i & 1 == 1 {
                *self.bytes.last_mut().expect("a byte") |= 0x80 >> (self.bits % 8);
            }
            self.bits += 1;
        }
    }

    fn flag(&mut self, b: bool) {
        self.u(1, u64::from(b));
    }

    fn ue(&mut self, v: u64) {
        let n = 64 - (v + 1).leading_zeros();
        self.u(n - 1, 0);
        self.u(n, v + 1);
    }

    fn se(&mut self, v: i64) {
        self.ue(if v > 0 {
            2 * v as u64 - 1
        } else {
            2 * v.unsigned_abs()
        });
    }

    fn finish(mut self) -> Vec<u8> {
        self.u(1, 1);
        self.bytes
    }
}

/// An RBSP as a NAL unit payload: `00 00 0x` (x <= 3) gets an emulation-prevention byte.
fn escape(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// The fields of a hand-built SPS.
struct SpsSpec {
    profile_idc: u8,
    chroma_format_idc: u64,
    /// Per scaling list: `None` absent, or the delta_scale values written (a list ends early
    /// when the running scale reaches 0).
    scaling_lists: Option<Vec<Option<Vec<i64>>>>,
    poc_type_1_cycle: Vec<i64>,
    /// offset_for_non_ref_pic: -2^30 is coded with 31 zero bits, which need an
    /// emulation-prevention byte wherever they fall.
    offset_for_non_ref_pic: i64,
    width_mbs: u64,
    height_map_units: u64,
    frame_mbs_only: bool,
    crop: Option<[u64; 4]>,
}

fn build_sps(spec: &SpsSpec) -> (Vec<u8>, Vec<u8>) {
    let mut w = BitWriter::default();
    w.u(8, u64::from(spec.profile_idc));
    w.u(8, 0); // constraint flags
    w.u(8, 40); // level
    w.ue(0); // seq_parameter_set_id
    if spec.profile_idc >= 100 {
        w.ue(spec.chroma_format_idc);
        if spec.chroma_format_idc == 3 {
            w.flag(false); // separate_colour_plane_flag
        }
        w.ue(0);
        w.ue(0); // bit depths 8
        w.flag(false); // qpprime_y_zero_transform_bypass_flag
        w.flag(spec.scaling_lists.is_some());
        for list in spec.scaling_lists.iter().flatten() {
            w.flag(list.is_some());
            for delta in list.iter().flatten() {
                w.se(*delta);
            }
        }
    }
    w.ue(2); // log2_max_frame_num_minus4
    w.ue(1); // pic_order_cnt_type
    w.flag(false); // delta_pic_order_always_zero_flag
    w.se(spec.offset_for_non_ref_pic);
    w.se(-2); // offset_for_top_to_bottom_field
    w.ue(spec.poc_type_1_cycle.len() as u64);
    for offset in &spec.poc_type_1_cycle {
        w.se(*offset);
    }
    w.ue(4); // max_num_ref_frames
    w.flag(false); // gaps
    w.ue(spec.width_mbs - 1);
    w.ue(spec.height_map_units - 1);
    w.flag(spec.frame_mbs_only);
    if !spec.frame_mbs_only {
        w.flag(true); // mb_adaptive_frame_field_flag
    }
    w.flag(true); // direct_8x8_inference_flag
    w.flag(spec.crop.is_some());
    for c in spec.crop.iter().flatten() {
        w.ue(*c);
    }
    w.flag(false); // vui_parameters_present_flag
    let rbsp = w.finish();
    let mut unit = vec![0x67];
    unit.extend_from_slice(&escape(&rbsp));
    (unit, rbsp)
}

/// A list of 16 or 64 deltas that never reaches 0, with steps that wrap around 256.
fn full_list(size: usize, step: i64) -> Option<Vec<i64>> {
    let mut deltas = Vec::new();
    let mut scale = 8i64;
    for i in 0..size {
        let delta = if i % 2 == 0 { step } else { -step / 3 };
        let next = (scale + delta).rem_euclid(256);
        let delta = if next == 0 { delta + 1 } else { delta };
        scale = (scale + delta).rem_euclid(256);
        deltas.push(delta);
    }
    Some(deltas)
}

#[test]
fn h264_sps_with_scaling_lists_and_poc_type_1() {
    // Lists: 4x4 intra Y full, 4x4 intra Cb ending at once (delta -8: the default list),
    // 4x4 inter Cr ending after three entries, 8x8 lists full with wrapping steps.
    let lists_420 = vec![
        full_list(16, 5),
        None,
        Some(vec![-8]),
        None,
        Some(vec![3, 4, -15]),
        None,
        full_list(64, 100),
        full_list(64, -120),
    ];
    let mut lists_444 = lists_420.clone();
    lists_444.extend([None, full_list(64, 7), Some(vec![-8]), full_list(64, 127)]);
    let cases = [
        (
            "4:2:0 1366x768, 8 scaling lists",
            SpsSpec {
                profile_idc: 100,
                chroma_format_idc: 1,
                scaling_lists: Some(lists_420.clone()),
                poc_type_1_cycle: vec![1, -1, 300, -70000],
                offset_for_non_ref_pic: -(1 << 30),
                width_mbs: 86,
                height_map_units: 48,
                frame_mbs_only: true,
                crop: Some([0, 5, 0, 0]),
            },
            (1366, 768),
        ),
        (
            "4:4:4 1366x768, 12 scaling lists, crop in luma samples",
            SpsSpec {
                profile_idc: 244,
                chroma_format_idc: 3,
                scaling_lists: Some(lists_444),
                poc_type_1_cycle: vec![],
                offset_for_non_ref_pic: 5,
                width_mbs: 86,
                height_map_units: 48,
                frame_mbs_only: true,
                crop: Some([0, 10, 0, 0]),
            },
            (1366, 768),
        ),
        (
            "4:2:0 1920x1080 interlaced: map units are field pairs, crop counts 4 lines",
            SpsSpec {
                profile_idc: 100,
                chroma_format_idc: 1,
                scaling_lists: Some(lists_420),
                poc_type_1_cycle: vec![2; 255],
                offset_for_non_ref_pic: 0,
                width_mbs: 120,
                height_map_units: 34,
                frame_mbs_only: false,
                crop: Some([0, 0, 0, 2]),
            },
            (1920, 1080),
        ),
        (
            "Main 720x576 interlaced, no crop",
            SpsSpec {
                profile_idc: 77,
                chroma_format_idc: 1,
                scaling_lists: None,
                poc_type_1_cycle: vec![0],
                offset_for_non_ref_pic: 1,
                width_mbs: 45,
                height_map_units: 18,
                frame_mbs_only: false,
                crop: None,
            },
            (720, 576),
        ),
    ];
    let mut escaped = 0;
    for (what, spec, (w, h)) in cases {
        let (unit, rbsp_bytes) = build_sps(&spec);
        if unit.len() - 1 > rbsp_bytes.len() {
            escaped += 1;
        }
        assert_eq!(rbsp(&unit[1..]), rbsp_bytes, "{what}");
        let sps = H264Sps::parse(&unit).expect(what);
        assert_eq!((sps.width, sps.height), (w, h), "{what}");
        assert_eq!(
            (
                sps.profile_idc,
                u64::from(sps.chroma_format_idc),
                sps.frame_mbs_only
            ),
            (
                spec.profile_idc,
                spec.chroma_format_idc,
                spec.frame_mbs_only
            ),
            "{what}"
        );
        // Cut anywhere, it is an error (never a panic, never a wrong size).
        for len in 1..unit.len() - 1 {
            assert!(H264Sps::parse(&unit[..len]).is_err(), "{what} cut at {len}");
        }
    }
    assert!(
        escaped > 0,
        "an SPS with emulation-prevention bytes is among the cases"
    );
}

#[test]
fn wrong_parameter_sets_are_named_errors() {
    let spec = |chroma, width_mbs, crop| SpsSpec {
        profile_idc: 100,
        chroma_format_idc: chroma,
        scaling_lists: None,
        poc_type_1_cycle: vec![],
        offset_for_non_ref_pic: 0,
        width_mbs,
        height_map_units: 10,
        frame_mbs_only: true,
        crop,
    };
    let message = |e: H26xError| e.to_string();
    let e = H264Sps::parse(&build_sps(&spec(4, 20, None)).0).expect_err("chroma 4");
    assert!(message(e).contains("chroma_format_idc 4"));
    let e = H264Sps::parse(&build_sps(&spec(1, 20, Some([0, 160, 0, 0]))).0).expect_err("crop");
    assert!(
        message(e).contains("cropping"),
        "crop wider than the picture"
    );
    let e = H264Sps::parse(&build_sps(&spec(1, 5000, None)).0).expect_err("too wide");
    assert!(message(e).contains("pic_width_in_mbs_minus1"));
    let e = H264Sps::parse(&[0x68, 1, 2]).expect_err("a PPS");
    assert!(message(e).contains("not an H.264 SPS"));
    let e = H264Sps::parse(&[0x67, 100]).expect_err("short");
    assert!(matches!(e, H26xError::Truncated { .. }), "{e}");
    let e = AvcConfig::parse(&[2, 100, 0, 30, 0xff, 0xe1]).expect_err("version");
    assert!(message(e).contains("configurationVersion 2"));
    let e = AvcConfig::parse(&[1, 100, 0, 30, 0xfe, 0xe1, 0, 1, 0x67, 0]).expect_err("3");
    assert!(message(e).contains("length size 3"));
    let e = AvcConfig::parse(&[1, 100, 0, 30, 0xff, 0xe1, 0, 20, 0x67]).expect_err("cut SPS");
    assert!(matches!(e, H26xError::Truncated { needed: 19, .. }), "{e}");
    let e = AvcConfig::parse(&[1, 100, 0, 30, 0xff, 0xe0, 0]).expect_err("no SPS");
    assert!(message(e).contains("without an SPS"));
    let e = HevcConfig::parse(&hvcc_main10_1366x768()[..40]).expect_err("cut hvcC");
    assert!(matches!(e, H26xError::Truncated { .. }), "{e}");
    let mut config = AvcConfig::parse(&hex(AVCC_RECORDS[0].1)).expect("avcC");
    config.length_size = 3;
    assert!(config.to_bytes().is_err());
    config.length_size = 4;
    config.sps.clear();
    assert!(config.to_bytes().is_err());
}

/// Random damage to real parameter sets and records: errors or values, never a panic (the
/// tests run with overflow checks on).
#[test]
fn damaged_parameter_sets_never_panic() {
    let mut inputs: Vec<Vec<u8>> = AVCC_RECORDS.iter().map(|r| hex(r.1)).collect();
    inputs.push(hvcc_main10_1366x768());
    let mut rng = Rng(0x5eed);
    let mut parsed = 0;
    for input in &inputs {
        for round in 0..3000 {
            let mut bytes = input.clone();
            match round % 3 {
                0 => {
                    let at = rng.size(bytes.len()) - 1;
                    bytes[at] ^= 1 << (rng.next() % 8);
                }
                1 => {
                    let at = rng.size(bytes.len()) - 1;
                    bytes[at] = rng.next() as u8;
                    let cut = rng.size(bytes.len());
                    bytes.truncate(cut);
                }
                _ => {
                    for _ in 0..rng.size(4) {
                        let at = rng.size(bytes.len()) - 1;
                        bytes[at] = [0, 0xff, 3][rng.size(3) - 1];
                    }
                }
            }
            if let Ok(config) = AvcConfig::parse(&bytes) {
                parsed += 1;
                for unit in &config.sps {
                    let _ = H264Sps::parse(unit);
                }
                let _ = config.to_bytes();
            }
            if let Ok(config) = HevcConfig::parse(&bytes) {
                for unit in &config.sps {
                    let _ = H265Sps::parse(unit);
                }
            }
            // The bytes as a bare SPS, either codec.
            let mut unit = vec![0x67];
            unit.extend_from_slice(&bytes);
            let _ = H264Sps::parse(&unit);
            let mut unit = vec![0x42, 0x01];
            unit.extend_from_slice(&bytes);
            let _ = H265Sps::parse(&unit);
            let mut out = Vec::new();
            let _ = avcc_to_annex_b(&bytes, [1, 2, 4][round % 3], &mut out);
            let _ = annex_b_to_avcc(&bytes);
        }
    }
    assert!(
        parsed > 1000,
        "most single-bit damage still parses: {parsed}"
    );
}

#[test]
fn avcc_and_annex_b_with_every_length_size() {
    let units: [&[u8]; 4] = [
        &[0x67, 1, 2, 3],
        &[0x68, 0xee],
        &[0x65; 300],
        &[0x06, 0, 0, 3],
    ];
    for length_size in [1usize, 2, 4] {
        let mut avcc = Vec::new();
        for unit in units {
            if length_size == 1 && unit.len() > 255 {
                continue;
            }
            let len = (unit.len() as u32).to_be_bytes();
            avcc.extend_from_slice(&len[4 - length_size..]);
            avcc.extend_from_slice(unit);
        }
        let mut annex_b = Vec::new();
        avcc_to_annex_b(&avcc, length_size, &mut annex_b).expect("AVCC");
        let expected: Vec<&[u8]> = units
            .iter()
            .copied()
            .filter(|u| length_size > 1 || u.len() <= 255)
            .collect();
        assert_eq!(annex_b_nal_units(&annex_b), expected, "{length_size}");
        assert_eq!(&annex_b[..4], &[0, 0, 0, 1]);
        // Back to AVCC with 4-byte lengths.
        let mut again = Vec::new();
        avcc_to_annex_b(&annex_b_to_avcc(&annex_b), 4, &mut again).expect("AVCC");
        assert_eq!(again, annex_b);
    }
    // 3-byte start codes, trailing zeros (trailing_zero_8bits) belong to the next start code.
    let units = annex_b_nal_units(&[0, 0, 1, 0x67, 1, 0, 0, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65]);
    assert_eq!(units, vec![&[0x67, 1][..], &[0x68, 2][..], &[0x65][..]]);
    assert_eq!(h264_nal_type(units[2]), Some(5));
    // Lengths past the end and bad length sizes are errors.
    let mut out = Vec::new();
    let e = avcc_to_annex_b(&[0, 0, 0, 9, 1, 2], 4, &mut out).expect_err("short");
    assert!(matches!(e, H26xError::Truncated { needed: 7, .. }), "{e}");
    assert!(avcc_to_annex_b(&[0, 0], 4, &mut out).is_err());
    assert!(avcc_to_annex_b(&[0, 0, 1], 3, &mut out).is_err());
}

#[test]
fn h264_from_ffmpeg_at_odd_sizes_and_profiles() {
    if !have_ffmpeg() {
        return;
    }
    let x264 = |size: &str, extra: &[&str]| {
        let mut args = vec!["-c:v", "libx264"];
        args.extend_from_slice(extra);
        codec_private(&ffmpeg_clip(size, 1, &args))
    };
    let cases: [(&str, &[&str], Picture); 9] = [
        (
            "320x240",
            &["-pix_fmt", "yuv420p"],
            picture(100, 1, 8, true, 320, 240),
        ),
        (
            "1366x768",
            &["-pix_fmt", "yuv420p"],
            picture(100, 1, 8, true, 1366, 768),
        ),
        (
            "1920x1080",
            &["-pix_fmt", "yuv420p"],
            picture(100, 1, 8, true, 1920, 1080),
        ),
        (
            "178x142",
            &["-pix_fmt", "yuv420p"],
            picture(100, 1, 8, true, 178, 142),
        ),
        (
            "640x360",
            &["-pix_fmt", "yuv420p", "-profile:v", "baseline"],
            picture(66, 1, 8, true, 640, 360),
        ),
        (
            "1920x1080",
            &["-pix_fmt", "yuv420p", "-flags", "+ildct+ilme"],
            picture(100, 1, 8, false, 1920, 1080),
        ),
        // testsrc is RGB: without -pix_fmt, libx264 picks 4:4:4.
        ("320x240", &[], picture(244, 3, 8, true, 320, 240)),
        (
            "320x240",
            &["-pix_fmt", "yuv420p10le"],
            picture(110, 1, 10, true, 320, 240),
        ),
        (
            "352x288",
            &["-pix_fmt", "yuv422p"],
            picture(122, 2, 8, true, 352, 288),
        ),
    ];
    for (size, extra, want) in cases {
        let record = x264(size, extra);
        let config = AvcConfig::parse(&record).expect("avcC");
        let sps = H264Sps::parse(&config.sps[0]).expect("SPS");
        assert_eq!(Picture::from(&sps), want, "{size} {extra:?}");
        assert_eq!(
            config.to_bytes().expect("encode"),
            record.to_vec(),
            "{size} {extra:?}"
        );
    }
}

#[test]
fn h265_from_ffmpeg() {
    if !have_ffmpeg() {
        return;
    }
    // (size, pix_fmt, general_profile_idc, chroma, bit depth)
    for (size, pix_fmt, profile, chroma, depth) in [
        ("1366x768", "yuv420p", 1, 1, 8),
        ("320x240", "yuv420p", 1, 1, 8),
        ("1920x1080", "yuv420p10le", 2, 1, 10),
        ("318x238", "yuv444p", 4, 3, 8),
    ] {
        let mkv = ffmpeg_clip(
            size,
            1,
            &[
                "-pix_fmt",
                pix_fmt,
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
        assert_eq!(
            (config.general_profile_idc, config.chroma_format_idc),
            (profile, chroma)
        );
        let sps = H265Sps::parse(&config.sps[0]).expect("SPS");
        let (w, h) = size.split_once('x').expect("size");
        assert_eq!(
            (
                sps.width.to_string(),
                sps.height.to_string(),
                sps.general_profile_idc,
                sps.chroma_format_idc,
                sps.bit_depth_luma
            ),
            (w.to_owned(), h.to_owned(), profile, chroma, depth),
            "{size} {pix_fmt}"
        );
        // The key frame converts to Annex B NAL units with an IRAP slice among them.
        let mut annex_b = Vec::new();
        avcc_to_annex_b(&frames[0].1.data, config.length_size, &mut annex_b).expect("AVCC");
        let types: Vec<u8> = annex_b_nal_units(&annex_b)
            .iter()
            .filter_map(|u| h265_nal_type(u))
            .collect();
        assert!(
            types.iter().any(|t| (16..=21).contains(t)),
            "an IRAP slice: {types:?}"
        );
    }
}

#[test]
fn avcc_frames_from_ffmpeg_round_trip() {
    if !have_ffmpeg() {
        return;
    }
    let mkv = ffmpeg_clip("320x240", 10, &["-pix_fmt", "yuv420p", "-c:v", "libx264"]);
    let (tracks, frames) = demux(&mkv);
    let config = AvcConfig::parse(tracks[0].codec_private.as_ref().expect("avcC")).expect("avcC");
    for (_, f) in &frames {
        let mut annex_b = Vec::new();
        avcc_to_annex_b(&f.data, config.length_size, &mut annex_b).expect("AVCC");
        assert_eq!(annex_b_to_avcc(&annex_b), f.data.to_vec());
        let slices = annex_b_nal_units(&annex_b)
            .iter()
            .filter(|u| matches!(h264_nal_type(u), Some(1 | 5)))
            .count();
        assert!(slices >= 1);
    }
    let built = AvcConfig::from_parameter_sets(&config.sps[0], &config.pps[0]).expect("build");
    assert_eq!(built, config);
}
