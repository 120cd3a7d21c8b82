//! H.264 frames decoded to RGB, for consumers that look at pictures (ML inference, thumbnails).
//! Behind the `decode` feature: openh264 (bundled C source) and `image` (JPEG).
//!
//! [`FrameDecoder`] takes [`Fragment`]s in stream order and returns the pictures of their first
//! H.264 video track, each with its absolute timestamps. One decoder keeps its state across
//! fragments, so P-frames decode against the pictures before them.
//!
//! - **Selection.** [`Selection::All`] converts every picture; [`Selection::EveryNth`] decodes
//!   every frame (later frames depend on earlier ones) but converts only every Nth picture to RGB,
//!   counting across fragments; [`Selection::KeyFramesOnly`] gives the decoder nothing but key
//!   frames, which is several times faster.
//! - **Order and timestamps.** Pictures come out in presentation order. Within a fragment, which
//!   starts at a key frame, the Nth picture out is the frame with the Nth smallest timestamp, so
//!   streams with B-frames (stored in decode order) get each picture its own time. Each fragment
//!   (which starts at a key frame) gets a fresh decoder, flushed at its end, so every picture of
//!   a fragment is returned with it: openh264 fails on the frames after a flush mid-stream.
//! - **What it cannot decode.** openh264 decodes 8-bit 4:2:0 (Baseline, Main, High). The SPS is
//!   checked before any data reaches it, and other profiles (High 4:4:4 Predictive, High 10,
//!   4:2:2, monochrome) are a [`DecodeError::UnsupportedProfile`] naming the profile. H.265 and
//!   other codecs are [`DecodeError::UnsupportedCodec`].

use openh264::OpenH264API;
use openh264::decoder::{DecodeOptions, Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource as _;

use crate::fragment::Fragment;
use crate::h26x::{AvcConfig, H26xError, H264Sps, avcc_to_annex_b};
use crate::mkv::TRACK_TYPE_VIDEO;

/// The codec id of H.264 in MKV.
pub const CODEC_H264: &str = "V_MPEG4/ISO/AVC";

/// One decoded picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFrame {
    pub width: u32,
    pub height: u32,
    /// RGB8, row-major, `width * height * 3` bytes.
    pub rgb: Vec<u8>,
    pub track: u64,
    /// Absolute time of the frame in epoch ms: the fragment's server timestamp plus the frame's
    /// offset in it (the frame's MKV timestamp when the fragment has no server timestamp).
    pub timestamp_ms: i64,
    /// The fragment's producer timestamp plus the frame's offset.
    pub producer_timestamp_ms: Option<i64>,
    pub fragment_number: Option<String>,
    pub key: bool,
}

/// Which pictures to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    All,
    /// Every Nth picture (the 1st, the N+1th, ...), counted across fragments. 0 counts as 1.
    EveryNth(u32),
    KeyFramesOnly,
}

/// Why a fragment could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("codec {0} cannot be decoded; only H.264 (V_MPEG4/ISO/AVC) can")]
    UnsupportedCodec(String),
    #[error(
        "H.264 {profile} (profile_idc {profile_idc}, chroma_format_idc {chroma_format_idc}, {bit_depth}-bit) cannot be decoded: openh264 decodes only 8-bit 4:2:0 (Baseline, Main, High); re-encode with -pix_fmt yuv420p or decode with ffmpeg"
    )]
    UnsupportedProfile {
        profile: &'static str,
        profile_idc: u8,
        chroma_format_idc: u8,
        bit_depth: u8,
    },
    #[error("the H.264 track has no CodecPrivate (avcC record)")]
    MissingCodecPrivate,
    #[error("H.264 parameters: {0}")]
    Parameters(#[from] H26xError),
    #[error("decoder: {0}")]
    Decoder(String),
    #[error("image: {0}")]
    Image(String),
}

/// The timestamps of a frame handed to the decoder, waiting for its picture.
#[derive(Debug, Clone)]
struct Pending {
    timestamp_ms: i64,
    producer_timestamp_ms: Option<i64>,
    key: bool,
}

/// Decodes the first H.264 video track of consecutive fragments. See the module docs.
pub struct FrameDecoder {
    selection: Selection,
    decoder: Option<Decoder>,
    /// The avcC record the decoder was set up with.
    config: Option<(Vec<u8>, AvcConfig)>,
    /// Pictures seen so far, for [`Selection::EveryNth`].
    pictures: u64,
    annex_b: Vec<u8>,
}

impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("selection", &self.selection)
            .field("pictures", &self.pictures)
            .finish_non_exhaustive()
    }
}

impl FrameDecoder {
    pub fn new(selection: Selection) -> FrameDecoder {
        FrameDecoder {
            selection,
            decoder: None,
            config: None,
            pictures: 0,
            annex_b: Vec::new(),
        }
    }

    /// Checks a track's avcC (when it changed) and starts a fresh decoder.
    fn prepare(&mut self, codec_private: &[u8]) -> Result<(), DecodeError> {
        let known = self
            .config
            .as_ref()
            .is_some_and(|(raw, _)| raw.as_slice() == codec_private);
        if !known {
            self.config = Some((codec_private.to_vec(), check_config(codec_private)?));
        }
        self.decoder = Some(new_decoder()?);
        Ok(())
    }

    /// Decodes a fragment's frames of its first H.264 video track and returns the selected
    /// pictures in presentation order. A fragment without such a track returns nothing.
    pub fn decode_fragment(
        &mut self,
        fragment: &Fragment,
    ) -> Result<Vec<DecodedFrame>, DecodeError> {
        let Some(track) = fragment
            .tracks
            .iter()
            .find(|t| t.track_type == TRACK_TYPE_VIDEO)
        else {
            return Ok(Vec::new());
        };
        if track.codec_id != CODEC_H264 {
            return Err(DecodeError::UnsupportedCodec(track.codec_id.clone()));
        }
        let Some(private) = track.codec_private.as_ref() else {
            return Err(DecodeError::MissingCodecPrivate);
        };
        self.prepare(private)?;
        let Some((_, config)) = &self.config else {
            return Ok(Vec::new());
        };
        let length_size = config.length_size;
        let parameter_sets = config.annex_b_parameter_sets();
        let number = track.number;
        let offset = fragment
            .server_timestamp_ms
            .zip(fragment.producer_timestamp_ms)
            .map(|(server, producer)| server - producer);

        let mut pending: Vec<Pending> = Vec::new();
        let mut out = Vec::new();
        for frame in fragment.frames.iter().filter(|f| f.track == number) {
            if self.selection == Selection::KeyFramesOnly && !frame.key {
                continue;
            }
            let mkv_ms = fragment.frame_timestamp_ms(frame);
            let producer_ms = fragment.frame_producer_timestamp_ms(frame);
            let timestamp_ms = match (fragment.server_timestamp_ms, producer_ms, offset) {
                (Some(_), Some(p), Some(o)) => p + o,
                _ => mkv_ms,
            };
            pending.push(Pending {
                timestamp_ms,
                producer_timestamp_ms: producer_ms,
                key: frame.key,
            });
            self.annex_b.clear();
            if frame.key {
                self.annex_b.extend_from_slice(&parameter_sets);
            }
            avcc_to_annex_b(&frame.data, length_size, &mut self.annex_b)?;
            let decoder = self
                .decoder
                .as_mut()
                .ok_or_else(|| DecodeError::Decoder("the decoder is not set up".to_owned()))?;
            let picture = decoder
                .decode_with_options(
                    &self.annex_b,
                    DecodeOptions::new().flush_after_decode(Flush::NoFlush),
                )
                .map_err(|e| DecodeError::Decoder(e.to_string()))?;
            if let Some(yuv) = picture {
                let picture = take_pending(&mut pending);
                if let Some(f) = convert(
                    &yuv,
                    picture,
                    number,
                    fragment,
                    self.selection,
                    &mut self.pictures,
                ) {
                    out.push(f);
                }
            }
            if self.selection == Selection::KeyFramesOnly {
                // Nothing follows a key frame here: take its picture now, and start the next key
                // frame on a fresh decoder.
                flush(self, &mut pending, &mut out, number, fragment)?;
                self.decoder = Some(new_decoder()?);
            }
        }
        flush(self, &mut pending, &mut out, number, fragment)?;
        Ok(out)
    }
}

/// Parses an avcC record and refuses what openh264 cannot decode.
fn check_config(codec_private: &[u8]) -> Result<AvcConfig, DecodeError> {
    let config = AvcConfig::parse(codec_private)?;
    let sps = H264Sps::parse(&config.sps[0])?;
    if sps.chroma_format_idc != 1 || sps.bit_depth_luma != 8 || sps.bit_depth_chroma != 8 {
        return Err(DecodeError::UnsupportedProfile {
            profile: sps.profile_name(),
            profile_idc: sps.profile_idc,
            chroma_format_idc: sps.chroma_format_idc,
            bit_depth: sps.bit_depth_luma,
        });
    }
    Ok(config)
}

fn new_decoder() -> Result<Decoder, DecodeError> {
    Decoder::with_api_config(
        OpenH264API::from_source(),
        DecoderConfig::new().flush_after_decode(Flush::NoFlush),
    )
    .map_err(|e| DecodeError::Decoder(e.to_string()))
}

/// The frame a picture belongs to: the pending one with the smallest timestamp.
fn take_pending(pending: &mut Vec<Pending>) -> Option<Pending> {
    let i = pending
        .iter()
        .enumerate()
        .min_by_key(|(_, p)| p.timestamp_ms)
        .map(|(i, _)| i)?;
    Some(pending.remove(i))
}

fn flush(
    d: &mut FrameDecoder,
    pending: &mut Vec<Pending>,
    out: &mut Vec<DecodedFrame>,
    track: u64,
    fragment: &Fragment,
) -> Result<(), DecodeError> {
    let selection = d.selection;
    let Some(decoder) = d.decoder.as_mut() else {
        return Ok(());
    };
    let remaining = decoder
        .flush_remaining()
        .map_err(|e| DecodeError::Decoder(e.to_string()))?;
    for yuv in remaining {
        let picture = take_pending(pending);
        if let Some(f) = convert(&yuv, picture, track, fragment, selection, &mut d.pictures) {
            out.push(f);
        }
    }
    // Frames the decoder dropped (corrupt data) have no picture.
    pending.clear();
    d.decoder = None;
    Ok(())
}

fn convert(
    yuv: &openh264::decoder::DecodedYUV<'_>,
    picture: Option<Pending>,
    track: u64,
    fragment: &Fragment,
    selection: Selection,
    count: &mut u64,
) -> Option<DecodedFrame> {
    let picture = picture?;
    let n = *count;
    *count += 1;
    if let Selection::EveryNth(every) = selection
        && !n.is_multiple_of(u64::from(every.max(1)))
    {
        return None;
    }
    let (w, h) = yuv.dimensions();
    let mut rgb = vec![0u8; w * h * 3];
    yuv.write_rgb8(&mut rgb);
    Some(DecodedFrame {
        width: w as u32,
        height: h as u32,
        rgb,
        track,
        timestamp_ms: picture.timestamp_ms,
        producer_timestamp_ms: picture.producer_timestamp_ms,
        fragment_number: fragment.fragment_number.clone(),
        key: picture.key,
    })
}

/// Encodes a picture as JPEG (`quality` 1-100).
pub fn encode_jpeg(frame: &DecodedFrame, quality: u8) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let encoder =
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100));
    image::ImageEncoder::write_image(
        encoder,
        &frame.rgb,
        frame.width,
        frame.height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| DecodeError::Image(e.to_string()))?;
    Ok(out)
}
