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

/// Where a record's fields are in messages: `records.3.member.` for the third of a PutRecords
/// call (`entry` counts from 0), nothing for PutRecord. Formatted only when there is an error.
fn at(entry: Option<usize>) -> String {
    entry.map_or_else(String::new, |i| format!("records.{}.member.", i + 1))
}

/// Validates one record (`entry`: its index in a PutRecords call) and finds its shard.
fn route(
    info: &StreamInfo,
    entry: Option<usize>,
    data: Option<Blob>,
    key: Option<String>,
    explicit: Option<String>,
) -> Result<Routed, ApiError> {
    let data = data
        .ok_or_else(|| missing(&format!("{}data", at(entry))))?
        .0;
    let key = key.ok_or_else(|| missing(&format!("{}partitionKey", at(entry))))?;
    let key_chars = key.chars().count();
    if !(1..=256).contains(&key_chars) {
        return Err(validation(
            &format!("{}partitionKey", at(entry)),
            &key,
            "Member must have length between 1 and 256",
        ));
    }
    if data.len() + key.len() > MAX_RECORD_BYTES {
        return Err(validation(
            &format!("{}data", at(entry)),
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
        None,
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
        let r = route(&info, Some(i), e.data, e.partition_key, e.explicit_hash_key)?;
        total += r.record.payload.len() + r.record.key.len();
        routed.push(r);
    }
    if total > MAX_BATCH_BYTES {
        return Err(ApiError::invalid_argument(format!(
            "Records size exceeds {MAX_BATCH_BYTES} bytes limit: the request's data and partition keys take {total} bytes."
        )));
    }
    // One append per shard, all in flight together; records keep their order within a shard.
    // Entries over their shard's quota (`--limits aws`) fail, as in Kinesis. Once one entry of a
    // shard fails, every later entry of that shard in the request fails too: a smaller record
    // after a throttled one would otherwise be stored ahead of it, and producers that retry the
    // failed entries could not keep their records in order.
    let count = routed.len();
    let mut results: Vec<ResultEntry> = (0..count).map(|_| ResultEntry::default()).collect();
    let mut failed = 0;
    let mut by_shard: Vec<(ShardUid, u32, Vec<usize>, Vec<NewRecord>)> = Vec::new();
    let mut throttled: Vec<ShardUid> = Vec::new();
    for (i, r) in routed.into_iter().enumerate() {
        if throttled.contains(&r.shard) || !within_quota(call, &r) {
            if !throttled.contains(&r.shard) {
                throttled.push(r.shard);
            }
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
                let sid = shard_id(index);
                for (k, i) in idx.into_iter().enumerate() {
                    results[i].sequence_number = Some(
                        SequenceNumber::of_record(uid, appended.first_offset + k as u64)
                            .to_string(),
                    );
                    results[i].shard_id = Some(sid.clone());
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
    let response = PutRecordsResponse {
        failed_record_count: failed,
        records: results,
        encryption_type: encryption_type(&info.meta),
    };
    Ok(match call.enc {
        wire::Encoding::Json => wire::encoded_response(call.enc, json_body(&response)),
        wire::Encoding::Cbor => wire::response(call.enc, &response),
    })
}

/// The JSON 1.1 body of a PutRecords response, written by hand: at 500 entries per call and
/// hundreds of calls a second, `serde_json`'s per-field escaping showed in profiles. Sequence
/// numbers and shard ids are ASCII digits and letters with nothing to escape; error messages
/// (rare) go through `serde_json`. The same JSON as the `Serialize` impl (tested below).
fn json_body(response: &PutRecordsResponse) -> Bytes {
    let mut out = Vec::with_capacity(64 + response.records.len() * 112);
    out.extend_from_slice(b"{\"FailedRecordCount\":");
    out.extend_from_slice(response.failed_record_count.to_string().as_bytes());
    out.extend_from_slice(b",\"Records\":[");
    for (i, r) in response.records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        let mut first = true;
        for (name, value) in [
            ("SequenceNumber", &r.sequence_number),
            ("ShardId", &r.shard_id),
            ("ErrorCode", &r.error_code),
            ("ErrorMessage", &r.error_message),
        ] {
            let Some(value) = value else { continue };
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            if value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                out.push(b'"');
                out.extend_from_slice(value.as_bytes());
                out.push(b'"');
            } else {
                // Writing a string to a Vec cannot fail.
                let _ = serde_json::to_writer(&mut out, value);
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"EncryptionType\":");
    let _ = serde_json::to_writer(&mut out, &response.encryption_type);
    out.push(b'}');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_json_matches_serde() {
        let response = PutRecordsResponse {
            failed_record_count: 2,
            records: vec![
                ResultEntry {
                    sequence_number: Some("100000000000000000001000000000000000000007".into()),
                    shard_id: Some("shardId-000000000003".into()),
                    ..Default::default()
                },
                ResultEntry {
                    error_code: Some("ProvisionedThroughputExceededException".into()),
                    error_message: Some("Rate \"exceeded\" for shard\n".into()),
                    ..Default::default()
                },
                ResultEntry {
                    error_code: Some("InternalFailure".into()),
                    error_message: Some("Internal service failure.".into()),
                    ..Default::default()
                },
            ],
            encryption_type: "KMS".into(),
        };
        let fast = json_body(&response);
        let slow = serde_json::to_vec(&response).expect("serializes");
        assert_eq!(
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&slow)
        );
        let empty = PutRecordsResponse {
            failed_record_count: 0,
            records: vec![],
            encryption_type: "NONE".into(),
        };
        assert_eq!(
            json_body(&empty),
            serde_json::to_vec(&empty).expect("serializes")
        );
    }
}
