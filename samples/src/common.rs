//! What both programs share: the connection flags, time parsing and formatting, logging.

use std::io::IsTerminal as _;

use chrono::{DateTime, SecondsFormat, Utc};
use timeshard_producer::auth::AuthOptions;
use timeshard_producer::{Credentials, MediaClient};

/// Where the stream is and how to sign for it. Credentials and region are optional: without
/// them they come from the environment and the AWS shared files, as for the AWS CLI
/// ([`timeshard_producer::auth::resolve`]); with none found, requests go unsigned, which a
/// timeshard server started without credentials accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The server's endpoint URL (http://host:port).
    #[arg(long, env = "TIMESHARD_ENDPOINT")]
    pub endpoint: String,
    /// The video stream to read.
    #[arg(long)]
    pub stream: String,
    /// AWS region for signing (default: AWS_REGION, the profile's, else us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile from ~/.aws/credentials and ~/.aws/config.
    #[arg(long)]
    pub profile: Option<String>,
    /// Access key id (instead of the environment or a profile).
    #[arg(long, requires = "secret_access_key")]
    pub access_key_id: Option<String>,
    /// Secret access key, with --access-key-id.
    #[arg(long, requires = "access_key_id")]
    pub secret_access_key: Option<String>,
}

impl Connection {
    /// The media client for this stream.
    pub fn client(&self) -> anyhow::Result<MediaClient> {
        let auth = AuthOptions {
            credentials: self
                .access_key_id
                .as_ref()
                .zip(self.secret_access_key.as_ref())
                .map(|(id, secret)| Credentials::new(id, secret)),
            profile: self.profile.clone(),
            region: self.region.clone(),
        };
        Ok(MediaClient::connect(&self.endpoint, &self.stream, &auth)?)
    }
}

/// Epoch milliseconds as RFC 3339 in UTC with milliseconds: `2024-05-01T12:00:00.040Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => format!("{ms}ms"),
    }
}

/// A time given on the command line: RFC 3339 (`2024-05-01T12:00:00Z`, any offset, fractions
/// allowed) or epoch milliseconds. Returns epoch milliseconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            format!("'{text}' is neither RFC 3339 (2024-05-01T12:00:00Z) nor epoch ms: {e}")
        })
}

/// Logs to stderr, `info` by default (`TIMESHARD_LOG` overrides, e.g. `debug`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIMESHARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// A small multi-threaded runtime: the work is one download and one decoder thread.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(rfc3339_ms(1_714_564_800_040), "2024-05-01T12:00:00.040Z");
        assert_eq!(
            parse_time("2024-05-01T12:00:00.040Z"),
            Ok(1_714_564_800_040)
        );
        assert_eq!(
            parse_time("2024-05-01T14:00:00+02:00"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(parse_time("1714564800040"), Ok(1_714_564_800_040));
        assert!(parse_time("yesterday").is_err());
    }
}
