//! [`VideoProducer`](super::VideoProducer) for threaded code: the same producer on a runtime of
//! its own, with plain blocking calls.

use std::time::Duration;

use timeshard_parser::Track;

use crate::error::Error;
use crate::video::{MediaFrame, ProducerConfig, Stats, Summary};

/// A blocking video producer. Its tokio runtime (one worker thread) runs the upload.
#[derive(Debug)]
pub struct VideoProducer {
    runtime: tokio::runtime::Runtime,
    inner: super::VideoProducer,
}

impl VideoProducer {
    /// See [`super::VideoProducer::start`].
    pub fn start(config: ProducerConfig) -> Result<VideoProducer, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("timeshard-producer")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the producer's runtime", e))?;
        let inner = runtime.block_on(super::VideoProducer::start(config))?;
        Ok(VideoProducer { runtime, inner })
    }

    pub fn set_tracks(&self, tracks: Vec<Track>) -> Result<(), Error> {
        self.inner.set_tracks(tracks)
    }

    pub fn put_frame(&self, frame: &MediaFrame) -> Result<(), Error> {
        self.inner.put_frame(frame)
    }

    pub fn end_fragment(&self) {
        self.inner.end_fragment();
    }

    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// See [`super::VideoProducer::finish`].
    pub fn finish(self, timeout: Option<Duration>) -> Result<Summary, Error> {
        let VideoProducer { runtime, inner } = self;
        runtime.block_on(inner.finish(timeout))
    }
}
