//! The producer's error type: what went wrong, and whether trying again can help.

use std::time::Duration;

/// Errors from the producer, the records producer and the media client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration or arguments: a missing profile, a malformed endpoint.
    #[error("{0}")]
    Config(String),
    /// The connection could not be made or broke (refused, reset, timed out).
    #[error("{context}: {message}")]
    Connection { context: String, message: String },
    /// The service answered with an error.
    #[error("{operation}: {code} (HTTP {status}): {message}")]
    Service {
        operation: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The service's answer could not be understood.
    #[error("{context}: {message}")]
    Protocol { context: String, message: String },
    /// The MKV input could not be read.
    #[error("reading the MKV input: {0}")]
    Mkv(#[from] timeshard_parser::MkvError),
    /// The input violates what a stream can carry (no tracks, a track the SDK cannot write).
    #[error("{0}")]
    Input(String),
    /// Local I/O (the input, the buffer directory).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A PutMedia ERROR ack that resending cannot fix.
    #[error("the service refused fragment at timecode {timecode_ms}: error {error_id} ({meaning})")]
    Fragment {
        timecode_ms: i64,
        error_id: u32,
        meaning: &'static str,
    },
    /// The producer was closed or gave up.
    #[error("{0}")]
    Closed(String),
    /// An operation did not finish in time.
    #[error("{0} did not finish within {1:?}")]
    Timeout(String, Duration),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn connection(context: impl Into<String>, message: &dyn std::fmt::Display) -> Error {
        Error::Connection {
            context: context.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn protocol(context: impl Into<String>, message: &dyn std::fmt::Display) -> Error {
        Error::Protocol {
            context: context.into(),
            message: message.to_string(),
        }
    }

    /// The AWS error code of a service error (`ResourceNotFoundException`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the same request may succeed later: connection trouble, throttling, server errors.
    /// Credentials, validation and missing resources are not retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Connection { .. } | Error::Timeout(..) => true,
            Error::Service { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || code.contains("Throttl")
                    || code == "ProvisionedThroughputExceededException"
                    || code == "ClientLimitExceededException"
                    || code == "LimitExceededException"
            }
            _ => false,
        }
    }

    /// Whether the service refused the credentials or signature.
    pub fn is_auth(&self) -> bool {
        match self {
            Error::Service { status, code, .. } => {
                *status == 403
                    || matches!(
                        code.as_str(),
                        "NotAuthorizedException"
                            | "AccessDeniedException"
                            | "UnrecognizedClientException"
                            | "InvalidSignatureException"
                            | "MissingAuthenticationTokenException"
                            | "IncompleteSignatureException"
                            | "ExpiredTokenException"
                    )
            }
            _ => false,
        }
    }
}
