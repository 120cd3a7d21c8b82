//! The Kinesis Data Streams API family: JSON 1.1 over `POST /`, the operation named by
//! `X-Amz-Target: Kinesis_20131202.<Operation>`.
//!
//! [`dispatch`] is one `match` on the operation name. Each implemented operation gets an arm
//! calling its own module (`api/data_streams/<operation>.rs`, holding the request/response types
//! and validation), placed before the catch-all arms. An operation the Kinesis API has but this
//! server does not implement answers `UnknownOperationException`, which is what the JSON 1.1
//! protocol prescribes for a target the service does not know; the message says which case it
//! is.
//!
//! Requests and responses are JSON 1.1 or CBOR (`application/x-amz-cbor-1.1`, the Java SDK's
//! default), answered in the encoding the client used ([`wire`]); errors likewise, through the
//! JSON 1.1 table in [`crate::api::error::aws_json_11`]. Domain logic (hashing, names, tokens)
//! lives in [`crate::data`]; [`common`] holds what the handlers share.

pub(crate) mod common;
mod consumers;
mod create_stream;
mod delete_stream;
mod describe_stream;
mod get_records;
mod get_shard_iterator;
mod list_shards;
mod list_streams;
mod put_records;
mod resharding;
mod settings;
mod subscribe_to_shard;
mod tags;
mod update_stream_mode;

pub mod eventstream;
pub mod wire;

use http::request::Parts;

use self::common::Call;

use crate::api::{ApiError, ErrorKind, HandlerResult, RequestContext};
use crate::state::AppState;

/// The `X-Amz-Target` prefix of every Kinesis Data Streams operation.
pub const TARGET_PREFIX: &str = "Kinesis_20131202.";

macro_rules! operations {
    ($($op:literal),* $(,)?) => {
        /// Every operation of the Kinesis API (botocore `kinesis` model), with its metrics label.
        const OPERATIONS: &[(&str, &str)] = &[$(($op, concat!("kinesis:", $op))),*];
    };
}

operations!(
    "AddTagsToStream",
    "CreateStream",
    "DecreaseStreamRetentionPeriod",
    "DeleteResourcePolicy",
    "DeleteStream",
    "DeregisterStreamConsumer",
    "DescribeLimits",
    "DescribeStream",
    "DescribeStreamConsumer",
    "DescribeStreamSummary",
    "DisableEnhancedMonitoring",
    "EnableEnhancedMonitoring",
    "GetRecords",
    "GetResourcePolicy",
    "GetShardIterator",
    "IncreaseStreamRetentionPeriod",
    "ListShards",
    "ListStreamConsumers",
    "ListStreams",
    "ListTagsForResource",
    "ListTagsForStream",
    "MergeShards",
    "PutRecord",
    "PutRecords",
    "PutResourcePolicy",
    "RegisterStreamConsumer",
    "RemoveTagsFromStream",
    "SplitShard",
    "StartStreamEncryption",
    "StopStreamEncryption",
    "SubscribeToShard",
    "TagResource",
    "UntagResource",
    "UpdateShardCount",
    "UpdateStreamMode",
);

/// The operation name of a target, if it is a Kinesis target at all.
fn operation(target: Option<&str>) -> Option<&str> {
    target?.strip_prefix(TARGET_PREFIX)
}

/// The metrics label for a target: `kinesis:<Operation>` for a real Kinesis operation,
/// `kinesis:unknown` for anything a client made up (so labels stay a closed set).
pub fn route_label(target: Option<&str>) -> &'static str {
    operation(target)
        .and_then(|op| OPERATIONS.iter().find(|(name, _)| *name == op))
        .map_or("kinesis:unknown", |(_, label)| label)
}

fn is_kinesis_operation(op: &str) -> bool {
    OPERATIONS.iter().any(|(name, _)| *name == op)
}

/// Runs one authenticated data streams request whose body has been read.
pub(crate) async fn dispatch(
    state: &AppState,
    _ctx: &RequestContext,
    target: Option<&str>,
    parts: &Parts,
    body: &[u8],
) -> HandlerResult {
    let Some(op) = operation(target) else {
        let message = match target {
            None => {
                "Missing X-Amz-Target header: expected Kinesis_20131202.<Operation>.".to_owned()
            }
            Some(t) => format!("Unknown operation: X-Amz-Target {t:?}."),
        };
        return Err(ApiError::new(ErrorKind::UnknownOperation, message));
    };
    let call = Call {
        state,
        enc: wire::Encoding::from_content_type(
            parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        ),
        now_ms: state.now_ms(),
    };
    match op {
        "CreateStream" => create_stream::handle(&call, body).await,
        "DeleteStream" => delete_stream::handle(&call, body).await,
        "DescribeStream" => describe_stream::handle(&call, body).await,
        "DescribeStreamSummary" => describe_stream::handle_summary(&call, body).await,
        "ListStreams" => list_streams::handle(&call, body).await,
        "ListShards" => list_shards::handle(&call, body).await,
        "PutRecord" => put_records::handle_one(&call, body).await,
        "PutRecords" => put_records::handle_batch(&call, body).await,
        "GetShardIterator" => get_shard_iterator::handle(&call, body).await,
        "GetRecords" => get_records::handle(&call, body).await,
        "SplitShard" => resharding::split(&call, body).await,
        "MergeShards" => resharding::merge(&call, body).await,
        "UpdateShardCount" => resharding::update_count(&call, body).await,
        "UpdateStreamMode" => update_stream_mode::handle(&call, body).await,
        "IncreaseStreamRetentionPeriod" => settings::increase_retention(&call, body).await,
        "DecreaseStreamRetentionPeriod" => settings::decrease_retention(&call, body).await,
        "StartStreamEncryption" => settings::start_encryption(&call, body).await,
        "StopStreamEncryption" => settings::stop_encryption(&call, body).await,
        "EnableEnhancedMonitoring" => settings::enable_monitoring(&call, body).await,
        "DisableEnhancedMonitoring" => settings::disable_monitoring(&call, body).await,
        "DescribeLimits" => settings::describe_limits(&call, body).await,
        "AddTagsToStream" => tags::add_to_stream(&call, body).await,
        "RemoveTagsFromStream" => tags::remove_from_stream(&call, body).await,
        "ListTagsForStream" => tags::list_for_stream(&call, body).await,
        "TagResource" => tags::tag_resource(&call, body).await,
        "UntagResource" => tags::untag_resource(&call, body).await,
        "ListTagsForResource" => tags::list_for_resource(&call, body).await,
        "RegisterStreamConsumer" => consumers::register(&call, body).await,
        "DescribeStreamConsumer" => consumers::describe(&call, body).await,
        "ListStreamConsumers" => consumers::list(&call, body).await,
        "DeregisterStreamConsumer" => consumers::deregister(&call, body).await,
        "SubscribeToShard" => subscribe_to_shard::handle(&call, body).await,
        op if is_kinesis_operation(op) => Err(ApiError::new(
            ErrorKind::UnknownOperation,
            format!("{TARGET_PREFIX}{op} is not implemented by this server yet."),
        )),
        op => Err(ApiError::new(
            ErrorKind::UnknownOperation,
            format!("Unknown operation: {TARGET_PREFIX}{op}."),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_a_closed_set() {
        assert_eq!(
            route_label(Some("Kinesis_20131202.PutRecords")),
            "kinesis:PutRecords"
        );
        assert_eq!(
            route_label(Some("Kinesis_20131202.ListShards")),
            "kinesis:ListShards"
        );
        assert_eq!(
            route_label(Some("Kinesis_20131202.Bogus")),
            "kinesis:unknown"
        );
        assert_eq!(
            route_label(Some("DynamoDB_20120810.PutItem")),
            "kinesis:unknown"
        );
        assert_eq!(
            route_label(Some("Kinesis_20131202.putrecords")),
            "kinesis:unknown"
        );
        assert_eq!(route_label(None), "kinesis:unknown");
        for (name, label) in OPERATIONS {
            assert_eq!(label.strip_prefix("kinesis:"), Some(*name));
        }
    }

    #[test]
    fn operation_needs_the_exact_prefix() {
        assert_eq!(
            operation(Some("Kinesis_20131202.ListStreams")),
            Some("ListStreams")
        );
        assert_eq!(operation(Some("Kinesis_20131203.ListStreams")), None);
        assert_eq!(operation(Some("ListStreams")), None);
    }
}
