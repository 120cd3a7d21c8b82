//! `timeshard-bench records-producer`: records per second through the batching producer of the
//! SDK (`timeshard_producer::records`), end to end over HTTP on loopback.
//!
//! 1. CreateStream (`--shards`), wait until ACTIVE.
//! 2. One task calls `RecordsProducer::put` for `--records` records of `--record-bytes` bytes,
//!    partition keys `key-0` .. `key-<--keys - 1>` in turn, as fast as `put` lets it (it waits
//!    only when the producer's buffer is full). Another task awaits the tickets in put order and
//!    checks each: written, and no sequence number twice. The clock stops when the
//!    last ticket is answered, after `flush`.
//! 3. Prints records/s and MB/s (payload), the producer's statistics (requests, records per
//!    request, retries, failures, order violations), put-to-answer latency of the tickets (an
//!    upper bound: tickets are awaited in put order), and CPU of the client and server threads
//!    (in-process server only).
//!
//! Any failed ticket, duplicate sequence number or order violation fails the run.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use timeshard_producer::auth::Signer;
use timeshard_producer::{Credentials, HttpClient, RecordsConfig, RecordsProducer, StreamRef};
use timeshard_storage::options::SyncPolicy;

use super::{CLIENT_THREAD_NAME, Conn, CpuSource, Endpoint, Latencies, LocalServer, create_stream};

#[derive(Debug, Clone, Args)]
pub(crate) struct RecordsProducerArgs {
    /// Server to load, e.g. http://127.0.0.1:4567. Default: start timeshard in this process.
    #[arg(long)]
    endpoint: Option<String>,
    /// Access key id and secret to sign with (default: unsigned, which timeshard accepts on
    /// loopback when it has no credentials).
    #[arg(long, requires = "secret_access_key")]
    access_key_id: Option<String>,
    #[arg(long, requires = "access_key_id")]
    secret_access_key: Option<String>,
    /// Records to put.
    #[arg(long, default_value_t = 500_000)]
    records: u64,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// Distinct partition keys, used in turn.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Shards of the stream the tool creates.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// The producer's `max_in_flight`.
    #[arg(long, default_value_t = 4)]
    max_in_flight: usize,
    /// The producer's `linger`, in milliseconds.
    #[arg(long, default_value_t = 50)]
    linger_ms: u64,
    /// The producer's `strict_key_order`.
    #[arg(long)]
    strict_key_order: bool,
    /// In-process server only: sync policy (always, never, batch:<delay>).
    #[arg(long, default_value = "always")]
    sync: SyncPolicy,
    /// In-process server only: directory to create the temporary data directory in.
    #[arg(long)]
    data_parent: Option<std::path::PathBuf>,
}

pub(crate) fn run(args: &RecordsProducerArgs) -> anyhow::Result<()> {
    if args.records == 0 || args.keys == 0 || args.shards == 0 {
        bail!("--records, --keys and --shards must be positive");
    }
    let (url, local, cpu, label) = match &args.endpoint {
        Some(url) => (url.clone(), None, CpuSource::None, url.clone()),
        None => {
            let data_dir =
                LocalServer::new_data_dir(args.data_parent.as_deref(), "records-producer-")?;
            let local = LocalServer::start(data_dir, args.sync)?;
            let label = format!("timeshard (in-process, sync {})", args.sync);
            (local.url(), Some(local), CpuSource::InProcess, label)
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(CLIENT_THREAD_NAME)
        .build()
        .context("starting the client runtime")?;
    let outcome = runtime.block_on(put_all(args, &url, &cpu, &label));
    drop(runtime);
    if let Some(local) = local {
        drop(local.shutdown());
    }
    outcome
}

async fn put_all(
    args: &RecordsProducerArgs,
    url: &str,
    cpu: &CpuSource,
    label: &str,
) -> anyhow::Result<()> {
    let stream = format!("bench-producer-{}", chrono::Utc::now().timestamp_millis());
    let endpoint = std::sync::Arc::new(Endpoint::parse(url, false)?);
    let mut control = Conn::open(&endpoint).await?;
    create_stream(&mut control, &stream, args.shards).await?;

    let credentials = args
        .access_key_id
        .as_ref()
        .zip(args.secret_access_key.as_ref())
        .map(|(id, secret)| Credentials::new(id.clone(), secret.clone()));
    let producer = RecordsProducer::new(
        HttpClient::new(Signer::new(credentials, "us-east-1")),
        timeshard_producer::Endpoint::parse(url)?,
        StreamRef::Name(stream.clone()),
        RecordsConfig {
            max_in_flight: args.max_in_flight,
            linger: Duration::from_millis(args.linger_ms),
            strict_key_order: args.strict_key_order,
            ..RecordsConfig::default()
        },
    );
    let keys: Vec<String> = (0..args.keys).map(|k| format!("key-{k}")).collect();
    let payload = Bytes::from(vec![b'r'; args.record_bytes]);
    eprintln!(
        "{label}: putting {} records of {} bytes over {} keys into {} shards",
        args.records, args.record_bytes, args.keys, args.shards
    );

    let (tx, mut rx) = tokio::sync::mpsc::channel(1 << 16);
    let records = args.records;
    let checker = tokio::spawn(async move {
        let mut seen = HashSet::with_capacity(records as usize);
        let mut latency = Latencies::default();
        let mut failed = 0u64;
        let mut first_error = None;
        let mut duplicates = 0u64;
        while let Some((put_at, ticket)) = rx.recv().await {
            let ticket: timeshard_producer::PutTicket = ticket;
            match ticket.await {
                Ok(put) => {
                    latency.add(Instant::now().duration_since(put_at));
                    // Sequence numbers identify their shard.
                    if !seen.insert(put.sequence_number) {
                        duplicates += 1;
                    }
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        (seen.len() as u64, failed, duplicates, first_error, latency)
    });

    let cpu_before = cpu.sample();
    let started = Instant::now();
    for i in 0..args.records {
        let key = &keys[(i % args.keys as u64) as usize];
        let ticket = producer.put(key.as_str(), payload.clone()).await?;
        if tx.send((Instant::now(), ticket)).await.is_err() {
            bail!("the ticket checker stopped");
        }
    }
    drop(tx);
    producer.flush().await;
    let (written, failed, duplicates, first_error, latency) = checker.await?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let cpu_use = cpu.since(cpu_before);
    let stats = producer.stats();
    producer.close().await;
    let _ = control
        .call_json("DeleteStream", &serde_json::json!({ "StreamName": stream }))
        .await;

    let rate = written as f64 / elapsed_s;
    let mb_s = rate * args.record_bytes as f64 / 1e6;
    let per_request = stats.records_written as f64 / stats.requests.max(1) as f64;
    println!(
        "| records producer, {} B records, {} keys, {} shards, in flight {}, linger {} ms{} | {label} | **{rate:.0} records/s** ({mb_s:.1} MB/s payload) | {written} records in {elapsed_s:.2} s; {} requests ({per_request:.0} records each), {} retries; ticket latency p50 {:.1} ms, p99 {:.1} ms; {} |",
        args.record_bytes,
        args.keys,
        args.shards,
        args.max_in_flight,
        args.linger_ms,
        if args.strict_key_order {
            ", strict key order"
        } else {
            ""
        },
        stats.requests,
        stats.retries,
        latency.p50_ms(),
        latency.p99_ms(),
        cpu_use.describe(elapsed_s),
    );
    println!(
        "result records={written} seconds={elapsed_s:.3} records_per_s={rate:.0} requests={} retries={} failed={failed} duplicates={duplicates} order_violations={} client_cpu_s={:.2} server_cpu_s={:.2}",
        stats.requests,
        stats.retries,
        stats.order_violations,
        cpu_use.client_s().unwrap_or(f64::NAN),
        cpu_use.server_s().unwrap_or(f64::NAN),
    );
    if failed > 0 || duplicates > 0 || stats.order_violations > 0 || written != args.records {
        bail!(
            "{written} of {} records written, {failed} failed (first: {}), {duplicates} duplicate sequence numbers, {} order violations",
            args.records,
            first_error.as_deref().unwrap_or("-"),
            stats.order_violations
        );
    }
    Ok(())
}
