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
//! - [`h26x`]: H.264/H.265 helpers: AVCC <-> Annex B, the avcC/hvcC records, SPS dimensions,
//!   profile, chroma format and bit depth.
//! - [`decode`] (feature `decode`): H.264 frames of fragments decoded to RGB with absolute
//!   timestamps (every frame, every Nth, or key frames only), and JPEG encoding.
//! - [`async_read`] (feature `tokio`): fragments from a tokio `AsyncRead`.
//!
//! Still to come: fMP4/MP4 packaging (GetClip, HLS, DASH).
//!
//! Rules (DESIGN.md): no tokio, no HTTP, no I/O in the parsers themselves; `read_fragments` and
//! the `tokio` feature's reader are thin loops feeding the sans-I/O reader. The default build has
//! no tokio at all.

#[cfg(feature = "tokio")]
pub mod async_read;
#[cfg(feature = "decode")]
pub mod decode;
pub mod fragment;
pub mod h26x;
pub mod mkv;

pub use fragment::{Fragment, FragmentReader, read_fragments};
pub use mkv::{
    AudioSettings, EbmlHeader, Frame, MkvError, MkvErrorKind, MkvEvent, MkvReader, ReaderLimits,
    SegmentInfo, SimpleTag, TagValue, Track, VideoSettings,
};
