//! Kinesis Data Streams at the wire level, with clients we write ourselves: a CBOR round trip
//! (what the Java SDK speaks; the Rust SDK speaks JSON, see the timeshard-tests package), and
//! bad input, each answered with its own error while the server stays healthy and other streams
//! are untouched.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use ciborium::value::Value;
use http::{Response, StatusCode};
use support::*;

const CBOR: &str = "application/x-amz-cbor-1.1";
const JSON: &str = "application/x-amz-json-1.1";

async fn call(addr: SocketAddr, content_type: &str, op: &str, body: &[u8]) -> Response<Bytes> {
    let target = format!("Kinesis_20131202.{op}");
    send(
        addr,
        unsigned(
            addr,
            "POST",
            "/",
            &[("content-type", content_type), ("x-amz-target", &target)],
            body,
        ),
    )
    .await
}

async fn json_call(addr: SocketAddr, op: &str, body: serde_json::Value) -> Response<Bytes> {
    call(addr, JSON, op, body.to_string().as_bytes()).await
}

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    )
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    match v {
        Value::Map(m) => m
            .iter()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {key} in {v:?}")),
        _ => panic!("not a map: {v:?}"),
    }
}

fn decode(r: &Response<Bytes>) -> Value {
    ciborium::from_reader(&r.body()[..]).unwrap_or_else(|e| panic!("{e}: {:?}", r.body()))
}

#[tokio::test]
async fn cbor_put_records_and_get_records_round_trip() {
    let (server, _dir) = start_server(false, |_| {}).await;
    let addr = server.local_addr();
    let r = call(
        addr,
        CBOR,
        "CreateStream",
        &cbor(&map(vec![
            ("StreamName", Value::Text("c".into())),
            ("ShardCount", Value::Integer(1.into())),
        ])),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.body());
    assert_eq!(r.headers()["content-type"], CBOR);

    let payloads: Vec<Vec<u8>> = vec![b"\x00\x01binary\xff".to_vec(), vec![7u8; 3000], Vec::new()];
    let records = Value::Array(
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                map(vec![
                    ("Data", Value::Bytes(p.clone())),
                    ("PartitionKey", Value::Text(format!("k{i}"))),
                ])
            })
            .collect(),
    );
    let r = call(
        addr,
        CBOR,
        "PutRecords",
        &cbor(&map(vec![
            ("StreamName", Value::Text("c".into())),
            ("Records", records),
        ])),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let put = decode(&r);
    assert_eq!(field(&put, "FailedRecordCount"), &Value::Integer(0.into()));

    let r = call(
        addr,
        CBOR,
        "GetShardIterator",
        &cbor(&map(vec![
            ("StreamName", Value::Text("c".into())),
            ("ShardId", Value::Text("shardId-000000000000".into())),
            ("ShardIteratorType", Value::Text("TRIM_HORIZON".into())),
        ])),
    )
    .await;
    let iterator = field(&decode(&r), "ShardIterator").clone();
    let r = call(
        addr,
        CBOR,
        "GetRecords",
        &cbor(&map(vec![("ShardIterator", iterator)])),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let got = decode(&r);
    let Value::Array(records) = field(&got, "Records") else {
        panic!("{got:?}")
    };
    assert_eq!(records.len(), payloads.len());
    for (record, payload) in records.iter().zip(&payloads) {
        // Blobs come back as byte strings, timestamps as tag 1 with epoch milliseconds.
        assert_eq!(field(record, "Data"), &Value::Bytes(payload.clone()));
        match field(record, "ApproximateArrivalTimestamp") {
            Value::Tag(1, inner) => {
                let ms: i128 = inner.as_integer().unwrap().into();
                assert!(ms > 1_600_000_000_000, "{ms} is not epoch milliseconds");
            }
            other => panic!("timestamp is {other:?}"),
        }
    }
    // Errors come back in CBOR too.
    let r = call(
        addr,
        CBOR,
        "DescribeStream",
        &cbor(&map(vec![("StreamName", Value::Text("missing".into()))])),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        field(&decode(&r), "__type"),
        &Value::Text("ResourceNotFoundException".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_specific_errors_and_harms_nothing() {
    let (server, _dir) = start_server(false, |c| c.max_request_bytes = 64 << 20).await;
    let addr = server.local_addr();
    let r = json_call(
        addr,
        "CreateStream",
        serde_json::json!({"StreamName": "ok", "ShardCount": 2}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = json_call(
        addr,
        "PutRecord",
        serde_json::json!({"StreamName": "ok", "Data": "AAEC", "PartitionKey": "p"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);

    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("PutRecord", b"{\"StreamName\": \"ok\",".to_vec(), "SerializationException", "Invalid JSON"),
        ("PutRecord", br#"{"StreamName": 5}"#.to_vec(), "SerializationException", "StreamName"),
        ("PutRecord", br#"{"StreamName": "ok", "Data": "!!not base64!!", "PartitionKey": "p"}"#.to_vec(), "SerializationException", "Data"),
        ("PutRecord", br#"{"StreamName": "ok", "PartitionKey": "p"}"#.to_vec(), "ValidationException", "data"),
        ("PutRecord", br#"{"StreamName": "ok", "Data": "AA=="}"#.to_vec(), "ValidationException", "partitionKey"),
        ("CreateStream", br#"{"StreamName": "bad name!", "ShardCount": 1}"#.to_vec(), "ValidationException", "streamName"),
        ("CreateStream", br#"{"StreamName": "x", "ShardCount": 0}"#.to_vec(), "ValidationException", "shardCount"),
        ("PutRecords", br#"{"StreamName": "ok", "Records": []}"#.to_vec(), "ValidationException", "records"),
        ("GetRecords", br#"{"ShardIterator": "AAAA"}"#.to_vec(), "InvalidArgumentException", "Invalid ShardIterator"),
        ("GetShardIterator", br#"{"StreamName": "ok", "ShardId": "shardId-000000000009", "ShardIteratorType": "LATEST"}"#.to_vec(), "ResourceNotFoundException", "shardId-000000000009"),
        ("GetShardIterator", br#"{"StreamName": "ok", "ShardId": "shardId-000000000000", "ShardIteratorType": "SIDEWAYS"}"#.to_vec(), "ValidationException", "shardIteratorType"),
        ("Frobnicate", b"{}".to_vec(), "UnknownOperationException", "Frobnicate"),
    ];
    for (op, body, kind, mentions) in cases {
        let r = call(addr, JSON, op, &body).await;
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "{op} {}",
            String::from_utf8_lossy(&body)
        );
        let v = json(&r);
        assert_eq!(
            v["__type"],
            kind,
            "{op} {} -> {v}",
            String::from_utf8_lossy(&body)
        );
        let message = v["message"].as_str().unwrap();
        assert!(
            message.contains(mentions),
            "{op}: {message:?} should mention {mentions:?}"
        );
    }

    // A record just over 1 MiB (data plus partition key).
    let data = vec![b'x'; (1 << 20) - 2];
    let body = serde_json::json!({
        "StreamName": "ok",
        "PartitionKey": "pkk",
        "Data": base64_encode(&data),
    });
    let r = json_call(addr, "PutRecord", body).await;
    assert_eq!(json(&r)["__type"], "ValidationException", "{}", json(&r));
    // An oversized body is refused before it is read.
    let (small, _dir2) = start_server(false, |c| c.max_request_bytes = 4096).await;
    let r = call(small.local_addr(), JSON, "PutRecord", &vec![b' '; 8192]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    small.shutdown().await;

    // The server is healthy and the stream still holds exactly its one record.
    let r = send(addr, get(addr, "/health")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let it = json(&json_call(addr, "GetShardIterator", serde_json::json!({"StreamName": "ok", "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"})).await);
    let it2 = json(&json_call(addr, "GetShardIterator", serde_json::json!({"StreamName": "ok", "ShardId": "shardId-000000000001", "ShardIteratorType": "TRIM_HORIZON"})).await);
    let mut total = 0;
    for it in [it, it2] {
        let recs = json(
            &json_call(
                addr,
                "GetRecords",
                serde_json::json!({"ShardIterator": it["ShardIterator"]}),
            )
            .await,
        );
        total += recs["Records"].as_array().unwrap().len();
    }
    assert_eq!(total, 1);
    server.shutdown().await;
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[tokio::test]
async fn resuming_after_a_shards_starting_sequence_number_misses_nothing() {
    let (server, _dir) = start_server(false, |_| {}).await;
    let addr = server.local_addr();
    json_call(
        addr,
        "CreateStream",
        serde_json::json!({"StreamName": "s", "ShardCount": 1}),
    )
    .await;
    let d = json(
        &json_call(
            addr,
            "DescribeStream",
            serde_json::json!({"StreamName": "s"}),
        )
        .await,
    );
    let start =
        d["StreamDescription"]["Shards"][0]["SequenceNumberRange"]["StartingSequenceNumber"]
            .clone();
    let put = json(
        &json_call(
            addr,
            "PutRecord",
            serde_json::json!({"StreamName": "s", "Data": "AQ==", "PartitionKey": "p"}),
        )
        .await,
    );
    assert!(
        put["SequenceNumber"].as_str().unwrap() > start.as_str().unwrap(),
        "a record's number comes after the shard start"
    );
    for kind in ["AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"] {
        let it = json(
            &json_call(
                addr,
                "GetShardIterator",
                serde_json::json!({"StreamName": "s", "ShardId": "shardId-000000000000", "ShardIteratorType": kind, "StartingSequenceNumber": start}),
            )
            .await,
        );
        let got = json(
            &json_call(
                addr,
                "GetRecords",
                serde_json::json!({"ShardIterator": it["ShardIterator"]}),
            )
            .await,
        );
        assert_eq!(
            got["Records"][0]["SequenceNumber"], put["SequenceNumber"],
            "{kind} the shard start"
        );
    }
    server.shutdown().await;
}

async fn status_of(addr: SocketAddr, name: &str) -> Option<String> {
    let r = json_call(
        addr,
        "DescribeStreamSummary",
        serde_json::json!({"StreamName": name}),
    )
    .await;
    if r.status() != StatusCode::OK {
        return None;
    }
    json(&r)["StreamDescriptionSummary"]["StreamStatus"]
        .as_str()
        .map(str::to_owned)
}

/// Polls until the stream's status is `want` (`None`: gone); fails after 10 s.
async fn wait_status(addr: SocketAddr, name: &str, want: Option<&str>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status_of(addr, name).await.as_deref() != want {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never became {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_status_delay_shows_creating_updating_and_deleting() {
    let (server, dir) = start_server(false, |c| {
        c.stream_status_delay = std::time::Duration::from_millis(700)
    })
    .await;
    let addr = server.local_addr();
    json_call(
        addr,
        "CreateStream",
        serde_json::json!({"StreamName": "w", "ShardCount": 1}),
    )
    .await;
    assert_eq!(status_of(addr, "w").await.as_deref(), Some("CREATING"));
    let put = json_call(
        addr,
        "PutRecord",
        serde_json::json!({"StreamName": "w", "Data": "AQ==", "PartitionKey": "p"}),
    )
    .await;
    assert_eq!(json(&put)["__type"], "ResourceNotFoundException");
    wait_status(addr, "w", Some("ACTIVE")).await;

    let split = serde_json::json!({"StreamName": "w", "ShardToSplit": "shardId-000000000000", "NewStartingHashKey": "1000"});
    assert_eq!(
        json_call(addr, "SplitShard", split).await.status(),
        StatusCode::OK
    );
    assert_eq!(status_of(addr, "w").await.as_deref(), Some("UPDATING"));
    let again = serde_json::json!({"StreamName": "w", "ShardToSplit": "shardId-000000000001", "NewStartingHashKey": "500"});
    assert_eq!(
        json(&json_call(addr, "SplitShard", again).await)["__type"],
        "ResourceInUseException"
    );
    wait_status(addr, "w", Some("ACTIVE")).await;

    json_call(addr, "DeleteStream", serde_json::json!({"StreamName": "w"})).await;
    assert_eq!(status_of(addr, "w").await.as_deref(), Some("DELETING"));
    wait_status(addr, "w", None).await;

    // A change still pending when the server stops completes at the next start.
    json_call(
        addr,
        "CreateStream",
        serde_json::json!({"StreamName": "p", "ShardCount": 1}),
    )
    .await;
    assert_eq!(status_of(addr, "p").await.as_deref(), Some("CREATING"));
    server.shutdown().await;
    let again = timeshard_server::start(timeshard_server::Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        sync: timeshard_storage::options::SyncPolicy::Never,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        status_of(again.local_addr(), "p").await.as_deref(),
        Some("ACTIVE")
    );
    again.shutdown().await;
}

/// A server in `--limits aws` mode on a manual clock.
async fn aws_limits_server(
    dir: &std::path::Path,
) -> (
    timeshard_server::RunningServer,
    std::sync::Arc<timeshard_storage::clock::ManualClock>,
) {
    let clock = std::sync::Arc::new(timeshard_storage::clock::ManualClock::new(
        1_800_000_000_000,
    ));
    let config = timeshard_server::Config {
        data_dir: dir.join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        sync: timeshard_storage::options::SyncPolicy::Never,
        limits: timeshard_server::config::LimitsMode::Aws,
        ..Default::default()
    };
    let server = timeshard_server::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    (server, clock)
}

#[tokio::test]
async fn aws_limits_mode_enforces_per_shard_quotas() {
    let dir = tempfile::tempdir().unwrap();
    let (server, clock) = aws_limits_server(dir.path()).await;
    let addr = server.local_addr();
    json_call(
        addr,
        "CreateStream",
        serde_json::json!({"StreamName": "q", "ShardCount": 1}),
    )
    .await;
    let batch = serde_json::json!({
        "StreamName": "q",
        "Records": (0..500).map(|i| serde_json::json!({"Data": "AAAAAAAAAAAAAA==", "PartitionKey": format!("k{i}")})).collect::<Vec<_>>(),
    });
    // 1,000 records a second per shard: two batches fit, the third fails entry by entry.
    for _ in 0..2 {
        assert_eq!(
            json(&json_call(addr, "PutRecords", batch.clone()).await)["FailedRecordCount"],
            0
        );
    }
    let over = json(&json_call(addr, "PutRecords", batch.clone()).await);
    assert_eq!(over["FailedRecordCount"], 500);
    assert_eq!(
        over["Records"][0]["ErrorCode"],
        "ProvisionedThroughputExceededException"
    );
    assert!(
        over["Records"][0]["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("Rate exceeded for shard shardId-000000000000")
    );
    let one = serde_json::json!({"StreamName": "q", "Data": "AQ==", "PartitionKey": "p"});
    assert_eq!(
        json(&json_call(addr, "PutRecord", one.clone()).await)["__type"],
        "ProvisionedThroughputExceededException"
    );
    clock.advance_ms(1000);
    assert_eq!(
        json_call(addr, "PutRecord", one).await.status(),
        StatusCode::OK
    );

    // Five GetRecords calls a second per shard.
    let it = json(&json_call(addr, "GetShardIterator", serde_json::json!({"StreamName": "q", "ShardId": "shardId-000000000000", "ShardIteratorType": "LATEST"})).await);
    let get = serde_json::json!({"ShardIterator": it["ShardIterator"]});
    for _ in 0..5 {
        assert_eq!(
            json_call(addr, "GetRecords", get.clone()).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        json(&json_call(addr, "GetRecords", get.clone()).await)["__type"],
        "ProvisionedThroughputExceededException"
    );
    clock.advance_ms(1000);
    assert_eq!(
        json_call(addr, "GetRecords", get).await.status(),
        StatusCode::OK
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_throttled_shard_fails_the_rest_of_its_entries_in_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _clock) = aws_limits_server(dir.path()).await;
    let addr = server.local_addr();
    json_call(
        addr,
        "CreateStream",
        serde_json::json!({"StreamName": "s", "ShardCount": 1}),
    )
    .await;
    use base64::Engine as _;
    let big = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 600 * 1024]);
    // 1 MiB a second per shard: the second big record is over, and the small one after it,
    // which would fit, fails with it so the shard's records stay in order.
    let batch = serde_json::json!({
        "StreamName": "s",
        "Records": [
            {"Data": big, "PartitionKey": "k"},
            {"Data": big, "PartitionKey": "k"},
            {"Data": "AQ==", "PartitionKey": "k"},
        ],
    });
    let answer = json(&json_call(addr, "PutRecords", batch).await);
    assert_eq!(answer["FailedRecordCount"], 2, "{answer}");
    assert!(answer["Records"][0]["SequenceNumber"].is_string());
    for i in [1, 2] {
        assert_eq!(
            answer["Records"][i]["ErrorCode"],
            "ProvisionedThroughputExceededException"
        );
    }
    server.shutdown().await;
}
