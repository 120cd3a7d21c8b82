//! H.264 and H.265 bitstream helpers: the two framings of NAL units, the decoder configuration
//! records MKV carries as CodecPrivate, and what a sequence parameter set says about the picture.
//!
//! - MKV (and MP4) frames are **AVCC**: each NAL unit prefixed by its length in 1, 2 or 4 bytes
//!   (the record's `lengthSizeMinusOne + 1`). Decoders and raw encoder output use **Annex B**:
//!   each NAL unit after a start code `00 00 01` or `00 00 00 01`.
//!   [`avcc_to_annex_b`] and [`annex_b_to_avcc`] convert between them.
//! - [`AvcConfig`] reads an AVCDecoderConfigurationRecord (`avcC`, CodecPrivate of
//!   `V_MPEG4/ISO/AVC`) and [`AvcConfig::from_parameter_sets`] builds one from an encoder's
//!   SPS and PPS. [`HevcConfig`] reads an HEVCDecoderConfigurationRecord (`hvcC`,
//!   `V_MPEGH/ISO/HEVC`).
//! - [`H264Sps::parse`] and [`H265Sps::parse`] read the picture size (after cropping), profile,
//!   chroma format and bit depth from a sequence parameter set, emulation-prevention bytes
//!   removed first.
//!
//! Everything here works on byte slices and returns [`H26xError`] naming what was wrong; nothing
//! panics on bad input.

use bytes::Bytes;

/// What was wrong with a NAL unit, record or parameter set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H26xError {
    #[error("{what} ends early (needs {needed} more bytes at byte {at})")]
    Truncated {
        what: &'static str,
        at: usize,
        needed: usize,
    },
    #[error("{0}")]
    Invalid(String),
}

fn truncated(what: &'static str, at: usize, needed: usize) -> H26xError {
    H26xError::Truncated { what, at, needed }
}

/// Converts AVCC (length-prefixed NAL units, `length_size` bytes each) to Annex B with 4-byte
/// start codes, appending to `out`.
pub fn avcc_to_annex_b(
    data: &[u8],
    length_size: usize,
    out: &mut Vec<u8>,
) -> Result<(), H26xError> {
    if !matches!(length_size, 1 | 2 | 4) {
        return Err(H26xError::Invalid(format!(
            "NAL length size {length_size}; must be 1, 2 or 4"
        )));
    }
    out.reserve(data.len() + 16);
    let mut at = 0;
    while at < data.len() {
        if data.len() - at < length_size {
            return Err(truncated(
                "AVCC NAL length",
                at,
                length_size - (data.len() - at),
            ));
        }
        let len = data[at..at + length_size]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        at += length_size;
        if data.len() - at < len {
            return Err(truncated("AVCC NAL unit", at, len - (data.len() - at)));
        }
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(&data[at..at + len]);
        at += len;
    }
    Ok(())
}

/// The NAL units of an Annex B stream, without their start codes (trailing zero bytes before a
/// start code belong to it, not to the NAL unit).
pub fn annex_b_nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (n, &(_, begin)) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |s| s.0);
        while end > begin && data[end - 1] == 0 {
            end -= 1;
        }
        if end > begin {
            units.push(&data[begin..end]);
        }
    }
    units
}

/// Converts Annex B to AVCC with 4-byte lengths (what [`AvcConfig::from_parameter_sets`]
/// declares).
pub fn annex_b_to_avcc(data: &[u8]) -> Vec<u8> {
    let units = annex_b_nal_units(data);
    let mut out = Vec::with_capacity(data.len() + 4 * units.len());
    for unit in units {
        out.extend_from_slice(&(unit.len() as u32).to_be_bytes());
        out.extend_from_slice(unit);
    }
    out
}

/// The type of an H.264 NAL unit (its first byte's low 5 bits): 5 IDR slice, 7 SPS, 8 PPS.
pub fn h264_nal_type(unit: &[u8]) -> Option<u8> {
    unit.first().map(|b| b & 0x1f)
}

/// The type of an H.265 NAL unit (bits 1-6 of its first byte): 32 VPS, 33 SPS, 34 PPS, 16-21
/// IRAP slices.
pub fn h265_nal_type(unit: &[u8]) -> Option<u8> {
    unit.first().map(|b| (b >> 1) & 0x3f)
}

struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], H26xError> {
        if self.data.len() - self.at < n {
            return Err(truncated(
                self.what,
                self.at,
                n - (self.data.len() - self.at),
            ));
        }
        let s = &self.data[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, H26xError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, H26xError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

/// An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub profile_idc: u8,
    pub profile_compatibility: u8,
    pub level_idc: u8,
    /// Bytes in each AVCC NAL length: 1, 2 or 4.
    pub length_size: usize,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
}

impl AvcConfig {
    pub fn parse(record: &[u8]) -> Result<AvcConfig, H26xError> {
        let mut c = Cursor {
            data: record,
            at: 0,
            what: "avcC record",
        };
        let version = c.u8()?;
        if version != 1 {
            return Err(H26xError::Invalid(format!(
                "avcC configurationVersion {version}; expected 1"
            )));
        }
        let profile_idc = c.u8()?;
        let profile_compatibility = c.u8()?;
        let level_idc = c.u8()?;
        let length_size = usize::from(c.u8()? & 0x03) + 1;
        if length_size == 3 {
            return Err(H26xError::Invalid("avcC NAL length size 3".to_owned()));
        }
        let mut sps = Vec::new();
        for _ in 0..(c.u8()? & 0x1f) {
            let len = usize::from(c.u16()?);
            sps.push(Bytes::copy_from_slice(c.take(len)?));
        }
        let mut pps = Vec::new();
        for _ in 0..c.u8()? {
            let len = usize::from(c.u16()?);
            pps.push(Bytes::copy_from_slice(c.take(len)?));
        }
        if sps.is_empty() {
            return Err(H26xError::Invalid("avcC record without an SPS".to_owned()));
        }
        Ok(AvcConfig {
            profile_idc,
            profile_compatibility,
            level_idc,
            length_size,
            sps,
            pps,
        })
    }

    /// A record for an encoder's SPS and PPS (NAL units without start codes), 4-byte lengths.
    pub fn from_parameter_sets(sps: &[u8], pps: &[u8]) -> Result<AvcConfig, H26xError> {
        if h264_nal_type(sps) != Some(7) || sps.len() < 4 {
            return Err(H26xError::Invalid("not an H.264 SPS NAL unit".to_owned()));
        }
        if h264_nal_type(pps) != Some(8) {
            return Err(H26xError::Invalid("not an H.264 PPS NAL unit".to_owned()));
        }
        Ok(AvcConfig {
            profile_idc: sps[1],
            profile_compatibility: sps[2],
            level_idc: sps[3],
            length_size: 4,
            sps: vec![Bytes::copy_from_slice(sps)],
            pps: vec![Bytes::copy_from_slice(pps)],
        })
    }

    /// The record's bytes (for MKV CodecPrivate). Profiles other than Baseline, Main and
    /// Extended get the chroma/bit-depth extension, read from the first SPS (as ffmpeg writes
    /// it, High 4:4:4 included).
    pub fn to_bytes(&self) -> Result<Vec<u8>, H26xError> {
        if !matches!(self.length_size, 1 | 2 | 4) {
            return Err(H26xError::Invalid(format!(
                "NAL length size {}; must be 1, 2 or 4",
                self.length_size
            )));
        }
        if self.sps.is_empty() || self.sps.len() > 31 || self.pps.len() > 255 {
            return Err(H26xError::Invalid(format!(
                "{} SPS and {} PPS; an avcC record holds 1-31 and 0-255",
                self.sps.len(),
                self.pps.len()
            )));
        }
        let mut out = vec![
            1,
            self.profile_idc,
            self.profile_compatibility,
            self.level_idc,
            0xfc | (self.length_size as u8 - 1),
            0xe0 | self.sps.len() as u8,
        ];
        let put = |out: &mut Vec<u8>, unit: &Bytes| {
            let len = u16::try_from(unit.len())
                .map_err(|_| H26xError::Invalid(format!("a {}-byte parameter set", unit.len())))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(unit);
            Ok::<(), H26xError>(())
        };
        for unit in &self.sps {
            put(&mut out, unit)?;
        }
        out.push(self.pps.len() as u8);
        for unit in &self.pps {
            put(&mut out, unit)?;
        }
        if !matches!(self.profile_idc, 66 | 77 | 88) {
            let sps = H264Sps::parse(&self.sps[0])?;
            out.push(0xfc | sps.chroma_format_idc);
            out.push(0xf8 | (sps.bit_depth_luma - 8));
            out.push(0xf8 | (sps.bit_depth_chroma - 8));
            out.push(0);
        }
        Ok(out)
    }

    /// The parameter sets as Annex B, to put before a key frame for a decoder.
    pub fn annex_b_parameter_sets(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for unit in self.sps.iter().chain(&self.pps) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(unit);
        }
        out
    }
}

/// An HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1), the parts decoders need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    pub general_profile_idc: u8,
    pub general_level_idc: u8,
    pub chroma_format_idc: u8,
    pub length_size: usize,
    pub vps: Vec<Bytes>,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
}

impl HevcConfig {
    pub fn parse(record: &[u8]) -> Result<HevcConfig, H26xError> {
        let mut c = Cursor {
            data: record,
            at: 0,
            what: "hvcC record",
        };
        let version = c.u8()?;
        if version != 1 {
            return Err(H26xError::Invalid(format!(
                "hvcC configurationVersion {version}; expected 1"
            )));
        }
        let general_profile_idc = c.u8()? & 0x1f;
        c.take(4 + 6)?; // compatibility flags, constraint flags
        let general_level_idc = c.u8()?;
        c.take(2 + 1)?; // min_spatial_segmentation, parallelismType
        let chroma_format_idc = c.u8()? & 0x03;
        c.take(1 + 1 + 2)?; // bit depths, avgFrameRate
        let length_size = usize::from(c.u8()? & 0x03) + 1;
        if length_size == 3 {
            return Err(H26xError::Invalid("hvcC NAL length size 3".to_owned()));
        }
        let (mut vps, mut sps, mut pps) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..c.u8()? {
            let nal_type = c.u8()? & 0x3f;
            for _ in 0..c.u16()? {
                let len = usize::from(c.u16()?);
                let unit = Bytes::copy_from_slice(c.take(len)?);
                match nal_type {
                    32 => vps.push(unit),
                    33 => sps.push(unit),
                    34 => pps.push(unit),
                    _ => {}
                }
            }
        }
        if sps.is_empty() {
            return Err(H26xError::Invalid("hvcC record without an SPS".to_owned()));
        }
        Ok(HevcConfig {
            general_profile_idc,
            general_level_idc,
            chroma_format_idc,
            length_size,
            vps,
            sps,
            pps,
        })
    }

    /// VPS, SPS and PPS as Annex B.
    pub fn annex_b_parameter_sets(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for unit in self.vps.iter().chain(&self.sps).chain(&self.pps) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(unit);
        }
        out
    }
}

/// A NAL unit's payload with emulation-prevention bytes (`00 00 03`) removed.
pub fn rbsp(unit: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(unit.len());
    let mut zeros = 0;
    for &b in unit {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Reads bits and Exp-Golomb codes from an RBSP.
struct Bits<'a> {
    data: &'a [u8],
    bit: usize,
    what: &'static str,
}

impl Bits<'_> {
    fn u(&mut self, n: usize) -> Result<u32, H26xError> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self.bit / 8;
            let Some(b) = self.data.get(byte) else {
                return Err(truncated(self.what, byte, 1));
            };
            v = v << 1 | u32::from(b >> (7 - self.bit % 8) & 1);
            self.bit += 1;
        }
        Ok(v)
    }

    fn flag(&mut self) -> Result<bool, H26xError> {
        Ok(self.u(1)? == 1)
    }

    fn skip(&mut self, n: usize) -> Result<(), H26xError> {
        if self.bit + n > self.data.len() * 8 {
            return Err(truncated(self.what, self.data.len(), 1));
        }
        self.bit += n;
        Ok(())
    }

    fn ue(&mut self) -> Result<u32, H26xError> {
        let mut zeros = 0;
        while !self.flag()? {
            zeros += 1;
            if zeros > 31 {
                return Err(H26xError::Invalid(format!(
                    "{}: an Exp-Golomb code longer than 32 bits",
                    self.what
                )));
            }
        }
        let rest = self.u(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }

    /// An Exp-Golomb value that must not exceed `max` (`name` for the error).
    fn ue_max(&mut self, max: u32, name: &str) -> Result<u32, H26xError> {
        let v = self.ue()?;
        if v > max {
            return Err(H26xError::Invalid(format!(
                "{}: {name} {v} (at most {max})",
                self.what
            )));
        }
        Ok(v)
    }

    fn se(&mut self) -> Result<i32, H26xError> {
        let k = i64::from(self.ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) } as i32)
    }
}

/// What an H.264 sequence parameter set says about the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H264Sps {
    pub profile_idc: u8,
    pub level_idc: u8,
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub chroma_format_idc: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// False for interlaced coding (fields or MBAFF): the height counts both fields.
    pub frame_mbs_only: bool,
    /// Displayed size, after the cropping window.
    pub width: u32,
    pub height: u32,
}

impl H264Sps {
    /// Parses an SPS NAL unit (its header byte included, no start code).
    pub fn parse(unit: &[u8]) -> Result<H264Sps, H26xError> {
        if h264_nal_type(unit) != Some(7) {
            return Err(H26xError::Invalid("not an H.264 SPS NAL unit".to_owned()));
        }
        let data = rbsp(&unit[1..]);
        let mut r = Bits {
            data: &data,
            bit: 0,
            what: "H.264 SPS",
        };
        let profile_idc = r.u(8)? as u8;
        r.skip(8)?; // constraint flags
        let level_idc = r.u(8)? as u8;
        r.ue_max(31, "seq_parameter_set_id")?;
        let (mut chroma_format_idc, mut separate_colour_plane) = (1, false);
        let (mut bit_depth_luma, mut bit_depth_chroma) = (8, 8);
        if matches!(
            profile_idc,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ) {
            chroma_format_idc = r.ue_max(3, "chroma_format_idc")?;
            if chroma_format_idc == 3 {
                separate_colour_plane = r.flag()?;
            }
            bit_depth_luma = r.ue_max(6, "bit_depth_luma_minus8")? + 8;
            bit_depth_chroma = r.ue_max(6, "bit_depth_chroma_minus8")? + 8;
            r.skip(1)?; // qpprime_y_zero_transform_bypass_flag
            if r.flag()? {
                // seq_scaling_matrix_present_flag: skip each list present.
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.flag()? {
                        let size = if i < 6 { 16 } else { 64 };
                        let (mut last, mut next) = (8i32, 8i32);
                        for _ in 0..size {
                            if next != 0 {
                                next = (last + r.se()? + 256).rem_euclid(256);
                            }
                            if next != 0 {
                                last = next;
                            }
                        }
                    }
                }
            }
        }
        r.ue_max(12, "log2_max_frame_num_minus4")?;
        match r.ue_max(2, "pic_order_cnt_type")? {
            0 => {
                r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")?;
            }
            1 => {
                r.skip(1)?; // delta_pic_order_always_zero_flag
                r.se()?; // offset_for_non_ref_pic
                r.se()?; // offset_for_top_to_bottom_field
                let cycle = r.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle")?;
                for _ in 0..cycle {
                    r.se()?;
                }
            }
            _ => {}
        }
        r.ue()?; // max_num_ref_frames
        r.skip(1)?; // gaps_in_frame_num_value_allowed_flag
        let width_mbs = r.ue_max(4095, "pic_width_in_mbs_minus1")? + 1;
        let height_units = r.ue_max(4095, "pic_height_in_map_units_minus1")? + 1;
        let frame_mbs_only = r.flag()?;
        if !frame_mbs_only {
            r.skip(1)?; // mb_adaptive_frame_field_flag
        }
        r.skip(1)?; // direct_8x8_inference_flag
        let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0, 0, 0, 0);
        if r.flag()? {
            crop_l = r.ue()?;
            crop_r = r.ue()?;
            crop_t = r.ue()?;
            crop_b = r.ue()?;
        }
        let field_factor: u32 = if frame_mbs_only { 1 } else { 2 };
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (unit_x, unit_y): (u32, u32) = if chroma_array_type == 0 {
            (1, field_factor)
        } else {
            let sub_width = if chroma_format_idc == 3 { 1 } else { 2 };
            let sub_height = if chroma_format_idc == 1 { 2 } else { 1 };
            (sub_width, sub_height * field_factor)
        };
        let full_w = u64::from(width_mbs) * 16;
        let full_h = u64::from(height_units) * 16 * u64::from(field_factor);
        let crop_w = u64::from(unit_x) * (u64::from(crop_l) + u64::from(crop_r));
        let crop_h = u64::from(unit_y) * (u64::from(crop_t) + u64::from(crop_b));
        if crop_w >= full_w || crop_h >= full_h || full_w > 1 << 16 || full_h > 1 << 16 {
            return Err(H26xError::Invalid(format!(
                "H.264 SPS picture {full_w}x{full_h} with cropping {crop_w}x{crop_h}"
            )));
        }
        Ok(H264Sps {
            profile_idc,
            level_idc,
            chroma_format_idc: chroma_format_idc as u8,
            bit_depth_luma: bit_depth_luma as u8,
            bit_depth_chroma: bit_depth_chroma as u8,
            frame_mbs_only,
            width: (full_w - crop_w) as u32,
            height: (full_h - crop_h) as u32,
        })
    }

    /// The profile's name, for messages.
    pub fn profile_name(&self) -> &'static str {
        match self.profile_idc {
            66 => "Baseline",
            77 => "Main",
            88 => "Extended",
            100 => "High",
            110 => "High 10",
            122 => "High 4:2:2",
            244 => "High 4:4:4 Predictive",
            44 => "CAVLC 4:4:4 Intra",
            _ => "other",
        }
    }
}

/// What an H.265 sequence parameter set says about the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H265Sps {
    pub general_profile_idc: u8,
    pub general_level_idc: u8,
    pub chroma_format_idc: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// Displayed size, after the conformance window.
    pub width: u32,
    pub height: u32,
}

impl H265Sps {
    /// Parses an SPS NAL unit (its two header bytes included, no start code).
    pub fn parse(unit: &[u8]) -> Result<H265Sps, H26xError> {
        if h265_nal_type(unit) != Some(33) || unit.len() < 3 {
            return Err(H26xError::Invalid("not an H.265 SPS NAL unit".to_owned()));
        }
        let data = rbsp(&unit[2..]);
        let mut r = Bits {
            data: &data,
            bit: 0,
            what: "H.265 SPS",
        };
        r.skip(4)?; // sps_video_parameter_set_id
        let max_sub_layers_minus1 = r.u(3)? as usize;
        r.skip(1)?; // temporal_id_nesting
        // profile_tier_level(1, max_sub_layers_minus1)
        r.skip(2 + 1)?; // profile space, tier
        let general_profile_idc = r.u(5)? as u8;
        r.skip(32 + 48)?; // compatibility and constraint flags
        let general_level_idc = r.u(8)? as u8;
        let mut sub_profile = [false; 8];
        let mut sub_level = [false; 8];
        for i in 0..max_sub_layers_minus1 {
            sub_profile[i] = r.flag()?;
            sub_level[i] = r.flag()?;
        }
        if max_sub_layers_minus1 > 0 {
            r.skip(2 * (8 - max_sub_layers_minus1))?;
        }
        for i in 0..max_sub_layers_minus1 {
            if sub_profile[i] {
                r.skip(88)?;
            }
            if sub_level[i] {
                r.skip(8)?;
            }
        }
        r.ue_max(15, "sps_seq_parameter_set_id")?;
        let chroma_format_idc = r.ue_max(3, "chroma_format_idc")?;
        if chroma_format_idc == 3 {
            r.skip(1)?; // separate_colour_plane_flag
        }
        let width = r.ue_max(1 << 16, "pic_width_in_luma_samples")?;
        let height = r.ue_max(1 << 16, "pic_height_in_luma_samples")?;
        let (mut l, mut rt, mut t, mut b) = (0, 0, 0, 0);
        if r.flag()? {
            l = r.ue()?;
            rt = r.ue()?;
            t = r.ue()?;
            b = r.ue()?;
        }
        let bit_depth_luma = r.ue_max(8, "bit_depth_luma_minus8")? + 8;
        let bit_depth_chroma = r.ue_max(8, "bit_depth_chroma_minus8")? + 8;
        let sub_width: u32 = if matches!(chroma_format_idc, 1 | 2) {
            2
        } else {
            1
        };
        let sub_height: u32 = if chroma_format_idc == 1 { 2 } else { 1 };
        let crop_w = u64::from(sub_width) * (u64::from(l) + u64::from(rt));
        let crop_h = u64::from(sub_height) * (u64::from(t) + u64::from(b));
        if crop_w >= u64::from(width) || crop_h >= u64::from(height) {
            return Err(H26xError::Invalid(format!(
                "H.265 SPS picture {width}x{height} with cropping {crop_w}x{crop_h}"
            )));
        }
        Ok(H265Sps {
            general_profile_idc,
            general_level_idc,
            chroma_format_idc: chroma_format_idc as u8,
            bit_depth_luma: bit_depth_luma as u8,
            bit_depth_chroma: bit_depth_chroma as u8,
            width: (u64::from(width) - crop_w) as u32,
            height: (u64::from(height) - crop_h) as u32,
        })
    }
}
