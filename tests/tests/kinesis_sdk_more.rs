//! Kinesis Data Streams operations beyond create/put/get, judged by the official AWS SDK for
//! Rust (`aws-sdk-kinesis`): resharding (SplitShard, MergeShards, UpdateShardCount), tags on
//! streams and consumers, retention, encryption, enhanced monitoring, DescribeLimits,
//! UpdateStreamMode, and enhanced fan-out consumers with SubscribeToShard over the SDK's
//! event-stream support.
//!
//! Each test starts its own server (`TestServer`). The expectations are AWS's documented
//! behaviour, not whatever the server happens to do.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    ConsumerStatus, EncryptionType, MetricsName, ScalingType, Shard, ShardFilter, ShardFilterType,
    ShardIteratorType, StartingPosition, StreamMode, StreamModeDetails, StreamStatus,
    SubscribeToShardEventStream,
};
use timeshard_tests::{TestServer, stream_arn, wait_for_stream_active};

/// How long a stream may take to become ACTIVE (after creation or a reshard).
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn create_active_stream(client: &Client, name: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateStream {name}: {}", DisplayErrorContext(&e)));
    wait_for_stream_active(client, name, ACTIVE_TIMEOUT).await;
}

fn code_of<E: ProvideErrorMetadata>(error: &E) -> String {
    error.code().unwrap_or("<no code>").to_owned()
}

/// A shard's hash key range as integers.
fn range_of(shard: &Shard) -> (u128, u128) {
    let range = shard
        .hash_key_range()
        .unwrap_or_else(|| panic!("{} has no HashKeyRange", shard.shard_id()));
    (
        range.starting_hash_key().parse().unwrap(),
        range.ending_hash_key().parse().unwrap(),
    )
}

/// Test data that differs per key and round, and covers many byte values.
fn payload(key: &str, round: usize) -> Vec<u8> {
    let mut data = format!("{key}/{round}/").into_bytes();
    data.extend((0..=255u8).map(|b| b.wrapping_add(round as u8)));
    data
}

/// Puts one record and records its data under its partition key. Returns the shard id.
async fn put(
    client: &Client,
    stream: &str,
    key: &str,
    data: Vec<u8>,
    expected: &mut BTreeMap<String, Vec<Vec<u8>>>,
) -> String {
    let out = client
        .put_record()
        .stream_name(stream)
        .partition_key(key)
        .data(Blob::new(data.clone()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutRecord {key}: {}", DisplayErrorContext(&e)));
    expected.entry(key.to_owned()).or_default().push(data);
    out.shard_id().to_owned()
}

/// Every shard of a stream (open and closed) from ListShards, following NextToken.
async fn list_all_shards(client: &Client, stream: &str, filter: Option<ShardFilter>) -> Vec<Shard> {
    let mut shards = Vec::new();
    let mut out = client
        .list_shards()
        .stream_name(stream)
        .set_shard_filter(filter)
        .send()
        .await
        .unwrap_or_else(|e| panic!("ListShards {stream}: {}", DisplayErrorContext(&e)));
    loop {
        shards.extend(out.shards().iter().cloned());
        let Some(token) = out.next_token().map(str::to_owned) else {
            break;
        };
        out = client
            .list_shards()
            .next_token(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("ListShards page: {}", DisplayErrorContext(&e)));
    }
    shards
}

async fn open_shards(client: &Client, stream: &str) -> Vec<Shard> {
    list_all_shards(
        client,
        stream,
        Some(
            ShardFilter::builder()
                .r#type(ShardFilterType::AtLatest)
                .build()
                .unwrap(),
        ),
    )
    .await
}

/// Asserts that `shards` cover 0..=2^128-1 contiguously without overlap.
fn assert_contiguous(shards: &[Shard]) {
    let mut ranges: Vec<(u128, u128)> = shards.iter().map(range_of).collect();
    ranges.sort_unstable();
    assert_eq!(ranges.first().unwrap().0, 0, "ranges {ranges:?} start at 0");
    assert_eq!(
        ranges.last().unwrap().1,
        u128::MAX,
        "ranges {ranges:?} end at 2^128-1"
    );
    for pair in ranges.windows(2) {
        assert_eq!(
            pair[0].1.checked_add(1),
            Some(pair[1].0),
            "ranges {ranges:?} are not contiguous"
        );
    }
}

/// Reads one shard from TRIM_HORIZON: a closed shard until GetRecords returns no
/// NextShardIterator (checking that final response carries ChildShards), an open shard until
/// it is caught up. Returns (partition key, data) in the order read.
async fn read_shard(client: &Client, stream: &str, shard: &Shard) -> Vec<(String, Vec<u8>)> {
    let closed = shard
        .sequence_number_range()
        .unwrap()
        .ending_sequence_number()
        .is_some();
    let mut it = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard.shard_id())
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "GetShardIterator {}: {}",
                shard.shard_id(),
                DisplayErrorContext(&e)
            )
        })
        .shard_iterator()
        .unwrap()
        .to_owned();
    let mut records = Vec::new();
    for _ in 0..500 {
        let out = client
            .get_records()
            .shard_iterator(&it)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "GetRecords {}: {}",
                    shard.shard_id(),
                    DisplayErrorContext(&e)
                )
            });
        for r in out.records() {
            records.push((
                r.partition_key().unwrap_or_default().to_owned(),
                r.data().as_ref().to_vec(),
            ));
        }
        match out.next_shard_iterator() {
            None => {
                assert!(closed, "open shard {} ended", shard.shard_id());
                assert!(
                    !out.child_shards().is_empty(),
                    "the end of closed shard {} carries no ChildShards",
                    shard.shard_id()
                );
                return records;
            }
            Some(next) => {
                if !closed && out.records().is_empty() && out.millis_behind_latest() == Some(0) {
                    return records;
                }
                it = next.to_owned();
            }
        }
    }
    panic!(
        "shard {} never ended after 500 GetRecords calls",
        shard.shard_id()
    );
}

/// Reads every shard of the stream, parents fully before children, and returns the data read
/// per partition key, in read order.
async fn read_all_in_lineage_order(
    client: &Client,
    stream: &str,
) -> BTreeMap<String, Vec<Vec<u8>>> {
    let shards = list_all_shards(client, stream, None).await;
    let ids: BTreeSet<String> = shards.iter().map(|s| s.shard_id().to_owned()).collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut per_key: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    while done.len() < shards.len() {
        let ready: Vec<&Shard> = shards
            .iter()
            .filter(|s| !done.contains(s.shard_id()))
            .filter(|s| {
                [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .all(|p| done.contains(p) || !ids.contains(p))
            })
            .collect();
        assert!(!ready.is_empty(), "shard lineage has a cycle: {shards:?}");
        for shard in ready {
            for (key, data) in read_shard(client, stream, shard).await {
                per_key.entry(key).or_default().push(data);
            }
            done.insert(shard.shard_id().to_owned());
        }
    }
    per_key
}

fn assert_same_per_key(
    read: &BTreeMap<String, Vec<Vec<u8>>>,
    expected: &BTreeMap<String, Vec<Vec<u8>>>,
) {
    assert_eq!(
        read.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "partition keys read back"
    );
    for (key, want) in expected {
        let got = &read[key];
        assert_eq!(got.len(), want.len(), "number of records for key {key}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(g == w, "key {key} record {i}: data or order differs");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Resharding
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_then_merge_keeps_per_key_order() {
    let server = TestServer::start().await;
    let client = server.kinesis_client();
    let stream = "split-merge";
    create_active_stream(&client, stream, 1).await;
    let keys: Vec<String> = (0..12).map(|i| format!("key-{i}")).collect();
    let mut expected = BTreeMap::new();

    let mut round = 0;
    for _ in 0..3 {
        for key in &keys {
            put(&client, stream, key, payload(key, round), &mut expected).await;
        }
        round += 1;
    }

    let parent = list_all_shards(&client, stream, None).await;
    assert_eq!(parent.len(), 1);
    let parent_id = parent[0].shard_id().to_owned();
    client
        .split_shard()
        .stream_name(stream)
        .shard_to_split(&parent_id)
        .new_starting_hash_key((1u128 << 127).to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("SplitShard: {}", DisplayErrorContext(&e)));
    wait_for_stream_active(&client, stream, ACTIVE_TIMEOUT).await;

    let mut children = open_shards(&client, stream).await;
    assert_eq!(
        children.len(),
        2,
        "open shards after the split: {children:?}"
    );
    children.sort_by_key(|s| range_of(s).0);
    assert_eq!(range_of(&children[0]), (0, (1u128 << 127) - 1));
    assert_eq!(range_of(&children[1]), (1u128 << 127, u128::MAX));
    for child in &children {
        assert_eq!(child.parent_shard_id(), Some(parent_id.as_str()));
        assert_eq!(child.adjacent_parent_shard_id(), None);
    }
    let child_ids: BTreeSet<String> = children.iter().map(|s| s.shard_id().to_owned()).collect();

    for _ in 0..3 {
        for key in &keys {
            let shard = put(&client, stream, key, payload(key, round), &mut expected).await;
            assert!(
                child_ids.contains(&shard),
                "put after the split went to {shard}"
            );
        }
        round += 1;
    }

    client
        .merge_shards()
        .stream_name(stream)
        .shard_to_merge(children[0].shard_id())
        .adjacent_shard_to_merge(children[1].shard_id())
        .send()
        .await
        .unwrap_or_else(|e| panic!("MergeShards: {}", DisplayErrorContext(&e)));
    wait_for_stream_active(&client, stream, ACTIVE_TIMEOUT).await;

    let merged = open_shards(&client, stream).await;
    assert_eq!(merged.len(), 1, "open shards after the merge: {merged:?}");
    let merged_id = merged[0].shard_id().to_owned();
    assert_eq!(range_of(&merged[0]), (0, u128::MAX));
    let merge_parents: BTreeSet<&str> = [
        merged[0].parent_shard_id(),
        merged[0].adjacent_parent_shard_id(),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(
        merge_parents,
        child_ids
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
    );
    assert!(
        merged[0]
            .sequence_number_range()
            .unwrap()
            .ending_sequence_number()
            .is_none(),
        "the merged shard is open"
    );

    for _ in 0..3 {
        for key in &keys {
            let shard = put(&client, stream, key, payload(key, round), &mut expected).await;
            assert_eq!(shard, merged_id, "put after the merge");
        }
        round += 1;
    }

    // Closed shards carry an EndingSequenceNumber in both DescribeStream and ListShards.
    let described = client
        .describe_stream()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .stream_description
        .unwrap();
    let listed = list_all_shards(&client, stream, None).await;
    for shards in [described.shards(), listed.as_slice()] {
        assert_eq!(shards.len(), 4, "all shards: {shards:?}");
        for s in shards {
            let ending = s.sequence_number_range().unwrap().ending_sequence_number();
            if s.shard_id() == merged_id {
                assert!(ending.is_none(), "open shard {} has an end", s.shard_id());
            } else {
                let ending = ending.unwrap_or_else(|| {
                    panic!("closed shard {} has no EndingSequenceNumber", s.shard_id())
                });
                assert!(
                    !ending.is_empty() && ending.bytes().all(|b| b.is_ascii_digit()),
                    "EndingSequenceNumber {ending:?}"
                );
            }
        }
    }

    let read = read_all_in_lineage_order(&client, stream).await;
    assert_same_per_key(&read, &expected);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_shard_count_scales_up_and_down() {
    let server = TestServer::start().await;
    let client = server.kinesis_client();
    let stream = "scaling";
    create_active_stream(&client, stream, 2).await;
    let keys: Vec<String> = (0..16).map(|i| format!("pk{i}")).collect();
    let mut expected = BTreeMap::new();
    let mut round = 0;
    let mut put_round = async |client: &Client, expected: &mut BTreeMap<String, Vec<Vec<u8>>>| {
        for key in &keys {
            put(client, stream, key, payload(key, round), expected).await;
        }
        round += 1;
    };
    put_round(&client, &mut expected).await;

    for target in [3, 2] {
        let out = client
            .update_shard_count()
            .stream_name(stream)
            .target_shard_count(target)
            .scaling_type(ScalingType::UniformScaling)
            .send()
            .await
            .unwrap_or_else(|e| panic!("UpdateShardCount {target}: {}", DisplayErrorContext(&e)));
        assert_eq!(out.target_shard_count(), Some(target));
        wait_for_stream_active(&client, stream, ACTIVE_TIMEOUT).await;
        let open = open_shards(&client, stream).await;
        assert_eq!(
            open.len(),
            usize::try_from(target).unwrap(),
            "open shards: {open:?}"
        );
        assert_contiguous(&open);
        let summary = wait_for_stream_active(&client, stream, ACTIVE_TIMEOUT).await;
        assert_eq!(summary.open_shard_count(), target);
        put_round(&client, &mut expected).await;
    }

    let read = read_all_in_lineage_order(&client, stream).await;
    assert_same_per_key(&read, &expected);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Tags
// ---------------------------------------------------------------------------------------------

async fn stream_tags_paged(client: &Client, stream: &str, limit: i32) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    let mut start: Option<String> = None;
    for _ in 0..50 {
        let out = client
            .list_tags_for_stream()
            .stream_name(stream)
            .limit(limit)
            .set_exclusive_start_tag_key(start.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("ListTagsForStream: {}", DisplayErrorContext(&e)));
        assert!(
            out.tags().len() <= usize::try_from(limit).unwrap(),
            "{} tags with Limit {limit}",
            out.tags().len()
        );
        for tag in out.tags() {
            let old = tags.insert(
                tag.key().to_owned(),
                tag.value().unwrap_or_default().to_owned(),
            );
            assert!(old.is_none(), "tag {} listed twice", tag.key());
        }
        if !out.has_more_tags() {
            return tags;
        }
        assert!(!out.tags().is_empty(), "HasMoreTags with an empty page");
        start = Some(out.tags().last().unwrap().key().to_owned());
    }
    panic!("ListTagsForStream never ended");
}

fn tag_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_on_streams_and_resources() {
    let server = TestServer::start().await;
    let client = server.kinesis_client();
    let stream = "tagged";
    create_active_stream(&client, stream, 1).await;
    let arn = stream_arn(stream);

    let all = [
        ("alpha", "1"),
        ("bravo", "2"),
        ("charlie", "3"),
        ("delta", "4"),
        ("echo", ""),
    ];
    client
        .add_tags_to_stream()
        .stream_name(stream)
        .set_tags(Some(
            all.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("AddTagsToStream: {}", DisplayErrorContext(&e)));

    // One page with HasMoreTags, then the rest.
    let first = client
        .list_tags_for_stream()
        .stream_name(stream)
        .limit(2)
        .send()
        .await
        .unwrap();
    assert_eq!(first.tags().len(), 2);
    assert!(first.has_more_tags(), "HasMoreTags with 2 of 5 tags");
    let everything = client
        .list_tags_for_stream()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    assert_eq!(everything.tags().len(), 5);
    assert!(!everything.has_more_tags());
    for limit in [1, 2, 3, 10] {
        assert_eq!(
            stream_tags_paged(&client, stream, limit).await,
            tag_map(&all),
            "Limit {limit}"
        );
    }

    client
        .remove_tags_from_stream()
        .stream_name(stream)
        .tag_keys("alpha")
        .tag_keys("charlie")
        .send()
        .await
        .unwrap_or_else(|e| panic!("RemoveTagsFromStream: {}", DisplayErrorContext(&e)));
    assert_eq!(
        stream_tags_paged(&client, stream, 10).await,
        tag_map(&[("bravo", "2"), ("delta", "4"), ("echo", "")])
    );

    // The resource-based operations, by stream ARN, see and change the same tags.
    let resource_tags =
        |out: &aws_sdk_kinesis::operation::list_tags_for_resource::ListTagsForResourceOutput| {
            out.tags()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().unwrap_or_default().to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
    let out = client
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("ListTagsForResource: {}", DisplayErrorContext(&e)));
    assert_eq!(
        resource_tags(&out),
        tag_map(&[("bravo", "2"), ("delta", "4"), ("echo", "")])
    );
    client
        .tag_resource()
        .resource_arn(&arn)
        .tags("foxtrot", "6")
        .tags("bravo", "22")
        .send()
        .await
        .unwrap_or_else(|e| panic!("TagResource: {}", DisplayErrorContext(&e)));
    client
        .untag_resource()
        .resource_arn(&arn)
        .tag_keys("delta")
        .send()
        .await
        .unwrap_or_else(|e| panic!("UntagResource: {}", DisplayErrorContext(&e)));
    let want = tag_map(&[("bravo", "22"), ("echo", ""), ("foxtrot", "6")]);
    let out = client
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(resource_tags(&out), want);
    assert_eq!(stream_tags_paged(&client, stream, 10).await, want);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Retention, encryption, monitoring, limits
// ---------------------------------------------------------------------------------------------

async fn retention_hours(client: &Client, stream: &str) -> i32 {
    wait_for_stream_active(client, stream, ACTIVE_TIMEOUT)
        .await
        .retention_period_hours()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_period_increases_and_decreases() {
    let server = TestServer::start().await;
    let client = server.kinesis_client();
    let stream = "retention";
    create_active_stream(&client, stream, 1).await;
    assert_eq!(retention_hours(&client, stream).await, 24);

    client
        .increase_stream_retention_period()
        .stream_name(stream)
        .retention_period_hours(48)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "IncreaseStreamRetentionPeriod 48: {}",
                DisplayErrorContext(&e)
            )
        });
    assert_eq!(retention_hours(&client, stream).await, 48);
    client
        .decrease_stream_retention_period()
        .stream_name(stream)
        .retention_period_hours(24)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "DecreaseStreamRetentionPeriod 24: {}",
                DisplayErrorContext(&e)
            )
        });
    assert_eq!(retention_hours(&client, stream).await, 24);

    client
        .increase_stream_retention_period()
        .stream_name(stream)
        .retention_period_hours(72)
        .send()
        .await
        .unwrap();
    assert_eq!(retention_hours(&client, stream).await, 72);

    // A "decrease" to more, an "increase" to less.
    let e = client
        .decrease_stream_retention_period()
        .stream_name(stream)
        .retention_period_hours(96)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        e.is_invalid_argument_exception(),
        "decrease to more: {}",
        DisplayErrorContext(&e)
    );
    let e = client
        .increase_stream_retention_period()
        .stream_name(stream)
        .retention_period_hours(48)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        e.is_invalid_argument_exception(),
        "increase to less: {}",
        DisplayErrorContext(&e)
    );

    // Out of range: below 24 hours, above 8760 (365 days).
    let e = client
        .decrease_stream_retention_period()
        .stream_name(stream)
        .retention_period_hours(23)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(
            code_of(&e).as_str(),
            "InvalidArgumentException" | "ValidationException"
        ),
        "decrease to 23 h: {}",
        DisplayErrorContext(&e)
    );
    let e = client
        .increase_stream_retention_period()
        .stream_name(stream)
        .retention_period_hours(8761)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(
            code_of(&e).as_str(),
            "InvalidArgumentException" | "ValidationException"
        ),
        "increase to 8761 h: {}",
        DisplayErrorContext(&e)
    );
    assert_eq!(
        retention_hours(&client, stream).await,
        72,
        "unchanged by the failures"
    );

    client
        .increase_stream_retention_period()
        .stream_name(stream)
        .retention_period_hours(8760)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "IncreaseStreamRetentionPeriod 8760: {}",
                DisplayErrorContext(&e)
            )
        });
    assert_eq!(retention_hours(&client, stream).await, 8760);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_and_monitoring() {
    let server = TestServer::start().await;
    let client = server.kinesis_client();
    let stream = "settings";
    create_active_stream(&client, stream, 3).await;
    create_active_stream(&client, "other", 2).await;

    let summary = wait_for_stream_active(&client, stream, ACTIVE_TIMEOUT).await;
    assert_eq!(summary.encryption_type(), Some(&EncryptionType::None));

    let key = "alias/aws/kinesis";
    client
        .start_stream_encryption()
        .stream_name(stream)
        .encryption_type(EncryptionType::Kms)
        .key_id(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("StartStreamEncryption: {}", DisplayErrorContext(&e)));
    let summary = wait_for_stream_active(&client, stream, ACTIVE_TIMEOUT).await;
    assert_eq!(summary.encryption_type(), Some(&EncryptionType::Kms));
    assert_eq!(summary.key_id(), Some(key));
    let out = client
        .put_record()
        .stream_name(stream)
        .partition_key("k")
        .data(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.encryption_type(),
        Some(&EncryptionType::Kms),
        "PutRecord on a KMS stream"
    );

    client
        .stop_stream_encryption()
        .stream_name(stream)
        .encryption_type(EncryptionType::Kms)
        .key_id(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("StopStreamEncryption: {}", DisplayErrorContext(&e)));
    let summary = wait_for_stream_active(&client, stream, ACTIVE_TIMEOUT).await;
    assert_eq!(summary.encryption_type(), Some(&EncryptionType::None));
    assert_eq!(summary.key_id(), None);

    let metrics_of = |summary: &aws_sdk_kinesis::types::StreamDescriptionSummary| {
        summary
            .enhanced_monitoring()
            .iter()
            .flat_map(|m| m.shard_level_metrics().iter().cloned())
            .collect::<BTreeSet<_>>()
    };
    let out = client
        .enable_enhanced_monitoring()
        .stream_name(stream)
        .shard_level_metrics(MetricsName::IncomingBytes)
        .shard_level_metrics(MetricsName::OutgoingRecords)
        .send()
        .await
        .unwrap_or_else(|e| panic!("EnableEnhancedMonitoring: {}", DisplayErrorContext(&e)));
    assert!(out.current_shard_level_metrics().is_empty());
    assert_eq!(
        out.desired_shard_level_metrics()
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([MetricsName::IncomingBytes, MetricsName::OutgoingRecords])
    );
    let summary = wait_for_stream_active(&client, stream, ACTIVE_TIMEOUT).await;
    assert_eq!(
        metrics_of(&summary),
        BTreeSet::from([MetricsName::IncomingBytes, MetricsName::OutgoingRecords])
    );
    let out = client
        .disable_enhanced_monitoring()
        .stream_name(stream)
        .shard_level_metrics(MetricsName::IncomingBytes)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DisableEnhancedMonitoring: {}", DisplayErrorContext(&e)));
    assert_eq!(
        out.desired_shard_level_metrics()
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([MetricsName::OutgoingRecords])
    );
    let summary = wait_for_stream_active(&client, stream, ACTIVE_TIMEOUT).await;
    assert_eq!(
        metrics_of(&summary),
        BTreeSet::from([MetricsName::OutgoingRecords])
    );

    // DescribeLimits counts the open shards of every stream (3 + 2); its "no limit" values fit
    // the model's 32-bit integers, or the SDK could not parse them.
    let limits = client
        .describe_limits()
        .send()
        .await
        .expect("DescribeLimits");
    assert_eq!(limits.open_shard_count(), 5);
    assert_eq!(limits.shard_limit(), i32::MAX);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// UpdateStreamMode
// ---------------------------------------------------------------------------------------------

fn mode_details(mode: StreamMode) -> StreamModeDetails {
    StreamModeDetails::builder()
        .stream_mode(mode)
        .build()
        .unwrap()
}

/// The mode DescribeStreamSummary reports.
fn summary_mode(summary: &aws_sdk_kinesis::types::StreamDescriptionSummary) -> StreamMode {
    summary
        .stream_mode_details()
        .unwrap_or_else(|| panic!("{} has no StreamModeDetails", summary.stream_name()))
        .stream_mode()
        .clone()
}

/// The mode and status of `stream` as ListStreams' StreamSummaries and DescribeStream show it.
async fn listed_and_described_mode(client: &Client, stream: &str) -> (StreamMode, StreamMode) {
    let listed = client
        .list_streams()
        .send()
        .await
        .unwrap_or_else(|e| panic!("ListStreams: {}", DisplayErrorContext(&e)));
    let summary = listed
        .stream_summaries()
        .iter()
        .find(|s| s.stream_name() == stream)
        .unwrap_or_else(|| panic!("{stream} not in StreamSummaries"));
    let described = client
        .describe_stream()
        .stream_name(stream)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DescribeStream: {}", DisplayErrorContext(&e)));
    (
        summary.stream_mode_details().unwrap().stream_mode().clone(),
        described
            .stream_description()
            .unwrap()
            .stream_mode_details()
            .unwrap()
            .stream_mode()
            .clone(),
    )
}

async fn on_demand_count(client: &Client) -> i32 {
    client
        .describe_limits()
        .send()
        .await
        .expect("DescribeLimits")
        .on_demand_stream_count()
}

/// With a status delay the stream shows UPDATING (already in the new mode) and refuses another
/// change until it is ACTIVE again; the shards stay as they are in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_stream_mode_both_ways() {
    let server =
        TestServer::start_with(|c| c.stream_status_delay = Duration::from_millis(1_000)).await;
    let client = server.kinesis_client();
    let stream = "modal";
    let arn = stream_arn(stream);
    create_active_stream(&client, stream, 3).await;
    let summary = wait_for_stream_active(&client, stream, ACTIVE_TIMEOUT).await;
    assert_eq!(summary_mode(&summary), StreamMode::Provisioned);
    assert_eq!(on_demand_count(&client).await, 0);

    for (mode, count) in [(StreamMode::OnDemand, 1), (StreamMode::Provisioned, 0)] {
        client
            .update_stream_mode()
            .stream_arn(&arn)
            .stream_mode_details(mode_details(mode.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("UpdateStreamMode {mode:?}: {}", DisplayErrorContext(&e)));
        let during = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .unwrap()
            .stream_description_summary
            .unwrap();
        assert_eq!(
            *during.stream_status(),
            StreamStatus::Updating,
            "to {mode:?}"
        );
        assert_eq!(summary_mode(&during), mode);
        let e = client
            .update_stream_mode()
            .stream_arn(&arn)
            .stream_mode_details(mode_details(StreamMode::OnDemand))
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(
            e.is_resource_in_use_exception(),
            "UpdateStreamMode while UPDATING: {}",
            DisplayErrorContext(&e)
        );
        assert!(
            e.message().unwrap_or_default().contains("UPDATING"),
            "message {:?}",
            e.message()
        );

        let after = wait_for_stream_active(&client, stream, ACTIVE_TIMEOUT).await;
        assert_eq!(summary_mode(&after), mode);
        assert_eq!(after.open_shard_count(), 3, "to {mode:?}");
        assert_eq!(
            listed_and_described_mode(&client, stream).await,
            (mode.clone(), mode.clone())
        );
        assert_eq!(on_demand_count(&client).await, count, "to {mode:?}");
    }

    // The mode the stream already has: nothing to do, and the stream stays ACTIVE.
    client
        .update_stream_mode()
        .stream_arn(&arn)
        .stream_mode_details(mode_details(StreamMode::Provisioned))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "UpdateStreamMode to the same mode: {}",
                DisplayErrorContext(&e)
            )
        });
    let summary = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary
        .unwrap();
    assert_eq!(*summary.stream_status(), StreamStatus::Active);
    assert_eq!(summary_mode(&summary), StreamMode::Provisioned);

    // An ON_DEMAND stream (4 shards, as CreateStream makes it) becomes PROVISIONED with its
    // shards, and takes records in either mode.
    let od = "born-on-demand";
    client
        .create_stream()
        .stream_name(od)
        .stream_mode_details(mode_details(StreamMode::OnDemand))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateStream ON_DEMAND: {}", DisplayErrorContext(&e)));
    // Still CREATING: not ACTIVE, so no mode change yet.
    let e = client
        .update_stream_mode()
        .stream_arn(stream_arn(od))
        .stream_mode_details(mode_details(StreamMode::Provisioned))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        e.is_resource_in_use_exception(),
        "UpdateStreamMode while CREATING: {}",
        DisplayErrorContext(&e)
    );
    let summary = wait_for_stream_active(&client, od, ACTIVE_TIMEOUT).await;
    assert_eq!(summary_mode(&summary), StreamMode::OnDemand);
    assert_eq!(summary.open_shard_count(), 4);
    client
        .update_stream_mode()
        .stream_arn(stream_arn(od))
        .stream_mode_details(mode_details(StreamMode::Provisioned))
        .send()
        .await
        .unwrap_or_else(|e| panic!("UpdateStreamMode: {}", DisplayErrorContext(&e)));
    let summary = wait_for_stream_active(&client, od, ACTIVE_TIMEOUT).await;
    assert_eq!(summary_mode(&summary), StreamMode::Provisioned);
    assert_eq!(summary.open_shard_count(), 4);
    let mut expected = BTreeMap::new();
    put(
        &client,
        od,
        "after-switch",
        payload("after-switch", 0),
        &mut expected,
    )
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_stream_mode_errors() {
    let server = TestServer::start().await;
    let client = server.kinesis_client();
    let stream = "modal-errors";
    let arn = stream_arn(stream);
    create_active_stream(&client, stream, 1).await;

    // Without a status delay the change is done when the call returns.
    client
        .update_stream_mode()
        .stream_arn(&arn)
        .stream_mode_details(mode_details(StreamMode::OnDemand))
        .send()
        .await
        .unwrap_or_else(|e| panic!("UpdateStreamMode: {}", DisplayErrorContext(&e)));
    let summary = client
        .describe_stream_summary()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap()
        .stream_description_summary
        .unwrap();
    assert_eq!(*summary.stream_status(), StreamStatus::Active);
    assert_eq!(summary_mode(&summary), StreamMode::OnDemand);

    let e = client
        .update_stream_mode()
        .stream_arn(stream_arn("no-such-stream"))
        .stream_mode_details(mode_details(StreamMode::OnDemand))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        e.is_resource_not_found_exception(),
        "unknown stream: {}",
        DisplayErrorContext(&e)
    );
    assert!(
        e.message().unwrap_or_default().contains("no-such-stream"),
        "message {:?}",
        e.message()
    );

    // A mode the model does not have is a constraint violation, as in CreateStream.
    let e = client
        .update_stream_mode()
        .stream_arn(&arn)
        .stream_mode_details(mode_details(StreamMode::from("SERVERLESS")))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(
        code_of(&e),
        "ValidationException",
        "{}",
        DisplayErrorContext(&e)
    );
    assert!(
        e.message().unwrap_or_default().contains("SERVERLESS"),
        "message {:?}",
        e.message()
    );

    // Warm throughput is for switching to ON_DEMAND only.
    let e = client
        .update_stream_mode()
        .stream_arn(&arn)
        .stream_mode_details(mode_details(StreamMode::Provisioned))
        .warm_throughput_mibps(10)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        e.is_invalid_argument_exception(),
        "WarmThroughputMiBps with PROVISIONED: {}",
        DisplayErrorContext(&e)
    );

    // Not a stream ARN of this server's region and account.
    let e = client
        .update_stream_mode()
        .stream_arn(arn.replace(":stream/", ":streams/"))
        .stream_mode_details(mode_details(StreamMode::Provisioned))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        e.is_invalid_argument_exception(),
        "malformed ARN: {}",
        DisplayErrorContext(&e)
    );

    // None of the refused calls changed the stream.
    let summary = wait_for_stream_active(&client, stream, ACTIVE_TIMEOUT).await;
    assert_eq!(summary_mode(&summary), StreamMode::OnDemand);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Consumers and SubscribeToShard
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_register_describe_list_subscribe_deregister() {
    let server = TestServer::start().await;
    let client = server.kinesis_client();
    let stream = "fanout";
    create_active_stream(&client, stream, 1).await;
    let arn = stream_arn(stream);

    let mut consumer_arns = BTreeMap::new();
    for name in ["reader-a", "reader-b"] {
        let out = client
            .register_stream_consumer()
            .stream_arn(&arn)
            .consumer_name(name)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("RegisterStreamConsumer {name}: {}", DisplayErrorContext(&e))
            });
        let c = out.consumer().unwrap();
        assert_eq!(c.consumer_name(), name);
        assert!(
            c.consumer_arn()
                .starts_with(&format!("{arn}/consumer/{name}:")),
            "consumer ARN {}",
            c.consumer_arn()
        );
        consumer_arns.insert(name, c.consumer_arn().to_owned());
    }
    let e = client
        .register_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("reader-a")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        e.is_resource_in_use_exception(),
        "duplicate consumer: {}",
        DisplayErrorContext(&e)
    );

    // Wait for ACTIVE, describing by ARN.
    let a_arn = consumer_arns["reader-a"].clone();
    for _ in 0..500 {
        let d = client
            .describe_stream_consumer()
            .consumer_arn(&a_arn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeStreamConsumer: {}", DisplayErrorContext(&e)));
        let d = d.consumer_description().unwrap();
        assert_eq!(d.consumer_name(), "reader-a");
        assert_eq!(d.stream_arn(), arn);
        if *d.consumer_status() == ConsumerStatus::Active {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let by_name = client
        .describe_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("reader-a")
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "DescribeStreamConsumer by name: {}",
                DisplayErrorContext(&e)
            )
        });
    let d = by_name.consumer_description().unwrap();
    assert_eq!(d.consumer_arn(), a_arn);
    assert_eq!(*d.consumer_status(), ConsumerStatus::Active);

    let listed = client
        .list_stream_consumers()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("ListStreamConsumers: {}", DisplayErrorContext(&e)));
    let listed: BTreeMap<String, String> = listed
        .consumers()
        .iter()
        .map(|c| (c.consumer_name().to_owned(), c.consumer_arn().to_owned()))
        .collect();
    assert_eq!(
        listed,
        consumer_arns
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    );

    // SubscribeToShard at LATEST, then put records and see them arrive in order.
    let shard_id = list_all_shards(&client, stream, None).await[0]
        .shard_id()
        .to_owned();
    let mut output = client
        .subscribe_to_shard()
        .consumer_arn(&a_arn)
        .shard_id(&shard_id)
        .starting_position(
            StartingPosition::builder()
                .r#type(ShardIteratorType::Latest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("SubscribeToShard: {}", DisplayErrorContext(&e)));
    let mut sent = Vec::new();
    for i in 0..5 {
        let data = payload("sub", i);
        let out = client
            .put_record()
            .stream_name(stream)
            .partition_key(format!("sub-{i}"))
            .data(Blob::new(data.clone()))
            .send()
            .await
            .unwrap();
        sent.push((out.sequence_number().to_owned(), format!("sub-{i}"), data));
    }
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received.len() < sent.len() {
        let Ok(next) = tokio::time::timeout_at(deadline, output.event_stream.recv()).await else {
            panic!(
                "only {} of {} records after 30 s",
                received.len(),
                sent.len()
            );
        };
        let event = next
            .unwrap_or_else(|e| panic!("event stream: {}", DisplayErrorContext(&e)))
            .expect("event stream ended early");
        match event {
            SubscribeToShardEventStream::SubscribeToShardEvent(ev) => {
                for r in ev.records() {
                    received.push((
                        r.sequence_number().to_owned(),
                        r.partition_key().unwrap_or_default().to_owned(),
                        r.data().as_ref().to_vec(),
                    ));
                }
                assert!(!ev.continuation_sequence_number().is_empty());
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(received.len(), sent.len(), "records beyond those put");
    for (i, (got, want)) in received.iter().zip(&sent).enumerate() {
        assert_eq!(got.0, want.0, "record {i}: sequence number");
        assert_eq!(got.1, want.1, "record {i}: partition key");
        assert!(got.2 == want.2, "record {i}: data differs");
    }
    drop(output);

    // Deregister one by name, the other by ARN.
    client
        .deregister_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("reader-b")
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "DeregisterStreamConsumer by name: {}",
                DisplayErrorContext(&e)
            )
        });
    client
        .deregister_stream_consumer()
        .consumer_arn(&a_arn)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "DeregisterStreamConsumer by ARN: {}",
                DisplayErrorContext(&e)
            )
        });
    for name in ["reader-a", "reader-b"] {
        let mut gone = false;
        for _ in 0..500 {
            match client
                .describe_stream_consumer()
                .stream_arn(&arn)
                .consumer_name(name)
                .send()
                .await
            {
                Ok(out) => assert_eq!(
                    *out.consumer_description().unwrap().consumer_status(),
                    ConsumerStatus::Deleting
                ),
                Err(e) => {
                    let e = e.into_service_error();
                    assert!(
                        e.is_resource_not_found_exception(),
                        "{}",
                        DisplayErrorContext(&e)
                    );
                    gone = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "consumer {name} still there after deregistering");
    }
    let listed = client
        .list_stream_consumers()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap();
    assert!(
        listed.consumers().is_empty(),
        "consumers left: {:?}",
        listed.consumers()
    );
    server.shutdown().await;
}

/// The tags ListTagsForResource gives for `arn`.
async fn resource_tags(client: &Client, arn: &str) -> BTreeMap<String, String> {
    client
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("ListTagsForResource {arn}: {}", DisplayErrorContext(&e)))
        .tags()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().unwrap_or_default().to_owned()))
        .collect()
}

/// `count` tags `<prefix>-<i>` = `v<i>`.
fn many_tags(prefix: &str, count: usize) -> HashMap<String, String> {
    (0..count)
        .map(|i| (format!("{prefix}-{i:02}"), format!("v{i}")))
        .collect()
}

async fn register_consumer(
    client: &Client,
    stream_arn: &str,
    name: &str,
    tags: Option<HashMap<String, String>>,
) -> String {
    client
        .register_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name(name)
        .set_tags(tags)
        .send()
        .await
        .unwrap_or_else(|e| panic!("RegisterStreamConsumer {name}: {}", DisplayErrorContext(&e)))
        .consumer()
        .unwrap()
        .consumer_arn()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_tags_round_trip() {
    let server = TestServer::start().await;
    let client = server.kinesis_client();
    let stream = "tagged-fanout";
    create_active_stream(&client, stream, 1).await;
    let arn = stream_arn(stream);

    // Tags given at registration.
    let tagged = register_consumer(
        &client,
        &arn,
        "tagged-reader",
        Some(HashMap::from([
            ("team".to_owned(), "data".to_owned()),
            ("env".to_owned(), "test".to_owned()),
        ])),
    )
    .await;
    let plain = register_consumer(&client, &arn, "plain-reader", None).await;
    assert_eq!(
        resource_tags(&client, &tagged).await,
        tag_map(&[("env", "test"), ("team", "data")])
    );
    assert_eq!(resource_tags(&client, &plain).await, BTreeMap::new());

    // TagResource adds and overwrites, UntagResource removes; the stream's own tags and the
    // other consumer's are separate.
    client
        .tag_resource()
        .resource_arn(&tagged)
        .tags("env", "prod")
        .tags("owner", "")
        .send()
        .await
        .unwrap_or_else(|e| panic!("TagResource consumer: {}", DisplayErrorContext(&e)));
    assert_eq!(
        resource_tags(&client, &tagged).await,
        tag_map(&[("env", "prod"), ("owner", ""), ("team", "data")])
    );
    client
        .tag_resource()
        .resource_arn(&arn)
        .tags("stream-tag", "s")
        .send()
        .await
        .unwrap_or_else(|e| panic!("TagResource stream: {}", DisplayErrorContext(&e)));
    client
        .untag_resource()
        .resource_arn(&tagged)
        .tag_keys("team")
        .tag_keys("not-there")
        .send()
        .await
        .unwrap_or_else(|e| panic!("UntagResource consumer: {}", DisplayErrorContext(&e)));
    assert_eq!(
        resource_tags(&client, &tagged).await,
        tag_map(&[("env", "prod"), ("owner", "")])
    );
    assert_eq!(resource_tags(&client, &plain).await, BTreeMap::new());
    assert_eq!(
        resource_tags(&client, &arn).await,
        tag_map(&[("stream-tag", "s")])
    );
    assert_eq!(
        stream_tags_paged(&client, stream, 10).await,
        tag_map(&[("stream-tag", "s")])
    );

    // The consumer is the same consumer with tags: described and listed as before.
    let d = client
        .describe_stream_consumer()
        .consumer_arn(&tagged)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DescribeStreamConsumer: {}", DisplayErrorContext(&e)));
    assert_eq!(d.consumer_description().unwrap().consumer_arn(), tagged);
    assert_eq!(
        *d.consumer_description().unwrap().consumer_status(),
        ConsumerStatus::Active
    );

    // Changes to the consumer list keep the tags of the consumers that stay.
    client
        .deregister_stream_consumer()
        .consumer_arn(&plain)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeregisterStreamConsumer: {}", DisplayErrorContext(&e)));
    let third = register_consumer(&client, &arn, "third-reader", None).await;
    assert_eq!(
        resource_tags(&client, &tagged).await,
        tag_map(&[("env", "prod"), ("owner", "")])
    );
    assert_eq!(resource_tags(&client, &third).await, BTreeMap::new());
    let summary = wait_for_stream_active(&client, stream, ACTIVE_TIMEOUT).await;
    assert_eq!(summary.consumer_count(), Some(2));

    // Deregistering drops the tags: the old ARN is not found, and a consumer registered again
    // under the name starts without them.
    client
        .deregister_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("tagged-reader")
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeregisterStreamConsumer: {}", DisplayErrorContext(&e)));
    let e = client
        .list_tags_for_resource()
        .resource_arn(&tagged)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        e.is_resource_not_found_exception(),
        "ListTagsForResource of a deregistered consumer: {}",
        DisplayErrorContext(&e)
    );
    let again = register_consumer(&client, &arn, "tagged-reader", None).await;
    assert_eq!(resource_tags(&client, &again).await, BTreeMap::new());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_tags_limits_and_unknown_consumers() {
    let server = TestServer::start().await;
    let client = server.kinesis_client();
    let stream = "tag-limits";
    create_active_stream(&client, stream, 1).await;
    let arn = stream_arn(stream);
    let consumer = register_consumer(&client, &arn, "reader", Some(many_tags("k", 48))).await;
    assert_eq!(resource_tags(&client, &consumer).await.len(), 48);

    // 50 tags is the limit, counting the tags the consumer has.
    client
        .tag_resource()
        .resource_arn(&consumer)
        .set_tags(Some(many_tags("more", 2)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("TagResource to 50 tags: {}", DisplayErrorContext(&e)));
    let e = client
        .tag_resource()
        .resource_arn(&consumer)
        .tags("one-too-many", "x")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        e.is_invalid_argument_exception(),
        "a 51st tag: {}",
        DisplayErrorContext(&e)
    );
    assert!(
        e.message().unwrap_or_default().contains("limit of 50"),
        "message {:?}",
        e.message()
    );
    // Overwriting one of the 50 is no new tag.
    client
        .tag_resource()
        .resource_arn(&consumer)
        .tags("k-00", "changed")
        .send()
        .await
        .unwrap_or_else(|e| panic!("TagResource overwrite: {}", DisplayErrorContext(&e)));
    let tags = resource_tags(&client, &consumer).await;
    assert_eq!(tags.len(), 50);
    assert_eq!(tags["k-00"], "changed");
    assert!(!tags.contains_key("one-too-many"));

    // Keys of 1 to 128 characters, values of at most 256.
    let e = client
        .tag_resource()
        .resource_arn(&consumer)
        .tags("k".repeat(129), "v")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(
        code_of(&e),
        "ValidationException",
        "{}",
        DisplayErrorContext(&e)
    );
    let e = client
        .untag_resource()
        .resource_arn(&consumer)
        .set_tag_keys(Some((0..51).map(|i| format!("k-{i:02}")).collect()))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(
        code_of(&e),
        "ValidationException",
        "{}",
        DisplayErrorContext(&e)
    );
    assert_eq!(resource_tags(&client, &consumer).await, tags);

    // RegisterStreamConsumer checks its Tags the same way, and registers nothing when they fail.
    let e = client
        .register_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("over-tagged")
        .set_tags(Some(many_tags("k", 51)))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        e.is_invalid_argument_exception(),
        "51 tags at registration: {}",
        DisplayErrorContext(&e)
    );
    let e = client
        .register_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("long-value")
        .tags("k", "v".repeat(257))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code_of(&e.into_service_error()),
        "ValidationException",
        "a 257-character value"
    );
    let listed = client
        .list_stream_consumers()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed
            .consumers()
            .iter()
            .map(|c| c.consumer_name())
            .collect::<Vec<_>>(),
        vec!["reader"]
    );

    // ARNs of consumers that do not exist: another name, another creation second, another
    // stream.
    let (_, created) = consumer.rsplit_once(':').unwrap();
    let created: i64 = created.parse().unwrap();
    for missing in [
        format!("{arn}/consumer/ghost:{created}"),
        format!("{arn}/consumer/reader:{}", created + 1),
        format!("{}/consumer/reader:{created}", stream_arn("no-such-stream")),
    ] {
        let e = client
            .list_tags_for_resource()
            .resource_arn(&missing)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(
            e.is_resource_not_found_exception(),
            "ListTagsForResource {missing}: {}",
            DisplayErrorContext(&e)
        );
        let e = client
            .tag_resource()
            .resource_arn(&missing)
            .tags("k", "v")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(
            e.is_resource_not_found_exception(),
            "TagResource {missing}: {}",
            DisplayErrorContext(&e)
        );
        let e = client
            .untag_resource()
            .resource_arn(&missing)
            .tag_keys("k")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(
            e.is_resource_not_found_exception(),
            "UntagResource {missing}: {}",
            DisplayErrorContext(&e)
        );
    }
    // A consumer ARN without its creation time is malformed rather than unknown.
    let e = client
        .list_tags_for_resource()
        .resource_arn(format!("{arn}/consumer/reader"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        e.is_invalid_argument_exception(),
        "consumer ARN without a time: {}",
        DisplayErrorContext(&e)
    );
    server.shutdown().await;
}
