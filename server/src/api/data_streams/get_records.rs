//! GetRecords: records from a shard iterator's position, at most 10,000 records and 10 MiB,
//! with the iterator for the next call. At the end of a closed shard the next iterator is null
//! and the child shards are named.

use serde::{Deserialize, Serialize};
use timeshard_storage::{Position, ReadLimits};

use super::common::{
    Call, ChildShard, KinesisRecord, child_shards, encryption_type, in_range, kinesis_records,
    millis_behind, missing, store_error,
};
use super::wire;
use crate::api::{ApiError, ErrorKind, HandlerResult};
use crate::data::tokens::{ShardIterator, TOKEN_TTL_MS, TokenError};

const MAX_BYTES: usize = 10 << 20;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "ShardIterator")]
    shard_iterator: Option<String>,
    #[serde(rename = "Limit")]
    limit: Option<i64>,
}

#[derive(Debug, Serialize)]
struct Response {
    #[serde(rename = "Records")]
    records: Vec<KinesisRecord>,
    #[serde(rename = "NextShardIterator", skip_serializing_if = "Option::is_none")]
    next_shard_iterator: Option<String>,
    #[serde(rename = "MillisBehindLatest")]
    millis_behind_latest: i64,
    #[serde(rename = "ChildShards", skip_serializing_if = "Option::is_none")]
    child_shards: Option<Vec<ChildShard>>,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = wire::decode(call.enc, body)?;
    let token = req.shard_iterator.ok_or_else(|| missing("shardIterator"))?;
    let limit = in_range("limit", req.limit, 1, 10_000)?.unwrap_or(10_000) as usize;
    let tokens = &call.state.kinesis().tokens;
    let it = tokens.parse_shard_iterator(&token, call.now_ms).map_err(|e| match e {
        TokenError::Expired => ApiError::new(
            ErrorKind::ExpiredIterator,
            format!("Iterator expired. The iterator was created more than {TOKEN_TTL_MS} milliseconds ago."),
        ),
        TokenError::Invalid => ApiError::invalid_argument("Invalid ShardIterator."),
    })?;
    let info = call
        .state
        .store()
        .stream_by_id(it.stream_id)
        .ok_or_else(|| {
            ApiError::not_found("The stream of this shard iterator no longer exists.")
        })?;
    let shard = info
        .shards
        .iter()
        .find(|s| s.uid == it.shard)
        .ok_or_else(|| ApiError::not_found("The shard of this shard iterator no longer exists."))?;
    let quotas = call.state.shard_quotas();
    if quotas.is_some_and(|q| !q.try_read(it.shard, call.now_ms)) {
        return Err(ApiError::new(
            ErrorKind::ProvisionedThroughputExceeded,
            format!(
                "Rate exceeded for shard {} in stream {} under account {}.",
                crate::data::names::shard_id(shard.index),
                info.meta.name,
                call.state.kinesis().account.account_id
            ),
        ));
    }
    let batch = call
        .state
        .store()
        .read(
            it.shard,
            Position::At(it.offset),
            ReadLimits::new(limit, MAX_BYTES),
        )
        .await
        .map_err(|e| store_error(call, e))?;
    if let Some(q) = quotas {
        let bytes = batch
            .records
            .iter()
            .map(|r| r.payload.len() + r.key.len())
            .sum();
        q.charge_read(it.shard, bytes, call.now_ms);
    }
    let tail = call
        .state
        .store()
        .tail(it.shard)
        .map_err(|e| store_error(call, e))?;
    let millis_behind_latest = millis_behind(&batch, tail.last_server_ts_ms);
    let encryption = encryption_type(&info.meta);
    let next_offset = batch.next_offset;
    let records = kinesis_records(
        it.shard,
        batch,
        (encryption != "NONE").then_some(encryption.as_str()),
    );
    let at_end_of_closed = shard.closed_at.is_some_and(|end| next_offset >= end);
    let (next_shard_iterator, child_shards) = if at_end_of_closed {
        let children = child_shards(&info, shard.index);
        (None, Some(children))
    } else {
        let next = ShardIterator {
            stream_id: it.stream_id,
            shard: it.shard,
            offset: next_offset,
            issued_ms: call.now_ms,
        };
        (Some(tokens.shard_iterator(&next)), None)
    };
    let response = Response {
        records,
        next_shard_iterator,
        millis_behind_latest,
        child_shards,
    };
    Ok(match call.enc {
        wire::Encoding::Json => wire::encoded_response(call.enc, json_body(&response)),
        wire::Encoding::Cbor => wire::response(call.enc, &response),
    })
}

/// The JSON 1.1 body of a GetRecords response, written by hand: up to 10 MiB of record data per
/// call makes this the hottest encoder in the server, and through `serde_json` most of the time
/// went to base64 into a temporary `String` and then scanning it for characters to escape,
/// which base64 never contains. Only partition keys (client text) go through `serde_json`'s
/// escaping. The output is the same JSON as `Response`'s `Serialize` impl (tested below).
fn json_body(response: &Response) -> bytes::Bytes {
    // Payloads grow by 4/3 in base64; ~160 bytes of framing per record covers the rest.
    let capacity = 128
        + response
            .records
            .iter()
            .map(|r| r.data.0.len() / 3 * 4 + r.partition_key.len() + 160)
            .sum::<usize>();
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(b"{\"Records\":[");
    for (i, r) in response.records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Sequence numbers are decimal digits: nothing to escape.
        out.extend_from_slice(b"{\"SequenceNumber\":\"");
        out.extend_from_slice(r.sequence_number.as_bytes());
        out.extend_from_slice(b"\",\"ApproximateArrivalTimestamp\":");
        wire::push_json_timestamp(&mut out, r.approximate_arrival_timestamp);
        out.extend_from_slice(b",\"Data\":");
        wire::push_json_base64(&mut out, &r.data.0);
        out.extend_from_slice(b",\"PartitionKey\":");
        json_value(&mut out, &r.partition_key);
        if let Some(encryption) = &r.encryption_type {
            out.extend_from_slice(b",\"EncryptionType\":");
            json_value(&mut out, encryption);
        }
        out.push(b'}');
    }
    out.push(b']');
    if let Some(next) = &response.next_shard_iterator {
        out.extend_from_slice(b",\"NextShardIterator\":");
        json_value(&mut out, next);
    }
    out.extend_from_slice(b",\"MillisBehindLatest\":");
    json_value(&mut out, &response.millis_behind_latest);
    if let Some(children) = &response.child_shards {
        out.extend_from_slice(b",\"ChildShards\":");
        json_value(&mut out, children);
    }
    out.push(b'}');
    bytes::Bytes::from(out)
}

/// Appends a small value through `serde_json`. These are strings, integers and plain structs of
/// strings, which always serialize; writing to a `Vec` cannot fail.
fn json_value<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(out, value);
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::api::data_streams::common::HashKeyRange;
    use crate::api::data_streams::wire::{Blob, Timestamp};

    fn record(seq: &str, ts: i64, data: &[u8], key: &str, enc: Option<&str>) -> KinesisRecord {
        KinesisRecord {
            sequence_number: seq.into(),
            approximate_arrival_timestamp: Timestamp(ts),
            data: Blob(Bytes::copy_from_slice(data)),
            partition_key: key.into(),
            encryption_type: enc.map(str::to_owned),
        }
    }

    fn same_as_serde(response: &Response) {
        let fast = json_body(response);
        let slow = serde_json::to_vec(response).expect("serializes");
        // Byte-identical, not just equal as JSON values: clients see one format.
        assert_eq!(
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&slow)
        );
    }

    #[test]
    fn hand_written_json_matches_serde() {
        let awkward_key = "quote\" back\\ nl\n tab\t ctl\u{1} é 🚀";
        let data: Vec<u8> = (0..=255).collect();
        same_as_serde(&Response {
            records: vec![
                record(
                    "49590338271490256608559692538361571095921575989136588898",
                    1_441_215_410_867,
                    b"hello",
                    "pk",
                    None,
                ),
                record("1", 0, b"", awkward_key, Some("KMS")),
                record("2", -1, &data, "", None),
                record("3", 1_700_000_000_000, &data[..1], "k", None),
                record("4", 1_700_000_000_001, &data[..2], "k", None),
            ],
            next_shard_iterator: Some("AAAA+/=iterator".into()),
            millis_behind_latest: 12_345,
            child_shards: None,
        });
        same_as_serde(&Response {
            records: vec![],
            next_shard_iterator: None,
            millis_behind_latest: 0,
            child_shards: Some(vec![ChildShard {
                shard_id: "shardId-000000000002".into(),
                parent_shards: vec!["shardId-000000000000".into()],
                hash_key_range: HashKeyRange {
                    starting: "0".into(),
                    ending: "170141183460469231731687303715884105727".into(),
                },
            }]),
        });
    }
}
