//! The listener: binds, accepts connections, serves HTTP/1.1 and h2c (prior knowledge) with
//! hyper-util's auto builder, and shuts down gracefully.
//!
//! The request path reads top to bottom: [`start`] binds and opens the store -> `accept_loop`
//! spawns one task per connection -> `serve_request` wraps the bodies for byte counting ->
//! [`crate::api::handle`] routes. Bodies are boxed streams ([`Body`]) in both directions, so a
//! PutMedia upload is read as it arrives and a GetMedia response can be produced as it is sent;
//! nothing in this layer buffers a body.
//!
//! Shutdown (SIGINT/SIGTERM in `main`, [`RunningServer::shutdown`] in tests): stop accepting,
//! ask every connection to finish its in-flight requests (HTTP/1 keep-alive off, HTTP/2
//! GOAWAY), wait up to `shutdown_grace`, abort what is left, then close the store so its writer
//! flushes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use timeshard_storage::clock::{Clock, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::config::{Config, ConfigError};
use crate::metrics::HttpMetrics;
use crate::state::{AppState, open_store};

/// Any error a body stream can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response inside the server: a boxed stream of byte
/// frames. `Unsync` because streaming bodies (channels, file readers) are rarely `Sync`, and
/// hyper needs only `Send`.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body from bytes.
pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty_body() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// How long a client may take to send a request's headers before the connection is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening the data directory {dir}: {source}")]
    OpenStore {
        dir: std::path::PathBuf,
        #[source]
        source: timeshard_storage::StoreError,
    },
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("a startup task failed: {0}")]
    Task(String),
}

/// A server running in this process. Dropping it starts a shutdown without waiting for it;
/// call [`RunningServer::shutdown`] to wait until the store is closed.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    state: Arc<AppState>,
    shutdown_tx: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// The address the listener is bound to (the real port when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL clients are given, e.g. `http://127.0.0.1:4567`.
    pub fn public_url(&self) -> &str {
        self.state.public_url()
    }

    /// The shared state (store, metrics, config) the handlers see.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops accepting, waits (up to the configured grace) for in-flight requests, closes the
    /// store, and returns once all of that is done.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            warn!("server task ended abnormally: {e}");
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}

/// Starts a server with the system clock. See [`start_with_clock`].
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Validates `config`, opens the store (on a blocking thread), binds the listener and starts
/// accepting. `clock` is the server's notion of now (SigV4 skew, timestamps) and is handed to
/// the store as well, so tests can move time.
pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, StartError> {
    config.validate()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let public_url = config.effective_public_url(local_addr)?;

    let store = {
        let dir = config.data_dir.clone();
        let sync = config.sync;
        let clock = clock.clone();
        tokio::task::spawn_blocking(move || {
            open_store(&dir, sync, clock).map_err(|source| (dir, source))
        })
        .await
        .map_err(|e| StartError::Task(e.to_string()))?
        .map_err(|(dir, source)| StartError::OpenStore { dir, source })?
    };

    if config.auth_enabled() {
        info!(keys = config.credentials.len(), region = %config.region, "SigV4 authentication enabled");
    } else if config.insecure_no_auth {
        warn!("authentication disabled by --insecure-no-auth: every request is accepted unsigned");
    } else {
        info!("no credentials configured: requests are not authenticated (loopback only)");
    }
    crate::data::lifecycle::complete_pending(&store)
        .await
        .map_err(|source| StartError::OpenStore {
            dir: config.data_dir.clone(),
            source,
        })?;
    let token_key = store
        .secret(crate::data::TOKEN_SECRET)
        .await
        .map_err(|source| StartError::OpenStore {
            dir: config.data_dir.clone(),
            source,
        })?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(AppState::new(
        config,
        public_url,
        store,
        clock,
        token_key,
        shutdown_rx.clone(),
    ));
    info!(addr = %local_addr, public_url = %state.public_url(), data_dir = %state.config().data_dir.display(), "listening");
    tokio::spawn(retention_loop(state.clone(), shutdown_rx.clone()));
    let task = tokio::spawn(accept_loop(listener, state.clone(), shutdown_rx));
    Ok(RunningServer {
        local_addr,
        state,
        shutdown_tx,
        task: Some(task),
    })
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    mut shutdown_rx: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();

    loop {
        tokio::select! {
            // Only `true` is ever sent. Also fires (with an error) when every sender is gone:
            // shut down then too.
            _ = shutdown_rx.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!(%peer, "set_nodelay: {e}");
                    }
                    let guard = state.http_metrics_arc().connection_opened();
                    let conn_state = state.clone();
                    let service = hyper::service::service_fn(move |req| {
                        let state = conn_state.clone();
                        async move { Ok::<_, Infallible>(serve_request(&state, req).await) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let conn = graceful.watch(conn);
                    connections.spawn(async move {
                        if let Err(e) = conn.await {
                            debug!(%peer, "connection ended: {e}");
                        }
                        drop(guard);
                    });
                }
                Err(e) => {
                    // Usually EMFILE/ENFILE: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
        while connections.try_join_next().is_some() {}
    }

    drop(listener);
    let grace = state.config().shutdown_grace;
    info!(
        open_connections = state.http_metrics().open_connections(),
        ?grace,
        "shutting down"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            open_connections = state.http_metrics().open_connections(),
            "in-flight requests did not finish within the shutdown grace; cutting them"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}

    let store = state.store().clone();
    if let Err(e) = tokio::task::spawn_blocking(move || store.close()).await {
        warn!("closing the store failed: {e}");
    }
    info!("stopped");
}

/// Removes expired data every `retention_interval` until shutdown. The pass itself runs on the
/// store's writer thread; a failed pass is logged and retried at the next tick.
async fn retention_loop(state: Arc<AppState>, mut shutdown_rx: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(state.config().retention_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown_rx.changed() => return,
            _ = ticks.tick() => {}
        }
        match state.store().enforce_retention().await {
            Ok(r) if r.segments_deleted > 0 => info!(
                segments = r.segments_deleted,
                bytes = r.bytes_deleted,
                index_entries = r.index_entries_deleted,
                "retention removed expired data"
            ),
            Ok(_) => {}
            Err(e) => warn!("retention pass failed: {e}"),
        }
        crate::video::ingest::prune_sessions(state.store()).await;
    }
}

/// One request through the counting wrappers and the router.
async fn serve_request(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Response<CountingBody<Body>> {
    let metrics = state.http_metrics_arc();
    let req = req.map(|body| {
        CountingBody::new(body, metrics.clone(), Direction::In)
            .map_err(|e| -> BoxError { Box::new(e) })
            .boxed_unsync()
    });
    let response = crate::api::handle(state, req).await;
    let route = response
        .extensions()
        .get::<crate::api::RouteLabel>()
        .map_or("unknown", |r| r.0);
    metrics.record_request(route, response.status().as_u16());
    response.map(|body| CountingBody::new(body, metrics, Direction::Out))
}

/// Which byte counter a [`CountingBody`] feeds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    In,
    Out,
}

/// A body that adds the length of every data frame to a metrics counter as it passes, so
/// long uploads and downloads are counted while they flow.
#[derive(Debug)]
pub struct CountingBody<B> {
    inner: B,
    metrics: Arc<HttpMetrics>,
    direction: Direction,
}

impl<B> CountingBody<B> {
    pub(crate) fn new(inner: B, metrics: Arc<HttpMetrics>, direction: Direction) -> Self {
        CountingBody {
            inner,
            metrics,
            direction,
        }
    }
}

impl<B> hyper::body::Body for CountingBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let counter = match this.direction {
                Direction::In => &this.metrics.bytes_in,
                Direction::Out => &this.metrics.bytes_out,
            };
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn counting_body_counts_streamed_frames_and_keeps_the_size_hint() {
        let metrics = Arc::new(HttpMetrics::default());
        let sized = CountingBody::new(full_body("hello"), metrics.clone(), Direction::Out);
        assert_eq!(hyper::body::Body::size_hint(&sized).exact(), Some(5));
        let bytes = sized.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
        assert_eq!(metrics.bytes_out(), 5);

        let (mut tx, channel) = http_body_util::channel::Channel::<Bytes, BoxError>::new(4);
        let mut body = CountingBody::new(channel.boxed_unsync(), metrics.clone(), Direction::In);
        tx.send_data(Bytes::from_static(b"abc")).await.unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().unwrap().len(), 3);
        // Counted as soon as the first frame passed, while the body is still open.
        assert_eq!(metrics.bytes_in(), 3);
        tx.send_data(Bytes::from_static(b"de")).await.unwrap();
        drop(tx);
        while body.frame().await.is_some() {}
        assert_eq!(metrics.bytes_in(), 5);
    }
}
