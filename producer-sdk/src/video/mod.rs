//! The video producer: frames or MKV in, every fragment PERSISTED out.
//!
//! - [`fragmenter`]: frames to MKV clusters, one per key frame, with timestamp repair.
//! - [`buffer`]: the backlog of unpersisted fragments, in memory and in a crash-safe directory.
//! - [`producer`]: [`VideoProducer`], the API: set tracks, put frames, finish.
//! - [`upload`]: the PutMedia sessions, reconnects and resends; [`acks`] reads the acks.
//! - [`input`]: MKV input (files, stdin, ffmpeg) demuxed into frames.
//! - [`control`]: DescribeStream, CreateStream, GetDataEndpoint, ListFragments.
//! - [`tracks`]: tracks and AVCC frames from Annex B encoder output; AAC and H.265 tracks.
//! - [`blocking`]: the producer for threaded code.

pub mod acks;
pub mod blocking;
pub mod buffer;
pub mod control;
pub mod fragmenter;
pub mod input;
pub mod producer;
pub mod tracks;
mod upload;

pub use buffer::{BufferConfig, Dropped};
pub use fragmenter::{MediaFrame, Repair, StreamHeader};
pub use input::{InputSummary, put_mkv};
pub use producer::{Event, ProducerConfig, Stats, Summary, VideoProducer};
