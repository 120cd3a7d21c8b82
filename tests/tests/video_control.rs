//! The Kinesis Video Streams control plane, judged by the official AWS SDK for Rust
//! (`aws-sdk-kinesisvideo`), plus hand-written HTTP for what an SDK cannot send.
//!
//! Each test starts its own server (`TestServer`). The expectations are AWS's documented
//! behaviour (botocore's `kinesisvideo` model and `shared/reference/aws-protocol.md` section D):
//!
//! - ARNs are `arn:aws:kinesisvideo:<region>:<account>:stream/<name>/<creation epoch ms>`;
//! - a missing stream is `ResourceNotFoundException` with HTTP 404 (the C producer reads only the
//!   status), a taken name `ResourceInUseException`, a stale `CurrentVersion`
//!   `VersionMismatchException`, every malformed input `InvalidArgumentException` (400);
//! - `CreationTime` is epoch seconds, `Version` changes with every update, `DataRetentionInHours`
//!   moves by deltas within 0 to 87,600 hours;
//! - GetDataEndpoint answers the server's own URL for every API, without a path;
//! - video and data streams are separate namespaces.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesisvideo::Client;
use aws_sdk_kinesisvideo::config::http::HttpResponse;
use aws_sdk_kinesisvideo::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesisvideo::types::{
    ApiName, ComparisonOperator, Status, StreamInfo, StreamNameCondition, Tag,
    UpdateDataRetentionOperation,
};
use bytes::Bytes;
use timeshard_server::config::LimitsMode;
use timeshard_server::video::VideoStream;
use timeshard_storage::NewRecord;
use timeshard_storage::clock::ManualClock;
use timeshard_tests::{ACCOUNT_ID, REGION, RawResponse, TestServer, raw_post};

const HOUR_MS: i64 = 3_600_000;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// What a failed call looked like on the wire.
#[derive(Debug)]
struct Failure {
    status: u16,
    code: String,
    message: String,
}

/// The status, error code and message of a call that must fail.
#[track_caller]
fn failure<T: std::fmt::Debug, E>(result: Result<T, SdkError<E, HttpResponse>>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let err = match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(err) => err,
    };
    let Some(raw) = err.raw_response() else {
        panic!("no HTTP response: {}", DisplayErrorContext(&err));
    };
    Failure {
        status: raw.status().as_u16(),
        code: err.code().unwrap_or_default().to_owned(),
        message: err.message().unwrap_or_default().to_owned(),
    }
}

/// Asserts the error code and status of a failed call; returns its message.
#[track_caller]
fn expect_error<T: std::fmt::Debug, E>(
    result: Result<T, SdkError<E, HttpResponse>>,
    code: &str,
    status: u16,
) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let f = failure(result);
    assert_eq!(
        (f.code.as_str(), f.status),
        (code, status),
        "message: {}",
        f.message
    );
    assert!(!f.message.is_empty(), "{code} without a message");
    f.message
}

/// Creates a stream with default settings; returns its ARN.
async fn create(client: &Client, name: &str) -> String {
    client
        .create_stream()
        .stream_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateStream {name}: {}", DisplayErrorContext(&e)))
        .stream_arn
        .unwrap_or_else(|| panic!("CreateStream {name}: no StreamARN"))
}

async fn describe(client: &Client, name: &str) -> StreamInfo {
    client
        .describe_stream()
        .stream_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DescribeStream {name}: {}", DisplayErrorContext(&e)))
        .stream_info
        .unwrap_or_else(|| panic!("DescribeStream {name}: no StreamInfo"))
}

async fn version(client: &Client, name: &str) -> String {
    describe(client, name).await.version.unwrap()
}

async fn list_names(client: &Client, prefix: Option<&str>) -> Vec<String> {
    let mut request = client.list_streams();
    if let Some(prefix) = prefix {
        request = request.stream_name_condition(
            StreamNameCondition::builder()
                .comparison_operator(ComparisonOperator::BeginsWith)
                .comparison_value(prefix)
                .build(),
        );
    }
    let out = request.send().await.unwrap();
    assert_eq!(out.next_token(), None);
    out.stream_info_list()
        .iter()
        .map(|s| s.stream_name().unwrap().to_owned())
        .collect()
}

/// Polls DescribeStream until the stream shows `status`.
async fn wait_for_status(client: &Client, name: &str, status: Status) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = describe(client, name).await.status.unwrap();
        if now == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stream {name} still {now:?}, waiting for {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A raw JSON request to a server without credentials.
async fn post_json(server: &TestServer, path: &str, body: &str) -> RawResponse {
    raw_post(
        server.addr(),
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await
}

/// Asserts a raw response is a rest-json error of this type and status; returns its message.
#[track_caller]
fn expect_raw_error(r: &RawResponse, error_type: &str, status: u16) -> String {
    let body = r.json();
    assert_eq!(r.status, status, "{body}");
    assert_eq!(r.header("x-amzn-errortype"), Some(error_type), "{body}");
    assert_eq!(body["__type"], error_type, "{body}");
    let message = body["message"].as_str().unwrap().to_owned();
    assert_eq!(body["Message"], message.as_str());
    message
}

// ---------------------------------------------------------------------------------------------
// Create, describe, list
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_and_describe_by_name_and_arn() {
    let server = TestServer::start().await;
    let client = server.kinesis_video_client();

    let before = now_ms();
    let arn = client
        .create_stream()
        .stream_name("cam-1")
        .device_name("front-door")
        .media_type("video/h264,audio/aac")
        .data_retention_in_hours(24)
        .tags("site", "home")
        .send()
        .await
        .unwrap()
        .stream_arn
        .unwrap();
    let after = now_ms();
    let prefix = format!("arn:aws:kinesisvideo:{REGION}:{ACCOUNT_ID}:stream/cam-1/");
    assert!(arn.starts_with(&prefix), "{arn}");
    let created_ms: i64 = arn[prefix.len()..].parse().unwrap();
    assert!((before..=after).contains(&created_ms), "{arn}");

    let info = describe(&client, "cam-1").await;
    assert_eq!(info.stream_name(), Some("cam-1"));
    assert_eq!(info.stream_arn(), Some(arn.as_str()));
    assert_eq!(info.device_name(), Some("front-door"));
    assert_eq!(info.media_type(), Some("video/h264,audio/aac"));
    assert_eq!(
        info.kms_key_id(),
        Some(format!("arn:aws:kms:{REGION}:{ACCOUNT_ID}:alias/aws/kinesisvideo").as_str())
    );
    assert_eq!(info.status(), Some(&Status::Active));
    assert_eq!(info.data_retention_in_hours(), Some(24));
    let version = info.version().unwrap();
    assert!(
        !version.is_empty() && version.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{version}"
    );
    // CreationTime is the creation instant of the ARN, in epoch seconds. The JSON number has
    // three fraction digits, but the nearest f64 may lie just below the millisecond, which the
    // SDK then truncates.
    let created = info.creation_time().unwrap().to_millis().unwrap();
    assert!(
        (created_ms - 1..=created_ms).contains(&created),
        "CreationTime {created} ms, ARN {created_ms} ms"
    );

    // By ARN: the same description.
    let by_arn = client
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap()
        .stream_info
        .unwrap();
    assert_eq!(by_arn, info);

    // Defaults: no device or media type, retention 0 (live only); a given KMS key is reflected.
    client
        .create_stream()
        .stream_name("cam-2")
        .kms_key_id("arn:aws:kms:us-east-1:000000000000:key/1234")
        .send()
        .await
        .unwrap();
    let info = describe(&client, "cam-2").await;
    assert_eq!(info.device_name(), None);
    assert_eq!(info.media_type(), None);
    assert_eq!(info.data_retention_in_hours(), Some(0));
    assert_eq!(
        info.kms_key_id(),
        Some("arn:aws:kms:us-east-1:000000000000:key/1234")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn list_streams_filters_by_prefix_and_pages() {
    let server = TestServer::start().await;
    let client = server.kinesis_video_client();
    for name in [
        "cam-b", "door-1", "cam-a", "cam-e", "door-2", "cam-c", "cam-d",
    ] {
        create(&client, name).await;
    }
    assert_eq!(
        list_names(&client, None).await,
        [
            "cam-a", "cam-b", "cam-c", "cam-d", "cam-e", "door-1", "door-2"
        ]
    );
    assert_eq!(
        list_names(&client, Some("door")).await,
        ["door-1", "door-2"]
    );
    assert!(list_names(&client, Some("window")).await.is_empty());

    // Pages of two, by hand: 2 + 2 + 1, a NextToken on all but the last page.
    let condition = StreamNameCondition::builder()
        .comparison_operator(ComparisonOperator::BeginsWith)
        .comparison_value("cam-")
        .build();
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = client
            .list_streams()
            .max_results(2)
            .stream_name_condition(condition.clone())
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        let names: Vec<String> = out
            .stream_info_list()
            .iter()
            .map(|s| s.stream_name().unwrap().to_owned())
            .collect();
        pages.push(names);
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
        assert!(pages.len() < 10, "pagination does not end");
    }
    assert_eq!(
        pages,
        [
            vec!["cam-a", "cam-b"],
            vec!["cam-c", "cam-d"],
            vec!["cam-e"]
        ]
    );

    // The SDK's paginator walks the same pages.
    let all: Vec<StreamInfo> = client
        .list_streams()
        .max_results(3)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .unwrap();
    assert_eq!(all.len(), 7);
    assert!(all.iter().all(|s| s.status() == Some(&Status::Active)));
    assert_eq!(all[0], describe(&client, "cam-a").await);

    // A token that is not ours, and a MaxResults out of range.
    expect_error(
        client
            .list_streams()
            .next_token("bm90IGEgdG9rZW4=")
            .send()
            .await,
        "InvalidArgumentException",
        400,
    );
    expect_error(
        client.list_streams().max_results(0).send().await,
        "InvalidArgumentException",
        400,
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_taken_name_is_resource_in_use() {
    let server = TestServer::start().await;
    let client = server.kinesis_video_client();
    let arn = create(&client, "taken").await;
    let message = expect_error(
        client.create_stream().stream_name("taken").send().await,
        "ResourceInUseException",
        400,
    );
    assert!(message.contains("taken"), "{message}");
    // The first stream is untouched.
    assert_eq!(
        describe(&client, "taken").await.stream_arn(),
        Some(arn.as_str())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_missing_stream_is_resource_not_found_with_404() {
    let server = TestServer::start().await;
    let client = server.kinesis_video_client();

    expect_error(
        client.describe_stream().stream_name("nope").send().await,
        "ResourceNotFoundException",
        404,
    );
    expect_error(
        client
            .get_data_endpoint()
            .stream_name("nope")
            .api_name(ApiName::PutMedia)
            .send()
            .await,
        "ResourceNotFoundException",
        404,
    );
    let arn = format!("arn:aws:kinesisvideo:{REGION}:{ACCOUNT_ID}:stream/nope/1700000000000");
    expect_error(
        client.describe_stream().stream_arn(&arn).send().await,
        "ResourceNotFoundException",
        404,
    );
    expect_error(
        client.delete_stream().stream_arn(&arn).send().await,
        "ResourceNotFoundException",
        404,
    );

    // An ARN kept from a stream that was deleted and re-created names nothing.
    let old_arn = create(&client, "again").await;
    client
        .delete_stream()
        .stream_arn(&old_arn)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let new_arn = create(&client, "again").await;
    assert_ne!(old_arn, new_arn);
    expect_error(
        client.describe_stream().stream_arn(&old_arn).send().await,
        "ResourceNotFoundException",
        404,
    );
    // Another account's or region's ARN is not found here either.
    let other = new_arn.replace(ACCOUNT_ID, "111111111111");
    expect_error(
        client.describe_stream().stream_arn(&other).send().await,
        "ResourceNotFoundException",
        404,
    );
    server.shutdown().await;

    // The status line itself, as the C producer sees it (a server without credentials, so the
    // request can be written by hand).
    let server = TestServer::start_with(|c| c.credentials.clear()).await;
    let r = post_json(&server, "/describeStream", r#"{"StreamName":"nope"}"#).await;
    let message = expect_raw_error(&r, "ResourceNotFoundException", 404);
    assert!(message.contains("nope"), "{message}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("x-amzn-requestid").is_some());
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Update, delete, retention
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn update_stream_needs_the_current_version() {
    let server = TestServer::start().await;
    let client = server.kinesis_video_client();
    create(&client, "upd").await;
    let v1 = version(&client, "upd").await;

    client
        .update_stream()
        .stream_name("upd")
        .current_version(&v1)
        .device_name("garage")
        .media_type("video/h265")
        .send()
        .await
        .unwrap();
    let info = describe(&client, "upd").await;
    assert_eq!(info.device_name(), Some("garage"));
    assert_eq!(info.media_type(), Some("video/h265"));
    let v2 = info.version().unwrap().to_owned();
    assert_ne!(v1, v2);

    // The old version is stale now; a version never issued does not match either.
    for stale in [v1.as_str(), "abc123"] {
        let message = expect_error(
            client
                .update_stream()
                .stream_name("upd")
                .current_version(stale)
                .device_name("other")
                .send()
                .await,
            "VersionMismatchException",
            400,
        );
        assert!(message.contains(&v2), "{message}");
    }
    assert_eq!(describe(&client, "upd").await.device_name(), Some("garage"));

    // By ARN, with only the media type.
    let arn = describe(&client, "upd").await.stream_arn.unwrap();
    client
        .update_stream()
        .stream_arn(&arn)
        .current_version(&v2)
        .media_type("video/h264")
        .send()
        .await
        .unwrap();
    let info = describe(&client, "upd").await;
    assert_eq!(info.media_type(), Some("video/h264"));
    assert_eq!(info.device_name(), Some("garage"));

    // CurrentVersion is required; a bad media type is refused.
    let message = expect_error(
        client
            .update_stream()
            .stream_name("upd")
            .device_name("x")
            .send()
            .await,
        "InvalidArgumentException",
        400,
    );
    assert!(message.contains("currentVersion"), "{message}");
    expect_error(
        client
            .update_stream()
            .stream_name("upd")
            .current_version(info.version().unwrap())
            .media_type("h264")
            .send()
            .await,
        "InvalidArgumentException",
        400,
    );
    expect_error(
        client
            .update_stream()
            .stream_name("nope")
            .current_version("1")
            .send()
            .await,
        "ResourceNotFoundException",
        404,
    );
    server.shutdown().await;
}

#[tokio::test]
async fn delete_stream_takes_an_arn_and_an_optional_version() {
    let server = TestServer::start().await;
    let client = server.kinesis_video_client();
    let arn = create(&client, "del").await;
    let v = version(&client, "del").await;

    // A wrong CurrentVersion: VersionMismatch, and the stream stays.
    expect_error(
        client
            .delete_stream()
            .stream_arn(&arn)
            .current_version("999")
            .send()
            .await,
        "VersionMismatchException",
        400,
    );
    assert_eq!(
        describe(&client, "del").await.status(),
        Some(&Status::Active)
    );

    // The name alone is not accepted: StreamARN is required.
    let message = expect_error(
        client.delete_stream().send().await,
        "InvalidArgumentException",
        400,
    );
    assert!(message.contains("streamARN"), "{message}");

    client
        .delete_stream()
        .stream_arn(&arn)
        .current_version(&v)
        .send()
        .await
        .unwrap();
    expect_error(
        client.describe_stream().stream_name("del").send().await,
        "ResourceNotFoundException",
        404,
    );
    assert!(list_names(&client, None).await.is_empty());

    // Without a version.
    let arn = create(&client, "del2").await;
    client
        .delete_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap();
    expect_error(
        client.delete_stream().stream_arn(&arn).send().await,
        "ResourceNotFoundException",
        404,
    );
    server.shutdown().await;
}

#[tokio::test]
async fn data_retention_moves_by_deltas_within_bounds() {
    let server = TestServer::start().await;
    let client = server.kinesis_video_client();
    create(&client, "ret").await;

    let change = |op: UpdateDataRetentionOperation, hours: i32, version: String| {
        client
            .update_data_retention()
            .stream_name("ret")
            .current_version(version)
            .operation(op)
            .data_retention_change_in_hours(hours)
            .send()
    };
    let hours = |info: StreamInfo| info.data_retention_in_hours().unwrap();

    change(
        UpdateDataRetentionOperation::IncreaseDataRetention,
        10,
        version(&client, "ret").await,
    )
    .await
    .unwrap();
    assert_eq!(hours(describe(&client, "ret").await), 10);
    change(
        UpdateDataRetentionOperation::DecreaseDataRetention,
        4,
        version(&client, "ret").await,
    )
    .await
    .unwrap();
    assert_eq!(hours(describe(&client, "ret").await), 6);

    // Below 0 or above 87,600 hours: InvalidArgument, nothing changes.
    let message = expect_error(
        change(
            UpdateDataRetentionOperation::DecreaseDataRetention,
            7,
            version(&client, "ret").await,
        )
        .await,
        "InvalidArgumentException",
        400,
    );
    assert!(message.contains("87600"), "{message}");
    expect_error(
        change(
            UpdateDataRetentionOperation::IncreaseDataRetention,
            87_595,
            version(&client, "ret").await,
        )
        .await,
        "InvalidArgumentException",
        400,
    );
    change(
        UpdateDataRetentionOperation::IncreaseDataRetention,
        87_594,
        version(&client, "ret").await,
    )
    .await
    .unwrap();
    assert_eq!(hours(describe(&client, "ret").await), 87_600);
    // Down to 0 (live only) is allowed.
    change(
        UpdateDataRetentionOperation::DecreaseDataRetention,
        87_600,
        version(&client, "ret").await,
    )
    .await
    .unwrap();
    assert_eq!(hours(describe(&client, "ret").await), 0);

    // A change of 0 hours, a stale version, a missing operation.
    expect_error(
        change(
            UpdateDataRetentionOperation::IncreaseDataRetention,
            0,
            version(&client, "ret").await,
        )
        .await,
        "InvalidArgumentException",
        400,
    );
    expect_error(
        change(
            UpdateDataRetentionOperation::IncreaseDataRetention,
            1,
            "1".to_owned(),
        )
        .await,
        "VersionMismatchException",
        400,
    );
    let message = expect_error(
        client
            .update_data_retention()
            .stream_name("ret")
            .current_version(version(&client, "ret").await)
            .data_retention_change_in_hours(1)
            .send()
            .await,
        "InvalidArgumentException",
        400,
    );
    assert!(message.contains("operation"), "{message}");
    server.shutdown().await;
}

/// A decrease removes data past the new retention before the call returns, without waiting for
/// the periodic retention pass.
#[tokio::test]
async fn a_retention_decrease_removes_old_data_at_once() {
    let clock = Arc::new(ManualClock::new(now_ms()));
    let server = TestServer::start_with_clock(clock.clone(), |c| {
        c.max_clock_skew = Duration::from_secs(24 * 3600);
        c.retention_interval = Duration::from_secs(3600);
    })
    .await;
    let client = server.kinesis_video_client();
    client
        .create_stream()
        .stream_name("old-data")
        .data_retention_in_hours(10)
        .send()
        .await
        .unwrap();
    // A fragment stored directly (ingest is not what this test is about).
    let stream = VideoStream::by_name(server.state(), "old-data").unwrap();
    let store = server.state().store();
    store
        .append(
            stream.shard_uid,
            vec![NewRecord {
                payload: Bytes::from_static(b"a fragment"),
                ..NewRecord::default()
            }],
        )
        .await
        .unwrap();
    clock.advance_ms(6 * HOUR_MS);

    let decrease = |hours: i32, version: String| {
        client
            .update_data_retention()
            .stream_name("old-data")
            .current_version(version)
            .operation(UpdateDataRetentionOperation::DecreaseDataRetention)
            .data_retention_change_in_hours(hours)
            .send()
    };
    // 10 -> 8 hours: the 6-hour-old fragment stays.
    decrease(2, version(&client, "old-data").await)
        .await
        .unwrap();
    let stats = store.shard_stats(stream.shard_uid).unwrap();
    assert_eq!((stats.trim_horizon, stats.next_offset), (0, 1));
    // 8 -> 5 hours: it is gone when the call returns.
    decrease(3, version(&client, "old-data").await)
        .await
        .unwrap();
    let stats = store.shard_stats(stream.shard_uid).unwrap();
    assert_eq!((stats.trim_horizon, stats.next_offset), (1, 1));
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// GetDataEndpoint
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_data_endpoint_answers_the_server_url_for_every_api() {
    let server = TestServer::start().await;
    let client = server.kinesis_video_client();
    let arn = create(&client, "ep").await;
    assert_eq!(ApiName::values().len(), 8);
    for name in ApiName::values() {
        let by_name = client
            .get_data_endpoint()
            .stream_name("ep")
            .api_name(ApiName::from(*name))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetDataEndpoint {name}: {}", DisplayErrorContext(&e)));
        assert_eq!(
            by_name.data_endpoint(),
            Some(server.endpoint_url().as_str()),
            "{name}"
        );
        let by_arn = client
            .get_data_endpoint()
            .stream_arn(&arn)
            .api_name(ApiName::from(*name))
            .send()
            .await
            .unwrap();
        assert_eq!(by_arn.data_endpoint(), by_name.data_endpoint());
    }
    // APIName is required and must be one of the model's.
    expect_error(
        client.get_data_endpoint().stream_name("ep").send().await,
        "InvalidArgumentException",
        400,
    );
    expect_error(
        client
            .get_data_endpoint()
            .stream_name("ep")
            .api_name(ApiName::from("PUT_RECORDS"))
            .send()
            .await,
        "InvalidArgumentException",
        400,
    );
    server.shutdown().await;

    // A configured public URL is returned as is, without a trailing slash.
    let server =
        TestServer::start_with(|c| c.public_url = Some("https://kvs.example.com:8443/".into()))
            .await;
    let client = server.kinesis_video_client();
    create(&client, "ep").await;
    let out = client
        .get_data_endpoint()
        .stream_name("ep")
        .api_name(ApiName::GetMedia)
        .send()
        .await
        .unwrap();
    assert_eq!(out.data_endpoint(), Some("https://kvs.example.com:8443"));
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Tags
// ---------------------------------------------------------------------------------------------

fn tag_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn tags_through_both_apis() {
    let server = TestServer::start().await;
    let client = server.kinesis_video_client();
    let arn = client
        .create_stream()
        .stream_name("tagged")
        .tags("a", "1")
        .send()
        .await
        .unwrap()
        .stream_arn
        .unwrap();

    // TagStream by name, ListTagsForStream by name and by ARN.
    client
        .tag_stream()
        .stream_name("tagged")
        .tags("b", "2")
        .tags("a", "one")
        .send()
        .await
        .unwrap();
    let by_name = client
        .list_tags_for_stream()
        .stream_name("tagged")
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.tags(), Some(&tag_map(&[("a", "one"), ("b", "2")])));
    assert_eq!(by_name.next_token(), None);
    let by_arn = client
        .list_tags_for_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(by_arn.tags(), by_name.tags());

    // UntagStream by ARN; an unknown key is ignored.
    client
        .untag_stream()
        .stream_arn(&arn)
        .tag_key_list("a")
        .tag_key_list("zzz")
        .send()
        .await
        .unwrap();
    let tags = client
        .list_tags_for_stream()
        .stream_name("tagged")
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags(), Some(&tag_map(&[("b", "2")])));

    // TagResource: a list of {Key, Value}; ListTagsForResource: a map.
    client
        .tag_resource()
        .resource_arn(&arn)
        .tags(Tag::builder().key("c").value("3").build().unwrap())
        .tags(Tag::builder().key("d").value("").build().unwrap())
        .send()
        .await
        .unwrap();
    let listed = client
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.tags(),
        Some(&tag_map(&[("b", "2"), ("c", "3"), ("d", "")]))
    );
    client
        .untag_resource()
        .resource_arn(&arn)
        .tag_key_list("b")
        .tag_key_list("d")
        .send()
        .await
        .unwrap();
    let listed = client
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.tags(), Some(&tag_map(&[("c", "3")])));

    // Errors: a missing stream, a malformed ARN, no tags, an invalid key.
    expect_error(
        client
            .tag_stream()
            .stream_name("nope")
            .tags("k", "v")
            .send()
            .await,
        "ResourceNotFoundException",
        404,
    );
    expect_error(
        client
            .list_tags_for_stream()
            .stream_arn("arn:aws:kinesisvideo:us-east-1:000000000000:stream/tagged")
            .send()
            .await,
        "InvalidResourceFormatException",
        400,
    );
    expect_error(
        client
            .list_tags_for_resource()
            .resource_arn("not-an-arn")
            .send()
            .await,
        "InvalidArgumentException",
        400,
    );
    expect_error(
        client.tag_stream().stream_name("tagged").send().await,
        "InvalidArgumentException",
        400,
    );
    expect_error(
        client
            .tag_stream()
            .stream_name("tagged")
            .tags("bad\u{1}key", "v")
            .send()
            .await,
        "InvalidArgumentException",
        400,
    );
    expect_error(
        client.untag_resource().resource_arn(&arn).send().await,
        "InvalidArgumentException",
        400,
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_holds_at_most_50_tags() {
    let server = TestServer::start().await;
    let client = server.kinesis_video_client();
    let arn = create(&client, "many").await;

    // 49 by TagStream, the 50th by TagResource: fine.
    let mut request = client.tag_stream().stream_name("many");
    for i in 0..49 {
        request = request.tags(format!("k{i:02}"), "v");
    }
    request.send().await.unwrap();
    client
        .tag_resource()
        .resource_arn(&arn)
        .tags(Tag::builder().key("k49").value("v").build().unwrap())
        .send()
        .await
        .unwrap();

    // A 51st, through either API: refused, nothing changes.
    expect_error(
        client
            .tag_stream()
            .stream_name("many")
            .tags("k50", "v")
            .send()
            .await,
        "TagsPerResourceExceededLimitException",
        400,
    );
    expect_error(
        client
            .tag_resource()
            .resource_arn(&arn)
            .tags(Tag::builder().key("k50").value("v").build().unwrap())
            .send()
            .await,
        "TagsPerResourceExceededLimitException",
        400,
    );
    // Overwriting an existing key does not add one.
    client
        .tag_stream()
        .stream_name("many")
        .tags("k00", "changed")
        .send()
        .await
        .unwrap();
    let tags = client
        .list_tags_for_stream()
        .stream_name("many")
        .send()
        .await
        .unwrap()
        .tags
        .unwrap();
    assert_eq!(tags.len(), 50);
    assert_eq!(tags["k00"], "changed");

    // 51 tags at creation.
    let mut request = client.create_stream().stream_name("too-many");
    for i in 0..51 {
        request = request.tags(format!("k{i:02}"), "v");
    }
    expect_error(
        request.send().await,
        "TagsPerResourceExceededLimitException",
        400,
    );
    expect_error(
        client
            .describe_stream()
            .stream_name("too-many")
            .send()
            .await,
        "ResourceNotFoundException",
        404,
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Namespaces, statuses, limits, malformed requests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn video_and_data_streams_are_separate_namespaces() {
    let server = TestServer::start().await;
    let video = server.kinesis_video_client();
    let data = server.kinesis_client();

    create(&video, "same").await;
    create(&video, "video-only").await;
    for name in ["same", "data-only"] {
        data.create_stream()
            .stream_name(name)
            .shard_count(1)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(list_names(&video, None).await, ["same", "video-only"]);
    let data_names = data.list_streams().send().await.unwrap().stream_names;
    assert_eq!(data_names, ["data-only", "same"]);

    // Neither API finds the other's streams.
    expect_error(
        video
            .describe_stream()
            .stream_name("data-only")
            .send()
            .await,
        "ResourceNotFoundException",
        404,
    );
    let err = data
        .describe_stream_summary()
        .stream_name("video-only")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");

    // Deleting the video "same" leaves the data "same" alone.
    let arn = describe(&video, "same").await.stream_arn.unwrap();
    video.delete_stream().stream_arn(&arn).send().await.unwrap();
    let summary = data
        .describe_stream_summary()
        .stream_name("same")
        .send()
        .await
        .unwrap()
        .stream_description_summary
        .unwrap();
    assert_eq!(summary.stream_name(), "same");
    assert_eq!(list_names(&video, None).await, ["video-only"]);
    server.shutdown().await;
}

#[tokio::test]
async fn status_delay_shows_creating_updating_and_deleting() {
    let server =
        TestServer::start_with(|c| c.stream_status_delay = Duration::from_millis(300)).await;
    let client = server.kinesis_video_client();
    let arn = create(&client, "slow").await;
    assert_eq!(
        describe(&client, "slow").await.status(),
        Some(&Status::Creating)
    );
    wait_for_status(&client, "slow", Status::Active).await;

    client
        .update_stream()
        .stream_name("slow")
        .current_version(version(&client, "slow").await)
        .device_name("d")
        .send()
        .await
        .unwrap();
    assert_eq!(
        describe(&client, "slow").await.status(),
        Some(&Status::Updating)
    );
    // Not ACTIVE: another update is refused for now.
    expect_error(
        client
            .update_stream()
            .stream_name("slow")
            .current_version(version(&client, "slow").await)
            .device_name("e")
            .send()
            .await,
        "ResourceInUseException",
        400,
    );
    wait_for_status(&client, "slow", Status::Active).await;
    assert_eq!(describe(&client, "slow").await.device_name(), Some("d"));

    client
        .delete_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        describe(&client, "slow").await.status(),
        Some(&Status::Deleting)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.describe_stream().stream_name("slow").send().await {
            Ok(out) => assert_eq!(out.stream_info.unwrap().status(), Some(&Status::Deleting)),
            Err(e) => {
                assert!(
                    e.into_service_error().is_resource_not_found_exception(),
                    "expected ResourceNotFoundException"
                );
                break;
            }
        }
        assert!(Instant::now() < deadline, "stream still DELETING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

/// `--limits aws`: 5 calls per second per stream and operation, 50 CreateStream calls per
/// second per account. The server's clock stands still, so the buckets never refill.
#[tokio::test]
async fn aws_limits_throttle_the_control_plane() {
    let clock = Arc::new(ManualClock::new(now_ms()));
    let server = TestServer::start_with_clock(clock.clone(), |c| c.limits = LimitsMode::Aws).await;
    let client = server.kinesis_video_client();
    for i in 0..50 {
        create(&client, &format!("s{i:02}")).await;
    }
    let message = expect_error(
        client.create_stream().stream_name("s50").send().await,
        "ClientLimitExceededException",
        400,
    );
    assert!(message.contains("createStream"), "{message}");

    for _ in 0..5 {
        describe(&client, "s00").await;
    }
    expect_error(
        client.describe_stream().stream_name("s00").send().await,
        "ClientLimitExceededException",
        400,
    );
    // Another stream, another operation: their own rates.
    describe(&client, "s01").await;
    client
        .get_data_endpoint()
        .stream_name("s00")
        .api_name(ApiName::GetMedia)
        .send()
        .await
        .unwrap();
    // A second later the stream's rate is back.
    clock.advance_ms(1000);
    describe(&client, "s00").await;
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_specific_invalid_argument_errors() {
    let server = TestServer::start_with(|c| c.credentials.clear()).await;
    let cases: &[(&str, &str, &str)] = &[
        // (path, body, a word the message must contain)
        ("/createStream", r#"{"StreamName": "x""#, "JSON"),
        ("/createStream", "[1, 2]", "object"),
        ("/createStream", "{}", "streamName"),
        ("/createStream", r#"{"StreamName": 5}"#, "StreamName"),
        ("/createStream", r#"{"StreamName": "a/b"}"#, "a/b"),
        (
            "/createStream",
            r#"{"StreamName": "x", "DataRetentionInHours": -1}"#,
            "dataRetentionInHours",
        ),
        (
            "/createStream",
            r#"{"StreamName": "x", "DataRetentionInHours": "24"}"#,
            "DataRetentionInHours",
        ),
        (
            "/createStream",
            r#"{"StreamName": "x", "DataRetentionInHours": 87601}"#,
            "87600",
        ),
        (
            "/createStream",
            r#"{"StreamName": "x", "MediaType": "h264"}"#,
            "mediaType",
        ),
        (
            "/createStream",
            r#"{"StreamName": "x", "DeviceName": ""}"#,
            "deviceName",
        ),
        (
            "/createStream",
            r#"{"StreamName": "x", "StreamStorageConfiguration": {"DefaultStorageTier": "COLD"}}"#,
            "HOT",
        ),
        ("/describeStream", "{}", "StreamName"),
        (
            "/describeStream",
            r#"{"StreamName": "x", "StreamARN": "arn:aws:kinesisvideo:us-east-1:000000000000:stream/x/1"}"#,
            "not both",
        ),
        ("/describeStream", r#"{"StreamARN": "x"}"#, "StreamARN"),
        ("/listStreams", r#"{"MaxResults": 10001}"#, "maxResults"),
        (
            "/listStreams",
            r#"{"StreamNameCondition": {"ComparisonOperator": "CONTAINS", "ComparisonValue": "a"}}"#,
            "BEGINS_WITH",
        ),
        ("/getDataEndpoint", r#"{"StreamName": "x"}"#, "APIName"),
        (
            "/updateDataRetention",
            r#"{"StreamName": "x", "CurrentVersion": "1", "Operation": "GROW", "DataRetentionChangeInHours": 1}"#,
            "INCREASE_DATA_RETENTION",
        ),
        (
            "/updateStream",
            r#"{"StreamName": "x", "CurrentVersion": "v-1"}"#,
            "currentVersion",
        ),
        ("/tagStream", r#"{"StreamName": "x", "Tags": {}}"#, "tags"),
        (
            "/TagResource",
            r#"{"ResourceARN": "arn:aws:kinesisvideo:us-east-1:000000000000:stream/x/1", "Tags": [{"Key": "k"}]}"#,
            "value",
        ),
        (
            "/untagStream",
            r#"{"StreamName": "x", "TagKeyList": []}"#,
            "tagKeyList",
        ),
    ];
    for (path, body, needle) in cases {
        let r = post_json(&server, path, body).await;
        let message = expect_raw_error(&r, "InvalidArgumentException", 400);
        assert!(
            message.contains(needle),
            "{path} {body}: message {message:?} lacks {needle:?}"
        );
    }
    // None of that created anything.
    let r = post_json(&server, "/listStreams", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["StreamInfoList"], serde_json::json!([]));

    // An unknown action is 404 UnknownOperationException.
    let r = post_json(&server, "/frobnicate", "{}").await;
    expect_raw_error(&r, "UnknownOperationException", 404);
    server.shutdown().await;
}
