//! Records per second through `RecordsProducer` against a running server:
//! start `timeshard serve` (release), then
//! `cargo run --release -p timeshard-producer --example records-throughput -- http://127.0.0.1:4567 [RECORDS] [KEYS] [BYTES]`.
//! The stream `producer-bench` (4 shards) is created if it does not exist; records are put as
//! fast as `put` takes them, then the run waits for every ticket.

use std::time::Instant;

use serde_json::json;
use timeshard_producer::auth::Signer;
use timeshard_producer::client::Api;
use timeshard_producer::{Endpoint, HttpClient, RecordsConfig, RecordsProducer, StreamRef};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).map_or("http://127.0.0.1:4567", String::as_str);
    let records: usize = args.get(2).map_or(Ok(1_000_000), |s| s.parse())?;
    let keys: usize = args.get(3).map_or(Ok(1000), |s| s.parse())?;
    let size: usize = args.get(4).map_or(Ok(100), |s| s.parse())?;
    let endpoint = Endpoint::parse(url)?;
    let client = HttpClient::new(Signer::new(None, "us-east-1"));
    let _ = client
        .call(
            Api::Data,
            &endpoint,
            "CreateStream",
            &json!({"StreamName": "producer-bench", "ShardCount": 4}),
        )
        .await;
    let producer = RecordsProducer::new(
        client,
        endpoint,
        StreamRef::Name("producer-bench".to_owned()),
        RecordsConfig::default(),
    );
    let payload = vec![b'x'; size];
    let key_names: Vec<String> = (0..keys).map(|k| format!("key-{k}")).collect();
    let started = Instant::now();
    let mut tickets = Vec::with_capacity(records);
    for i in 0..records {
        tickets.push(
            producer
                .put(key_names[i % keys].clone(), payload.clone())
                .await?,
        );
    }
    producer.flush().await;
    let mut failed = 0;
    for t in tickets {
        if t.wait().await.is_err() {
            failed += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = producer.stats();
    println!(
        "{records} records of {size} bytes over {keys} keys in {secs:.2} s: {:.0} records/s, {:.1} MB/s; {} requests, {} retries, {failed} failed",
        records as f64 / secs,
        (records * size) as f64 / secs / 1e6,
        stats.requests,
        stats.retries
    );
    producer.close().await;
    Ok(())
}
