//! Enhanced fan-out against the real server in-process: the consumer registry
//! (Register/Describe/List/DeregisterStreamConsumer) and SubscribeToShard read as a client
//! reads it, a streaming HTTP body of event-stream messages over HTTP/1.1 and h2c, in JSON and
//! in CBOR.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Buf, Bytes, BytesMut};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use timeshard_server::Config;
use timeshard_server::api::data_streams::eventstream::{self, DecodeError, Message};
use timeshard_storage::options::SyncPolicy;

const JSON: &str = "application/x-amz-json-1.1";
const CBOR: &str = "application/x-amz-cbor-1.1";
const ARN_PREFIX: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/";

fn request(
    addr: SocketAddr,
    op: &str,
    content_type: &str,
    body: &[u8],
) -> http::Request<timeshard_server::Body> {
    let target = format!("Kinesis_20131202.{op}");
    support::unsigned(
        addr,
        "POST",
        "/",
        &[("x-amz-target", &target), ("content-type", content_type)],
        body,
    )
}

/// One JSON call; the whole response.
async fn call(addr: SocketAddr, op: &str, body: Value) -> Response<Bytes> {
    support::send(addr, request(addr, op, JSON, body.to_string().as_bytes())).await
}

/// One JSON call that must succeed; its body.
async fn ok(addr: SocketAddr, op: &str, body: Value) -> Value {
    let response = call(addr, op, body).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{op}: {:?}",
        response.body()
    );
    if response.body().is_empty() {
        Value::Null
    } else {
        support::json(&response)
    }
}

/// One JSON call that must fail with `error`; its message.
async fn fails(addr: SocketAddr, op: &str, body: Value, error: &str) -> String {
    let response = call(addr, op, body).await;
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "{op}: {:?}",
        response.body()
    );
    support::assert_error_type(&response, error);
    support::error_message(&response)
}

/// Creates stream `name` with `shards` shards; returns its ARN.
async fn create_stream(addr: SocketAddr, name: &str, shards: u32) -> String {
    ok(
        addr,
        "CreateStream",
        json!({"StreamName": name, "ShardCount": shards}),
    )
    .await;
    let summary = ok(addr, "DescribeStreamSummary", json!({"StreamName": name})).await;
    summary["StreamDescriptionSummary"]["StreamARN"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn register(addr: SocketAddr, stream_arn: &str, name: &str) -> Value {
    ok(
        addr,
        "RegisterStreamConsumer",
        json!({"StreamARN": stream_arn, "ConsumerName": name}),
    )
    .await["Consumer"]
        .clone()
}

/// Puts records (data, partition key) to `stream`; returns their sequence numbers.
async fn put(addr: SocketAddr, stream: &str, records: &[(Vec<u8>, &str)]) -> Vec<String> {
    let entries: Vec<Value> = records
        .iter()
        .map(|(data, key)| json!({"Data": BASE64.encode(data), "PartitionKey": key}))
        .collect();
    let out = ok(
        addr,
        "PutRecords",
        json!({"StreamName": stream, "Records": entries}),
    )
    .await;
    assert_eq!(out["FailedRecordCount"], 0, "{out}");
    out["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["SequenceNumber"].as_str().unwrap().to_owned())
        .collect()
}

/// Test payloads: every byte value, a multi-frame one, an empty one.
fn payloads(tag: u8, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| match i % 3 {
            0 => (0..=255u8).chain([tag, i as u8]).collect(),
            1 => vec![tag ^ i as u8; 200_000],
            _ => Vec::new(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Reading a subscription
// ---------------------------------------------------------------------------------------------

/// A subscription's response body, read message by message as it streams in.
struct Events {
    body: Incoming,
    buffered: BytesMut,
}

impl Events {
    /// The next message, or `None` when the body ended (cleanly, between messages).
    async fn next(&mut self) -> Option<Message> {
        loop {
            match eventstream::decode(&self.buffered) {
                Ok((message, used)) => {
                    self.buffered.advance(used);
                    return Some(message);
                }
                Err(DecodeError::Incomplete { .. }) => {}
                Err(e) => panic!("undecodable event stream: {e}"),
            }
            let frame = tokio::time::timeout(Duration::from_secs(20), self.body.frame())
                .await
                .expect("no event-stream bytes within 20 s");
            match frame {
                None => {
                    assert!(self.buffered.is_empty(), "the body ended inside a message");
                    return None;
                }
                Some(frame) => {
                    if let Ok(data) = frame.unwrap().into_data() {
                        self.buffered.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next `SubscribeToShardEvent`'s JSON payload.
    async fn next_event(&mut self) -> Value {
        let message = self.next().await.expect("the subscription ended");
        assert_eq!(
            message.header_str(":message-type"),
            Some("event"),
            "{message:?}: {}",
            String::from_utf8_lossy(&message.payload)
        );
        assert_eq!(
            message.header_str(":event-type"),
            Some("SubscribeToShardEvent")
        );
        assert_eq!(
            message.header_str(":content-type"),
            Some("application/json")
        );
        serde_json::from_slice(&message.payload).unwrap()
    }

    /// Reads events until `n` records came; returns them and the last event.
    async fn records(&mut self, n: usize) -> (Vec<Value>, Value) {
        let mut records = Vec::new();
        loop {
            let event = self.next_event().await;
            records.extend(event["Records"].as_array().unwrap().iter().cloned());
            assert!(
                records.len() <= n,
                "more records than expected: {records:?}"
            );
            if records.len() == n {
                return (records, event);
            }
        }
    }
}

fn subscribe_body(consumer_arn: &str, shard: &str, position: &Value) -> Vec<u8> {
    json!({"ConsumerARN": consumer_arn, "ShardId": shard, "StartingPosition": position})
        .to_string()
        .into_bytes()
}

/// Subscribes over HTTP/1.1; checks the 200 and the initial response.
async fn subscribe(addr: SocketAddr, consumer_arn: &str, shard: &str, position: Value) -> Events {
    let req = request(
        addr,
        "SubscribeToShard",
        JSON,
        &subscribe_body(consumer_arn, shard, &position),
    );
    let response = support::connect_http1(addr)
        .await
        .send_request(req)
        .await
        .unwrap();
    started(response).await
}

async fn started(response: Response<Incoming>) -> Events {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.amazon.eventstream"
    );
    let mut events = Events {
        body: response.into_body(),
        buffered: BytesMut::new(),
    };
    let initial = events.next().await.unwrap();
    assert_eq!(initial.header_str(":message-type"), Some("event"));
    assert_eq!(initial.header_str(":event-type"), Some("initial-response"));
    events_initial_payload(&initial);
    events
}

fn events_initial_payload(initial: &Message) {
    match initial.header_str(":content-type") {
        Some("application/json") => assert_eq!(&initial.payload[..], b"{}"),
        Some(CBOR) => assert_eq!(&initial.payload[..], [0xa0]),
        other => panic!("initial response content type {other:?}"),
    }
}

/// Asserts `records` are the ones put, in order and byte for byte.
#[track_caller]
fn assert_records(records: &[Value], seqs: &[String], data: &[Vec<u8>], key: &str) {
    assert_eq!(records.len(), seqs.len());
    for ((record, seq), data) in records.iter().zip(seqs).zip(data) {
        assert_eq!(record["SequenceNumber"], seq.as_str());
        assert_eq!(record["PartitionKey"], key);
        assert_eq!(
            BASE64.decode(record["Data"].as_str().unwrap()).unwrap(),
            *data
        );
        assert!(record["ApproximateArrivalTimestamp"].as_f64().unwrap() > 1.5e9);
    }
}

// ---------------------------------------------------------------------------------------------
// The consumer registry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn consumers_are_registered_described_listed_and_deregistered() {
    let (server, _dir) = support::start_server(false, |_| {}).await;
    let addr = server.local_addr();
    let stream_arn = create_stream(addr, "s", 1).await;

    let consumer = register(addr, &stream_arn, "app-1").await;
    let arn = consumer["ConsumerARN"].as_str().unwrap().to_owned();
    let created = consumer["ConsumerCreationTimestamp"].as_f64().unwrap();
    assert_eq!(consumer["ConsumerName"], "app-1");
    assert_eq!(consumer["ConsumerStatus"], "ACTIVE");
    assert_eq!(
        arn,
        format!("{ARN_PREFIX}s/consumer/app-1:{}", created.floor() as i64)
    );

    for by in [
        json!({"StreamARN": stream_arn, "ConsumerName": "app-1"}),
        json!({"ConsumerARN": arn}),
        json!({"ConsumerARN": arn, "StreamARN": stream_arn, "ConsumerName": "app-1"}),
    ] {
        let d = ok(addr, "DescribeStreamConsumer", by).await["ConsumerDescription"].clone();
        assert_eq!(d["ConsumerName"], "app-1");
        assert_eq!(d["ConsumerARN"], arn.as_str());
        assert_eq!(d["ConsumerStatus"], "ACTIVE");
        assert_eq!(d["ConsumerCreationTimestamp"].as_f64(), Some(created));
        assert_eq!(d["StreamARN"], stream_arn.as_str());
    }

    // Duplicates, bad names, unknown streams and consumers.
    fails(
        addr,
        "RegisterStreamConsumer",
        json!({"StreamARN": stream_arn, "ConsumerName": "app-1"}),
        "ResourceInUseException",
    )
    .await;
    for bad in ["", "has space", &"x".repeat(129)] {
        fails(
            addr,
            "RegisterStreamConsumer",
            json!({"StreamARN": stream_arn, "ConsumerName": bad}),
            "ValidationException",
        )
        .await;
    }
    fails(
        addr,
        "RegisterStreamConsumer",
        json!({"StreamARN": stream_arn}),
        "ValidationException",
    )
    .await;
    fails(
        addr,
        "RegisterStreamConsumer",
        json!({"StreamARN": format!("{ARN_PREFIX}nope"), "ConsumerName": "c"}),
        "ResourceNotFoundException",
    )
    .await;
    fails(
        addr,
        "DescribeStreamConsumer",
        json!({"StreamARN": stream_arn, "ConsumerName": "nope"}),
        "ResourceNotFoundException",
    )
    .await;
    // Right name, other creation second: an earlier or later consumer of that name.
    fails(
        addr,
        "DescribeStreamConsumer",
        json!({"ConsumerARN": format!("{ARN_PREFIX}s/consumer/app-1:12")}),
        "ResourceNotFoundException",
    )
    .await;
    for bad in [
        json!({"ConsumerARN": "arn:aws:kinesis:eu-west-1:000000000000:stream/s/consumer/app-1:1"}),
        json!({"ConsumerARN": format!("{ARN_PREFIX}s/consumer/app-1")}),
        json!({"StreamARN": stream_arn}),
        json!({"ConsumerARN": arn, "ConsumerName": "other"}),
    ] {
        fails(
            addr,
            "DescribeStreamConsumer",
            bad,
            "InvalidArgumentException",
        )
        .await;
    }

    // Up to 20 per stream.
    for i in 2..=20 {
        register(addr, &stream_arn, &format!("app-{i}")).await;
    }
    let message = fails(
        addr,
        "RegisterStreamConsumer",
        json!({"StreamARN": stream_arn, "ConsumerName": "app-21"}),
        "LimitExceededException",
    )
    .await;
    assert!(message.contains("20"), "{message}");

    // Listing, in pages.
    let all = ok(
        addr,
        "ListStreamConsumers",
        json!({"StreamARN": stream_arn}),
    )
    .await;
    assert_eq!(all["Consumers"].as_array().unwrap().len(), 20);
    assert!(all.get("NextToken").is_none());
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = json!({"StreamARN": stream_arn, "MaxResults": 7});
        if let Some(t) = &token {
            req["NextToken"] = json!(t);
        }
        let page = ok(addr, "ListStreamConsumers", req).await;
        let consumers = page["Consumers"].as_array().unwrap();
        assert!(consumers.len() <= 7);
        for c in consumers {
            assert_eq!(c["ConsumerStatus"], "ACTIVE");
            assert!(
                c["ConsumerARN"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{ARN_PREFIX}s/consumer/"))
            );
            names.push(c["ConsumerName"].as_str().unwrap().to_owned());
        }
        match page.get("NextToken") {
            Some(t) => token = Some(t.as_str().unwrap().to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<String> = (1..=20).map(|i| format!("app-{i}")).collect();
    expected.sort();
    assert_eq!(names, expected);
    fails(
        addr,
        "ListStreamConsumers",
        json!({"StreamARN": stream_arn, "MaxResults": 0}),
        "ValidationException",
    )
    .await;
    fails(
        addr,
        "ListStreamConsumers",
        json!({"StreamARN": stream_arn, "NextToken": "bogus"}),
        "InvalidArgumentException",
    )
    .await;
    fails(
        addr,
        "ListStreamConsumers",
        json!({"StreamARN": stream_arn, "StreamCreationTimestamp": 1_000_000_000}),
        "ResourceNotFoundException",
    )
    .await;

    // Deregistration, by ARN and by name.
    ok(
        addr,
        "DeregisterStreamConsumer",
        json!({"ConsumerARN": arn}),
    )
    .await;
    fails(
        addr,
        "DescribeStreamConsumer",
        json!({"ConsumerARN": arn}),
        "ResourceNotFoundException",
    )
    .await;
    fails(
        addr,
        "DeregisterStreamConsumer",
        json!({"ConsumerARN": arn}),
        "ResourceNotFoundException",
    )
    .await;
    ok(
        addr,
        "DeregisterStreamConsumer",
        json!({"StreamARN": stream_arn, "ConsumerName": "app-2"}),
    )
    .await;
    let left = ok(
        addr,
        "ListStreamConsumers",
        json!({"StreamARN": stream_arn}),
    )
    .await;
    assert_eq!(left["Consumers"].as_array().unwrap().len(), 18);
    // Room again under the limit.
    register(addr, &stream_arn, "app-21").await;

    // Consumers go with their stream.
    // A stream with consumers is deleted only when the caller says so.
    let refused = call(addr, "DeleteStream", json!({"StreamName": "s"})).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(refused.body()).contains("ResourceInUseException"));
    ok(
        addr,
        "DeleteStream",
        json!({"StreamName": "s", "EnforceConsumerDeletion": true}),
    )
    .await;
    let stream_arn = create_stream(addr, "s", 1).await;
    let fresh = ok(
        addr,
        "ListStreamConsumers",
        json!({"StreamARN": stream_arn}),
    )
    .await;
    assert_eq!(fresh["Consumers"], json!([]));
    server.shutdown().await;
}

#[tokio::test]
async fn consumers_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        sync: SyncPolicy::Never,
        ..Config::default()
    };
    let server = timeshard_server::start(config()).await.unwrap();
    let addr = server.local_addr();
    let stream_arn = create_stream(addr, "kept", 1).await;
    let consumer = register(addr, &stream_arn, "durable").await;
    ok(
        addr,
        "TagResource",
        json!({"ResourceARN": consumer["ConsumerARN"], "Tags": {"team": "video"}}),
    )
    .await;
    server.shutdown().await;

    let server = timeshard_server::start(config()).await.unwrap();
    let addr = server.local_addr();
    let d = ok(
        addr,
        "DescribeStreamConsumer",
        json!({"ConsumerARN": consumer["ConsumerARN"]}),
    )
    .await;
    assert_eq!(d["ConsumerDescription"]["ConsumerName"], "durable");
    assert_eq!(
        d["ConsumerDescription"]["ConsumerCreationTimestamp"],
        consumer["ConsumerCreationTimestamp"]
    );
    let tags = ok(
        addr,
        "ListTagsForResource",
        json!({"ResourceARN": consumer["ConsumerARN"]}),
    )
    .await;
    assert_eq!(tags["Tags"], json!([{"Key": "team", "Value": "video"}]));
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// SubscribeToShard
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn subscription_delivers_stored_then_live_records_in_order() {
    let (server, _dir) = support::start_server(false, |_| {}).await;
    let addr = server.local_addr();
    let stream_arn = create_stream(addr, "live", 1).await;
    let consumer = register(addr, &stream_arn, "reader").await;
    let arn = consumer["ConsumerARN"].as_str().unwrap().to_owned();
    let shard = "shardId-000000000000";

    let before = payloads(1, 5);
    let before_seqs = put(
        addr,
        "live",
        &before.iter().map(|d| (d.clone(), "pk")).collect::<Vec<_>>(),
    )
    .await;

    let mut events = subscribe(addr, &arn, shard, json!({"Type": "TRIM_HORIZON"})).await;
    let (records, last) = events.records(5).await;
    assert_records(&records, &before_seqs, &before, "pk");
    assert_eq!(last["ContinuationSequenceNumber"], before_seqs[4].as_str());
    assert_eq!(last["MillisBehindLatest"], 0);
    assert!(last.get("ChildShards").is_none());

    // A second subscription for the same consumer and shard right away is refused.
    let again = support::send(
        addr,
        request(
            addr,
            "SubscribeToShard",
            JSON,
            &subscribe_body(&arn, shard, &json!({"Type": "LATEST"})),
        ),
    )
    .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    support::assert_error_type(&again, "ResourceInUseException");

    // Records put while subscribed are pushed as they are acknowledged.
    let after = payloads(2, 4);
    for (i, data) in after.iter().enumerate() {
        let seqs = put(addr, "live", &[(data.clone(), "later")]).await;
        let (records, last) = events.records(1).await;
        assert_records(&records, &seqs, &after[i..=i], "later");
        assert_eq!(last["ContinuationSequenceNumber"], seqs[0].as_str());
    }

    // Idle: an event without records keeps the subscription visibly alive.
    let idle = events.next_event().await;
    assert_eq!(idle["Records"], json!([]));
    assert_eq!(idle["MillisBehindLatest"], 0);
    assert!(idle["ContinuationSequenceNumber"].is_string());

    // The stream goes away: an exception message, then the end of the body.
    ok(
        addr,
        "DeleteStream",
        json!({"StreamName": "live", "EnforceConsumerDeletion": true}),
    )
    .await;
    let message = loop {
        let message = events
            .next()
            .await
            .expect("the body ended without an exception");
        if message.header_str(":message-type") == Some("exception") {
            break message;
        }
    };
    assert_eq!(
        message.header_str(":exception-type"),
        Some("ResourceNotFoundException")
    );
    let payload: Value = serde_json::from_slice(&message.payload).unwrap();
    assert!(payload["message"].is_string(), "{payload}");
    assert!(events.next().await.is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn subscription_starting_positions_and_errors() {
    let (server, _dir) = support::start_server(false, |_| {}).await;
    let addr = server.local_addr();
    let stream_arn = create_stream(addr, "pos", 2).await;
    let shard = "shardId-000000000000";
    let data: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 10]).collect();
    // This key hashes to the first of two shards (MD5 "a" starts with 0x0c).
    let seqs = put(
        addr,
        "pos",
        &data.iter().map(|d| (d.clone(), "a")).collect::<Vec<_>>(),
    )
    .await;
    let mut consumers = Vec::new();
    for name in ["at", "after", "latest", "time"] {
        let c = register(addr, &stream_arn, name).await;
        consumers.push(c["ConsumerARN"].as_str().unwrap().to_owned());
    }

    let mut at = subscribe(
        addr,
        &consumers[0],
        shard,
        json!({"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": seqs[1]}),
    )
    .await;
    assert_records(&at.records(3).await.0, &seqs[1..], &data[1..], "a");

    let mut after = subscribe(
        addr,
        &consumers[1],
        shard,
        json!({"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": seqs[1]}),
    )
    .await;
    assert_records(&after.records(2).await.0, &seqs[2..], &data[2..], "a");

    // LATEST: nothing stored comes, the first event is an empty one resuming after the last.
    let mut latest = subscribe(addr, &consumers[2], shard, json!({"Type": "LATEST"})).await;
    let first = latest.next_event().await;
    assert_eq!(first["Records"], json!([]));
    assert_eq!(first["ContinuationSequenceNumber"], seqs[3].as_str());

    // AT_TIMESTAMP far in the past: everything.
    let mut time = subscribe(
        addr,
        &consumers[3],
        shard,
        json!({"Type": "AT_TIMESTAMP", "Timestamp": 1_000_000_000}),
    )
    .await;
    assert_records(&time.records(4).await.0, &seqs, &data, "a");

    // Errors before the stream starts are plain error responses.
    let unknown = format!("{ARN_PREFIX}pos/consumer/ghost:1");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            subscribe_body(&unknown, shard, &json!({"Type": "LATEST"})),
            "ResourceNotFoundException",
        ),
        (
            subscribe_body(
                &consumers[0],
                "shardId-000000000009",
                &json!({"Type": "LATEST"}),
            ),
            "ResourceNotFoundException",
        ),
        (
            subscribe_body(&consumers[0], shard, &json!({"Type": "SOMEWHERE"})),
            "ValidationException",
        ),
        (
            subscribe_body(&consumers[0], shard, &json!({"Type": "AT_SEQUENCE_NUMBER"})),
            "InvalidArgumentException",
        ),
        (
            subscribe_body(
                &consumers[0],
                "shardId-000000000001",
                &json!({"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": seqs[0]}),
            ),
            "InvalidArgumentException",
        ),
        (
            json!({"ConsumerARN": consumers[0], "ShardId": shard})
                .to_string()
                .into_bytes(),
            "ValidationException",
        ),
        (
            subscribe_body("not-an-arn", shard, &json!({"Type": "LATEST"})),
            "InvalidArgumentException",
        ),
    ];
    for (body, error) in cases {
        let response = support::send(addr, request(addr, "SubscribeToShard", JSON, &body)).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&body)
        );
        support::assert_error_type(&response, error);
    }
    drop((at, after, latest, time));
    server.shutdown().await;
}

#[tokio::test]
async fn a_closed_shard_ends_with_its_child_shards() {
    let (server, _dir) = support::start_server(false, |_| {}).await;
    let addr = server.local_addr();
    let stream_arn = create_stream(addr, "split", 1).await;
    let consumer = register(addr, &stream_arn, "c").await;
    let arn = consumer["ConsumerARN"].as_str().unwrap();
    let data = payloads(3, 3);
    let seqs = put(
        addr,
        "split",
        &data.iter().map(|d| (d.clone(), "k")).collect::<Vec<_>>(),
    )
    .await;
    let mut events = subscribe(
        addr,
        arn,
        "shardId-000000000000",
        json!({"Type": "TRIM_HORIZON"}),
    )
    .await;
    let (records, _) = events.records(3).await;
    assert_records(&records, &seqs, &data, "k");

    ok(
        addr,
        "SplitShard",
        json!({
            "StreamName": "split",
            "ShardToSplit": "shardId-000000000000",
            "NewStartingHashKey": "170141183460469231731687303715884105728",
        }),
    )
    .await;
    let last = loop {
        let event = events.next_event().await;
        assert_eq!(event["Records"], json!([]));
        if event.get("ChildShards").is_some() {
            break event;
        }
        assert!(event["ContinuationSequenceNumber"].is_string());
    };
    assert!(last.get("ContinuationSequenceNumber").is_none(), "{last}");
    let children = last["ChildShards"].as_array().unwrap();
    let ids: Vec<&str> = children
        .iter()
        .map(|c| c["ShardId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["shardId-000000000001", "shardId-000000000002"]);
    for child in children {
        assert_eq!(child["ParentShards"], json!(["shardId-000000000000"]));
        assert!(child["HashKeyRange"]["StartingHashKey"].is_string());
    }
    assert!(
        events.next().await.is_none(),
        "the body goes on after the shard end"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn subscription_over_h2c() {
    let (server, _dir) = support::start_server(false, |_| {}).await;
    let addr = server.local_addr();
    let stream_arn = create_stream(addr, "h2", 1).await;
    let consumer = register(addr, &stream_arn, "c").await;
    let arn = consumer["ConsumerARN"].as_str().unwrap();

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = request(
        addr,
        "SubscribeToShard",
        JSON,
        &subscribe_body(arn, "shardId-000000000000", &json!({"Type": "LATEST"})),
    );
    let mut events = started(sender.send_request(req).await.unwrap()).await;
    // Other requests share the connection while the subscription streams.
    let data = payloads(4, 3);
    for data in &data {
        let body = json!({"StreamName": "h2", "Data": BASE64.encode(data), "PartitionKey": "p"});
        let response = sender
            .send_request(request(
                addr,
                "PutRecord",
                JSON,
                body.to_string().as_bytes(),
            ))
            .await
            .unwrap();
        let response = support::collect(response).await;
        assert_eq!(response.status(), StatusCode::OK);
        let seq = support::json(&response)["SequenceNumber"]
            .as_str()
            .unwrap()
            .to_owned();
        let (records, _) = events.records(1).await;
        assert_records(&records, &[seq], std::slice::from_ref(data), "p");
    }
    // A subscription is an in-flight request: shutdown would wait for it (up to the grace).
    drop((events, sender));
    server.shutdown().await;
}

#[tokio::test]
async fn cbor_clients_get_cbor_events() {
    use ciborium::Value as Cbor;

    let (server, _dir) = support::start_server(false, |_| {}).await;
    let addr = server.local_addr();
    let stream_arn = create_stream(addr, "cbor", 1).await;
    let consumer = register(addr, &stream_arn, "java").await;
    let arn = consumer["ConsumerARN"].as_str().unwrap();
    let data = payloads(5, 2);
    let seqs = put(
        addr,
        "cbor",
        &data.iter().map(|d| (d.clone(), "j")).collect::<Vec<_>>(),
    )
    .await;

    let body = Cbor::Map(vec![
        (Cbor::Text("ConsumerARN".into()), Cbor::Text(arn.into())),
        (
            Cbor::Text("ShardId".into()),
            Cbor::Text("shardId-000000000000".into()),
        ),
        (
            Cbor::Text("StartingPosition".into()),
            Cbor::Map(vec![(
                Cbor::Text("Type".into()),
                Cbor::Text("TRIM_HORIZON".into()),
            )]),
        ),
    ]);
    let mut bytes = Vec::new();
    ciborium::ser::into_writer(&body, &mut bytes).unwrap();
    let response = support::connect_http1(addr)
        .await
        .send_request(request(addr, "SubscribeToShard", CBOR, &bytes))
        .await
        .unwrap();
    let mut events = started(response).await;

    let field = |map: &Cbor, name: &str| -> Cbor {
        map.as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_text() == Some(name))
            .map(|(_, v)| v.clone())
            .unwrap_or(Cbor::Null)
    };
    let mut got = Vec::new();
    while got.len() < 2 {
        let message = events.next().await.unwrap();
        assert_eq!(
            message.header_str(":event-type"),
            Some("SubscribeToShardEvent")
        );
        assert_eq!(message.header_str(":content-type"), Some(CBOR));
        let event: Cbor = ciborium::de::from_reader(&message.payload[..]).unwrap();
        assert!(matches!(
            field(&event, "MillisBehindLatest"),
            Cbor::Integer(_)
        ));
        got.extend(field(&event, "Records").as_array().unwrap().iter().cloned());
    }
    for ((record, seq), data) in got.iter().zip(&seqs).zip(&data) {
        assert_eq!(
            field(record, "SequenceNumber").as_text(),
            Some(seq.as_str())
        );
        // Blobs are byte strings, timestamps tag 1 with epoch milliseconds.
        assert_eq!(field(record, "Data").as_bytes(), Some(data));
        match field(record, "ApproximateArrivalTimestamp") {
            Cbor::Tag(1, ms) => assert!(i128::from(ms.as_integer().unwrap()) > 1_500_000_000_000),
            other => panic!("timestamp {other:?}"),
        }
    }
    drop(events);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_disconnects_releases_its_subscription() {
    let (server, _dir) = support::start_server(false, |_| {}).await;
    let addr = server.local_addr();
    let stream_arn = create_stream(addr, "gone", 1).await;
    let consumer = register(addr, &stream_arn, "c").await;
    let arn = consumer["ConsumerARN"].as_str().unwrap();
    let metrics = server.state().http_metrics();
    let connections_drop_to = |n: i64| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while metrics.open_connections() > n {
            assert!(
                std::time::Instant::now() < deadline,
                "the server kept the connection of a gone client"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // The setup calls' connections are closing.
    connections_drop_to(0).await;

    let mut events = subscribe(addr, arn, "shardId-000000000000", json!({"Type": "LATEST"})).await;
    events.next_event().await;
    assert_eq!(metrics.open_connections(), 1);
    // Dropping the body and the connection closes the socket; the server notices while the
    // subscription is idle (no keep-alive is due for 5 s) and drops the response body, which
    // stops the subscription task (see the unit tests of subscribe_to_shard.rs).
    drop(events);
    connections_drop_to(0).await;
    server.shutdown().await;
}
