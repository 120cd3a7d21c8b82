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
//!   millis behind now, continuation token, errors), the producer's own tags, tracks and frames
//!   (with each frame's absolute server and producer time); and [`read_fragments`] over any
//!   `std::io::Read`. Fed one byte at a time or in one piece, it gives the same fragments.
//! - [`h26x`]: H.264/H.265 helpers: AVCC <-> Annex B, the avcC/hvcC records (parsed and
//!   written), the parameter sets a decoder needs before a key frame, and what an SPS says:
//!   size after cropping, profile, chroma format, bit depth, interlacing.
//! - [`decode`] (feature `decode`: openh264 built from its bundled source, and `image` for JPEG):
//!   [`decode::FrameDecoder`] turns the H.264 frames of consecutive fragments into RGB pictures
//!   with absolute timestamps (every frame, every Nth, or key frames only), refusing by name the
//!   profiles openh264 cannot decode; [`decode::encode_jpeg`].
//! - [`async_read`] (feature `tokio`): [`async_read::AsyncFragments`], fragments from a tokio
//!   `AsyncRead`.
//!
//! Still to come: fMP4/MP4 packaging (GetClip, HLS, DASH).
//!
//! Rules (DESIGN.md): no tokio, no HTTP, no I/O in the parsers themselves. The default build
//! has no tokio at all; the opt-in `tokio` feature depends on tokio's `io-util` only (no
//! runtime) and does no more than read bytes into the sans-I/O [`FragmentReader`], as
//! [`read_fragments`] does for `std::io::Read` (both share one reading step).

#[cfg(feature = "tokio")]
pub mod async_read;
#[cfg(feature = "decode")]
pub mod decode;
pub mod fragment;
pub mod h26x;
pub mod mkv;

pub use fragment::{Fragment, FragmentReader, read_fragments};
pub use h26x::{AvcConfig, H26xError, H264Sps, H265Sps, HevcConfig};
pub use mkv::{
    AudioSettings, EbmlHeader, Frame, MkvError, MkvErrorKind, MkvEvent, MkvReader, ReaderLimits,
    SegmentInfo, SimpleTag, TagValue, Track, VideoSettings,
};
