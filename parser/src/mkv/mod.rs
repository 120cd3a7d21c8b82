//! Matroska (MKV) reading and writing, sans I/O.
//!
//! Kinesis Video Streams speaks MKV in both directions: PutMedia bodies are one long MKV document
//! (usually with an unknown-size Segment, and unknown-size Clusters from the KVS producer SDK), and
//! GetMedia bodies are a concatenation of small MKV documents, one per fragment, with
//! `AWS_KINESISVIDEO_*` tags around each Cluster.
//!
//! - [`MkvReader`] is a push reader: the caller feeds byte chunks as they arrive and pulls
//!   [`MkvEvent`]s. It never blocks and never does I/O, so the same code serves a hyper request
//!   body, a file and a test vector. It is built on ebml-iterable's `TagDecoder`, with our own
//!   look at every element header first so that a hostile size field is rejected before any byte
//!   of the element is buffered (see [`ReaderLimits`]).
//! - [`write`](mod@write) appends MKV elements to a `Vec<u8>`: hand-written EBML encoding, because the
//!   server writes a SimpleBlock header per frame on the GetMedia hot path and
//!   `ebml_iterable::TagWriter` flushes its destination once per element.
//!
//! The data types here ([`Track`], [`Frame`], ...) are shared by both directions, so a document
//! read and written back compares equal.

mod block;
mod error;
pub mod ids;
mod reader;
pub mod write;

pub use error::{MkvError, MkvErrorKind};
pub use reader::{MkvReader, ReaderLimits};

use bytes::Bytes;

/// One step of an MKV document, in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum MkvEvent {
    /// An EBML header. Each one starts a new document: GetMedia bodies concatenate documents, and
    /// a producer that restarts mid-upload sends a new one.
    Header(EbmlHeader),
    /// The Segment opened; `size` is `None` for an unknown size (live and pipe output).
    SegmentStart { size: Option<u64> },
    /// The Segment's Info element.
    Info(SegmentInfo),
    /// The Segment's Tracks element, its TrackEntries in document order.
    Tracks(Vec<Track>),
    /// One level-1 Tags element: its SimpleTags, nested ones included, in document order.
    Tags(Vec<SimpleTag>),
    /// A Cluster, emitted once its Timecode has been read.
    ClusterStart { timecode: u64 },
    /// One frame: a SimpleBlock, or the Block of a BlockGroup. A laced block yields one `Frame`
    /// per laced frame, all with the block's timecode.
    Frame(Frame),
    /// The Cluster ended: its known size was reached or, for an unknown size, the next level-1
    /// element, EBML header or the end of the input arrived.
    ClusterEnd,
    /// The Segment ended (known size reached, next EBML header, or end of input).
    SegmentEnd,
}

/// The EBML header fields that matter to a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EbmlHeader {
    /// `matroska` or `webm`.
    pub doc_type: String,
    pub doc_type_version: u64,
    pub doc_type_read_version: u64,
}

/// The Segment's Info element.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentInfo {
    /// Nanoseconds per timecode unit; 1,000,000 (1 ms) unless the document says otherwise.
    pub timecode_scale: u64,
    pub segment_uid: Option<Bytes>,
    pub title: Option<String>,
    pub muxing_app: Option<String>,
    pub writing_app: Option<String>,
    /// In timecode units (a float, as Matroska stores it).
    pub duration: Option<f64>,
}

/// Matroska's default TimecodeScale: 1 ms in nanoseconds.
pub const DEFAULT_TIMECODE_SCALE_NS: u64 = 1_000_000;

impl Default for SegmentInfo {
    fn default() -> Self {
        SegmentInfo {
            timecode_scale: DEFAULT_TIMECODE_SCALE_NS,
            segment_uid: None,
            title: None,
            muxing_app: None,
            writing_app: None,
            duration: None,
        }
    }
}

/// Matroska TrackType values the project cares about.
pub const TRACK_TYPE_VIDEO: u64 = 1;
/// Matroska TrackType for audio.
pub const TRACK_TYPE_AUDIO: u64 = 2;

/// One TrackEntry.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// TrackNumber: what blocks refer to.
    pub number: u64,
    pub uid: Option<u64>,
    /// 1 video, 2 audio, 3 complex, 0x10 logo, 0x11 subtitle, 0x12 buttons, 0x20 control,
    /// 0x21 metadata ([`TRACK_TYPE_VIDEO`], [`TRACK_TYPE_AUDIO`]).
    pub track_type: u64,
    /// E.g. `V_MPEG4/ISO/AVC`, `A_AAC`.
    pub codec_id: String,
    /// E.g. the avcC record for H.264, the AudioSpecificConfig for AAC.
    pub codec_private: Option<Bytes>,
    pub name: Option<String>,
    /// Nanoseconds per frame, when constant.
    pub default_duration: Option<u64>,
    pub video: Option<VideoSettings>,
    pub audio: Option<AudioSettings>,
}

/// A TrackEntry's Video element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoSettings {
    pub pixel_width: u64,
    pub pixel_height: u64,
}

/// A TrackEntry's Audio element.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioSettings {
    /// Hz; Matroska's default is 8000.
    pub sampling_frequency: f64,
    /// Matroska's default is 1.
    pub channels: u64,
    pub bit_depth: Option<u64>,
}

/// One SimpleTag: a name and a string or binary value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleTag {
    pub name: String,
    pub value: TagValue,
}

impl SimpleTag {
    /// A SimpleTag with a TagString value.
    pub fn string(name: impl Into<String>, value: impl Into<String>) -> Self {
        SimpleTag {
            name: name.into(),
            value: TagValue::String(value.into()),
        }
    }

    /// The value as text: the TagString, or the TagBinary if it is UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        match &self.value {
            TagValue::String(s) => Some(s),
            TagValue::Binary(b) => std::str::from_utf8(b).ok(),
        }
    }
}

/// A SimpleTag's value. A SimpleTag with neither TagString nor TagBinary reads as an empty string
/// (the KVS producer's `AWS_KINESISVIDEO_END_OF_FRAGMENT` marker has an empty value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagValue {
    String(String),
    Binary(Bytes),
}

/// One frame of one track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The TrackNumber of the block.
    pub track: u64,
    /// Relative to the cluster's Timecode, in timecode units.
    pub timecode: i16,
    /// A key frame: the SimpleBlock key flag, or a BlockGroup without ReferenceBlock.
    pub key: bool,
    pub invisible: bool,
    /// SimpleBlock only; always false for a BlockGroup.
    pub discardable: bool,
    /// The frame payload; for the reader, a slice of the block's buffer (no copy).
    pub data: Bytes,
}
