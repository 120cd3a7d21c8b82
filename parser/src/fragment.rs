//! The consumer's model of GetMedia and GetMediaForFragmentList bodies: a sequence of
//! [`Fragment`]s.
//!
//! Kinesis Video Streams answers GetMedia with one MKV document per fragment, each standalone
//! (EBML header, Segment, Info, Tracks) and holding one Cluster, with the service's metadata in
//! SimpleTags around it:
//!
//! ```text
//! EBML header, Segment, Info, Tracks
//! Tags  AWS_KINESISVIDEO_FRAGMENT_NUMBER, _SERVER_TIMESTAMP, _PRODUCER_TIMESTAMP
//! Cluster  Timecode, SimpleBlocks
//! Tags  (the producer's own tags, if any)
//! Tags  AWS_KINESISVIDEO_MILLIS_BEHIND_NOW, _CONTINUATION_TOKEN  (or _ERROR_CODE, _ERROR_ID)
//! ```
//!
//! GetMediaForFragmentList spells two of them `_SERVER_SIDE_TIMESTAMP` and
//! `_PRODUCER_SIDE_TIMESTAMP`, and reports errors as `_EXCEPTION_ERROR_CODE` /
//! `_EXCEPTION_MESSAGE`; both spellings are read.
//!
//! A fragment is complete when its document ends: at the next EBML header, at the end of a
//! known-size Segment, or at the end of the input. (The trailing tags can only be trusted to be
//! all there then.) A document that holds several Clusters, such as an ffmpeg file, yields one
//! fragment per Cluster: the fragment-number and timestamp tags between two Clusters belong to
//! the next one, all other tags to the previous one.
//!
//! [`FragmentReader`] is sans-I/O like [`MkvReader`], on which it is built; [`read_fragments`] is
//! a blocking loop over any [`std::io::Read`].

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;

use crate::mkv::{
    Frame, MkvError, MkvErrorKind, MkvEvent, MkvReader, ReaderLimits, SegmentInfo, SimpleTag, Track,
};

/// Names of the SimpleTags Kinesis Video Streams writes.
pub mod tag_names {
    /// Every AWS tag name starts with this; the prefix is reserved for the service.
    pub const AWS_PREFIX: &str = "AWS_";
    pub const FRAGMENT_NUMBER: &str = "AWS_KINESISVIDEO_FRAGMENT_NUMBER";
    /// Epoch seconds with millisecond precision, e.g. `1726677687.758`.
    pub const SERVER_TIMESTAMP: &str = "AWS_KINESISVIDEO_SERVER_TIMESTAMP";
    /// Epoch seconds with millisecond precision.
    pub const PRODUCER_TIMESTAMP: &str = "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP";
    /// GetMediaForFragmentList's spelling of [`SERVER_TIMESTAMP`].
    pub const SERVER_SIDE_TIMESTAMP: &str = "AWS_KINESISVIDEO_SERVER_SIDE_TIMESTAMP";
    /// GetMediaForFragmentList's spelling of [`PRODUCER_TIMESTAMP`].
    pub const PRODUCER_SIDE_TIMESTAMP: &str = "AWS_KINESISVIDEO_PRODUCER_SIDE_TIMESTAMP";
    /// An integer string.
    pub const MILLIS_BEHIND_NOW: &str = "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW";
    pub const CONTINUATION_TOKEN: &str = "AWS_KINESISVIDEO_CONTINUATION_TOKEN";
    pub const ERROR_CODE: &str = "AWS_KINESISVIDEO_ERROR_CODE";
    /// An integer string.
    pub const ERROR_ID: &str = "AWS_KINESISVIDEO_ERROR_ID";
    /// GetMediaForFragmentList's spelling of [`ERROR_CODE`].
    pub const EXCEPTION_ERROR_CODE: &str = "AWS_KINESISVIDEO_EXCEPTION_ERROR_CODE";
    pub const EXCEPTION_MESSAGE: &str = "AWS_KINESISVIDEO_EXCEPTION_MESSAGE";
    /// The KVS producer's end-of-fragment marker in PutMedia (empty value).
    pub const END_OF_FRAGMENT: &str = "AWS_KINESISVIDEO_END_OF_FRAGMENT";
}

/// One fragment: one Cluster's frames with the metadata the service attached to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fragment {
    /// `AWS_KINESISVIDEO_FRAGMENT_NUMBER`: a decimal string.
    pub fragment_number: Option<String>,
    /// When the service started receiving the fragment, in epoch milliseconds.
    pub server_timestamp_ms: Option<i64>,
    /// The producer's timestamp of the fragment start, in epoch milliseconds.
    pub producer_timestamp_ms: Option<i64>,
    pub millis_behind_now: Option<i64>,
    /// Resume GetMedia from here with `StartSelectorType` `CONTINUATION_TOKEN`.
    pub continuation_token: Option<String>,
    /// `AWS_KINESISVIDEO_ERROR_CODE` (or `_EXCEPTION_ERROR_CODE`).
    pub error_code: Option<String>,
    pub error_id: Option<i64>,
    /// `AWS_KINESISVIDEO_EXCEPTION_MESSAGE` (GetMediaForFragmentList).
    pub error_message: Option<String>,
    /// Tags whose names do not start with `AWS_`, in document order. (Other `AWS_` tags, such
    /// as the producer's end-of-fragment marker, are not kept.)
    pub producer_tags: Vec<SimpleTag>,
    pub info: SegmentInfo,
    /// Shared between consecutive fragments with the same tracks.
    pub tracks: Arc<Vec<Track>>,
    /// The Cluster's Timecode, in `info.timecode_scale` units.
    pub cluster_timecode: u64,
    /// False for a document without a Cluster (e.g. one that only reports an error).
    pub has_cluster: bool,
    pub frames: Vec<Frame>,
}

impl Fragment {
    fn new(info: SegmentInfo, tracks: Arc<Vec<Track>>) -> Self {
        Fragment {
            fragment_number: None,
            server_timestamp_ms: None,
            producer_timestamp_ms: None,
            millis_behind_now: None,
            continuation_token: None,
            error_code: None,
            error_id: None,
            error_message: None,
            producer_tags: Vec::new(),
            info,
            tracks,
            cluster_timecode: 0,
            has_cluster: false,
            frames: Vec::new(),
        }
    }

    /// A frame's timestamp in milliseconds: (cluster Timecode + the frame's relative timecode) x
    /// TimecodeScale, rounded down. This is epoch time for streams with ABSOLUTE fragment
    /// timecodes; for RELATIVE ones it counts from the producer's start (see
    /// [`frame_producer_timestamp_ms`](Self::frame_producer_timestamp_ms)).
    pub fn frame_timestamp_ms(&self, frame: &Frame) -> i64 {
        let units = i128::from(self.cluster_timecode) + i128::from(frame.timecode);
        units_to_ms(units, self.info.timecode_scale)
    }

    /// The producer timestamp of a frame in epoch milliseconds: the fragment's producer
    /// timestamp plus the frame's offset in the Cluster. Works for ABSOLUTE and RELATIVE streams.
    pub fn frame_producer_timestamp_ms(&self, frame: &Frame) -> Option<i64> {
        let offset = units_to_ms(i128::from(frame.timecode), self.info.timecode_scale);
        self.producer_timestamp_ms
            .map(|start| start.saturating_add(offset))
    }

    /// The server timestamp of a frame in epoch milliseconds: the fragment's server timestamp
    /// (when the service started receiving it) plus the frame's offset in the Cluster.
    pub fn frame_server_timestamp_ms(&self, frame: &Frame) -> Option<i64> {
        let offset = units_to_ms(i128::from(frame.timecode), self.info.timecode_scale);
        self.server_timestamp_ms
            .map(|start| start.saturating_add(offset))
    }

    /// The track a frame belongs to, if the document declared it.
    pub fn track(&self, number: u64) -> Option<&Track> {
        self.tracks.iter().find(|t| t.number == number)
    }

    /// Bytes of frame data in the fragment.
    pub fn frame_bytes(&self) -> usize {
        self.frames.iter().map(|f| f.data.len()).sum()
    }

    /// Whether the document holds nothing worth reporting.
    fn is_empty(&self) -> bool {
        !self.has_cluster
            && self.fragment_number.is_none()
            && self.server_timestamp_ms.is_none()
            && self.producer_timestamp_ms.is_none()
            && self.millis_behind_now.is_none()
            && self.continuation_token.is_none()
            && self.error_code.is_none()
            && self.error_id.is_none()
            && self.error_message.is_none()
            && self.producer_tags.is_empty()
    }
}

fn units_to_ms(units: i128, scale_ns: u64) -> i64 {
    let ms = (units * i128::from(scale_ns)).div_euclid(1_000_000);
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

/// Parses an AWS tag timestamp, epoch seconds as a decimal string (`1726677687.758`), into
/// milliseconds without going through a float. Digits beyond milliseconds are truncated.
pub fn parse_timestamp_ms(value: &str) -> Option<i64> {
    let value = value.trim();
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut ms = whole.parse::<i64>().ok()?.checked_mul(1000)?;
    let mut scale = 100;
    for b in fraction.bytes().take(3) {
        ms += i64::from(b - b'0') * scale;
        scale /= 10;
    }
    Some(if negative { -ms } else { ms })
}

/// Formats epoch milliseconds the way the AWS tags carry them: `1726677687.758`.
pub fn format_timestamp_ms(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

/// Default bound on one fragment's frames (AWS limits fragments to 50 MB).
pub const DEFAULT_MAX_FRAGMENT_BYTES: u64 = 256 << 20;

/// What a [`Frame`] costs in memory besides its data, counted against the fragment limit.
const FRAME_OVERHEAD: usize = std::mem::size_of::<Frame>();

/// Where the reader is in the current document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No Cluster yet in this document.
    Before,
    Inside,
    /// A Cluster has ended; another may follow.
    After,
}

/// A sans-I/O fragment reader: [`push`](Self::push) GetMedia body bytes, pull fragments with
/// [`next_fragment`](Self::next_fragment) (`Ok(None)` = needs more bytes), and at the end of
/// the body drain it with [`finish`](Self::finish).
#[derive(Debug)]
pub struct FragmentReader {
    reader: MkvReader,
    current: Option<Fragment>,
    stage: Stage,
    /// Fragment-number and timestamp tags seen after a Cluster: they belong to the next one.
    pending: Vec<SimpleTag>,
    ready: VecDeque<Fragment>,
    last_tracks: Arc<Vec<Track>>,
    max_fragment_bytes: u64,
    current_bytes: u64,
    finished: bool,
}

impl Default for FragmentReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FragmentReader {
    pub fn new() -> Self {
        Self::with_limits(ReaderLimits::default(), DEFAULT_MAX_FRAGMENT_BYTES)
    }

    /// A reader with these MKV limits and this bound on one fragment's frames (their data plus
    /// the size of a `Frame` each).
    pub fn with_limits(limits: ReaderLimits, max_fragment_bytes: u64) -> Self {
        FragmentReader {
            reader: MkvReader::with_limits(limits),
            current: None,
            stage: Stage::Before,
            pending: Vec::new(),
            ready: VecDeque::new(),
            last_tracks: Arc::new(Vec::new()),
            max_fragment_bytes,
            current_bytes: 0,
            finished: false,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.reader.push(data);
    }

    /// The next complete fragment, or `Ok(None)` when more bytes are needed.
    pub fn next_fragment(&mut self) -> Result<Option<Fragment>, MkvError> {
        loop {
            if let Some(fragment) = self.ready.pop_front() {
                return Ok(Some(fragment));
            }
            match self.reader.next_event()? {
                Some(event) => self.handle(event)?,
                None => return Ok(None),
            }
        }
    }

    /// Call after the last [`push`](Self::push), repeatedly until `Ok(None)`: returns the
    /// remaining fragments, the last one included.
    pub fn finish(&mut self) -> Result<Option<Fragment>, MkvError> {
        loop {
            if let Some(fragment) = self.ready.pop_front() {
                return Ok(Some(fragment));
            }
            if self.finished {
                return Ok(None);
            }
            match self.reader.finish()? {
                Some(event) => self.handle(event)?,
                None => {
                    self.complete();
                    self.finished = true;
                }
            }
        }
    }

    /// Bytes of input consumed so far.
    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    fn handle(&mut self, event: MkvEvent) -> Result<(), MkvError> {
        match event {
            MkvEvent::Header(_) => {
                self.complete();
                self.start(SegmentInfo::default(), self.last_tracks.clone());
            }
            MkvEvent::SegmentStart { .. } => {
                if self.current.is_none() {
                    self.start(SegmentInfo::default(), self.last_tracks.clone());
                }
            }
            MkvEvent::Info(info) => self.fragment().info = info,
            MkvEvent::Tracks(tracks) => {
                if *self.last_tracks != tracks {
                    self.last_tracks = Arc::new(tracks);
                }
                let tracks = self.last_tracks.clone();
                self.fragment().tracks = tracks;
            }
            MkvEvent::Tags(tags) => {
                for tag in tags {
                    if self.stage != Stage::Before && is_pre_cluster_tag(&tag.name) {
                        self.pending.push(tag);
                    } else {
                        let at = self.reader.position();
                        apply_tag(self.fragment(), tag, at)?;
                    }
                }
            }
            MkvEvent::ClusterStart { timecode } => {
                if self.stage != Stage::Before {
                    // A second Cluster in one document: a fragment of its own, same Info/Tracks.
                    let (info, tracks) = {
                        let f = self.fragment();
                        (f.info.clone(), f.tracks.clone())
                    };
                    let pending = std::mem::take(&mut self.pending);
                    self.complete();
                    self.start(info, tracks);
                    let at = self.reader.position();
                    for tag in pending {
                        apply_tag(self.fragment(), tag, at)?;
                    }
                }
                let f = self.fragment();
                f.cluster_timecode = timecode;
                f.has_cluster = true;
                self.stage = Stage::Inside;
            }
            MkvEvent::Frame(frame) => {
                // Counted with the memory a Frame takes besides its data, so that a stream of
                // empty frames is bounded too.
                self.current_bytes += (frame.data.len() + FRAME_OVERHEAD) as u64;
                if self.current_bytes > self.max_fragment_bytes {
                    return Err(MkvError {
                        offset: self.reader.position(),
                        kind: MkvErrorKind::TooLarge,
                        path: "Segment/Cluster".to_owned(),
                        message: format!(
                            "the fragment's frames exceed the {}-byte fragment limit",
                            self.max_fragment_bytes
                        ),
                    });
                }
                self.fragment().frames.push(frame);
            }
            MkvEvent::ClusterEnd => self.stage = Stage::After,
            MkvEvent::SegmentEnd => self.complete(),
        }
        Ok(())
    }

    fn start(&mut self, info: SegmentInfo, tracks: Arc<Vec<Track>>) {
        self.current = Some(Fragment::new(info, tracks));
        self.stage = Stage::Before;
        self.current_bytes = 0;
    }

    /// The fragment being read (a Segment without an EBML header still gets one).
    fn fragment(&mut self) -> &mut Fragment {
        let tracks = self.last_tracks.clone();
        self.current
            .get_or_insert_with(|| Fragment::new(SegmentInfo::default(), tracks))
    }

    /// Ends the current document's fragment and queues it unless it is empty.
    fn complete(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if let Some(mut fragment) = self.current.take() {
            // Pre-cluster tags after the last Cluster of a document: there is no next Cluster,
            // so they can only describe this one.
            for tag in pending {
                let unset = match tag.name.as_str() {
                    tag_names::FRAGMENT_NUMBER => fragment.fragment_number.is_none(),
                    tag_names::SERVER_TIMESTAMP | tag_names::SERVER_SIDE_TIMESTAMP => {
                        fragment.server_timestamp_ms.is_none()
                    }
                    _ => fragment.producer_timestamp_ms.is_none(),
                };
                if unset {
                    // Values were checked when the tag was first seen.
                    let _ = apply_tag(&mut fragment, tag, 0);
                }
            }
            if !fragment.is_empty() {
                self.ready.push_back(fragment);
            }
        }
        self.stage = Stage::Before;
        self.current_bytes = 0;
    }
}

fn is_pre_cluster_tag(name: &str) -> bool {
    matches!(
        name,
        tag_names::FRAGMENT_NUMBER
            | tag_names::SERVER_TIMESTAMP
            | tag_names::SERVER_SIDE_TIMESTAMP
            | tag_names::PRODUCER_TIMESTAMP
            | tag_names::PRODUCER_SIDE_TIMESTAMP
    )
}

/// Stores one tag in the fragment; a malformed value of a known AWS tag is an error.
fn apply_tag(f: &mut Fragment, tag: SimpleTag, at: u64) -> Result<(), MkvError> {
    if !tag.name.starts_with(tag_names::AWS_PREFIX) {
        f.producer_tags.push(tag);
        return Ok(());
    }
    let value = tag.value_str().unwrap_or_default().to_owned();
    let bad = |what: &str| MkvError {
        offset: at,
        kind: MkvErrorKind::Invalid,
        path: "Segment/Tags/Tag/SimpleTag".to_owned(),
        message: format!("{} value {value:?} is not {what}", tag.name),
    };
    match tag.name.as_str() {
        tag_names::FRAGMENT_NUMBER => f.fragment_number = Some(value.clone()),
        tag_names::SERVER_TIMESTAMP | tag_names::SERVER_SIDE_TIMESTAMP => {
            f.server_timestamp_ms =
                Some(parse_timestamp_ms(&value).ok_or_else(|| bad("epoch seconds"))?);
        }
        tag_names::PRODUCER_TIMESTAMP | tag_names::PRODUCER_SIDE_TIMESTAMP => {
            f.producer_timestamp_ms =
                Some(parse_timestamp_ms(&value).ok_or_else(|| bad("epoch seconds"))?);
        }
        tag_names::MILLIS_BEHIND_NOW => {
            f.millis_behind_now = Some(value.trim().parse().map_err(|_| bad("an integer"))?);
        }
        tag_names::CONTINUATION_TOKEN => f.continuation_token = Some(value.clone()),
        tag_names::ERROR_CODE | tag_names::EXCEPTION_ERROR_CODE => {
            f.error_code = Some(value.clone());
        }
        tag_names::ERROR_ID => {
            f.error_id = Some(value.trim().parse().map_err(|_| bad("an integer"))?);
        }
        tag_names::EXCEPTION_MESSAGE => f.error_message = Some(value.clone()),
        _ => {}
    }
    Ok(())
}

/// One turn of a reading loop over `reader`: `Some(item)` to hand out (a fragment, the end, or
/// an error, which also sets `done`), or `None` when it needs more bytes. Shared by
/// [`read_fragments`] and the `tokio` feature's reader.
pub(crate) fn step(
    reader: &mut FragmentReader,
    at_eof: bool,
    done: &mut bool,
) -> Option<Option<Result<Fragment, MkvError>>> {
    let result = if at_eof {
        reader.finish()
    } else {
        reader.next_fragment()
    };
    match result {
        Ok(Some(fragment)) => Some(Some(Ok(fragment))),
        Ok(None) if at_eof => {
            *done = true;
            Some(None)
        }
        Ok(None) => None,
        Err(e) => {
            *done = true;
            Some(Some(Err(e)))
        }
    }
}

/// The error for a source that failed to read.
pub(crate) fn read_failed(reader: &FragmentReader, e: &std::io::Error) -> MkvError {
    MkvError {
        offset: reader.position(),
        kind: MkvErrorKind::Truncated,
        path: String::new(),
        message: format!("reading the input failed: {e}"),
    }
}

/// Reads fragments from a blocking source (a file, a socket, a child's stdout), 64 KiB at a
/// time. A failed read ends the iteration with a [`MkvErrorKind::Truncated`] error.
pub fn read_fragments<R: Read>(source: R) -> Fragments<R> {
    Fragments {
        source,
        reader: FragmentReader::new(),
        buf: vec![0; 64 * 1024],
        at_eof: false,
        done: false,
    }
}

/// The iterator [`read_fragments`] returns.
#[derive(Debug)]
pub struct Fragments<R> {
    source: R,
    reader: FragmentReader,
    buf: Vec<u8>,
    at_eof: bool,
    done: bool,
}

impl<R: Read> Iterator for Fragments<R> {
    type Item = Result<Fragment, MkvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            if let Some(item) = step(&mut self.reader, self.at_eof, &mut self.done) {
                return item;
            }
            match self.source.read(&mut self.buf) {
                Ok(0) => self.at_eof = true,
                Ok(n) => self.reader.push(&self.buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(read_failed(&self.reader, &e)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_exactly() {
        assert_eq!(
            parse_timestamp_ms("1726677687.758"),
            Some(1_726_677_687_758)
        );
        // 0.1 + 0.2-style float errors would show here: 1537574915.281 * 1000 = ...280.9999.
        assert_eq!(
            parse_timestamp_ms("1537574915.281"),
            Some(1_537_574_915_281)
        );
        assert_eq!(parse_timestamp_ms("5.000"), Some(5000));
        assert_eq!(parse_timestamp_ms("5"), Some(5000));
        assert_eq!(parse_timestamp_ms("5.7"), Some(5700));
        assert_eq!(parse_timestamp_ms("5.12345"), Some(5123));
        assert_eq!(parse_timestamp_ms(" 0.001 "), Some(1));
        assert_eq!(parse_timestamp_ms("-1.5"), Some(-1500));
        for bad in [
            "",
            ".5",
            "abc",
            "1.2.3",
            "1e9",
            "1.-2",
            "99999999999999999999",
        ] {
            assert_eq!(parse_timestamp_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn timestamps_format_like_aws() {
        assert_eq!(format_timestamp_ms(1_726_677_687_758), "1726677687.758");
        assert_eq!(format_timestamp_ms(5000), "5.000");
        assert_eq!(format_timestamp_ms(7), "0.007");
        assert_eq!(format_timestamp_ms(-1500), "-1.500");
        for ms in [0, 1, 999, 1000, 1_726_677_687_758, -1, -999_999] {
            assert_eq!(parse_timestamp_ms(&format_timestamp_ms(ms)), Some(ms));
        }
    }

    #[test]
    fn frame_times_follow_the_timecode_scale() {
        let mut f = Fragment::new(SegmentInfo::default(), Arc::new(Vec::new()));
        f.cluster_timecode = 1_726_677_687_000;
        let frame = Frame {
            track: 1,
            timecode: -40,
            key: false,
            invisible: false,
            discardable: false,
            data: bytes::Bytes::new(),
        };
        assert_eq!(f.frame_timestamp_ms(&frame), 1_726_677_686_960);
        assert_eq!(f.frame_producer_timestamp_ms(&frame), None);
        assert_eq!(f.frame_server_timestamp_ms(&frame), None);
        f.producer_timestamp_ms = Some(10_000);
        f.server_timestamp_ms = Some(20_000);
        assert_eq!(f.frame_producer_timestamp_ms(&frame), Some(9_960));
        assert_eq!(f.frame_server_timestamp_ms(&frame), Some(19_960));
        // 100 µs units: 15 units = 1.5 ms, rounded down.
        f.info.timecode_scale = 100_000;
        f.cluster_timecode = 0;
        let frame = Frame {
            timecode: 15,
            ..frame
        };
        assert_eq!(f.frame_timestamp_ms(&frame), 1);
        let frame = Frame {
            timecode: -15,
            ..frame
        };
        assert_eq!(f.frame_timestamp_ms(&frame), -2);
    }
}
