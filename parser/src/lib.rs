//! timeshard-parser: media formats shared by the server, the producer SDK and consumers.
//!
//! What is here now:
//! - [`mkv`]: a sans-I/O MKV reader ([`MkvReader`]: push bytes, pull [`MkvEvent`]s, or get
//!   "needs more bytes", or an [`MkvError`] naming the byte offset and element path), built on
//!   ebml-iterable's `TagDecoder` push parser with our own checks against size bombs; and an MKV
//!   writer ([`mkv::write`]) that appends elements to a `Vec<u8>`. The server reads PutMedia
//!   bodies with the reader and writes GetMedia bodies with the writer.
//! - [`fragment`]: the consumer's view of GetMedia / GetMediaForFragmentList bodies: a
//!   [`FragmentReader`] that yields one [`Fragment`] per MKV document, with the
//!   `AWS_KINESISVIDEO_*` tags decoded (fragment number, server and producer timestamps,
//!   millis behind now, continuation token, errors), the producer's own tags, tracks and frames;
//!   and [`read_fragments`] over any `std::io::Read`.
//!
//! What comes later (issue "Producer SDK and parser"): H.264/H.265 helpers (AVCC <-> Annex B,
//! SPS dimensions), fMP4/MP4 packaging, and behind a `decode` feature, H.264 frames decoded to
//! RGB.
//!
//! Rules (DESIGN.md): no tokio, no HTTP, no I/O in the parsers themselves; `read_fragments` is a
//! thin blocking loop over the sans-I/O reader.

pub mod fragment;
pub mod mkv;

pub use fragment::{Fragment, FragmentReader, read_fragments};
pub use mkv::{
    AudioSettings, EbmlHeader, Frame, MkvError, MkvErrorKind, MkvEvent, MkvReader, ReaderLimits,
    SegmentInfo, SimpleTag, TagValue, Track, VideoSettings,
};
