//! The records producer (timeshard-producer `records`) against the real server, read back with
//! the official aws-sdk-kinesis.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use timeshard_producer::auth::Signer;
use timeshard_producer::records::{self, MAX_RECORD_BYTES};
use timeshard_producer::{
    Credentials, Endpoint, HttpClient, RecordsConfig, RecordsProducer, StreamRef,
};
use timeshard_server::config::LimitsMode;
use timeshard_tests::{
    ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, TestServer, stream_arn, wait_for_stream_active,
};

/// Runs a test body with a time limit, so a stuck producer fails the test instead of hanging CI.
async fn bounded(body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .expect("the test did not finish within 120 s");
}

fn client(secret: &str) -> HttpClient {
    HttpClient::new(Signer::new(
        Some(Credentials::new(ACCESS_KEY_ID, secret)),
        REGION,
    ))
}

fn producer(server: &TestServer, stream: &str, config: RecordsConfig) -> RecordsProducer {
    RecordsProducer::new(
        client(SECRET_ACCESS_KEY),
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
        let text = data.split(|b| *b == 0).next().unwrap_or_default();
        let text = std::str::from_utf8(text).expect("utf-8");
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
async fn byte_quota_throttling_keeps_per_key_order() {
    bounded(async {
        // 1 MiB/s per shard: 2.5 MB of large and small records interleaved. A small record
        // behind a throttled large one would fit the quota; the server fails it too, so the
        // producer's retries keep every key in order.
        let server = TestServer::start_with(|c| c.limits = LimitsMode::Aws).await;
        create(&server, "bytes", 1).await;
        let p = producer(&server, "bytes", RecordsConfig::default());
        let mut tickets = Vec::new();
        for i in 0..50 {
            for k in 0..3 {
                let key = format!("k{k}");
                let mut data = format!("{key}:{i}").into_bytes();
                if (i + k) % 2 == 0 {
                    // Padding after a NUL, which assert_per_key_order cuts off.
                    data.push(0);
                    data.resize(32_000, b'x');
                }
                tickets.push(p.put(key, data).await.expect("put"));
            }
        }
        for t in tickets {
            t.await.expect("written after retries");
        }
        let stats = p.stats();
        assert!(
            stats.retries > 0,
            "the byte quota throttled some: {stats:?}"
        );
        assert_eq!((stats.records_failed, stats.order_violations), (0, 0));
        p.close().await;
        let records = read_all(&server, "bytes").await;
        assert_per_key_order(&records, 3, 50);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_stream_fails_tickets_with_resource_not_found() {
    bounded(async {
        let server = TestServer::start().await;
        let p = producer(&server, "missing", RecordsConfig::default());
        let mut tickets = Vec::new();
        for i in 0..10 {
            tickets.push(p.put(format!("k{i}"), b"x".to_vec()).await.expect("queued"));
        }
        for t in tickets {
            let err = t.await.expect_err("no such stream");
            assert_eq!(err.code(), Some("ResourceNotFoundException"), "{err}");
            assert!(err.to_string().contains("missing"), "{err}");
        }
        let stats = p.stats();
        assert_eq!((stats.records_failed, stats.retries), (10, 0), "{stats:?}");
        p.close().await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_clearly_without_retries() {
    bounded(async {
        let server = TestServer::start().await;
        create(&server, "exists", 1).await;
        let wrong = RecordsProducer::new(
            client("not-the-secret"),
            Endpoint::parse(&server.endpoint_url()).expect("endpoint"),
            StreamRef::Name("exists".to_owned()),
            RecordsConfig::default(),
        );
        let err = wrong
            .put("k", b"x".to_vec())
            .await
            .expect("queued")
            .await
            .expect_err("refused");
        assert!(err.is_auth(), "{err}");
        assert!(err.to_string().contains("PutRecords"), "{err}");
        assert_eq!(wrong.stats().retries, 0, "credentials are not retried");
        wrong.close().await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_the_limits_are_refused_by_put() {
    bounded(async {
        let server = TestServer::start().await;
        create(&server, "limits", 1).await;
        let p = producer(&server, "limits", RecordsConfig::default());
        let too_big = p
            .put("k", vec![0u8; MAX_RECORD_BYTES])
            .await
            .expect_err("1 MiB of data plus a key");
        assert!(too_big.to_string().contains("at most"), "{too_big}");
        assert!(p.put("", b"x".to_vec()).await.is_err(), "an empty key");
        assert!(
            p.put("k".repeat(257), b"x".to_vec()).await.is_err(),
            "a long key"
        );
        // The largest record there is goes through.
        let put = p
            .put("k", vec![1u8; MAX_RECORD_BYTES - 1])
            .await
            .expect("exactly 1 MiB")
            .await
            .expect("written");
        assert_eq!(put.shard_id, "shardId-000000000000");
        assert_eq!(p.stats().records_put, 1, "refused records were not queued");
        p.close().await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_arn_and_explicit_hash_keys_pick_the_shard() {
    bounded(async {
        let server = TestServer::start().await;
        create(&server, "by-arn", 2).await;
        let p = RecordsProducer::new(
            client(SECRET_ACCESS_KEY),
            Endpoint::parse(&server.endpoint_url()).expect("endpoint"),
            StreamRef::Arn(stream_arn("by-arn")),
            RecordsConfig::default(),
        );
        let low = p
            .put_with_hash_key("same", Some("0".into()), b"low".to_vec())
            .await
            .expect("put");
        let high = p
            .put_with_hash_key("same", Some(u128::MAX.to_string()), b"high".to_vec())
            .await
            .expect("put");
        assert!(
            p.put_with_hash_key("same", Some("2^128".into()), b"x".to_vec())
                .await
                .is_err()
        );
        assert_eq!(low.await.expect("low").shard_id, "shardId-000000000000");
        assert_eq!(high.await.expect("high").shard_id, "shardId-000000000001");
        p.close().await;
        server.shutdown().await;
    })
    .await;
}

/// The blocking producer, from a plain thread; the server runs on a runtime of its own.
#[test]
fn blocking_producer_writes_every_record_in_order() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(async {
        let server = TestServer::start().await;
        create(&server, "blocking", 2).await;
        server
    });
    let p = records::blocking::RecordsProducer::new(
        client(SECRET_ACCESS_KEY),
        Endpoint::parse(&server.endpoint_url()).expect("endpoint"),
        StreamRef::Name("blocking".to_owned()),
        RecordsConfig::default(),
    )
    .expect("producer");
    let mut tickets = Vec::new();
    for i in 0..300 {
        for k in 0..3 {
            let key = format!("b{k}");
            tickets.push(p.put(key.clone(), format!("{key}:{i}")).expect("put"));
        }
    }
    p.flush();
    let last = tickets.pop().expect("tickets").wait().expect("written");
    assert!(last.shard_id.starts_with("shardId-"));
    assert_eq!(p.stats().records_written, 900);
    p.close();
    runtime.block_on(async {
        let records = read_all(&server, "blocking").await;
        assert_per_key_order(&records, 3, 300);
        server.shutdown().await;
    });
}
