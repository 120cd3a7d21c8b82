//! PutRecord and PutRecords: route each record to the open shard whose hash-key range holds
//! MD5(PartitionKey) (or ExplicitHashKey), then append. PutRecords makes one append per shard
//! (one group commit), and answers per record, in request order.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use timeshard_storage::{NewRecord, SequenceNumber, ShardMeta, ShardUid, StreamInfo};

use super::common::{
    Call, encryption_type, missing, store_error, stream_name, usable_stream, validation,
};
use super::wire::{self, Blob};
use crate::api::{ApiError, ErrorKind, HandlerResult};
use crate::data::hashing::{parse_hash_key, partition_key_hash};
use crate::data::names::shard_id;

/// Data plus partition key of one record, at most (the classic Kinesis limit).
pub(crate) const MAX_RECORD_BYTES: usize = 1 << 20;
/// Records per PutRecords call.
const MAX_BATCH_RECORDS: usize = 500;
/// Data plus partition keys of one PutRecords call.
const MAX_BATCH_BYTES: usize = 5 << 20;

#[derive(Debug, Deserialize)]
struct PutRecordRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "Data")]
    data: Option<Blob>,
    #[serde(rename = "PartitionKey")]
    partition_key: Option<String>,
    #[serde(rename = "ExplicitHashKey")]
    explicit_hash_key: Option<String>,
}

#[derive(Debug, Serialize)]
struct PutRecordResponse {
    #[serde(rename = "ShardId")]
    shard_id: String,
    #[serde(rename = "SequenceNumber")]
    sequence_number: String,
    #[serde(rename = "EncryptionType")]
    encryption_type: String,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "Data")]
    data: Option<Blob>,
    #[serde(rename = "PartitionKey")]
    partition_key: Option<String>,
    #[serde(rename = "ExplicitHashKey")]
    explicit_hash_key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PutRecordsRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "Records")]
    records: Option<Vec<Entry>>,
}

#[derive(Debug, Serialize, Default)]
struct ResultEntry {
    #[serde(rename = "SequenceNumber", skip_serializing_if = "Option::is_none")]
    sequence_number: Option<String>,
    #[serde(rename = "ShardId", skip_serializing_if = "Option::is_none")]
    shard_id: Option<String>,
    #[serde(rename = "ErrorCode", skip_serializing_if = "Option::is_none")]
    error_code: Option<String>,
    #[serde(rename = "ErrorMessage", skip_serializing_if = "Option::is_none")]
    error_message: Option<String>,
}

#[derive(Debug, Serialize)]
struct PutRecordsResponse {
    #[serde(rename = "FailedRecordCount")]
    failed_record_count: usize,
    #[serde(rename = "Records")]
    records: Vec<ResultEntry>,
    #[serde(rename = "EncryptionType")]
    encryption_type: String,
}

/// A validated record with the shard it goes to.
struct Routed {
    shard: ShardUid,
    shard_index: u32,
    record: NewRecord,
}

/// Validates one record (`at` names it in messages, e.g. `records.3.member.data`) and finds its
/// shard.
fn route(
    info: &StreamInfo,
    at: &str,
    data: Option<Blob>,
    key: Option<String>,
    explicit: Option<String>,
) -> Result<Routed, ApiError> {
    let data = data.ok_or_else(|| missing(&format!("{at}data")))?.0;
    let key = key.ok_or_else(|| missing(&format!("{at}partitionKey")))?;
    let key_chars = key.chars().count();
    if !(1..=256).contains(&key_chars) {
        return Err(validation(
            &format!("{at}partitionKey"),
            &key,
            "Member must have length between 1 and 256",
        ));
    }
    if data.len() + key.len() > MAX_RECORD_BYTES {
        return Err(validation(
            &format!("{at}data"),
            format!("<{} bytes>", data.len()),
            &format!(
                "Member must have length less than or equal to {MAX_RECORD_BYTES} (together with the partition key)"
            ),
        ));
    }
    let hash = match explicit {
        Some(h) => parse_hash_key(&h).ok_or_else(|| {
            ApiError::invalid_argument(format!("Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {h}"))
        })?,
        None => partition_key_hash(&key),
    };
    let shard: &ShardMeta = info
        .shards
        .iter()
        .find(|s| s.is_open() && s.hash_start <= hash && hash <= s.hash_end)
        .ok_or_else(|| {
            ApiError::internal(format!(
                "no open shard of {} covers hash key {hash}",
                info.meta.name
            ))
        })?;
    Ok(Routed {
        shard: shard.uid,
        shard_index: shard.index,
        record: NewRecord {
            key: Bytes::from(key),
            payload: data,
            producer_ts_ms: None,
            flags: 0,
        },
    })
}

/// Whether a record fits its shard's write quota (always, unless `--limits aws`).
fn within_quota(call: &Call<'_>, r: &Routed) -> bool {
    let bytes = r.record.payload.len() + r.record.key.len();
    call.state
        .shard_quotas()
        .is_none_or(|q| q.try_write(r.shard, bytes, call.now_ms))
}

fn rate_exceeded(call: &Call<'_>, info: &StreamInfo, shard_index: u32) -> String {
    format!(
        "Rate exceeded for shard {} in stream {} under account {}.",
        shard_id(shard_index),
        info.meta.name,
        call.state.kinesis().account.account_id
    )
}

pub(crate) async fn handle_one(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: PutRecordRequest = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let info = usable_stream(call, &name)?;
    let routed = route(
        &info,
        "",
        req.data,
        req.partition_key,
        req.explicit_hash_key,
    )?;
    if !within_quota(call, &routed) {
        return Err(ApiError::new(
            ErrorKind::ProvisionedThroughputExceeded,
            rate_exceeded(call, &info, routed.shard_index),
        ));
    }
    let appended = call
        .state
        .store()
        .append(routed.shard, vec![routed.record])
        .await
        .map_err(|e| store_error(call, e))?;
    Ok(wire::response(
        call.enc,
        &PutRecordResponse {
            shard_id: shard_id(routed.shard_index),
            sequence_number: SequenceNumber::of_record(routed.shard, appended.first_offset)
                .to_string(),
            encryption_type: encryption_type(&info.meta),
        },
    ))
}

pub(crate) async fn handle_batch(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: PutRecordsRequest = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let entries = req.records.ok_or_else(|| missing("records"))?;
    if entries.is_empty() || entries.len() > MAX_BATCH_RECORDS {
        return Err(validation(
            "records",
            format!("<{} records>", entries.len()),
            &format!("Member must have length between 1 and {MAX_BATCH_RECORDS}"),
        ));
    }
    let info = usable_stream(call, &name)?;
    let mut routed = Vec::with_capacity(entries.len());
    let mut total = 0;
    for (i, e) in entries.into_iter().enumerate() {
        let r = route(
            &info,
            &format!("records.{}.member.", i + 1),
            e.data,
            e.partition_key,
            e.explicit_hash_key,
        )?;
        total += r.record.payload.len() + r.record.key.len();
        routed.push(r);
    }
    if total > MAX_BATCH_BYTES {
        return Err(ApiError::invalid_argument(format!(
            "Records size exceeds {MAX_BATCH_BYTES} bytes limit: the request's data and partition keys take {total} bytes."
        )));
    }
    // One append per shard, all in flight together; records keep their order within a shard.
    // Entries over their shard's quota (`--limits aws`) fail alone, as in Kinesis.
    let count = routed.len();
    let mut results: Vec<ResultEntry> = (0..count).map(|_| ResultEntry::default()).collect();
    let mut failed = 0;
    let mut by_shard: Vec<(ShardUid, u32, Vec<usize>, Vec<NewRecord>)> = Vec::new();
    for (i, r) in routed.into_iter().enumerate() {
        if !within_quota(call, &r) {
            failed += 1;
            results[i].error_code = Some("ProvisionedThroughputExceededException".into());
            results[i].error_message = Some(rate_exceeded(call, &info, r.shard_index));
            continue;
        }
        match by_shard.iter_mut().find(|(uid, ..)| *uid == r.shard) {
            Some((_, _, idx, recs)) => {
                idx.push(i);
                recs.push(r.record);
            }
            None => by_shard.push((r.shard, r.shard_index, vec![i], vec![r.record])),
        }
    }
    let mut appends = tokio::task::JoinSet::new();
    for (uid, index, idx, recs) in by_shard {
        let store = call.state.store().clone();
        appends.spawn(async move { (uid, index, idx, store.append(uid, recs).await) });
    }
    while let Some(joined) = appends.join_next().await {
        let (uid, index, idx, outcome) =
            joined.map_err(|e| ApiError::internal(format!("append task: {e}")))?;
        match outcome {
            Ok(appended) => {
                for (k, i) in idx.into_iter().enumerate() {
                    results[i].sequence_number = Some(
                        SequenceNumber::of_record(uid, appended.first_offset + k as u64)
                            .to_string(),
                    );
                    results[i].shard_id = Some(shard_id(index));
                }
            }
            Err(e) => {
                tracing::error!(shard = %uid, error = %e, "PutRecords append failed");
                for i in idx {
                    failed += 1;
                    results[i].error_code = Some("InternalFailure".into());
                    results[i].error_message = Some("Internal service failure.".into());
                }
            }
        }
    }
    Ok(wire::response(
        call.enc,
        &PutRecordsResponse {
            failed_record_count: failed,
            records: results,
            encryption_type: encryption_type(&info.meta),
        },
    ))
}
