//! timeshard-producer: the producer SDK and the `timeshard-put` command.
//!
//! What this crate will hold (issue "Producer SDK and CLI"): an async library (with a blocking
//! wrapper) that uploads MKV to PutMedia, keeps every fragment until the server acknowledges it
//! as PERSISTED, reconnects and resends after failures, repairs non-monotonic camera timestamps,
//! optionally buffers fragments in a crash-safe local ring buffer, signs with SigV4; a frame API
//! that writes MKV itself; a batching record producer for data streams; and the `timeshard-put`
//! CLI. It depends on `timeshard-parser`, never on the server.
