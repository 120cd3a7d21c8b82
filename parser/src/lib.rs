//! timeshard-parser: media formats shared by the server, the producer SDK and consumers.
//!
//! What this crate will hold (issues "Video streams" and "Producer SDK and parser"):
//! - a sans-I/O MKV reader on ebml-iterable's `TagDecoder` push parser (feed bytes, get elements,
//!   "need more" or "invalid at byte N, element path ...") and an MKV writer into buffers;
//! - the fragment model read from GetMedia / GetMediaForFragmentList bodies: fragment metadata
//!   (the `AWS_KINESISVIDEO_*` tags), tracks and frames;
//! - H.264/H.265 helpers (AVCC <-> Annex B, SPS dimensions), fMP4/MP4 packaging;
//! - behind the `decode` feature, H.264 frames decoded to RGB.
//!
//! Rules (DESIGN.md): no tokio, no HTTP, no I/O in the parsers themselves.
