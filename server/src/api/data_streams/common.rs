//! What the data streams handlers share: the call context, naming a stream by name or ARN,
//! storage errors in Kinesis terms, validation messages in AWS's wording, and the Shard shape.

use serde::{Deserialize, Serialize};
use timeshard_storage::{
    Position, ReadBatch, SequenceNumber, ShardMeta, ShardUid, StoreError, StreamInfo, StreamMeta,
    StreamStatus,
};

use super::wire::{Blob, Encoding, Timestamp};
use crate::api::{ApiError, ErrorKind};
use crate::data::names::{check_stream_name, shard_id};
use crate::state::AppState;

/// One data streams call: the server's state, the client's encoding, the time it started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub state: &'a AppState,
    pub enc: Encoding,
    pub now_ms: i64,
}

/// Stream attributes this API keeps in the catalog's `attributes` map.
pub(crate) const ATTR_STREAM_MODE: &str = "kinesis.stream_mode";
pub(crate) const ATTR_ENCRYPTION: &str = "kinesis.encryption_type";
pub(crate) const ATTR_KEY_ID: &str = "kinesis.key_id";
pub(crate) const ATTR_SHARD_METRICS: &str = "kinesis.shard_level_metrics";

/// The empty input or output of operations that take or return nothing.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Empty {}

/// Retention is whole hours on the wire.
pub(crate) const HOUR_MS: u64 = 3_600_000;

/// `1 validation error detected: Value '<value>' at '<field>' failed to satisfy constraint: <c>`,
/// as the service words it (SDKs show it as is).
pub(crate) fn validation(field: &str, value: impl std::fmt::Display, constraint: &str) -> ApiError {
    ApiError::new(
        ErrorKind::Validation,
        format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"
        ),
    )
}

pub(crate) fn missing(field: &str) -> ApiError {
    validation(field, "null", "Member must not be null")
}

/// The stream a request names by `StreamName` or `StreamARN` (both, if they agree).
pub(crate) fn stream_name(
    call: &Call<'_>,
    name: Option<&str>,
    arn: Option<&str>,
) -> Result<String, ApiError> {
    let from_arn = arn
        .map(|a| {
            call.state
                .kinesis()
                .account
                .stream_name_from_arn(a)
                .map_err(|e| ApiError::new(ErrorKind::InvalidArgument, e.0))
        })
        .transpose()?;
    match (name, from_arn) {
        (Some(n), Some(a)) if n != a => Err(ApiError::invalid_argument(format!(
            "StreamName {n:?} and StreamARN {:?} name different streams.",
            arn.unwrap_or_default()
        ))),
        (Some(n), _) => {
            check_stream_name(n).map_err(|e| {
                ApiError::new(
                    ErrorKind::Validation,
                    format!("1 validation error detected: {e}"),
                )
            })?;
            Ok(n.to_string())
        }
        (None, Some(a)) => Ok(a.to_string()),
        (None, None) => Err(ApiError::invalid_argument(
            "Either StreamName or StreamARN must be provided.",
        )),
    }
}

fn not_found(call: &Call<'_>, name: &str) -> ApiError {
    ApiError::not_found(format!(
        "Stream {name} under account {} not found.",
        call.state.kinesis().account.account_id
    ))
}

/// A data stream by name; video streams of the same store are not visible here.
pub(crate) fn stream(call: &Call<'_>, name: &str) -> Result<StreamInfo, ApiError> {
    match call.state.store().stream(name) {
        Some(info) if info.meta.kind == timeshard_storage::StreamKind::Data => Ok(info),
        _ => Err(not_found(call, name)),
    }
}

/// A stream that takes writes and reads: ACTIVE or UPDATING.
pub(crate) fn usable_stream(call: &Call<'_>, name: &str) -> Result<StreamInfo, ApiError> {
    let info = stream(call, name)?;
    match info.meta.status {
        StreamStatus::Active | StreamStatus::Updating => Ok(info),
        StreamStatus::Creating | StreamStatus::Deleting => Err(not_found(call, name)),
    }
}

pub(crate) fn shard<'i>(
    call: &Call<'_>,
    info: &'i StreamInfo,
    id: &str,
) -> Result<&'i ShardMeta, ApiError> {
    crate::data::names::parse_shard_id(id)
        .and_then(|index| info.shards.iter().find(|s| s.index == index))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Shard {id} in stream {} under account {} does not exist",
                info.meta.name,
                call.state.kinesis().account.account_id
            ))
        })
}

/// Optimistic updates of a stream give up after this many lost races.
const UPDATE_ATTEMPTS: usize = 16;

/// Changes a stream's catalog entry only if it still is what the caller decided on: `plan`
/// reads the stream and returns it, the answer, and the edit to make (none: nothing to write).
/// The edit is written at the version read; when another call changed the stream in between,
/// `plan` runs again on the new state. Returns the answer and the entry written, if any.
pub(crate) async fn update_stream_if_unchanged<T, E>(
    call: &Call<'_>,
    stream_name: &str,
    mut plan: impl FnMut() -> Result<(StreamInfo, T, Option<E>), ApiError>,
) -> Result<(T, Option<StreamMeta>), ApiError>
where
    E: FnOnce(&mut StreamMeta) -> Result<(), StoreError> + Send + 'static,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let (info, answer, edit) = plan()?;
        let Some(edit) = edit else {
            return Ok((answer, None));
        };
        match call
            .state
            .store()
            .update_stream(stream_name, Some(info.meta.version), edit)
            .await
        {
            Ok(meta) => return Ok((answer, Some(meta))),
            Err(StoreError::VersionMismatch { .. }) => continue,
            Err(e) => return Err(store_error(call, e)),
        }
    }
    Err(ApiError::new(
        ErrorKind::ResourceInUse,
        format!("Stream {stream_name} is being changed by other calls; try again."),
    ))
}

/// Storage failures in Kinesis terms.
pub(crate) fn store_error(call: &Call<'_>, e: StoreError) -> ApiError {
    match e {
        StoreError::StreamNotFound(name) => not_found(call, &name),
        StoreError::StreamExists(name) => ApiError::new(
            ErrorKind::ResourceInUse,
            format!(
                "Stream {name} under account {} already exists.",
                call.state.kinesis().account.account_id
            ),
        ),
        StoreError::ShardNotFound(_) => ApiError::not_found("The shard no longer exists."),
        StoreError::ShardClosed(_) => {
            ApiError::new(ErrorKind::ResourceInUse, "The shard is closed.")
        }
        StoreError::InvalidArgument(m) => ApiError::invalid_argument(m),
        StoreError::RecordTooLarge { len, max } => ApiError::new(
            ErrorKind::Validation,
            format!("Record of {len} bytes exceeds the limit of {max} bytes."),
        ),
        e if e.is_internal() => ApiError::internal(e.to_string()),
        e => ApiError::invalid_argument(e.to_string()),
    }
}

pub(crate) fn status(s: StreamStatus) -> &'static str {
    match s {
        StreamStatus::Creating => "CREATING",
        StreamStatus::Active => "ACTIVE",
        StreamStatus::Updating => "UPDATING",
        StreamStatus::Deleting => "DELETING",
    }
}

pub(crate) fn retention_hours(meta: &StreamMeta) -> u64 {
    meta.retention_ms / HOUR_MS
}

#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub(crate) struct StreamModeDetails {
    #[serde(rename = "StreamMode")]
    pub stream_mode: String,
}

pub(crate) fn stream_mode(meta: &StreamMeta) -> StreamModeDetails {
    StreamModeDetails {
        stream_mode: meta
            .attributes
            .get(ATTR_STREAM_MODE)
            .cloned()
            .unwrap_or_else(|| "PROVISIONED".into()),
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct EnhancedMetrics {
    #[serde(rename = "ShardLevelMetrics")]
    pub shard_level_metrics: Vec<String>,
}

pub(crate) fn shard_level_metrics(meta: &StreamMeta) -> Vec<String> {
    meta.attributes
        .get(ATTR_SHARD_METRICS)
        .map(|s| {
            s.split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn encryption_type(meta: &StreamMeta) -> String {
    meta.attributes
        .get(ATTR_ENCRYPTION)
        .cloned()
        .unwrap_or_else(|| "NONE".into())
}

pub(crate) fn key_id(meta: &StreamMeta) -> Option<String> {
    meta.attributes.get(ATTR_KEY_ID).cloned()
}

#[derive(Debug, Serialize)]
pub(crate) struct HashKeyRange {
    #[serde(rename = "StartingHashKey")]
    pub starting: String,
    #[serde(rename = "EndingHashKey")]
    pub ending: String,
}

impl HashKeyRange {
    pub fn of(shard: &ShardMeta) -> Self {
        HashKeyRange {
            starting: shard.hash_start.to_string(),
            ending: shard.hash_end.to_string(),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct SequenceNumberRange {
    #[serde(rename = "StartingSequenceNumber")]
    pub starting: String,
    #[serde(
        rename = "EndingSequenceNumber",
        skip_serializing_if = "Option::is_none"
    )]
    pub ending: Option<String>,
}

/// The `Shard` shape of DescribeStream and ListShards.
#[derive(Debug, Serialize)]
pub(crate) struct Shard {
    #[serde(rename = "ShardId")]
    pub shard_id: String,
    #[serde(rename = "ParentShardId", skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(
        rename = "AdjacentParentShardId",
        skip_serializing_if = "Option::is_none"
    )]
    pub adjacent_parent: Option<String>,
    #[serde(rename = "HashKeyRange")]
    pub hash_key_range: HashKeyRange,
    #[serde(rename = "SequenceNumberRange")]
    pub sequence_number_range: SequenceNumberRange,
}

impl Shard {
    pub fn of(meta: &ShardMeta) -> Self {
        Shard {
            shard_id: shard_id(meta.index),
            parent: meta.parent.map(shard_id),
            adjacent_parent: meta.adjacent_parent.map(shard_id),
            hash_key_range: HashKeyRange::of(meta),
            sequence_number_range: SequenceNumberRange {
                starting: meta.starting_sequence().to_string(),
                ending: meta.ending_sequence().map(|s| s.to_string()),
            },
        }
    }
}

/// Checks an optional integer parameter against its model range.
pub(crate) fn in_range(
    field: &str,
    value: Option<i64>,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ApiError> {
    match value {
        Some(v) if v < min => Err(validation(
            field,
            v,
            &format!("Member must have value greater than or equal to {min}"),
        )),
        Some(v) if v > max => Err(validation(
            field,
            v,
            &format!("Member must have value less than or equal to {max}"),
        )),
        v => Ok(v),
    }
}

/// The consumers registered on a stream (RegisterStreamConsumer), kept as a compact JSON list
/// in this attribute; see `consumers.rs`.
pub(crate) const ATTR_CONSUMERS: &str = "kinesis.consumers";

/// How many consumers are registered on a stream (DescribeStreamSummary's `ConsumerCount`).
pub(crate) fn consumer_count(meta: &StreamMeta) -> usize {
    super::consumers::registered(meta).map_or(0, |list| list.len())
}

/// The `ChildShard` shape of GetRecords and SubscribeToShard: what a closed shard was split or
/// merged into.
#[derive(Debug, Serialize)]
pub(crate) struct ChildShard {
    #[serde(rename = "ShardId")]
    pub shard_id: String,
    #[serde(rename = "ParentShards")]
    pub parent_shards: Vec<String>,
    #[serde(rename = "HashKeyRange")]
    pub hash_key_range: HashKeyRange,
}

/// The shards that `parent` (by index) closed into.
pub(crate) fn child_shards(info: &StreamInfo, parent: u32) -> Vec<ChildShard> {
    info.shards
        .iter()
        .filter(|c| c.parent == Some(parent) || c.adjacent_parent == Some(parent))
        .map(|c| ChildShard {
            shard_id: shard_id(c.index),
            parent_shards: c
                .parent
                .into_iter()
                .chain(c.adjacent_parent)
                .map(shard_id)
                .collect(),
            hash_key_range: HashKeyRange::of(c),
        })
        .collect()
}

/// A starting position as GetShardIterator (`ShardIteratorType`, `StartingSequenceNumber`,
/// `Timestamp`) and SubscribeToShard (`StartingPosition`) name it. `field` names the type field in
/// messages. A sequence number must belong to `target`.
pub(crate) fn starting_position(
    field: &str,
    kind: &str,
    sequence_number: Option<&str>,
    timestamp: Option<Timestamp>,
    target: &ShardMeta,
) -> Result<Position, ApiError> {
    let sequence = || -> Result<SequenceNumber, ApiError> {
        let s = sequence_number.ok_or_else(|| {
            ApiError::invalid_argument(format!("{kind} requires a starting sequence number."))
        })?;
        let seq: SequenceNumber = s
            .parse()
            .map_err(|_| ApiError::invalid_argument(format!("Sequence number {s} is invalid.")))?;
        if seq.shard != target.uid {
            return Err(ApiError::invalid_argument(format!(
                "Invalid sequence number {s}: it encodes another shard than {}.",
                shard_id(target.index)
            )));
        }
        Ok(seq)
    };
    Ok(match kind {
        "AT_SEQUENCE_NUMBER" => Position::At(sequence()?.at_offset()),
        "AFTER_SEQUENCE_NUMBER" => Position::At(sequence()?.after_offset()),
        "TRIM_HORIZON" => Position::Oldest,
        "LATEST" => Position::Latest,
        "AT_TIMESTAMP" => Position::AtServerTime(
            timestamp
                .ok_or_else(|| ApiError::invalid_argument("AT_TIMESTAMP requires a Timestamp."))?
                .0,
        ),
        other => {
            return Err(validation(
                field,
                other,
                "Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, AT_SEQUENCE_NUMBER, AT_TIMESTAMP, TRIM_HORIZON, LATEST]",
            ));
        }
    })
}

/// A stream that may be reshaped (resharded, re-encrypted) must be ACTIVE.
pub(crate) fn require_active(call: &Call<'_>, info: &StreamInfo) -> Result<(), ApiError> {
    if info.meta.status == StreamStatus::Active {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorKind::ResourceInUse,
        format!(
            "Stream {} under account {} not ACTIVE, instead in state {}",
            info.meta.name,
            call.state.kinesis().account.account_id,
            status(info.meta.status)
        ),
    ))
}

/// After a change Kinesis reports as UPDATING: with a status delay configured, the stream shows
/// UPDATING for that long; otherwise nothing changes.
pub(crate) async fn updating_for_a_while(call: &Call<'_>, name: &str) -> Result<(), ApiError> {
    let delay = call.state.config().stream_status_delay;
    if delay.is_zero() {
        return Ok(());
    }
    let store = call.state.store();
    let meta = store
        .update_stream(name, None, |m| {
            m.status = StreamStatus::Updating;
            Ok(())
        })
        .await
        .map_err(|e| store_error(call, e))?;
    crate::data::lifecycle::finish_later(
        store.clone(),
        name.to_string(),
        meta.id,
        delay,
        crate::data::lifecycle::Transition::Activate,
    );
    Ok(())
}

/// The `Record` shape of GetRecords and of SubscribeToShard events.
#[derive(Debug, Serialize)]
pub(crate) struct KinesisRecord {
    #[serde(rename = "SequenceNumber")]
    pub sequence_number: String,
    #[serde(rename = "ApproximateArrivalTimestamp")]
    pub approximate_arrival_timestamp: Timestamp,
    #[serde(rename = "Data")]
    pub data: Blob,
    #[serde(rename = "PartitionKey")]
    pub partition_key: String,
    #[serde(rename = "EncryptionType", skip_serializing_if = "Option::is_none")]
    pub encryption_type: Option<String>,
}

/// A read's records as Kinesis shows them; `encryption` is the stream's type unless NONE.
pub(crate) fn kinesis_records(
    shard: ShardUid,
    batch: ReadBatch,
    encryption: Option<&str>,
) -> Vec<KinesisRecord> {
    batch
        .records
        .into_iter()
        .map(|r| KinesisRecord {
            sequence_number: SequenceNumber::of_record(shard, r.offset).to_string(),
            approximate_arrival_timestamp: Timestamp(r.server_ts_ms),
            partition_key: String::from_utf8_lossy(&r.key).into_owned(),
            data: Blob(r.payload),
            encryption_type: encryption.map(str::to_owned),
        })
        .collect()
}

/// How far behind the shard's newest record a read ended (`MillisBehindLatest`): 0 when it
/// reached the tail.
pub(crate) fn millis_behind(batch: &ReadBatch, newest_ts_ms: i64) -> i64 {
    match batch.records.last() {
        Some(last) if batch.next_offset < batch.tail_offset => {
            newest_ts_ms.saturating_sub(last.server_ts_ms).max(0)
        }
        _ => 0,
    }
}
