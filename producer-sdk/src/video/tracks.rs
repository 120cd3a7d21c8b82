//! Tracks and frames from what encoders produce, for the frame API.
//!
//! MKV wants H.264 as AVCC frames with an avcC record as the track's CodecPrivate; encoders and
//! cameras usually hand out Annex B (start codes) with the SPS and PPS in front of key frames.
//! [`h264_track`] builds the track from a key frame's parameter sets (size from the SPS), and
//! [`h264_frame`] converts each frame. [`aac_track`] describes an AAC track from its
//! AudioSpecificConfig. H.265 tracks take the hvcC record as it comes from the encoder or muxer.

use bytes::Bytes;
use timeshard_parser::h26x::{
    AvcConfig, H264Sps, annex_b_nal_units, annex_b_to_avcc, h264_nal_type,
};
use timeshard_parser::mkv::{TRACK_TYPE_AUDIO, TRACK_TYPE_VIDEO};
use timeshard_parser::{AudioSettings, Track, VideoSettings};

use crate::error::Error;
use crate::video::fragmenter::MediaFrame;

/// An H.264 video track from an Annex B access unit that holds an SPS and a PPS (a key frame as
/// encoders emit it).
pub fn h264_track(number: u64, annex_b_key_frame: &[u8]) -> Result<Track, Error> {
    let units = annex_b_nal_units(annex_b_key_frame);
    let sps = units.iter().find(|u| h264_nal_type(u) == Some(7));
    let pps = units.iter().find(|u| h264_nal_type(u) == Some(8));
    let (Some(sps), Some(pps)) = (sps, pps) else {
        return Err(Error::Input(
            "the H.264 access unit has no SPS and PPS; pass a key frame as the encoder emits it"
                .to_owned(),
        ));
    };
    let bad = |e: timeshard_parser::h26x::H26xError| Error::Input(format!("H.264: {e}"));
    let config = AvcConfig::from_parameter_sets(sps, pps).map_err(bad)?;
    let parsed = H264Sps::parse(sps).map_err(bad)?;
    Ok(Track {
        number,
        uid: Some(number),
        track_type: TRACK_TYPE_VIDEO,
        codec_id: "V_MPEG4/ISO/AVC".to_owned(),
        codec_private: Some(Bytes::from(config.to_bytes().map_err(bad)?)),
        name: None,
        default_duration: None,
        video: Some(VideoSettings {
            pixel_width: u64::from(parsed.width),
            pixel_height: u64::from(parsed.height),
        }),
        audio: None,
    })
}

/// An H.264 frame from Annex B: AVCC with 4-byte lengths (what [`h264_track`] declares). The key
/// flag is set when the access unit holds an IDR slice.
pub fn h264_frame(track: u64, timestamp_ms: i64, annex_b: &[u8]) -> MediaFrame {
    let key = annex_b_nal_units(annex_b)
        .iter()
        .any(|u| h264_nal_type(u) == Some(5));
    MediaFrame {
        track,
        timestamp_ms,
        key,
        data: Bytes::from(annex_b_to_avcc(annex_b)),
    }
}

/// An AAC audio track (`A_AAC`) with its AudioSpecificConfig (2 bytes for AAC-LC).
pub fn aac_track(
    number: u64,
    sample_rate_hz: u32,
    channels: u8,
    audio_specific_config: &[u8],
) -> Track {
    Track {
        number,
        uid: Some(number),
        track_type: TRACK_TYPE_AUDIO,
        codec_id: "A_AAC".to_owned(),
        codec_private: Some(Bytes::copy_from_slice(audio_specific_config)),
        name: None,
        default_duration: None,
        video: None,
        audio: Some(AudioSettings {
            sampling_frequency: f64::from(sample_rate_hz),
            channels: u64::from(channels),
            bit_depth: None,
        }),
    }
}

/// An H.265 video track (`V_MPEGH/ISO/HEVC`) with the encoder's hvcC record.
pub fn h265_track(number: u64, hvcc: &[u8], width: u32, height: u32) -> Track {
    Track {
        number,
        uid: Some(number),
        track_type: TRACK_TYPE_VIDEO,
        codec_id: "V_MPEGH/ISO/HEVC".to_owned(),
        codec_private: Some(Bytes::copy_from_slice(hvcc)),
        name: None,
        default_duration: None,
        video: Some(VideoSettings {
            pixel_width: u64::from(width),
            pixel_height: u64::from(height),
        }),
        audio: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPS and PPS of libx264 at 320x240, High profile (from samples/).
    fn sample_parameter_sets() -> (Vec<u8>, Vec<u8>) {
        let mkv = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../samples/h264-320x240-25fps-1s-gop.mkv"
        ))
        .expect("sample");
        let mut r = timeshard_parser::MkvReader::new();
        r.push(&mkv);
        while let Some(ev) = r.next_event().expect("valid") {
            if let timeshard_parser::MkvEvent::Tracks(t) = ev {
                let c = AvcConfig::parse(t[0].codec_private.as_ref().expect("avcC")).expect("avcC");
                return (c.sps[0].to_vec(), c.pps[0].to_vec());
            }
        }
        panic!("no tracks");
    }

    #[test]
    fn annex_b_key_frames_make_tracks_and_avcc_frames() {
        let (sps, pps) = sample_parameter_sets();
        let mut au = Vec::new();
        for unit in [&sps[..], &pps[..], &[0x65, 0x88, 0x84, 0x00][..]] {
            au.extend_from_slice(&[0, 0, 0, 1]);
            au.extend_from_slice(unit);
        }
        let track = h264_track(1, &au).expect("track");
        let video = track.video.as_ref().expect("video");
        assert_eq!((video.pixel_width, video.pixel_height), (320, 240));
        let config = AvcConfig::parse(track.codec_private.as_ref().expect("avcC")).expect("avcC");
        assert_eq!(
            (config.sps[0].to_vec(), config.pps[0].to_vec()),
            (sps.clone(), pps.clone())
        );

        let frame = h264_frame(1, 1000, &au);
        assert!(frame.key);
        assert_eq!(&frame.data[..4], &(sps.len() as u32).to_be_bytes());
        let p = h264_frame(1, 1040, &[0, 0, 1, 0x41, 0x9a, 0x00]);
        assert!(!p.key);
        // Trailing zero bytes belong to the byte stream, not the NAL unit.
        assert_eq!(&p.data[..], &[0, 0, 0, 2, 0x41, 0x9a]);

        let err = h264_track(1, &[0, 0, 0, 1, 0x65, 1]).expect_err("no SPS");
        assert!(err.to_string().contains("SPS"), "{err}");
    }
}
