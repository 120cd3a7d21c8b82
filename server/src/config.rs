//! The server's configuration: one typed [`Config`], assembled from command-line flags,
//! `TIMESHARD_*` environment variables and an optional TOML file, in that order of precedence
//! (flag > env > file > default).
//!
//! clap already resolves flag > env for each option, so the command-line struct holds every
//! option as an `Option`; [`Config::resolve`] then falls back to the file and finally to the
//! default. The file is parsed into its own struct with `deny_unknown_fields`, so a misspelt key
//! is an error naming the key instead of a silently ignored setting. Validation (including the
//! refusal to listen beyond loopback without credentials) lives in [`Config::validate`] and runs
//! for every way of starting the server, in-process tests included.
//!
//! `docs/config.md` lists every option; keep it in step with this file.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use timeshard_storage::options::{SyncPolicy, parse_duration};

/// Default listen address: loopback only, a fixed port the README names.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4567";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./timeshard-data";
pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_ACCOUNT_ID: &str = "000000000000";
/// AWS's conventional SigV4 clock-skew tolerance.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_LOG: &str = "info";
/// Cap on buffered JSON request bodies. PutRecords allows 5-10 MiB of records, base64-encoded in
/// JSON (x4/3), so 16 MiB leaves headroom. PutMedia is streamed and never capped.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 16 << 20;
/// How long shutdown waits for in-flight requests before cutting them.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// AWS closes a PutMedia request that sends no data for 30 s.
pub const DEFAULT_PUT_MEDIA_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// `timeshard`: the command line.
#[derive(Debug, Parser)]
#[command(
    name = "timeshard",
    version,
    about = "Self-hosted Kinesis Video Streams and Kinesis Data Streams"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Resolve and validate the configuration, print it as TOML (secrets redacted), and exit.
    CheckConfig(ServeArgs),
}

/// Options of `timeshard serve`. Each is `None` when neither the flag nor its environment
/// variable was given, so the file and the defaults can fill in.
#[derive(Debug, Default, Clone, Args)]
pub struct ServeArgs {
    /// TOML configuration file; flags and environment variables override its values.
    #[arg(long, env = "TIMESHARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory holding all stored data [default: ./timeshard-data].
    #[arg(long, env = "TIMESHARD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address and port to listen on [default: 127.0.0.1:4567].
    #[arg(long, env = "TIMESHARD_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Durability of acknowledged writes: always | batch:<delay> (e.g. batch:5ms) | never
    /// [default: always].
    #[arg(long, env = "TIMESHARD_SYNC", value_name = "POLICY")]
    pub sync: Option<SyncPolicy>,

    /// Base URL clients are told to use (GetDataEndpoint) [default: http://<listen address>].
    #[arg(long, env = "TIMESHARD_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// AWS region the server claims to be; SigV4 credential scopes must name it
    /// [default: us-east-1].
    #[arg(long, env = "TIMESHARD_REGION")]
    pub region: Option<String>,

    /// 12-digit account id used in ARNs [default: 000000000000].
    #[arg(long, env = "TIMESHARD_ACCOUNT_ID")]
    pub account_id: Option<String>,

    /// Access key id clients sign with. Repeat (or comma-separate) for several key pairs,
    /// matched by position with --secret-access-key.
    #[arg(
        long,
        env = "TIMESHARD_ACCESS_KEY_ID",
        value_name = "AKID",
        value_delimiter = ','
    )]
    pub access_key_id: Vec<String>,

    /// Secret access key for the access key id at the same position.
    #[arg(
        long,
        env = "TIMESHARD_SECRET_ACCESS_KEY",
        value_name = "SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub secret_access_key: Vec<String>,

    /// Accept unauthenticated requests, even on a non-loopback address, and even if credentials
    /// are configured.
    #[arg(
        long,
        env = "TIMESHARD_INSECURE_NO_AUTH",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub insecure_no_auth: Option<bool>,

    /// Largest accepted difference between a request's X-Amz-Date and the server clock
    /// [default: 5m].
    #[arg(long, env = "TIMESHARD_MAX_CLOCK_SKEW", value_parser = parse_duration, value_name = "DURATION")]
    pub max_clock_skew: Option<Duration>,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`, `timeshard_server=debug`)
    /// [default: info].
    #[arg(long, env = "TIMESHARD_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Largest buffered request body of the JSON APIs, in bytes [default: 16777216].
    #[arg(long, env = "TIMESHARD_MAX_REQUEST_BYTES", value_name = "BYTES")]
    pub max_request_bytes: Option<u64>,

    /// How long shutdown waits for in-flight requests [default: 10s].
    #[arg(long, env = "TIMESHARD_SHUTDOWN_GRACE", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace: Option<Duration>,

    /// How often expired data is removed (retention and byte budgets) [default: 60s].
    #[arg(long, env = "TIMESHARD_RETENTION_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub retention_interval: Option<Duration>,

    /// Which limits apply: `self-hosted` keeps only those that protect the server; `aws` also
    /// enforces the AWS per-shard quotas [default: self-hosted].
    #[arg(long, env = "TIMESHARD_LIMITS", value_name = "MODE")]
    pub limits: Option<LimitsMode>,

    /// How long data streams stay CREATING, UPDATING or DELETING before the change completes,
    /// for testing clients' waiters [default: 0s, immediate].
    #[arg(long, env = "TIMESHARD_STREAM_STATUS_DELAY", value_parser = parse_duration, value_name = "DURATION")]
    pub stream_status_delay: Option<Duration>,

    /// How long a PutMedia upload may send no data before the server ends it; IDLE acks come
    /// every 3 s meanwhile [default: 30s].
    #[arg(long, env = "TIMESHARD_PUT_MEDIA_IDLE_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub put_media_idle_timeout: Option<Duration>,

    /// How long one PutMedia connection may last before it ends with ERROR 4003
    /// [default: 45m with --limits aws, unlimited otherwise].
    #[arg(long, env = "TIMESHARD_PUT_MEDIA_MAX_CONNECTION_DURATION", value_parser = parse_duration, value_name = "DURATION")]
    pub put_media_max_connection_duration: Option<Duration>,
}

/// A string or a list of strings in the TOML file (`access_key_id = "A"` or `= ["A", "B"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The TOML file. Keys are the long flag names with `_` for `-`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    sync: Option<String>,
    public_url: Option<String>,
    region: Option<String>,
    account_id: Option<String>,
    access_key_id: Option<OneOrMany>,
    secret_access_key: Option<OneOrMany>,
    insecure_no_auth: Option<bool>,
    max_clock_skew: Option<String>,
    log: Option<String>,
    max_request_bytes: Option<u64>,
    shutdown_grace: Option<String>,
    retention_interval: Option<String>,
    stream_status_delay: Option<String>,
    limits: Option<String>,
    put_media_idle_timeout: Option<String>,
    put_media_max_connection_duration: Option<String>,
}

/// One access key pair clients may sign with. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Credential {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Credential {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Which limits the server enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitsMode {
    /// Only limits that protect the server (request and record sizes, shard counts).
    #[default]
    SelfHosted,
    /// Also the AWS quotas, for testing against timeshard before deploying to AWS.
    Aws,
}

impl std::str::FromStr for LimitsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "self-hosted" => Ok(LimitsMode::SelfHosted),
            "aws" => Ok(LimitsMode::Aws),
            other => Err(format!(
                "unknown limits mode {other:?}: expected self-hosted or aws"
            )),
        }
    }
}

impl fmt::Display for LimitsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitsMode::SelfHosted => "self-hosted",
            LimitsMode::Aws => "aws",
        })
    }
}

/// The resolved configuration of one server.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub sync: SyncPolicy,
    /// `None`: `http://<bound address>`, known only once the listener is bound.
    pub public_url: Option<String>,
    pub region: String,
    pub account_id: String,
    pub credentials: Vec<Credential>,
    pub insecure_no_auth: bool,
    pub max_clock_skew: Duration,
    pub log: String,
    pub max_request_bytes: u64,
    pub shutdown_grace: Duration,
    pub retention_interval: Duration,
    pub stream_status_delay: Duration,
    pub limits: LimitsMode,
    /// A PutMedia upload that sends no data this long is ended.
    pub put_media_idle_timeout: Duration,
    /// `None`: the limits mode decides (45 min under `aws`, none under `self-hosted`).
    pub put_media_max_connection_duration: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: default_listen(),
            sync: SyncPolicy::Always,
            public_url: None,
            region: DEFAULT_REGION.to_owned(),
            account_id: DEFAULT_ACCOUNT_ID.to_owned(),
            credentials: Vec::new(),
            insecure_no_auth: false,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            log: DEFAULT_LOG.to_owned(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            retention_interval: DEFAULT_RETENTION_INTERVAL,
            stream_status_delay: Duration::ZERO,
            limits: LimitsMode::SelfHosted,
            put_media_idle_timeout: DEFAULT_PUT_MEDIA_IDLE_TIMEOUT,
            put_media_max_connection_duration: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4567))
}

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    ParseFile {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("config file {path}: `{key}` = {value:?}: {message}")]
    FileValue {
        path: PathBuf,
        key: &'static str,
        value: String,
        message: String,
    },
    #[error(
        "refusing to listen on {listen} without credentials: anyone who can reach it could read and \
         write every stream. Configure --access-key-id and --secret-access-key (or their \
         TIMESHARD_* variables / config keys), listen on a loopback address, or pass \
         --insecure-no-auth to accept unauthenticated requests on purpose"
    )]
    UnauthenticatedNonLoopback { listen: SocketAddr },
    #[error("{ids} access key id(s) but {secrets} secret access key(s): they pair up by position")]
    CredentialCountMismatch { ids: usize, secrets: usize },
    #[error("access key id {0:?} is invalid: it must be 1-128 characters of A-Z, a-z, 0-9 or _")]
    InvalidAccessKeyId(String),
    #[error("the secret access key for {0:?} is empty")]
    EmptySecret(String),
    #[error("access key id {0:?} is configured twice")]
    DuplicateAccessKeyId(String),
    #[error("public URL {url:?} is invalid: {reason}")]
    InvalidPublicUrl { url: String, reason: &'static str },
    #[error(
        "region {0:?} is invalid: expected lowercase letters, digits and dashes, like us-east-1"
    )]
    InvalidRegion(String),
    #[error("account id {0:?} is invalid: expected 12 digits")]
    InvalidAccountId(String),
    #[error("log filter {filter:?} is invalid: {message}")]
    InvalidLogFilter { filter: String, message: String },
    #[error("max request bytes must be at least 1024, not {0}")]
    MaxRequestBytesTooSmall(u64),
    #[error("the retention interval must be at least 1s, not {0:?}")]
    RetentionIntervalTooShort(Duration),
    #[error("{0} must be more than 0s")]
    ZeroDuration(&'static str),
}

impl Config {
    /// Builds the configuration from parsed command-line/env options and the config file they
    /// name (if any), then validates it.
    pub fn resolve(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                        path: path.clone(),
                        source,
                    })?;
                Some((path.as_path(), text))
            }
            None => None,
        };
        Config::resolve_with_file(args, file.as_ref().map(|(p, t)| (*p, t.as_str())))
    }

    /// [`Config::resolve`] with the file's contents given instead of read (for tests).
    pub fn resolve_with_file(
        args: &ServeArgs,
        file: Option<(&Path, &str)>,
    ) -> Result<Config, ConfigError> {
        let (path, file) = match file {
            Some((path, text)) => {
                let parsed: FileConfig =
                    toml::from_str(text).map_err(|e| ConfigError::ParseFile {
                        path: path.to_path_buf(),
                        source: Box::new(e),
                    })?;
                (path.to_path_buf(), parsed)
            }
            None => (PathBuf::new(), FileConfig::default()),
        };
        let file_value = |key: &'static str, value: &str, message: String| ConfigError::FileValue {
            path: path.clone(),
            key,
            value: value.to_owned(),
            message,
        };
        let defaults = Config::default();

        let listen = match (args.listen, &file.listen) {
            (Some(l), _) => l,
            (None, Some(s)) => s
                .parse()
                .map_err(|e: std::net::AddrParseError| file_value("listen", s, e.to_string()))?,
            (None, None) => defaults.listen,
        };
        let sync = match (args.sync, &file.sync) {
            (Some(p), _) => p,
            (None, Some(s)) => s.parse().map_err(|e: String| file_value("sync", s, e))?,
            (None, None) => defaults.sync,
        };
        let duration = |flag: Option<Duration>,
                        key: &'static str,
                        text: &Option<String>,
                        default| match (flag, text) {
            (Some(d), _) => Ok(d),
            (None, Some(s)) => parse_duration(s).map_err(|e| file_value(key, s, e)),
            (None, None) => Ok(default),
        };
        let max_clock_skew = duration(
            args.max_clock_skew,
            "max_clock_skew",
            &file.max_clock_skew,
            defaults.max_clock_skew,
        )?;
        let shutdown_grace = duration(
            args.shutdown_grace,
            "shutdown_grace",
            &file.shutdown_grace,
            defaults.shutdown_grace,
        )?;
        let retention_interval = duration(
            args.retention_interval,
            "retention_interval",
            &file.retention_interval,
            defaults.retention_interval,
        )?;
        let stream_status_delay = duration(
            args.stream_status_delay,
            "stream_status_delay",
            &file.stream_status_delay,
            defaults.stream_status_delay,
        )?;
        let put_media_idle_timeout = duration(
            args.put_media_idle_timeout,
            "put_media_idle_timeout",
            &file.put_media_idle_timeout,
            defaults.put_media_idle_timeout,
        )?;
        let put_media_max_connection_duration = match (
            args.put_media_max_connection_duration,
            &file.put_media_max_connection_duration,
        ) {
            (Some(d), _) => Some(d),
            (None, Some(s)) => Some(
                parse_duration(s)
                    .map_err(|e| file_value("put_media_max_connection_duration", s, e))?,
            ),
            (None, None) => defaults.put_media_max_connection_duration,
        };
        let limits = match (args.limits, &file.limits) {
            (Some(l), _) => l,
            (None, Some(text)) => text
                .parse()
                .map_err(|e: String| file_value("limits", text, e))?,
            (None, None) => defaults.limits,
        };

        // Credentials: whichever source gives any keys replaces the lower ones entirely; mixing
        // ids from the command line with secrets from the file would pair the wrong halves.
        let (ids, secrets) = if !args.access_key_id.is_empty() || !args.secret_access_key.is_empty()
        {
            (args.access_key_id.clone(), args.secret_access_key.clone())
        } else {
            (
                file.access_key_id
                    .map(OneOrMany::into_vec)
                    .unwrap_or_default(),
                file.secret_access_key
                    .map(OneOrMany::into_vec)
                    .unwrap_or_default(),
            )
        };
        if ids.len() != secrets.len() {
            return Err(ConfigError::CredentialCountMismatch {
                ids: ids.len(),
                secrets: secrets.len(),
            });
        }
        let credentials = ids
            .into_iter()
            .zip(secrets)
            .map(|(id, secret)| Credential::new(id, secret))
            .collect();

        let config = Config {
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(defaults.data_dir),
            listen,
            sync,
            public_url: args.public_url.clone().or(file.public_url),
            region: args
                .region
                .clone()
                .or(file.region)
                .unwrap_or(defaults.region),
            account_id: args
                .account_id
                .clone()
                .or(file.account_id)
                .unwrap_or(defaults.account_id),
            credentials,
            insecure_no_auth: args
                .insecure_no_auth
                .or(file.insecure_no_auth)
                .unwrap_or(false),
            max_clock_skew,
            log: args.log.clone().or(file.log).unwrap_or(defaults.log),
            max_request_bytes: args
                .max_request_bytes
                .or(file.max_request_bytes)
                .unwrap_or(defaults.max_request_bytes),
            shutdown_grace,
            retention_interval,
            stream_status_delay,
            limits,
            put_media_idle_timeout,
            put_media_max_connection_duration,
        };
        config.validate()?;
        Ok(config)
    }

    /// True when requests must carry a valid SigV4 signature.
    pub fn auth_enabled(&self) -> bool {
        !self.credentials.is_empty() && !self.insecure_no_auth
    }

    /// Checks everything that can be checked without binding or opening anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() && self.credentials.is_empty() && !self.insecure_no_auth
        {
            return Err(ConfigError::UnauthenticatedNonLoopback {
                listen: self.listen,
            });
        }
        let mut seen = HashSet::new();
        for c in &self.credentials {
            let id = &c.access_key_id;
            // The id is embedded in `Credential=<id>/<date>/...`, so `/` cannot appear in it.
            if id.is_empty()
                || id.len() > 128
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(ConfigError::InvalidAccessKeyId(id.clone()));
            }
            if c.secret_access_key.is_empty() {
                return Err(ConfigError::EmptySecret(id.clone()));
            }
            if !seen.insert(id.as_str()) {
                return Err(ConfigError::DuplicateAccessKeyId(id.clone()));
            }
        }
        if let Some(url) = &self.public_url {
            normalize_public_url(url)?;
        }
        if self.region.is_empty()
            || self.region.len() > 64
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ConfigError::InvalidRegion(self.region.clone()));
        }
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::InvalidAccountId(self.account_id.clone()));
        }
        if self.retention_interval < Duration::from_secs(1) {
            return Err(ConfigError::RetentionIntervalTooShort(
                self.retention_interval,
            ));
        }
        if self.put_media_idle_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("the PutMedia idle timeout"));
        }
        if self
            .put_media_max_connection_duration
            .is_some_and(|d| d.is_zero())
        {
            return Err(ConfigError::ZeroDuration(
                "the PutMedia connection duration limit",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(ConfigError::InvalidLogFilter {
                filter: self.log.clone(),
                message: e.to_string(),
            });
        }
        if self.max_request_bytes < 1024 {
            return Err(ConfigError::MaxRequestBytesTooSmall(self.max_request_bytes));
        }
        Ok(())
    }

    /// The base URL handed to clients: the configured one without a trailing slash, or
    /// `http://<bound>` for the address the listener actually bound.
    pub fn effective_public_url(&self, bound: SocketAddr) -> Result<String, ConfigError> {
        match &self.public_url {
            Some(url) => normalize_public_url(url),
            None => Ok(format!("http://{bound}")),
        }
    }

    /// The configuration as TOML, secrets redacted (for `timeshard check-config`).
    pub fn to_redacted_toml(&self) -> String {
        let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let list = |items: Vec<String>| {
            format!(
                "[{}]",
                items
                    .iter()
                    .map(|s| quote(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut out = String::new();
        let mut line = |k: &str, v: String| {
            out.push_str(k);
            out.push_str(" = ");
            out.push_str(&v);
            out.push('\n');
        };
        line("data_dir", quote(&self.data_dir.to_string_lossy()));
        line("listen", quote(&self.listen.to_string()));
        line("sync", quote(&self.sync.to_string()));
        if let Some(url) = &self.public_url {
            line("public_url", quote(url));
        }
        line("region", quote(&self.region));
        line("account_id", quote(&self.account_id));
        line(
            "access_key_id",
            list(
                self.credentials
                    .iter()
                    .map(|c| c.access_key_id.clone())
                    .collect(),
            ),
        );
        line(
            "secret_access_key",
            list(
                self.credentials
                    .iter()
                    .map(|_| "<redacted>".to_owned())
                    .collect(),
            ),
        );
        line("insecure_no_auth", self.insecure_no_auth.to_string());
        line(
            "max_clock_skew",
            quote(&format_duration(self.max_clock_skew)),
        );
        line("log", quote(&self.log));
        line("max_request_bytes", self.max_request_bytes.to_string());
        line(
            "shutdown_grace",
            quote(&format_duration(self.shutdown_grace)),
        );
        line(
            "retention_interval",
            quote(&format_duration(self.retention_interval)),
        );
        line(
            "stream_status_delay",
            quote(&format_duration(self.stream_status_delay)),
        );
        line("limits", quote(&self.limits.to_string()));
        line(
            "put_media_idle_timeout",
            quote(&format_duration(self.put_media_idle_timeout)),
        );
        if let Some(d) = self.put_media_max_connection_duration {
            line(
                "put_media_max_connection_duration",
                quote(&format_duration(d)),
            );
        }
        out
    }
}

/// Formats a duration in the largest unit [`parse_duration`] reads back exactly.
fn format_duration(d: Duration) -> String {
    let us = d.as_micros();
    for (unit, per) in [
        ("h", 3_600_000_000u128),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
    ] {
        if us > 0 && us.is_multiple_of(per) {
            return format!("{}{unit}", us / per);
        }
    }
    format!("{us}us")
}

/// Checks a public URL and strips a trailing `/`: GetDataEndpoint returns a bare origin
/// (`https://host[:port]`) to which clients append `/putMedia` themselves.
fn normalize_public_url(url: &str) -> Result<String, ConfigError> {
    let invalid = |reason| ConfigError::InvalidPublicUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed: http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    match parsed.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid("the scheme must be http or https")),
    }
    if parsed.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(invalid("a host is required"));
    }
    if parsed.query().is_some() {
        return Err(invalid("a query string is not allowed"));
    }
    let trimmed = url.trim_end_matches('/');
    let path_ok = parsed.path() == "/" || parsed.path().is_empty();
    if !path_ok {
        return Err(invalid(
            "a path is not allowed: clients append /putMedia etc. to the bare origin",
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn args(argv: &[&str]) -> ServeArgs {
        let mut full = vec!["timeshard", "serve"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Serve(a) => a,
            Command::CheckConfig(_) => unreachable!(),
        }
    }

    fn resolve(argv: &[&str], file: Option<&str>) -> Result<Config, ConfigError> {
        Config::resolve_with_file(&args(argv), file.map(|t| (Path::new("test.toml"), t)))
    }

    #[test]
    fn defaults() {
        let c = resolve(&[], None).unwrap();
        assert_eq!(c.listen, "127.0.0.1:4567".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("./timeshard-data"));
        assert_eq!(c.sync, SyncPolicy::Always);
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.account_id, "000000000000");
        assert_eq!(c.max_clock_skew, Duration::from_secs(300));
        assert_eq!(c.log, "info");
        assert!(c.credentials.is_empty());
        assert!(!c.auth_enabled());
        assert_eq!(
            c.effective_public_url("127.0.0.1:4567".parse().unwrap())
                .unwrap(),
            "http://127.0.0.1:4567"
        );
        assert_eq!(DEFAULT_LISTEN.parse::<SocketAddr>().unwrap(), c.listen);
    }

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let file = r#"
            listen = "127.0.0.1:9000"
            data_dir = "/var/lib/timeshard"
            sync = "batch:5ms"
            region = "eu-west-1"
            max_clock_skew = "2m"
            access_key_id = ["AKIDFILE"]
            secret_access_key = ["filesecret"]
        "#;
        let c = resolve(&[], Some(file)).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/timeshard"));
        assert_eq!(c.sync, SyncPolicy::Batch(Duration::from_millis(5)));
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.max_clock_skew, Duration::from_secs(120));
        assert_eq!(
            c.credentials,
            vec![Credential::new("AKIDFILE", "filesecret")]
        );
        assert!(c.auth_enabled());

        let c = resolve(
            &[
                "--listen=127.0.0.1:9001",
                "--sync=never",
                "--region=ap-south-1",
                "--access-key-id=AKIDFLAG",
                "--secret-access-key=flagsecret",
            ],
            Some(file),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.sync, SyncPolicy::Never);
        assert_eq!(c.region, "ap-south-1");
        // Not overridden: still from the file.
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/timeshard"));
        // Credentials from flags replace the file's entirely.
        assert_eq!(
            c.credentials,
            vec![Credential::new("AKIDFLAG", "flagsecret")]
        );
    }

    #[test]
    fn unknown_file_keys_are_rejected_by_name() {
        let err =
            resolve(&[], Some("listen = \"127.0.0.1:1\"\nlisten_addr = \"x\"\n")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::ParseFile { .. }));
        assert!(msg.contains("listen_addr"), "{msg}");
        assert!(msg.contains("test.toml"), "{msg}");
    }

    #[test]
    fn bad_file_values_name_the_key() {
        let err = resolve(&[], Some("sync = \"sometimes\"")).unwrap_err();
        assert!(
            matches!(err, ConfigError::FileValue { key: "sync", .. }),
            "{err}"
        );
        let err = resolve(&[], Some("max_clock_skew = \"5\"")).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::FileValue {
                    key: "max_clock_skew",
                    ..
                }
            ),
            "{err}"
        );
        let err = resolve(&[], Some("listen = \"localhost\"")).unwrap_err();
        assert!(
            matches!(err, ConfigError::FileValue { key: "listen", .. }),
            "{err}"
        );
        let err = resolve(&[], Some("insecure_no_auth = \"yes\"")).unwrap_err();
        assert!(matches!(err, ConfigError::ParseFile { .. }), "{err}");
    }

    #[test]
    fn bad_flag_values_are_rejected_by_clap() {
        let bad = |argv: &[&str]| {
            let mut full = vec!["timeshard", "serve"];
            full.extend_from_slice(argv);
            Cli::try_parse_from(full).unwrap_err()
        };
        bad(&["--sync=sometimes"]);
        bad(&["--listen=nowhere"]);
        bad(&["--max-clock-skew=5"]);
        bad(&["--insecure-no-auth=maybe"]);
    }

    #[test]
    fn several_credentials_as_lists_and_repeats() {
        let file = "access_key_id = [\"A1\", \"A2\"]\nsecret_access_key = [\"s1\", \"s2\"]\n";
        let c = resolve(&[], Some(file)).unwrap();
        assert_eq!(
            c.credentials,
            vec![Credential::new("A1", "s1"), Credential::new("A2", "s2")]
        );
        let single = "access_key_id = \"A1\"\nsecret_access_key = \"s1\"\n";
        assert_eq!(resolve(&[], Some(single)).unwrap().credentials.len(), 1);
        let c = resolve(
            &[
                "--access-key-id",
                "A1",
                "--access-key-id",
                "A2",
                "--secret-access-key",
                "s1,s2",
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            c.credentials,
            vec![Credential::new("A1", "s1"), Credential::new("A2", "s2")]
        );
    }

    #[test]
    fn credential_problems() {
        let err = resolve(&["--access-key-id=A1"], None).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::CredentialCountMismatch { ids: 1, secrets: 0 }
            ),
            "{err}"
        );
        let err = resolve(&["--access-key-id=A/1", "--secret-access-key=s"], None).unwrap_err();
        assert!(matches!(err, ConfigError::InvalidAccessKeyId(_)), "{err}");
        let err = resolve(&["--access-key-id=A1,A1", "--secret-access-key=s,t"], None).unwrap_err();
        assert!(matches!(err, ConfigError::DuplicateAccessKeyId(_)), "{err}");
        let err =
            resolve(&[], Some("access_key_id = \"A\"\nsecret_access_key = \"\"")).unwrap_err();
        assert!(matches!(err, ConfigError::EmptySecret(_)), "{err}");
    }

    #[test]
    fn non_loopback_requires_credentials_or_explicit_insecure() {
        let err = resolve(&["--listen=0.0.0.0:4567"], None).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::UnauthenticatedNonLoopback { .. }
        ));
        assert!(err.to_string().contains("--insecure-no-auth"), "{err}");
        let err = resolve(&["--listen=[::]:4567"], None).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::UnauthenticatedNonLoopback { .. }
        ));
        let err = resolve(&["--listen=192.0.2.10:4567"], None).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::UnauthenticatedNonLoopback { .. }
        ));

        let c = resolve(&["--listen=0.0.0.0:4567", "--insecure-no-auth"], None).unwrap();
        assert!(c.insecure_no_auth && !c.auth_enabled());
        let c = resolve(
            &[
                "--listen=0.0.0.0:4567",
                "--access-key-id=A",
                "--secret-access-key=s",
            ],
            None,
        )
        .unwrap();
        assert!(c.auth_enabled());
        let c = resolve(&["--listen=0.0.0.0:4567"], Some("insecure_no_auth = true")).unwrap();
        assert!(c.insecure_no_auth);
        // An explicit "false" on the command line beats the file's "true".
        let err = resolve(
            &["--listen=0.0.0.0:4567", "--insecure-no-auth=false"],
            Some("insecure_no_auth = true"),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::UnauthenticatedNonLoopback { .. }
        ));
        // Loopback in either family is fine without credentials.
        resolve(&["--listen=[::1]:4567"], None).unwrap();
        resolve(&["--listen=127.0.0.2:4567"], None).unwrap();
    }

    #[test]
    fn insecure_no_auth_disables_configured_credentials() {
        let c = resolve(
            &[
                "--access-key-id=A",
                "--secret-access-key=s",
                "--insecure-no-auth",
            ],
            None,
        )
        .unwrap();
        assert!(!c.auth_enabled());
    }

    #[test]
    fn retention_interval_from_flag_and_file_and_its_floor() {
        assert_eq!(
            resolve(&[], None).unwrap().retention_interval,
            DEFAULT_RETENTION_INTERVAL
        );
        let c = resolve(&["--retention-interval=5m"], None).unwrap();
        assert_eq!(c.retention_interval, Duration::from_secs(300));
        let c = resolve(&[], Some("retention_interval = \"30s\"")).unwrap();
        assert_eq!(c.retention_interval, Duration::from_secs(30));
        let err = resolve(&["--retention-interval=10ms"], None).unwrap_err();
        assert!(
            matches!(err, ConfigError::RetentionIntervalTooShort(_)),
            "{err}"
        );
    }

    #[test]
    fn put_media_times_from_flag_and_file_and_never_zero() {
        let c = resolve(&[], None).unwrap();
        assert_eq!(c.put_media_idle_timeout, Duration::from_secs(30));
        assert_eq!(c.put_media_max_connection_duration, None);
        let c = resolve(
            &[
                "--put-media-idle-timeout=2s",
                "--put-media-max-connection-duration=10m",
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.put_media_idle_timeout, Duration::from_secs(2));
        assert_eq!(
            c.put_media_max_connection_duration,
            Some(Duration::from_secs(600))
        );
        let file = "put_media_idle_timeout = \"1m\"\nput_media_max_connection_duration = \"5s\"\n";
        let c = resolve(&[], Some(file)).unwrap();
        assert_eq!(c.put_media_idle_timeout, Duration::from_secs(60));
        assert_eq!(
            c.put_media_max_connection_duration,
            Some(Duration::from_secs(5))
        );
        let back = resolve(&[], Some(&c.to_redacted_toml())).unwrap();
        assert_eq!(back.put_media_idle_timeout, c.put_media_idle_timeout);
        assert_eq!(
            back.put_media_max_connection_duration,
            c.put_media_max_connection_duration
        );
        for bad in [
            "--put-media-idle-timeout=0s",
            "--put-media-max-connection-duration=0ms",
        ] {
            let err = resolve(&[bad], None).unwrap_err();
            assert!(matches!(err, ConfigError::ZeroDuration(_)), "{bad}: {err}");
        }
        let err = resolve(&[], Some("put_media_idle_timeout = \"30\"")).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::FileValue {
                    key: "put_media_idle_timeout",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn public_url_rules() {
        let bound = "127.0.0.1:1".parse().unwrap();
        let c = resolve(&["--public-url=https://kvs.example.com/"], None).unwrap();
        assert_eq!(
            c.effective_public_url(bound).unwrap(),
            "https://kvs.example.com"
        );
        let c = resolve(&["--public-url=http://10.0.0.5:4567"], None).unwrap();
        assert_eq!(
            c.effective_public_url(bound).unwrap(),
            "http://10.0.0.5:4567"
        );
        for bad in [
            "kvs.example.com",
            "ftp://x",
            "http://x/path",
            "http://x/?a=b",
            "http://",
        ] {
            let err = resolve(&["--public-url", bad], None).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidPublicUrl { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn region_account_log_and_size_are_checked() {
        assert!(matches!(
            resolve(&["--region=US East"], None),
            Err(ConfigError::InvalidRegion(_))
        ));
        assert!(matches!(
            resolve(&["--account-id=123"], None),
            Err(ConfigError::InvalidAccountId(_))
        ));
        assert!(matches!(
            resolve(&["--log=info,=[["], None),
            Err(ConfigError::InvalidLogFilter { .. })
        ));
        assert!(matches!(
            resolve(&["--max-request-bytes=10"], None),
            Err(ConfigError::MaxRequestBytesTooSmall(10))
        ));
        resolve(&["--log=warn,timeshard_server=debug"], None).unwrap();
    }

    #[test]
    fn redacted_toml_round_trips_and_hides_secrets() {
        let c = resolve(
            &[
                "--access-key-id=AKID",
                "--secret-access-key=topsecret",
                "--sync=batch:5ms",
                "--max-clock-skew=90s",
            ],
            None,
        )
        .unwrap();
        let text = c.to_redacted_toml();
        assert!(!text.contains("topsecret"), "{text}");
        assert!(text.contains("<redacted>"));
        assert!(!format!("{c:?}").contains("topsecret"));
        // Everything but the secret reads back identically.
        let back = resolve(&[], Some(&text.replace("<redacted>", "x"))).unwrap();
        assert_eq!(back.listen, c.listen);
        assert_eq!(back.sync, c.sync);
        assert_eq!(back.max_clock_skew, c.max_clock_skew);
        assert_eq!(back.credentials[0].access_key_id, "AKID");
    }

    #[test]
    fn durations_format_in_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::ZERO), "0us");
    }
}
