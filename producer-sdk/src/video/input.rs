//! MKV in: demuxes an MKV byte stream (a file, stdin, ffmpeg's pipe) into tracks and frames for
//! the producer, which writes its own clusters (one per key frame) with absolute timestamps.
//!
//! Timestamps: an input whose first frame is before 2001-09-09 (1e12 ms since the epoch) has
//! relative timestamps (ffmpeg starts at 0): they are placed on the wall clock, the first frame at
//! the time it arrived. Later frames keep their spacing from the input, so a file read faster
//! than real time gets producer timestamps ahead of the clock. Inputs with epoch timestamps (a KVS
//! producer's output, `ffmpeg -copyts` of a live source) keep them. A new MKV document in the
//! input (a concatenation, a restarted source) is placed the same way, and its tracks replace
//! the old ones if they differ.

use bytes::Bytes;
use timeshard_parser::{MkvEvent, MkvReader, ReaderLimits, Track};
use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::error::Error;
use crate::video::fragmenter::MediaFrame;
use crate::video::producer::{VideoProducer, now_ms};

/// Timestamps at or after this (ms since the epoch) are taken as absolute.
const ABSOLUTE_THRESHOLD_MS: i64 = 1_000_000_000_000;

/// Counts for the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputSummary {
    pub bytes: u64,
    pub frames: u64,
    pub documents: u64,
}

/// Turns MKV events into tracks and frames with absolute millisecond timestamps.
#[derive(Debug, Default)]
pub struct MkvDemuxer {
    timecode_scale_ns: u64,
    cluster_timecode: u64,
    /// Added to input ms to get producer ms; set at the first frame of each document.
    base_ms: Option<i64>,
    tracks: Vec<Track>,
}

/// One thing the demuxer found.
#[derive(Debug, Clone, PartialEq)]
pub enum Demuxed {
    Tracks(Vec<Track>),
    Frame(MediaFrame),
}

impl MkvDemuxer {
    pub fn new() -> MkvDemuxer {
        MkvDemuxer {
            timecode_scale_ns: 1_000_000,
            ..MkvDemuxer::default()
        }
    }

    /// Handles one event; `now_ms` places relative timestamps.
    pub fn event(&mut self, event: MkvEvent, now_ms: i64) -> Option<Demuxed> {
        match event {
            MkvEvent::Header(_) => {
                self.base_ms = None;
                self.timecode_scale_ns = 1_000_000;
                None
            }
            MkvEvent::Info(info) => {
                self.timecode_scale_ns = info.timecode_scale.max(1);
                None
            }
            MkvEvent::Tracks(tracks) => {
                self.tracks = tracks.clone();
                Some(Demuxed::Tracks(tracks))
            }
            MkvEvent::ClusterStart { timecode } => {
                self.cluster_timecode = timecode;
                None
            }
            MkvEvent::Frame(frame) => {
                let units = i128::from(self.cluster_timecode) + i128::from(frame.timecode);
                let input_ms =
                    i64::try_from(units * i128::from(self.timecode_scale_ns) / 1_000_000)
                        .unwrap_or(i64::MAX);
                let base = *self
                    .base_ms
                    .get_or_insert(if input_ms >= ABSOLUTE_THRESHOLD_MS {
                        0
                    } else {
                        now_ms - input_ms
                    });
                Some(Demuxed::Frame(MediaFrame {
                    track: frame.track,
                    timestamp_ms: input_ms.saturating_add(base),
                    key: frame.key,
                    data: frame.data,
                }))
            }
            _ => None,
        }
    }
}

/// Reads MKV from `input` until it ends and puts every frame into `producer`. Returns at the end
/// of the input (the caller then calls [`VideoProducer::finish`]).
pub async fn put_mkv<R: AsyncRead + Unpin>(
    producer: &VideoProducer,
    mut input: R,
) -> Result<InputSummary, Error> {
    let mut reader = MkvReader::with_limits(ReaderLimits::default());
    let mut demuxer = MkvDemuxer::new();
    let mut summary = InputSummary::default();
    let mut buf = vec![0u8; 64 << 10];
    let mut ended = false;
    loop {
        let event = if ended {
            reader.finish()?
        } else {
            reader.next_event()?
        };
        let Some(event) = event else {
            if ended {
                return Ok(summary);
            }
            let n = input
                .read(&mut buf)
                .await
                .map_err(|e| Error::io("reading the MKV input", e))?;
            if n == 0 {
                ended = true;
            } else {
                summary.bytes += n as u64;
                reader.push(&buf[..n]);
            }
            continue;
        };
        if matches!(event, MkvEvent::Header(_)) {
            summary.documents += 1;
        }
        match demuxer.event(event, now_ms()) {
            Some(Demuxed::Tracks(tracks)) => producer.set_tracks(tracks)?,
            Some(Demuxed::Frame(frame)) => {
                summary.frames += 1;
                producer.put_frame(&frame)?;
            }
            None => {}
        }
    }
}

/// A frame's data, for callers building frames by hand.
pub fn frame(track: u64, timestamp_ms: i64, key: bool, data: impl Into<Bytes>) -> MediaFrame {
    MediaFrame {
        track,
        timestamp_ms,
        key,
        data: data.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timeshard_parser::{Frame, SegmentInfo};

    fn frame_event(timecode: i16, key: bool) -> MkvEvent {
        MkvEvent::Frame(Frame {
            track: 1,
            timecode,
            key,
            invisible: false,
            discardable: false,
            data: Bytes::from_static(b"x"),
        })
    }

    fn ts(d: Option<Demuxed>) -> i64 {
        match d {
            Some(Demuxed::Frame(f)) => f.timestamp_ms,
            other => panic!("not a frame: {other:?}"),
        }
    }

    #[test]
    fn relative_input_is_placed_on_the_wall_clock() {
        let mut d = MkvDemuxer::new();
        let now = 1_700_000_000_000;
        d.event(
            MkvEvent::Info(SegmentInfo {
                timecode_scale: 1_000_000,
                ..SegmentInfo::default()
            }),
            now,
        );
        d.event(MkvEvent::ClusterStart { timecode: 2000 }, now);
        assert_eq!(ts(d.event(frame_event(0, true), now)), now);
        assert_eq!(ts(d.event(frame_event(40, false), now + 999)), now + 40);
        // A new document restarts placement.
        d.event(
            MkvEvent::Header(timeshard_parser::EbmlHeader {
                doc_type: "matroska".to_owned(),
                doc_type_version: 4,
                doc_type_read_version: 2,
            }),
            now,
        );
        d.event(MkvEvent::ClusterStart { timecode: 0 }, now);
        assert_eq!(ts(d.event(frame_event(0, true), now + 5000)), now + 5000);
    }

    #[test]
    fn absolute_input_and_other_scales() {
        let mut d = MkvDemuxer::new();
        d.event(
            MkvEvent::ClusterStart {
                timecode: 1_700_000_000_000,
            },
            5,
        );
        assert_eq!(ts(d.event(frame_event(-3, true), 5)), 1_699_999_999_997);
        let mut d = MkvDemuxer::new();
        d.event(
            MkvEvent::Info(SegmentInfo {
                timecode_scale: 100_000,
                ..SegmentInfo::default()
            }),
            0,
        );
        d.event(MkvEvent::ClusterStart { timecode: 10_000 }, 0);
        // 10,000 units of 0.1 ms = 1000 ms; the first frame sits at the clock (0 here).
        assert_eq!(ts(d.event(frame_event(0, true), 0)), 0);
        assert_eq!(ts(d.event(frame_event(400, false), 0)), 40);
    }
}
