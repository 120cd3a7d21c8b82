//! timeshard-tests: end-to-end tests that run the real `timeshard` binary and drive it with
//! clients we did not write (the official AWS SDK crates, boto3, ffmpeg), see `tests/`.
//!
//! This library holds what those tests share: starting a server on `127.0.0.1:0` with a
//! temporary data directory, and waiting for it to become healthy.
