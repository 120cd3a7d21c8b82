//! timeshard-samples: example consumers built on the producer SDK's media client
//! ([`timeshard_producer::MediaClient`]) with decoded frames.
//!
//! - [`motion`]: follows a live stream and prints, per decoded frame, its absolute timestamp,
//!   its fragment number and a motion score: the shape of an ML consumer, with the model
//!   replaced by a frame difference.
//! - [`save_jpegs`]: saves the frames of a time range as JPEG files named by their timestamps.
//!
//! The programs' logic lives here as library functions so the tests can drive it; the binaries
//! in `src/bin/` only parse arguments, set up logging and a runtime, and report errors.

pub mod common;
pub mod motion;
pub mod save_jpegs;
