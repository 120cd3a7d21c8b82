//! H.264 frames decoded to RGB, for consumers that look at pictures (ML inference, thumbnails).
//! Behind the `decode` feature: openh264 (bundled C source) and `image` (JPEG).
//!
//! [`FrameDecoder`] takes the [`Fragment`]s of one stream in order and returns the pictures of
//! their first H.264 video track, each with its absolute timestamps: `timestamp_ms` is the
//! fragment's server timestamp plus the frame's offset in it
//! ([`Fragment::frame_server_timestamp_ms`]; the frame's MKV time when the fragment has no
//! server timestamp), `producer_timestamp_ms` the same on the producer's clock.
//!
//! - **Selection.** [`Selection::All`] converts every picture; [`Selection::EveryNth`] decodes
//!   every frame (P- and B-frames need the pictures they refer to) but converts only every Nth
//!   picture to RGB, counting across fragments; [`Selection::KeyFramesOnly`] gives the decoder
//!   nothing but key frames, which is several times faster.
//! - **Delay, order and timestamps.** A decoder holds pictures back while later frames may
//!   still come before them (B-frames are stored in decode order), so "no picture yet" for a
//!   frame is normal. Each frame's timestamps wait in a queue until a picture comes out; the
//!   picture is the queued frame with the smallest timestamp, because pictures come out in
//!   presentation order. At the end of each fragment the decoder is flushed, so every picture
//!   of a fragment is returned by the call that got the fragment (no picture waits for the next
//!   fragment, which for a live stream may be seconds away). The output is in presentation
//!   order, as ffmpeg's is.
//! - **Across fragments.** After a flush that returned pictures (a stream with B-frames),
//!   openh264 fails on the P- and B-frames that follow, even after a new key frame; key frames
//!   alone still decode. So a fragment that
//!   starts on a key frame (every GetMedia fragment does) gets a fresh decoder, unless the last
//!   flush returned nothing (no B-frames: openh264 then did not flush at all); with key frames
//!   only, one decoder serves them all. A fragment that starts without a key frame (an ffmpeg
//!   file cut into clusters mid-GOP) continues the previous decoder, which works for streams
//!   without B-frames; for others the frames up to the next key frame are skipped and counted in
//!   [`FrameDecoder::skipped_frames`], as are frames before the first key frame seen. Each
//!   call's pictures are in presentation order; across such a cut, a B-frame stored after it
//!   comes with the next call, after the later picture it refers to.
//! - **What it cannot decode.** openh264 decodes 8-bit 4:2:0 (Baseline, Main, High). The SPS is
//!   checked before any data reaches it, and other profiles (High 4:4:4 Predictive, High 10,
//!   4:2:2, monochrome) are a [`DecodeError::UnsupportedProfile`] naming the profile. H.265 and
//!   other codecs are [`DecodeError::UnsupportedCodec`]. A frame openh264 rejects is a
//!   [`DecodeError::Decoder`] for its fragment; the next fragment starts afresh at its key
//!   frame.

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
    /// Absolute server time of the frame in epoch ms: the fragment's server timestamp plus the
    /// frame's offset in it (the frame's MKV timestamp when the fragment has no server
    /// timestamp).
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
    /// The decoder of the current GOP; `None` until a key frame starts one.
    decoder: Option<Decoder>,
    /// The avcC record the decoder was set up with.
    config: Option<(Vec<u8>, AvcConfig)>,
    /// Pictures seen so far, for [`Selection::EveryNth`].
    pictures: u64,
    /// Frames given up on: no key frame before them, or references lost.
    skipped: u64,
    /// The last flush found no pictures held back, so openh264 did not flush at all.
    reusable: bool,
    annex_b: Vec<u8>,
}

impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("selection", &self.selection)
            .field("pictures", &self.pictures)
            .field("skipped", &self.skipped)
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
            skipped: 0,
            reusable: false,
            annex_b: Vec::new(),
        }
    }

    /// Frames not decoded because the pictures they refer to were not available: frames before
    /// the first key frame seen, and the rest of a GOP that continued into a fragment without a
    /// key frame when the decoder could not go on after the previous fragment's end (see the
    /// module docs). GetMedia fragments always start on a key frame, so this stays 0 for them.
    pub fn skipped_frames(&self) -> u64 {
        self.skipped
    }

    /// Checks a track's avcC when it is new; a changed record needs a fresh decoder.
    fn check(&mut self, codec_private: &[u8]) -> Result<(), DecodeError> {
        let known = self
            .config
            .as_ref()
            .is_some_and(|(raw, _)| raw.as_slice() == codec_private);
        if !known {
            self.config = None;
            self.decoder = None;
            self.config = Some((codec_private.to_vec(), check_config(codec_private)?));
        }
        Ok(())
    }

    /// Decodes a fragment's frames of its first H.264 video track and returns the selected
    /// pictures in presentation order. A fragment without a video track returns nothing.
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
        self.check(private)?;
        let result = self.decode_frames(fragment, track.number);
        if result.is_err() {
            // Whatever the decoder holds now is suspect: start again at the next key frame.
            self.decoder = None;
        }
        result
    }

    fn decode_frames(
        &mut self,
        fragment: &Fragment,
        track: u64,
    ) -> Result<Vec<DecodedFrame>, DecodeError> {
        let Some((_, config)) = &self.config else {
            return Ok(Vec::new());
        };
        let length_size = config.length_size;
        let parameter_sets = config.annex_b_parameter_sets();
        let mut frames = fragment
            .frames
            .iter()
            .filter(|f| f.track == track)
            .peekable();
        // A fragment that starts on a key frame starts a fresh decoder; one that does not
        // carries on with the previous fragment's (flushed) decoder until its next key frame.
        // With key frames only, each is flushed at once and one decoder serves them all.
        let mut continued = false;
        if self.selection != Selection::KeyFramesOnly {
            match frames.peek() {
                // A decoder whose flush had nothing to return (no B-frames) is as good as new,
                // and a new one costs its first picture's buffers (milliseconds at 720p).
                Some(first) if first.key && !self.reusable => self.decoder = None,
                Some(_) => continued = self.decoder.is_some(),
                None => {}
            }
        }

        let mut pending: Vec<Pending> = Vec::new();
        let mut out = Vec::new();
        for frame in frames {
            if self.selection == Selection::KeyFramesOnly && !frame.key {
                continue;
            }
            if frame.key && continued {
                // The continued GOP ends here; a decoder flushed mid-stream is not trusted
                // with the next one.
                self.flush(&mut pending, &mut out, track, fragment)?;
                self.decoder = None;
                continued = false;
            }
            if self.decoder.is_none() {
                if !frame.key {
                    self.skipped += 1;
                    continue;
                }
                self.decoder = Some(new_decoder()?);
                self.reusable = false;
            }
            let Some(decoder) = self.decoder.as_mut() else {
                continue;
            };
            let timestamp_ms = fragment
                .frame_server_timestamp_ms(frame)
                .unwrap_or_else(|| fragment.frame_timestamp_ms(frame));
            pending.push(Pending {
                timestamp_ms,
                producer_timestamp_ms: fragment.frame_producer_timestamp_ms(frame),
                key: frame.key,
            });
            self.annex_b.clear();
            if frame.key {
                self.annex_b.extend_from_slice(&parameter_sets);
            }
            avcc_to_annex_b(&frame.data, length_size, &mut self.annex_b)?;
            let picture = match decoder.decode_with_options(
                &self.annex_b,
                DecodeOptions::new().flush_after_decode(Flush::NoFlush),
            ) {
                Ok(picture) => picture,
                Err(_) if continued => {
                    // openh264 cannot go on after the flush that ended the previous fragment
                    // when the stream reorders (B-frames): give up on this GOP.
                    self.skipped += pending.len() as u64;
                    pending.clear();
                    self.decoder = None;
                    continue;
                }
                Err(e) => return Err(DecodeError::Decoder(e.to_string())),
            };
            if let Some(yuv) = picture {
                let picture = take_pending(&mut pending);
                if let Some(f) = convert(
                    &yuv,
                    picture,
                    track,
                    fragment,
                    self.selection,
                    &mut self.pictures,
                ) {
                    out.push(f);
                }
            }
            if self.selection == Selection::KeyFramesOnly {
                // Nothing follows a key frame here: take its picture now.
                self.flush(&mut pending, &mut out, track, fragment)?;
            }
        }
        // Every picture of the fragment goes out with it.
        self.flush(&mut pending, &mut out, track, fragment)?;
        // Already so, except after a decoder carried on past a flush: it then returns B-frames
        // as soon as they are decoded.
        out.sort_by_key(|f| f.timestamp_ms);
        Ok(out)
    }

    /// Takes the pictures the decoder still holds. The decoder stays, for a next fragment that
    /// does not start on a key frame.
    fn flush(
        &mut self,
        pending: &mut Vec<Pending>,
        out: &mut Vec<DecodedFrame>,
        track: u64,
        fragment: &Fragment,
    ) -> Result<(), DecodeError> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(());
        };
        let remaining = decoder
            .flush_remaining()
            .map_err(|e| DecodeError::Decoder(e.to_string()))?;
        self.reusable = remaining.is_empty();
        for yuv in remaining {
            let picture = take_pending(pending);
            if let Some(f) = convert(
                &yuv,
                picture,
                track,
                fragment,
                self.selection,
                &mut self.pictures,
            ) {
                out.push(f);
            }
        }
        // Frames the decoder dropped (corrupt data) have no picture.
        self.skipped += pending.len() as u64;
        pending.clear();
        Ok(())
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
    let expected = u64::from(frame.width) * u64::from(frame.height) * 3;
    if frame.rgb.len() as u64 != expected || expected == 0 {
        return Err(DecodeError::Image(format!(
            "{} bytes of RGB for a {}x{} picture; expected {expected}",
            frame.rgb.len(),
            frame.width,
            frame.height
        )));
    }
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
