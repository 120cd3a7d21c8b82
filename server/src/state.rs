//! The state every request handler shares: configuration, the open store, metrics, the SigV4
//! verifier and the clock. One `Arc<AppState>` per server; handlers borrow it.
//!
//! [`open_store`] is the one place the server turns its configuration into storage options and
//! opens the data directory, so the storage engine's lifecycle has a single seam here.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use timeshard_storage::clock::Clock;
use timeshard_storage::options::{StoreOptions, SyncPolicy};
use timeshard_storage::{Store, StoreError};

use crate::api::sigv4::Verifier;
use tokio::sync::watch;

use crate::config::{Config, LimitsMode};
use crate::data::Kinesis;
use crate::data::limits::ShardQuotas;
use crate::data::names::Account;
use crate::data::tokens::Tokens;
use crate::metrics::HttpMetrics;
use crate::video::ingest::IngestLimits;
use crate::video::limits::ControlPlaneQuotas;

/// Opens the data directory. Blocking: call it from `spawn_blocking` or before serving.
pub(crate) fn open_store(
    dir: &Path,
    sync: SyncPolicy,
    clock: Arc<dyn Clock>,
) -> Result<Store, StoreError> {
    let opts = StoreOptions {
        sync,
        clock,
        ..StoreOptions::default()
    };
    Store::open(dir, opts)
}

/// Shared, read-mostly state of one running server.
pub struct AppState {
    config: Config,
    public_url: String,
    store: Store,
    http_metrics: Arc<HttpMetrics>,
    /// `Some` when requests must be signed.
    verifier: Option<Verifier>,
    clock: Arc<dyn Clock>,
    kinesis: Kinesis,
    /// Becomes `true` when the server starts shutting down.
    shutdown: watch::Receiver<bool>,
    /// The AWS per-shard quotas, in `--limits aws` mode only.
    shard_quotas: Option<ShardQuotas>,
    /// The AWS video control-plane call rates, in `--limits aws` mode only.
    video_quotas: Option<ControlPlaneQuotas>,
    /// PutMedia uploads in progress, one per stream.
    uploads: Arc<crate::video::ingest::Uploads>,
    /// The limits every PutMedia upload gets, from the limits mode and the PutMedia options.
    ingest_limits: IngestLimits,
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("public_url", &self.public_url)
            .field("store", &self.store)
            .field("auth", &self.verifier.is_some())
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub(crate) fn new(
        config: Config,
        public_url: String,
        store: Store,
        clock: Arc<dyn Clock>,
        token_key: [u8; 32],
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let verifier = config
            .auth_enabled()
            .then(|| Verifier::new(&config.credentials, &config.region, config.max_clock_skew));
        let kinesis = Kinesis {
            account: Account {
                region: config.region.clone(),
                account_id: config.account_id.clone(),
            },
            tokens: Tokens::new(token_key),
        };
        let shard_quotas = (config.limits == LimitsMode::Aws).then(ShardQuotas::default);
        let video_quotas = (config.limits == LimitsMode::Aws).then(ControlPlaneQuotas::default);
        let mut ingest_limits = match config.limits {
            LimitsMode::Aws => IngestLimits::aws(),
            LimitsMode::SelfHosted => IngestLimits::self_hosted(),
        }
        .with_idle_timeout(config.put_media_idle_timeout);
        if let Some(d) = config.put_media_max_connection_duration {
            ingest_limits.max_connection = Some(d);
        }
        AppState {
            ingest_limits,
            shard_quotas,
            video_quotas,
            uploads: Arc::default(),
            shutdown,
            kinesis,
            config,
            public_url,
            store,
            http_metrics: Arc::new(HttpMetrics::default()),
            verifier,
            clock,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The base URL handed to clients (GetDataEndpoint), without a trailing slash.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn http_metrics(&self) -> &HttpMetrics {
        &self.http_metrics
    }

    pub(crate) fn http_metrics_arc(&self) -> Arc<HttpMetrics> {
        self.http_metrics.clone()
    }

    /// The SigV4 verifier, when authentication is enabled.
    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }

    /// Resolves (turns `true`) when the server begins to shut down, so long-lived responses
    /// (SubscribeToShard, GetMedia) can end cleanly instead of holding shutdown up.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// The AWS per-shard quotas, when `--limits aws` asks for them.
    pub fn shard_quotas(&self) -> Option<&ShardQuotas> {
        self.shard_quotas.as_ref()
    }

    /// The AWS Kinesis Video Streams control-plane call rates, when `--limits aws` asks for
    /// them.
    pub fn video_quotas(&self) -> Option<&ControlPlaneQuotas> {
        self.video_quotas.as_ref()
    }

    /// PutMedia uploads in progress (a new upload to a stream replaces the one before).
    pub fn uploads(&self) -> &Arc<crate::video::ingest::Uploads> {
        &self.uploads
    }

    /// The limits of a PutMedia upload.
    pub fn ingest_limits(&self) -> &IngestLimits {
        &self.ingest_limits
    }

    /// Kinesis Data Streams naming and tokens.
    pub fn kinesis(&self) -> &Kinesis {
        &self.kinesis
    }

    /// Milliseconds since the Unix epoch, from the server's (injectable) clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
