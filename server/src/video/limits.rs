//! The AWS call rates of the Kinesis Video Streams control plane, enforced in `--limits aws`
//! mode only (`shared/reference/aws-protocol.md` D, from the KVS developer guide's quotas):
//!
//! | operation                          | per account | per stream |
//! |------------------------------------|-------------|------------|
//! | CreateStream                       | 50/s        | -          |
//! | DescribeStream, GetDataEndpoint    | 300/s       | 5/s        |
//! | every other control-plane operation| 50/s        | 5/s        |
//!
//! A call over either rate fails with `ClientLimitExceededException`. Token buckets hold one
//! second's worth and refill continuously from the server's (injectable) clock, like the data
//! streams' per-shard quotas (`data::limits`). The server is one account, so "per account" is
//! per server.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::data::limits::Bucket;

/// Per-stream buckets are pruned of idle entries once there are this many.
const PRUNE_ABOVE: usize = 4096;

/// The per-account rate of a control-plane operation (by its request path), or `None` for an
/// operation these quotas do not cover (media and archived media have their own).
pub fn account_rate(action: &str) -> Option<f64> {
    match action {
        "describeStream" | "getDataEndpoint" => Some(300.0),
        "createStream"
        | "listStreams"
        | "updateStream"
        | "deleteStream"
        | "updateDataRetention"
        | "tagStream"
        | "untagStream"
        | "listTagsForStream"
        | "TagResource"
        | "UntagResource"
        | "ListTagsForResource" => Some(50.0),
        _ => None,
    }
}

/// The per-stream rate of a control-plane operation, or `None` when it has none (CreateStream,
/// ListStreams, media operations).
pub fn stream_rate(action: &str) -> Option<f64> {
    match action {
        "createStream" | "listStreams" => None,
        action => account_rate(action).map(|_| 5.0),
    }
}

/// The control-plane rate state of one server.
#[derive(Debug, Default)]
pub struct ControlPlaneQuotas {
    account: Mutex<HashMap<&'static str, Bucket>>,
    streams: Mutex<HashMap<(&'static str, u64), Bucket>>,
}

impl ControlPlaneQuotas {
    /// Takes one call of `action` from the account's rate; true if it fits (or `action` has no
    /// account rate).
    pub fn try_account(&self, action: &'static str, now_ms: i64) -> bool {
        let Some(per_s) = account_rate(action) else {
            return true;
        };
        let mut map = self.account.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(action)
            .or_insert_with(|| Bucket::full(per_s, now_ms))
            .try_take(now_ms)
    }

    /// Takes one call of `action` on the stream `stream_id` from its per-stream rate; true if it
    /// fits (or `action` has no per-stream rate).
    pub fn try_stream(&self, action: &'static str, stream_id: u64, now_ms: i64) -> bool {
        let Some(per_s) = stream_rate(action) else {
            return true;
        };
        let mut map = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > PRUNE_ABOVE {
            // A bucket that has refilled completely is the same as a new one.
            map.retain(|_, b| {
                b.refill(now_ms);
                b.tokens < b.per_s
            });
        }
        map.entry((action, stream_id))
            .or_insert_with(|| Bucket::full(per_s, now_ms))
            .try_take(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_developer_guide() {
        assert_eq!(account_rate("createStream"), Some(50.0));
        assert_eq!(stream_rate("createStream"), None);
        assert_eq!(account_rate("describeStream"), Some(300.0));
        assert_eq!(stream_rate("describeStream"), Some(5.0));
        assert_eq!(account_rate("TagResource"), Some(50.0));
        assert_eq!(stream_rate("TagResource"), Some(5.0));
        assert_eq!(account_rate("getMedia"), None);
        assert_eq!(stream_rate("putMedia"), None);
    }

    #[test]
    fn per_stream_and_per_account_buckets() {
        let q = ControlPlaneQuotas::default();
        assert_eq!(
            (0..10)
                .filter(|_| q.try_stream("describeStream", 1, 0))
                .count(),
            5
        );
        // Another stream, another operation: separate buckets.
        assert!(q.try_stream("describeStream", 2, 0));
        assert!(q.try_stream("getDataEndpoint", 1, 0));
        // 200 ms bring back one call.
        assert!(q.try_stream("describeStream", 1, 200));
        assert!(!q.try_stream("describeStream", 1, 200));
        assert_eq!(
            (0..60).filter(|_| q.try_account("createStream", 0)).count(),
            50
        );
        assert!(q.try_account("getMedia", 0));
    }

    #[test]
    fn idle_stream_buckets_are_pruned() {
        let q = ControlPlaneQuotas::default();
        for id in 0..=PRUNE_ABOVE as u64 {
            assert!(q.try_stream("describeStream", id, 0));
        }
        assert!(q.try_stream("describeStream", 0, 10_000));
        let len = q.streams.lock().unwrap_or_else(|e| e.into_inner()).len();
        assert!(len < PRUNE_ABOVE, "{len}");
    }
}
