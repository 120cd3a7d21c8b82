//! Stream status transitions: CREATING -> ACTIVE, UPDATING -> ACTIVE, DELETING -> gone, for data
//! and video streams alike (both work on catalog names; a video stream's is `video/<name>`).
//!
//! By default every change completes at once. With a status delay (`--stream-status-delay`),
//! the stream shows the intermediate status for that long, so clients can exercise their
//! waiters. A transition still pending when the server stops is completed at the next start.

use std::time::Duration;

use timeshard_storage::{Store, StoreError, StreamStatus};

/// Where a stream in an intermediate status ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Activate,
    Delete,
}

/// Completes `transition` for the stream `name` (of id `id`) after `delay`. A stream deleted and
/// re-created under the same name in the meantime is left alone.
pub fn finish_later(store: Store, name: String, id: u64, delay: Duration, transition: Transition) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if store.stream(&name).map(|i| i.meta.id) != Some(id) {
            return;
        }
        let result = match transition {
            Transition::Activate => store.update_stream(&name, None, activate).await.map(|_| ()),
            Transition::Delete => store.delete_stream(&name).await,
        };
        if let Err(e) = result {
            tracing::warn!(stream = %name, ?transition, error = %e, "stream status change failed");
        }
    });
}

fn activate(meta: &mut timeshard_storage::StreamMeta) -> Result<(), StoreError> {
    meta.status = StreamStatus::Active;
    Ok(())
}

/// Completes the transitions a previous run left pending, on streams of every kind.
pub async fn complete_pending(store: &Store) -> Result<(), StoreError> {
    for meta in store.list_streams() {
        match meta.status {
            StreamStatus::Creating | StreamStatus::Updating => {
                store
                    .update_stream(&meta.name, Some(meta.version), activate)
                    .await?;
            }
            StreamStatus::Deleting => store.delete_stream(&meta.name).await?,
            StreamStatus::Active => {}
        }
    }
    Ok(())
}
