//! Kinesis Video Streams behaviour on the shard engine, free of HTTP and wire encodings.
//!
//! A video stream is a catalog stream of kind [`StreamKind::Video`](timeshard_storage::StreamKind)
//! with one shard covering the whole key range, whose records are fragments. Video and data
//! streams are separate namespaces, as in AWS (a video stream `cam1` and a data stream `cam1`
//! coexist), while the storage catalog is keyed by one name; so a video stream lives under the
//! catalog name `video/<name>` (`/` cannot appear in either API's stream names). [`stream`] is
//! the one place that knows this mapping, the ARN format and the attributes a video stream keeps:
//! everything else (the control plane in `api/video/`, ingest, GetMedia, archived media) goes
//! through [`VideoStream`].
//!
//! - [`stream`]: catalog naming, ARNs, [`VideoStream`] (the view of one stream) and its lookup by
//!   `StreamName` or `StreamARN`.
//! - [`limits`]: the AWS control-plane call rates, enforced in `--limits aws` mode only.

pub mod fragment;
pub mod ingest;
pub mod limits;
pub mod media;
pub mod stream;

pub use self::stream::{VideoStream, catalog_name};
