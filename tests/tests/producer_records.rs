//! The records producer (timeshard-producer `records`) against the real server, read back with
//! the official aws-sdk-kinesis.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use timeshard_producer::auth::Signer;
use timeshard_producer::{
    Credentials, Endpoint, HttpClient, RecordsConfig, RecordsProducer, StreamRef,
};
use timeshard_server::config::LimitsMode;
use timeshard_tests::{
    ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, TestServer, wait_for_stream_active,
};

/// Runs a test body with a time limit, so a stuck producer fails the test instead of hanging CI.
async fn bounded(body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .expect("the test did not finish within 120 s");
}

fn producer(server: &TestServer, stream: &str, config: RecordsConfig) -> RecordsProducer {
    let signer = Signer::new(
        Some(Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY)),
        REGION,
    );
    RecordsProducer::new(
        HttpClient::new(signer),
        Endpoint::parse(&server.endpoint_url()).expect("endpoint"),
        StreamRef::Name(stream.to_owned()),
        config,
    )
}

async fn create(server: &TestServer, stream: &str, shards: i32) {
    let client = server.kinesis_client();
    client
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
        .expect("CreateStream");
    wait_for_stream_active(&client, stream, Duration::from_secs(10)).await;
}

/// Every record of every shard, as (partition key, data), in shard order.
async fn read_all(server: &TestServer, stream: &str) -> Vec<(String, Vec<u8>)> {
    let client = server.kinesis_client();
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("ListShards");
    let mut out = Vec::new();
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("GetShardIterator")
            .shard_iterator
            .expect("iterator");
        let mut empty_pages = 0;
        loop {
            let page = client
                .get_records()
                .shard_iterator(&iterator)
                .limit(10_000)
                .send()
                .await
                .expect("GetRecords");
            for r in page.records() {
                out.push((
                    r.partition_key().unwrap_or_default().to_owned(),
                    r.data().as_ref().to_vec(),
                ));
            }
            if page.records().is_empty() {
                empty_pages += 1;
            }
            if (page.millis_behind_latest() == Some(0) && page.records().is_empty())
                || empty_pages > 20
            {
                break;
            }
            match page.next_shard_iterator {
                Some(next) => iterator = next,
                None => break,
            }
        }
    }
    out
}

/// Each key's records arrived once each, in put order (data is `key:index`).
fn assert_per_key_order(records: &[(String, Vec<u8>)], keys: usize, per_key: usize) {
    let mut seen: HashMap<&str, Vec<usize>> = HashMap::new();
    for (key, data) in records {
        let text = std::str::from_utf8(data).expect("utf-8");
        let (k, i) = text.split_once(':').expect("key:index");
        assert_eq!(k, key);
        seen.entry(key.as_str())
            .or_default()
            .push(i.parse().expect("index"));
    }
    assert_eq!(seen.len(), keys);
    for (key, indexes) in seen {
        assert_eq!(
            indexes,
            (0..per_key).collect::<Vec<_>>(),
            "key {key}: every record once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_arrive_in_per_key_order() {
    bounded(async {
        let server = TestServer::start().await;
        create(&server, "orders", 4).await;
        let p = producer(&server, "orders", RecordsConfig::default());
        let mut tickets = Vec::new();
        for i in 0..500 {
            for k in 0..20 {
                let key = format!("key-{k}");
                let data = format!("{key}:{i}");
                tickets.push(p.put(key, data.into_bytes()).await.expect("put"));
            }
        }
        p.flush().await;
        for t in tickets {
            let put = t.wait().await.expect("written");
            assert!(put.shard_id.starts_with("shardId-"));
        }
        let stats = p.stats();
        assert_eq!(stats.records_written, 10_000);
        assert!(
            stats.requests >= 20,
            "{stats:?}: at most 500 records a request"
        );
        assert_eq!(stats.order_violations, 0);
        p.close().await;
        let records = read_all(&server, "orders").await;
        assert_eq!(records.len(), 10_000);
        assert_per_key_order(&records, 20, 500);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_entries_are_retried_in_order() {
    bounded(async {
        let server = TestServer::start_with(|c| c.limits = LimitsMode::Aws).await;
        create(&server, "throttled", 1).await;
        // 1,000 records/s per shard: 3,000 records need retries over about three seconds.
        let config = RecordsConfig {
            max_in_flight: 2,
            ..RecordsConfig::default()
        };
        let p = producer(&server, "throttled", config);
        let started = Instant::now();
        let mut tickets = Vec::new();
        for i in 0..600 {
            for k in 0..5 {
                let key = format!("k{k}");
                tickets.push(
                    p.put(key.clone(), format!("{key}:{i}").into_bytes())
                        .await
                        .expect("put"),
                );
            }
        }
        p.flush().await;
        for t in tickets {
            t.wait().await.expect("written after retries");
        }
        let stats = p.stats();
        assert!(stats.retries > 0, "{stats:?}");
        assert_eq!(stats.records_failed, 0);
        assert_eq!(stats.order_violations, 0);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "the quota held them back"
        );
        p.close().await;
        let records = read_all(&server, "throttled").await;
        assert_eq!(records.len(), 3000);
        assert_per_key_order(&records, 5, 600);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_streams_credentials_and_records_fail_clearly() {
    bounded(async {
        let server = TestServer::start().await;
        let p = producer(&server, "missing", RecordsConfig::default());
        let err = p
            .put("k", b"x".to_vec())
            .await
            .expect("queued")
            .wait()
            .await
            .expect_err("no such stream");
        assert_eq!(err.code(), Some("ResourceNotFoundException"), "{err}");

        let too_big = p
            .put("k", vec![0u8; (1 << 20) + 1])
            .await
            .expect_err("over 1 MiB");
        assert!(too_big.to_string().contains("at most"), "{too_big}");
        assert!(p.put("", b"x".to_vec()).await.is_err(), "an empty key");
        assert!(
            p.put("k".repeat(257), b"x".to_vec()).await.is_err(),
            "a long key"
        );

        create(&server, "exists", 1).await;
        let wrong = RecordsProducer::new(
            HttpClient::new(Signer::new(
                Some(Credentials::new(ACCESS_KEY_ID, "not-the-secret")),
                REGION,
            )),
            Endpoint::parse(&server.endpoint_url()).expect("endpoint"),
            StreamRef::Name("exists".to_owned()),
            RecordsConfig::default(),
        );
        let err = wrong
            .put("k", b"x".to_vec())
            .await
            .expect("queued")
            .wait()
            .await
            .expect_err("refused");
        assert!(err.is_auth(), "{err}");
        assert_eq!(wrong.stats().retries, 0, "credentials are not retried");
        p.close().await;
        wrong.close().await;
        server.shutdown().await;
    })
    .await;
}
