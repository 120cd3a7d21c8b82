//! `timeshard-bench list-fragments`: ListFragments over HTTP for one hour out of a million
//! stored fragments. In-process server only, since the fragments are written to its data
//! directory directly.
//!
//! 1. Starts timeshard on a fresh data directory, creates a video stream through the API
//!    (CreateStream, retention 10 years so nothing expires), and stops it.
//! 2. Opens that directory's store with the storage engine itself (sync `never`, a manual clock)
//!    and appends `--fragments` fragment records shaped as ingest stores them
//!    (`timeshard_server::video::fragment`): the key a `FragmentKey` (one second, one frame), the
//!    payload one small SimpleBlock and the frame-table trailer, all referring to one stored
//!    ingest session. Producer timestamps are one second apart (a million seconds is 11.6
//!    days) and end a minute before now. Each append of `--fill-batch` records shares one server
//!    timestamp, which the clock sets just after the batch's last producer timestamp: server
//!    time advances in steps of `--fill-batch` seconds. Filling through PutMedia would take the
//!    11.6 days.
//! 3. Starts timeshard again on the directory (a cold catalog cache, as after a restart) and
//!    times ListFragments for `--queries` random ranges of `--range-secs` by PRODUCER_TIMESTAMP
//!    and as many by SERVER_TIMESTAMP, alternating, with `--max-results` per call and NextToken
//!    to the end: 4 calls for an hour at MaxResults 1000. Range starts fall between whole
//!    seconds, so an hour by producer time holds exactly 3600 fragments; every listing must
//!    return them all (by server time, within one fill batch of that).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use http::StatusCode;
use serde_json::json;
use timeshard_parser::mkv::{self, Frame, SegmentInfo, Track, VideoSettings};
use timeshard_server::video::fragment::{FragmentKey, FrameEntry, Session, Trailer};
use timeshard_storage::clock::ManualClock;
use timeshard_storage::options::{StoreOptions, SyncPolicy};
use timeshard_storage::{NewRecord, Store};

use super::{CLIENT_THREAD_NAME, Conn, Endpoint, Latencies, LocalServer, snippet};

/// Retention of the stream: the model's maximum, so nothing filled expires.
const RETENTION_HOURS: u32 = 87_600;

#[derive(Debug, Clone, Args)]
pub(crate) struct ListFragmentsArgs {
    /// Fragments to store, one per second of producer time.
    #[arg(long, default_value_t = 1_000_000)]
    fragments: u64,
    /// Fragments per append while filling; an append's fragments share a server timestamp.
    #[arg(long, default_value_t = 100)]
    fill_batch: u64,
    /// Random ranges listed per timestamp type.
    #[arg(long, default_value_t = 50)]
    queries: usize,
    /// Length of each listed range, in seconds.
    #[arg(long, default_value_t = 3600)]
    range_secs: u64,
    /// MaxResults of each ListFragments call (1-1000).
    #[arg(long, default_value_t = 1000)]
    max_results: u32,
    /// Sync policy of the server answering the queries.
    #[arg(long, default_value = "always")]
    sync: SyncPolicy,
    /// Name of the server in the output.
    #[arg(long)]
    label: Option<String>,
    /// Directory to create the temporary data directory in (default target/bench-data).
    #[arg(long)]
    data_parent: Option<PathBuf>,
}

pub(crate) fn run(args: &ListFragmentsArgs) -> anyhow::Result<()> {
    if args.fragments <= args.range_secs + 1 || args.fill_batch == 0 || args.queries == 0 {
        bail!("--fragments must exceed --range-secs, and --fill-batch and --queries be positive");
    }
    if !(1..=1000).contains(&args.max_results) {
        bail!("--max-results must be between 1 and 1000");
    }
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| "timeshard (in-process)".to_owned());
    let name = format!("bench-fragments-{}", chrono::Utc::now().timestamp_millis());
    let client = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(CLIENT_THREAD_NAME)
        .build()
        .context("starting the client runtime")?;

    // 1. The stream, made by the server.
    let data_dir = LocalServer::new_data_dir(args.data_parent.as_deref(), "list-fragments-")?;
    let local = LocalServer::start(data_dir, args.sync)?;
    let endpoint = Arc::new(Endpoint::parse(&local.url(), false)?);
    client.block_on(async {
        let mut conn = Conn::open(&endpoint).await?;
        conn.post_json(
            "/createStream",
            &json!({
                "StreamName": name,
                "MediaType": "video/h264",
                "DataRetentionInHours": RETENTION_HOURS,
            }),
        )
        .await
        .map(drop)
    })?;
    let data_dir = local.shutdown();

    // 2. The fragments, written to the store.
    let first_ms = (chrono::Utc::now().timestamp_millis() / 1000 - 60) * 1000
        - i64::try_from(args.fragments)? * 1000;
    eprintln!(
        "{label}: filling video stream {name} with {} fragments, {} per append",
        args.fragments, args.fill_batch
    );
    let filled = Instant::now();
    let server_range = client.block_on(fill(
        &LocalServer::store_dir(&data_dir),
        &name,
        first_ms,
        args,
    ))?;
    let fill_s = filled.elapsed().as_secs_f64();
    let fill_rate = args.fragments as f64 / fill_s;
    eprintln!("{label}: filled in {fill_s:.1} s ({fill_rate:.0} fragments/s); listing");

    // 3. The listings.
    let local = LocalServer::start(data_dir, args.sync)?;
    let endpoint = Arc::new(Endpoint::parse(&local.url(), false)?);
    let producer_range = (
        first_ms,
        first_ms + (i64::try_from(args.fragments)? - 1) * 1000,
    );
    let outcome = client.block_on(list(args, &endpoint, &name, producer_range, server_range));
    drop(client);
    drop(local.shutdown());
    let outcome = outcome?;

    let mut problems = outcome.problems.clone();
    problems.truncate(10);
    let mut md = String::new();
    md.push_str("| benchmark | result | notes |\n|---|---|---|\n");
    for (kind, t) in [
        ("PRODUCER_TIMESTAMP", &outcome.producer),
        ("SERVER_TIMESTAMP", &outcome.server),
    ] {
        md.push_str(&format!(
            "| {label}: ListFragments {kind}, {} s of {} fragments, MaxResults {} | **{:.2} ms \
             per range** | p50; p99 {:.2} ms, max {:.2} ms over {} random ranges; per call p50 \
             {:.2} ms, p99 {:.2} ms ({} calls, {:.0} fragments per range); store filled at \
             {fill_rate:.0} fragments/s, {} per append |\n",
            args.range_secs,
            args.fragments,
            args.max_results,
            t.per_range.p50_ms(),
            t.per_range.p99_ms(),
            t.per_range.max_ms(),
            t.per_range.count(),
            t.per_call.p50_ms(),
            t.per_call.p99_ms(),
            t.per_call.count(),
            t.fragments as f64 / t.per_range.count().max(1) as f64,
            args.fill_batch,
        ));
    }
    println!("{}", md.trim_end());
    println!(
        "result label={label:?} fragments={} range_secs={} max_results={} \
         producer_range_p50_ms={:.2} producer_range_p99_ms={:.2} producer_call_p50_ms={:.2} \
         producer_call_p99_ms={:.2} server_range_p50_ms={:.2} server_range_p99_ms={:.2} \
         server_call_p50_ms={:.2} server_call_p99_ms={:.2} fill_per_s={fill_rate:.0} problems={}",
        args.fragments,
        args.range_secs,
        args.max_results,
        outcome.producer.per_range.p50_ms(),
        outcome.producer.per_range.p99_ms(),
        outcome.producer.per_call.p50_ms(),
        outcome.producer.per_call.p99_ms(),
        outcome.server.per_range.p50_ms(),
        outcome.server.per_range.p99_ms(),
        outcome.server.per_call.p50_ms(),
        outcome.server.per_call.p99_ms(),
        outcome.problems.len(),
    );
    if !outcome.problems.is_empty() {
        bail!(
            "the run had {} problems: {}",
            outcome.problems.len(),
            problems.join("; ")
        );
    }
    Ok(())
}

/// Writes the fragments; returns the first and last server timestamps given.
async fn fill(
    dir: &std::path::Path,
    name: &str,
    first_ms: i64,
    args: &ListFragmentsArgs,
) -> anyhow::Result<(i64, i64)> {
    let clock = Arc::new(ManualClock::new(first_ms));
    let opts = StoreOptions {
        sync: SyncPolicy::Never,
        clock: clock.clone(),
        ..StoreOptions::default()
    };
    let store = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || Store::open(&dir, opts)).await??
    };
    let info = store
        .stream(&timeshard_server::video::catalog_name(name))
        .ok_or_else(|| anyhow!("video stream {name} is not in the store"))?;
    let shard = info
        .shards
        .first()
        .ok_or_else(|| anyhow!("video stream {name} has no shard"))?
        .uid;

    // One ingest session, as PutMedia would store it.
    let mut header = Vec::new();
    mkv::write::info(&mut header, &SegmentInfo::default());
    mkv::write::tracks(
        &mut header,
        &[Track {
            number: 1,
            uid: Some(1),
            track_type: 1,
            codec_id: "V_MPEG4/ISO/AVC".into(),
            codec_private: None,
            name: None,
            default_duration: None,
            video: Some(VideoSettings {
                pixel_width: 1280,
                pixel_height: 720,
            }),
            audio: None,
        }],
    );
    let session = Session {
        timecode_scale: mkv::DEFAULT_TIMECODE_SCALE_NS,
        header_mkv: Bytes::from(header),
    };
    let session_id = store.put_blob(info.meta.id, session.encode()).await?;

    // Every fragment has the same payload: one key frame and its frame table.
    let mut block = Vec::new();
    mkv::write::simple_block(
        &mut block,
        &Frame {
            track: 1,
            timecode: 0,
            key: true,
            invisible: false,
            discardable: false,
            data: Bytes::from_static(b"timeshard-bench frame"),
        },
    );
    let trailer = Trailer {
        frames: vec![FrameEntry {
            offset: 0,
            len: block.len() as u32,
            track: 1,
            timecode: 0,
            key: true,
        }],
        tags: Vec::new(),
    };
    let media_bytes = block.len() as u64;
    block.extend_from_slice(&trailer.encode());
    let payload = Bytes::from(block);

    let mut server_range = (i64::MAX, i64::MIN);
    let mut n: u64 = 0;
    while n < args.fragments {
        let count = args.fill_batch.min(args.fragments - n);
        let records: Vec<NewRecord> = (n..n + count)
            .map(|i| {
                let producer_ts_ms = first_ms + i as i64 * 1000;
                NewRecord {
                    key: FragmentKey {
                        session: session_id,
                        cluster_timecode: producer_ts_ms as u64,
                        duration_ms: 1000,
                        media_bytes,
                        frames: 1,
                        live_number: 0,
                    }
                    .encode(),
                    payload: payload.clone(),
                    producer_ts_ms: Some(producer_ts_ms),
                    flags: 0,
                }
            })
            .collect();
        // The batch arrives just after its last fragment ends.
        clock.set_ms(first_ms + (n + count) as i64 * 1000 + 250);
        let appended = store.append(shard, records).await?;
        server_range.0 = server_range.0.min(appended.server_ts_ms);
        server_range.1 = server_range.1.max(appended.server_ts_ms);
        n += count;
    }
    tokio::task::spawn_blocking(move || store.close()).await?;
    Ok(server_range)
}

#[derive(Default)]
struct Timings {
    per_call: Latencies,
    per_range: Latencies,
    fragments: u64,
}

struct ListOutcome {
    producer: Timings,
    server: Timings,
    problems: Vec<String>,
}

async fn list(
    args: &ListFragmentsArgs,
    endpoint: &Arc<Endpoint>,
    name: &str,
    producer_range: (i64, i64),
    server_range: (i64, i64),
) -> anyhow::Result<ListOutcome> {
    let mut conn = Conn::open(endpoint).await?;
    let mut out = ListOutcome {
        producer: Timings::default(),
        server: Timings::default(),
        problems: Vec::new(),
    };
    let range_ms = i64::try_from(args.range_secs)? * 1000;
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = move |below: i64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % below.max(1) as u64) as i64
    };
    for _ in 0..args.queries {
        for producer_time in [true, false] {
            let (lo, hi) = if producer_time {
                producer_range
            } else {
                server_range
            };
            // A start between whole seconds (fragments start on them), anywhere the whole
            // range fits.
            let span_s = ((hi - lo - range_ms) / 1000).max(1);
            let start_ms = lo + random(span_s) * 1000 + 1 + random(998);
            let end_ms = start_ms + range_ms - 1;
            let timings = if producer_time {
                &mut out.producer
            } else {
                &mut out.server
            };
            let (calls, fragments) = list_range(
                &mut conn,
                name,
                producer_time,
                start_ms,
                end_ms,
                args.max_results,
                timings,
            )
            .await?;
            let expected = args.range_secs;
            let slack = if producer_time { 0 } else { args.fill_batch };
            if fragments.abs_diff(expected) > slack {
                out.problems.push(format!(
                    "{} range from {start_ms} listed {fragments} fragments in {calls} calls, \
                     expected {expected}{}",
                    if producer_time { "producer" } else { "server" },
                    if slack > 0 {
                        format!(" +- {slack}")
                    } else {
                        String::new()
                    },
                ));
            }
        }
    }
    Ok(out)
}

/// Lists one range to its end; returns the calls made and the fragments listed.
async fn list_range(
    conn: &mut Conn,
    name: &str,
    producer_time: bool,
    start_ms: i64,
    end_ms: i64,
    max_results: u32,
    timings: &mut Timings,
) -> anyhow::Result<(u64, u64)> {
    let kind = if producer_time {
        "PRODUCER_TIMESTAMP"
    } else {
        "SERVER_TIMESTAMP"
    };
    let mut body = format!(
        "{{\"StreamName\":\"{name}\",\"MaxResults\":{max_results},\"FragmentSelector\":\
         {{\"FragmentSelectorType\":\"{kind}\",\"TimestampRange\":{{\"StartTimestamp\":{},\
         \"EndTimestamp\":{}}}}}}}",
        seconds(start_ms),
        seconds(end_ms)
    );
    let (mut calls, mut fragments) = (0, 0);
    let started = Instant::now();
    loop {
        let sent = Instant::now();
        let (status, answer) = conn.post("/listFragments", Bytes::from(body)).await?;
        timings.per_call.add(sent.elapsed());
        calls += 1;
        if status != StatusCode::OK {
            bail!("ListFragments: HTTP {status}: {}", snippet(&answer));
        }
        let page = scan_list_fragments(&answer)
            .ok_or_else(|| anyhow!("ListFragments: unexpected answer {}", snippet(&answer)))?;
        fragments += page.fragments;
        match page.next_token {
            Some(token) => {
                body = format!(
                    "{{\"StreamName\":\"{name}\",\"MaxResults\":{max_results},\"NextToken\":\"{token}\"}}"
                );
            }
            None => break,
        }
    }
    timings.per_range.add(started.elapsed());
    timings.fragments += fragments;
    Ok((calls, fragments))
}

/// Epoch ms as JSON epoch seconds, exactly (`1700000000.123`).
fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// What the tool needs of a ListFragments answer.
#[derive(Debug, PartialEq, Eq)]
struct FragmentsPage {
    fragments: u64,
    next_token: Option<String>,
}

/// Counts the fragments of a compact ListFragments answer and finds its NextToken by byte
/// search: `"FragmentNumber":"` cannot occur inside a JSON string (its quotes would be
/// escaped), and a token (base64) holds no quote or escape.
fn scan_list_fragments(body: &[u8]) -> Option<FragmentsPage> {
    const NUMBER: &[u8] = b"\"FragmentNumber\":\"";
    const NEXT: &[u8] = b"\"NextToken\":\"";
    if body.first() != Some(&b'{') || memchr::memmem::find(body, b"\"Fragments\":[").is_none() {
        return None;
    }
    let fragments = memchr::memmem::find_iter(body, NUMBER).count() as u64;
    let next_token = match memchr::memmem::find(body, NEXT) {
        Some(at) => {
            let start = at + NEXT.len();
            let len = memchr::memchr(b'"', &body[start..])?;
            Some(
                std::str::from_utf8(&body[start..start + len])
                    .ok()?
                    .to_owned(),
            )
        }
        None => None,
    };
    Some(FragmentsPage {
        fragments,
        next_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_answers_are_scanned() {
        let page = br#"{"Fragments":[{"FragmentNumber":"91343852333181432511524306419788296366724229586","FragmentSizeInBytes":40,"ProducerTimestamp":1.5,"ServerTimestamp":2.5,"FragmentLengthInMilliseconds":1000},{"FragmentNumber":"2","FragmentSizeInBytes":40,"ProducerTimestamp":1.5,"ServerTimestamp":2.5,"FragmentLengthInMilliseconds":1000}],"NextToken":"AQAB/+=="}"#;
        assert_eq!(
            scan_list_fragments(page),
            Some(FragmentsPage {
                fragments: 2,
                next_token: Some("AQAB/+==".into())
            })
        );
        assert_eq!(
            scan_list_fragments(br#"{"Fragments":[]}"#),
            Some(FragmentsPage {
                fragments: 0,
                next_token: None
            })
        );
        assert_eq!(scan_list_fragments(br#"{"message":"x"}"#), None);
    }

    #[test]
    fn timestamps_are_exact_seconds() {
        assert_eq!(seconds(1_700_000_000_123), "1700000000.123");
        assert_eq!(seconds(5), "0.005");
    }
}
