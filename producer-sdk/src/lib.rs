//! timeshard-producer: the client side of timeshard (and of Kinesis Video Streams and Kinesis
//! Data Streams).
//!
//! - [`auth`]: credentials and region the way the AWS CLI finds them; SigV4 signing.
//! - [`client`]: the signed JSON-over-HTTP client every call goes through.
//! - [`video`]: the video producer: MKV or frames in, fragments kept until PERSISTED, PutMedia
//!   sessions that reconnect and resend, an optional crash-safe on-disk buffer; and the
//!   control-plane calls it needs.
//!
//! Everything is async on tokio; [`video::blocking`] wraps the producer for threaded callers.

pub mod auth;
pub mod client;
pub mod consumer;
pub mod error;
pub mod records;
pub mod video;

pub use auth::{AuthOptions, Credentials};
pub use client::{Endpoint, HttpClient};
#[cfg(feature = "decode")]
pub use consumer::{DecodedFrames, FrameSource};
pub use consumer::{LiveFragments, MediaClient, MediaOptions, RangeFragments, StartSelector};
pub use error::Error;
pub use records::{PutTicket, RecordsConfig, RecordsProducer, RecordsStats, StreamRef};
