//! Frames in, fragments out: the MKV the producer uploads.
//!
//! Every upload is one MKV document per PutMedia connection: an EBML header, a Segment of unknown
//! size, Info (TimecodeScale 1 ms) and Tracks ([`StreamHeader`]), then Clusters. As AWS's
//! producers do, each Cluster is one fragment and starts at a key frame of the cut track (the
//! first video track; the first track when there is no video). Cluster Timecodes are absolute
//! producer timestamps in milliseconds (`x-amzn-fragment-timecode-type: ABSOLUTE`), which is also
//! how the PutMedia acks name a fragment (`FragmentTimecode`).
//!
//! A fragment's bytes are built as a list of chunks (the cluster header, then one SimpleBlock per
//! frame) so a live upload can send each frame as it arrives, before its fragment is complete.
//!
//! Timestamp repair. Cameras and pipelines send timestamps that go backwards (a clock reset, a
//! source restarting at zero, a concatenated file). The server refuses a fragment that starts
//! before the previous one (ERROR 4004), so the fragmenter keeps an offset added to every
//! incoming timestamp and raises it when time goes back:
//! - a frame more than [`REORDER_WINDOW_MS`] behind the latest timestamp seen is a
//!   discontinuity; the offset moves it to just after that latest timestamp. Smaller steps back
//!   are normal (B-frames in decode order, audio interleaving) and are kept.
//! - a fragment must start after the previous fragment's start; a key frame that would not is
//!   moved to 1 ms after it.
//!
//! Each repair is reported ([`Repair`]), never silent. Frames of a track the header does not
//! declare are refused. Frames before the first key frame of the cut track are dropped (and
//! counted): a fragment must start with one. So are frames more than 32.7 s after their
//! fragment's key frame (the reach of a SimpleBlock's `i16` timecode), until the next key frame.

use std::sync::Arc;

use bytes::{BufMut as _, Bytes, BytesMut};
use timeshard_parser::mkv::write;
use timeshard_parser::{Frame, SegmentInfo, Track};

use crate::error::Error;

/// Backwards steps up to this size are kept (reordered frames); larger ones are repaired.
pub const REORDER_WINDOW_MS: i64 = 1_000;

/// How far a frame may be from its cluster's timecode: SimpleBlock timecodes are `i16`.
const MAX_RELATIVE_MS: i64 = i16::MAX as i64;

/// At most this many tracks per stream (PutMedia ERROR 4012 beyond).
pub const MAX_TRACKS: usize = 3;

/// One frame for the producer: absolute producer time in ms, the track it belongs to, and its
/// data as MKV carries it (AVCC length-prefixed NAL units for H.264/H.265, raw AAC frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFrame {
    pub track: u64,
    pub timestamp_ms: i64,
    pub key: bool,
    pub data: Bytes,
}

/// The start of every upload: EBML header, Segment, Info and Tracks, encoded once.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamHeader {
    pub tracks: Vec<Track>,
    /// The encoded header; an upload sends it before its first cluster.
    pub bytes: Bytes,
    /// A digest of `bytes`, naming the header in the on-disk buffer.
    pub id: u64,
}

impl StreamHeader {
    /// Checks and encodes `tracks`: 1 to 3 tracks, distinct non-zero numbers, a codec id each.
    pub fn new(tracks: Vec<Track>) -> Result<StreamHeader, Error> {
        if tracks.is_empty() {
            return Err(Error::Input("a stream needs at least one track".to_owned()));
        }
        if tracks.len() > MAX_TRACKS {
            return Err(Error::Input(format!(
                "{} tracks; Kinesis Video Streams takes at most {MAX_TRACKS}",
                tracks.len()
            )));
        }
        for (i, track) in tracks.iter().enumerate() {
            if track.number == 0 {
                return Err(Error::Input("track number 0 is not valid".to_owned()));
            }
            if tracks[..i].iter().any(|t| t.number == track.number) {
                return Err(Error::Input(format!(
                    "track number {} is used twice",
                    track.number
                )));
            }
            if track.codec_id.is_empty() {
                return Err(Error::Input(format!(
                    "track {} has no codec id",
                    track.number
                )));
            }
        }
        let mut buf = Vec::with_capacity(256);
        write::ebml_header(&mut buf);
        write::segment_start_unknown(&mut buf);
        write::info(
            &mut buf,
            &SegmentInfo {
                muxing_app: Some("timeshard-producer".to_owned()),
                writing_app: Some("timeshard-producer".to_owned()),
                ..SegmentInfo::default()
            },
        );
        write::tracks(&mut buf, &tracks);
        let id = u64::from(crc32c::crc32c(&buf)) << 32 | buf.len() as u64;
        Ok(StreamHeader {
            tracks,
            bytes: Bytes::from(buf),
            id,
        })
    }

    /// The track fragments are cut on: the first video track, else the first track.
    pub fn cut_track(&self) -> u64 {
        self.tracks
            .iter()
            .find(|t| t.track_type == timeshard_parser::mkv::TRACK_TYPE_VIDEO)
            .unwrap_or(&self.tracks[0])
            .number
    }
}

/// A change of the offset the fragmenter adds to timestamps, reported to the application at the
/// frame that caused it. Later frames carry the same offset (`written_ms - given_ms`) without a
/// new report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repair {
    pub track: u64,
    /// The frame's timestamp as given.
    pub given_ms: i64,
    /// The timestamp it was written with.
    pub written_ms: i64,
}

/// What one [`Fragmenter::push`] did.
#[derive(Debug, Default)]
pub struct Pushed {
    /// A new fragment started with this frame: its cluster timecode. The previous fragment, if
    /// any, is complete.
    pub started: Option<i64>,
    /// Bytes to append to the current fragment (the cluster header when one started, then the
    /// SimpleBlock), `None` when the frame was dropped.
    pub chunk: Option<Bytes>,
    pub repair: Option<Repair>,
    /// The frame was dropped because no fragment is open: no key frame so far, or the key frame
    /// of the current fragment is more than 32.7 s back (an MKV block's reach).
    pub dropped_waiting_for_key: bool,
}

/// Turns frames into clusters, one per key frame of the cut track.
#[derive(Debug)]
pub struct Fragmenter {
    header: Arc<StreamHeader>,
    cut_track: u64,
    offset_ms: i64,
    /// The latest written timestamp of any frame.
    latest_ms: Option<i64>,
    /// The current cluster's timecode.
    cluster_ms: Option<i64>,
    /// The previous cluster's timecode, kept across [`Fragmenter::set_header`].
    last_cluster_ms: Option<i64>,
}

impl Fragmenter {
    pub fn new(header: Arc<StreamHeader>) -> Fragmenter {
        Fragmenter {
            cut_track: header.cut_track(),
            header,
            offset_ms: 0,
            latest_ms: None,
            cluster_ms: None,
            last_cluster_ms: None,
        }
    }

    pub fn header(&self) -> &Arc<StreamHeader> {
        &self.header
    }

    /// New tracks (a new input document, a codec change). The current fragment ends; the next
    /// starts at the next key frame. Timestamp repair carries on, so the new fragments still
    /// start after the old ones.
    pub fn set_header(&mut self, header: Arc<StreamHeader>) {
        self.cut_track = header.cut_track();
        self.header = header;
        self.cluster_ms = None;
    }

    /// Whether a fragment is open (frames are being added to it).
    pub fn in_fragment(&self) -> bool {
        self.cluster_ms.is_some()
    }

    /// Ends the current fragment; the next frame must be a key frame of the cut track.
    pub fn end_fragment(&mut self) {
        self.cluster_ms = None;
    }

    pub fn push(&mut self, frame: &MediaFrame) -> Result<Pushed, Error> {
        if !self.header.tracks.iter().any(|t| t.number == frame.track) {
            return Err(Error::Input(format!(
                "a frame for track {} which the stream's tracks do not declare",
                frame.track
            )));
        }
        let mut out = Pushed::default();
        let given = frame.timestamp_ms;
        let offset_before = self.offset_ms;
        let mut ts = given.saturating_add(self.offset_ms);
        if let Some(latest) = self.latest_ms
            && ts < latest - REORDER_WINDOW_MS
        {
            // A discontinuity: continue just after the latest timestamp seen.
            self.offset_ms += latest + 1 - ts;
            ts = latest + 1;
        }
        let starts_fragment = frame.key && frame.track == self.cut_track;
        if starts_fragment
            && let Some(last) = self.last_cluster_ms
            && ts <= last
        {
            self.offset_ms += last + 1 - ts;
            ts = last + 1;
        }
        // A frame too far from its cluster for an i16 relative timecode cannot be written in it,
        // and a cluster must start with a key frame (the server refuses one that does not), so
        // the fragment ends there and frames wait for the next key frame.
        if !starts_fragment
            && self
                .cluster_ms
                .is_some_and(|c| ts - c > MAX_RELATIVE_MS || ts - c < -MAX_RELATIVE_MS - 1)
        {
            self.cluster_ms = None;
        }
        if self.offset_ms != offset_before {
            out.repair = Some(Repair {
                track: frame.track,
                given_ms: given,
                written_ms: ts,
            });
        }
        if !starts_fragment && self.cluster_ms.is_none() {
            out.dropped_waiting_for_key = true;
            return Ok(out);
        }
        let mut chunk = BytesMut::with_capacity(frame.data.len() + 32);
        if starts_fragment {
            // A cluster may not start before the previous one either.
            let cluster = match self.last_cluster_ms {
                Some(last) if ts <= last => last + 1,
                _ => ts,
            };
            let Ok(cluster_u) = u64::try_from(cluster) else {
                return Err(Error::Input(format!(
                    "timestamp {given} ms is before 1970; the producer writes absolute timestamps"
                )));
            };
            let mut head = Vec::with_capacity(32);
            write::cluster_start_unknown(&mut head, cluster_u);
            chunk.put_slice(&head);
            self.cluster_ms = Some(cluster);
            self.last_cluster_ms = Some(cluster);
            out.started = Some(cluster);
        }
        let cluster = self.cluster_ms.unwrap_or(ts);
        let relative = i16::try_from(ts - cluster).unwrap_or(i16::MIN);
        let mkv_frame = Frame {
            track: frame.track,
            timecode: relative,
            key: frame.key,
            invisible: false,
            discardable: false,
            data: Bytes::new(),
        };
        let mut block = Vec::with_capacity(16);
        write::simple_block_header(
            &mut block,
            frame.track,
            relative,
            write::simple_block_flags(&mkv_frame),
            frame.data.len(),
        );
        chunk.put_slice(&block);
        chunk.put_slice(&frame.data);
        out.chunk = Some(chunk.freeze());
        self.latest_ms = Some(self.latest_ms.map_or(ts, |l| l.max(ts)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timeshard_parser::{FragmentReader, MkvEvent, MkvReader, VideoSettings};

    fn video_track() -> Track {
        Track {
            number: 1,
            uid: Some(1),
            track_type: 1,
            codec_id: "V_MPEG4/ISO/AVC".to_owned(),
            codec_private: Some(Bytes::from_static(&[1, 66, 0, 30, 255, 225])),
            name: None,
            default_duration: None,
            video: Some(VideoSettings {
                pixel_width: 320,
                pixel_height: 240,
            }),
            audio: None,
        }
    }

    fn frame(ts: i64, key: bool) -> MediaFrame {
        MediaFrame {
            track: 1,
            timestamp_ms: ts,
            key,
            data: Bytes::from(vec![key as u8; 10]),
        }
    }

    /// Pushes frames and returns the document bytes and the repairs.
    fn run(frames: &[MediaFrame]) -> (Vec<u8>, Vec<Repair>, Vec<i64>) {
        let header = Arc::new(StreamHeader::new(vec![video_track()]).expect("header"));
        let mut f = Fragmenter::new(header.clone());
        let mut doc = header.bytes.to_vec();
        let mut repairs = Vec::new();
        let mut starts = Vec::new();
        for fr in frames {
            let p = f.push(fr).expect("push");
            repairs.extend(p.repair);
            starts.extend(p.started);
            if let Some(c) = p.chunk {
                doc.extend_from_slice(&c);
            }
        }
        (doc, repairs, starts)
    }

    /// (cluster timecode, [absolute frame timestamps]) per cluster, read back with the parser.
    fn clusters(doc: &[u8]) -> Vec<(u64, Vec<i64>)> {
        let mut r = MkvReader::new();
        r.push(doc);
        let mut out: Vec<(u64, Vec<i64>)> = Vec::new();
        loop {
            let ev = match r.next_event().expect("valid") {
                Some(e) => Some(e),
                None => r.finish().expect("valid"),
            };
            match ev {
                Some(MkvEvent::ClusterStart { timecode }) => out.push((timecode, Vec::new())),
                Some(MkvEvent::Frame(f)) => {
                    let last = out.last_mut().expect("in a cluster");
                    last.1.push(last.0 as i64 + i64::from(f.timecode));
                }
                Some(_) => {}
                None => break,
            }
        }
        out
    }

    #[test]
    fn one_cluster_per_key_frame() {
        let frames: Vec<_> = (0..10).map(|i| frame(1000 + i * 40, i % 5 == 0)).collect();
        let (doc, repairs, starts) = run(&frames);
        assert!(repairs.is_empty());
        assert_eq!(starts, vec![1000, 1200]);
        assert_eq!(
            clusters(&doc),
            vec![
                (1000, vec![1000, 1040, 1080, 1120, 1160]),
                (1200, vec![1200, 1240, 1280, 1320, 1360]),
            ]
        );
        // The fragment reader reads a fragment per cluster.
        let mut reader = FragmentReader::new();
        reader.push(&doc);
        let mut n = 0;
        while reader.next_fragment().expect("ok").is_some() {
            n += 1;
        }
        while reader.finish().expect("ok").is_some() {
            n += 1;
        }
        assert_eq!(n, 2);
    }

    #[test]
    fn frames_before_the_first_key_frame_are_dropped() {
        let header = Arc::new(StreamHeader::new(vec![video_track()]).expect("header"));
        let mut f = Fragmenter::new(header);
        let p = f.push(&frame(0, false)).expect("push");
        assert!(p.dropped_waiting_for_key && p.chunk.is_none());
        let p = f.push(&frame(40, true)).expect("push");
        assert_eq!(p.started, Some(40));
    }

    #[test]
    fn a_clock_reset_is_repaired() {
        // 0..2 s, then the source restarts at 0.
        let mut frames: Vec<_> = (0..50).map(|i| frame(5000 + i * 40, i % 25 == 0)).collect();
        frames.extend((0..50).map(|i| frame(i * 40, i % 25 == 0)));
        let (doc, repairs, starts) = run(&frames);
        assert_eq!(repairs.len(), 1, "one report for the reset");
        assert_eq!(repairs[0].given_ms, 0);
        assert_eq!(repairs[0].written_ms, 5000 + 49 * 40 + 1);
        let cs = clusters(&doc);
        assert_eq!(cs.len(), 4);
        assert!(
            starts.windows(2).all(|w| w[0] < w[1]),
            "fragment starts increase: {starts:?}"
        );
        // Spacing inside the repaired part is kept.
        let after = &cs[2].1;
        assert!(after.windows(2).all(|w| w[1] - w[0] == 40), "{after:?}");
    }

    #[test]
    fn small_steps_back_are_kept_and_equal_fragment_starts_are_moved() {
        // B-frame order: 0(key) 80 40 120; then a key frame at the same time as the previous one.
        let frames = vec![
            frame(1000, true),
            frame(1080, false),
            frame(1040, false),
            frame(1120, false),
            frame(1000, true),
        ];
        let (doc, repairs, starts) = run(&frames);
        assert_eq!(starts, vec![1000, 1001]);
        assert_eq!(repairs.len(), 1);
        assert_eq!(clusters(&doc)[0].1, vec![1000, 1080, 1040, 1120]);
    }

    #[test]
    fn frames_beyond_a_blocks_reach_wait_for_the_next_key_frame() {
        let frames = vec![
            frame(0, true),
            frame(32_000, false),
            frame(40_000, false),
            frame(40_040, false),
            frame(40_080, true),
        ];
        let (doc, _, starts) = run(&frames);
        assert_eq!(starts, vec![0, 40_080]);
        assert_eq!(
            clusters(&doc),
            vec![(0, vec![0, 32_000]), (40_080, vec![40_080])]
        );
    }

    #[test]
    fn bad_tracks_are_refused() {
        assert!(StreamHeader::new(vec![]).is_err());
        let mut t2 = video_track();
        t2.number = 1;
        assert!(StreamHeader::new(vec![video_track(), t2]).is_err());
        let header = Arc::new(StreamHeader::new(vec![video_track()]).expect("header"));
        let mut f = Fragmenter::new(header);
        let mut fr = frame(0, true);
        fr.track = 2;
        let err = f.push(&fr).expect_err("undeclared track");
        assert!(err.to_string().contains("track 2"), "{err}");
    }
}
