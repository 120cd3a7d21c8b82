//! The engine's error type. The server maps these onto its own `ErrorKind` at the edge.

use std::io;
use std::path::PathBuf;

use crate::seqno::ShardUid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream {0:?} not found")]
    StreamNotFound(String),
    #[error("stream {0:?} already exists")]
    StreamExists(String),
    #[error("shard {0} not found")]
    ShardNotFound(ShardUid),
    #[error("shard {0} is closed to appends")]
    ShardClosed(ShardUid),
    #[error("shard {0} has a record in progress; appends wait until it is committed or aborted")]
    ShardBusy(ShardUid),
    #[error("stream {stream:?} is at version {actual}, not {expected}")]
    VersionMismatch {
        stream: String,
        expected: u64,
        actual: u64,
    },
    #[error("record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { len: u64, max: u64 },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("I/O error {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("corrupt data in {path} at byte {pos}: {what}")]
    Corrupt {
        path: PathBuf,
        pos: u64,
        what: String,
    },
    #[error("catalog: {0}")]
    Catalog(String),
    #[error("data directory {0} is in use by another process")]
    Locked(PathBuf),
    #[error(
        "shard {0} stopped accepting appends after a failed fsync; restart the server to recover it"
    )]
    Poisoned(ShardUid),
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Io { context, source }
    }

    /// Whether the failure is the disk's (or the machine's), not the caller's.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            StoreError::Io { .. }
                | StoreError::Corrupt { .. }
                | StoreError::Catalog(_)
                | StoreError::Locked(_)
                | StoreError::Poisoned(_)
                | StoreError::Closed
        )
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Catalog(e.to_string())
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Catalog(format!("catalog row does not decode: {e}"))
    }
}
