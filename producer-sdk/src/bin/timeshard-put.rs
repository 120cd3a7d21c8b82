//! timeshard-put: uploads MKV (a file, stdin, or ffmpeg's output) to a stream with PutMedia and
//! exits once every fragment is PERSISTED.
//!
//! Exit codes: 0 every fragment persisted; 1 an error stopped the upload; 3 the upload finished
//! but some fragments were dropped (the buffer's bounds, or refused by the server), as reported.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;
use timeshard_producer::auth::AuthOptions;
use timeshard_producer::video::control::CreateOptions;
use timeshard_producer::video::{BufferConfig, Event, ProducerConfig, VideoProducer, put_mkv};
use timeshard_producer::{Credentials, Error};
use tokio::io::AsyncRead;

#[derive(Debug, Parser)]
#[command(
    name = "timeshard-put",
    version,
    about = "Upload MKV video to a timeshard (or Kinesis Video Streams) stream with PutMedia.",
    after_help = "Examples:\n  ffmpeg -i rtsp://cam/stream -c copy -f matroska - | timeshard-put --endpoint http://127.0.0.1:4567 --stream cam1\n  timeshard-put --endpoint http://127.0.0.1:4567 --stream cam1 --ffmpeg-input rtsp://cam/stream --buffer-dir /var/lib/cam1"
)]
struct Args {
    /// The server's endpoint URL (http://host:port).
    #[arg(long, env = "TIMESHARD_ENDPOINT")]
    endpoint: String,
    /// The stream to upload to; created when it does not exist (unless --no-create).
    #[arg(long)]
    stream: String,
    /// MKV file to upload, or `-` for stdin (the default).
    #[arg(conflicts_with = "ffmpeg_input")]
    file: Option<PathBuf>,
    /// Run ffmpeg on this input (an RTSP URL, a device, a file) and upload its output, remuxed
    /// with `-c copy` (first video and first audio stream).
    #[arg(long)]
    ffmpeg_input: Option<String>,
    /// Read --ffmpeg-input at its native frame rate (ffmpeg `-re`), for files standing in for a
    /// camera.
    #[arg(long, requires = "ffmpeg_input")]
    realtime: bool,
    /// The ffmpeg binary.
    #[arg(long, default_value = "ffmpeg")]
    ffmpeg: String,
    /// Fail instead of creating a missing stream.
    #[arg(long)]
    no_create: bool,
    /// Retention of a stream this command creates, in hours.
    #[arg(long, default_value_t = 24)]
    retention_hours: u64,
    /// Keep fragments in this directory until they are persisted, so a crash or a long outage
    /// loses nothing; a restart uploads what is there first.
    #[arg(long)]
    buffer_dir: Option<PathBuf>,
    /// The most bytes of unpersisted fragments kept (memory, or disk with --buffer-dir).
    #[arg(long, default_value_t = 1 << 30)]
    buffer_max_bytes: u64,
    /// The oldest an unpersisted fragment may get, in seconds, before it is dropped.
    #[arg(long, default_value_t = 24 * 3600)]
    buffer_max_age: u64,
    /// Give up when nothing could be persisted for this many seconds (default: never).
    #[arg(long)]
    give_up_after: Option<u64>,
    /// AWS region for signing (default: AWS_REGION, the profile's, else us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// AWS profile from ~/.aws/credentials and ~/.aws/config.
    #[arg(long)]
    profile: Option<String>,
    /// Access key id (instead of the environment or a profile).
    #[arg(long, requires = "secret_access_key")]
    access_key_id: Option<String>,
    /// Secret access key, with --access-key-id.
    #[arg(long, requires = "access_key_id")]
    secret_access_key: Option<String>,
    /// Only errors.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIMESHARD_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if args.quiet { "error" } else { "info" })
            }),
        )
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("timeshard-put: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("timeshard-put: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Progress output: a status line redrawn on a TTY, log lines otherwise.
struct Progress {
    tty: bool,
    quiet: bool,
    started: Instant,
    dropped: AtomicBool,
}

impl Progress {
    fn event(&self, event: &Event) {
        match event {
            Event::Dropping { dropped, reason } => {
                self.dropped.store(true, Ordering::Relaxed);
                self.line(&format!(
                    "DROPPED {} fragment(s), {} bytes, timecodes {}..{}: {reason}",
                    dropped.fragments,
                    dropped.bytes,
                    dropped.first_timecode_ms,
                    dropped.last_timecode_ms
                ));
            }
            Event::Error {
                message,
                will_retry,
            } => {
                let what = if *will_retry { "retrying" } else { "error" };
                self.line(&format!("{what}: {message}"));
            }
            Event::Connected {
                endpoint,
                resending,
            } if !self.quiet => {
                self.line(&format!(
                    "connected to {endpoint}{}",
                    if *resending > 0 {
                        format!(", {resending} buffered fragment(s) first")
                    } else {
                        String::new()
                    }
                ));
            }
            Event::TimestampRepaired(r) if !self.quiet => {
                self.line(&format!(
                    "track {}: time went back at {} ms; it and later frames are shifted by {} ms",
                    r.track,
                    r.given_ms,
                    r.written_ms - r.given_ms
                ));
            }
            _ => {}
        }
    }

    fn line(&self, text: &str) {
        if self.tty {
            // Clear the status line first.
            eprint!("\r\x1b[2K");
        }
        eprintln!("timeshard-put: {text}");
    }

    fn status(&self, stats: &timeshard_producer::video::Stats, last_bytes: &mut (u64, Instant)) {
        if self.quiet {
            return;
        }
        let now = Instant::now();
        let secs = now.duration_since(last_bytes.1).as_secs_f64().max(0.001);
        let kbps = (stats.bytes_sent - last_bytes.0) as f64 * 8.0 / 1000.0 / secs;
        *last_bytes = (stats.bytes_sent, now);
        let text = format!(
            "{}s sent {} persisted {} backlog {} ({} KB) {:.0} kbit/s{}",
            self.started.elapsed().as_secs(),
            stats.fragments_sent,
            stats.fragments_persisted,
            stats.backlog_fragments,
            stats.backlog_bytes / 1000,
            kbps,
            if stats.connected {
                ""
            } else {
                " [disconnected]"
            }
        );
        if self.tty {
            eprint!("\r\x1b[2K{text}");
        } else {
            eprintln!("timeshard-put: {text}");
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let progress = Arc::new(Progress {
        tty: std::io::stderr().is_terminal(),
        quiet: args.quiet,
        started: Instant::now(),
        dropped: AtomicBool::new(false),
    });
    let mut config = ProducerConfig::new(&args.endpoint, &args.stream);
    config.auth = AuthOptions {
        credentials: args
            .access_key_id
            .as_ref()
            .zip(args.secret_access_key.as_ref())
            .map(|(id, secret)| Credentials::new(id, secret)),
        profile: args.profile.clone(),
        region: args.region.clone(),
    };
    config.create = (!args.no_create).then(|| CreateOptions {
        retention_hours: args.retention_hours,
        ..CreateOptions::default()
    });
    config.buffer = BufferConfig {
        dir: args.buffer_dir.clone(),
        max_bytes: args.buffer_max_bytes,
        max_age: Duration::from_secs(args.buffer_max_age),
        ..BufferConfig::default()
    };
    config.give_up_after = args.give_up_after.map(Duration::from_secs);
    let p = progress.clone();
    config.on_event = Some(Arc::new(move |e: &Event| p.event(e)));

    let producer = VideoProducer::start(config)
        .await
        .map_err(|e| anyhow!("starting the upload: {}", explain(&e)))?;
    if producer.stats().recovered_fragments > 0 && !args.quiet {
        progress.line(&format!(
            "{} fragment(s) from an earlier run are in the buffer; uploading them first",
            producer.stats().recovered_fragments
        ));
    }

    let mut child = None;
    let input: Box<dyn AsyncRead + Unpin + Send> = match (&args.ffmpeg_input, &args.file) {
        (Some(url), _) => {
            let mut cmd = tokio::process::Command::new(&args.ffmpeg);
            cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin"]);
            if url.starts_with("rtsp://") || url.starts_with("rtsps://") {
                cmd.args(["-rtsp_transport", "tcp"]);
            }
            if args.realtime {
                cmd.arg("-re");
            }
            cmd.args(["-i", url])
                .args(["-map", "0:v:0?", "-map", "0:a:0?", "-c", "copy"])
                .args(["-f", "matroska", "-live", "1", "-"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            let mut c = cmd
                .spawn()
                .with_context(|| format!("running {} (is ffmpeg installed?)", args.ffmpeg))?;
            let stdout = c
                .stdout
                .take()
                .ok_or_else(|| anyhow!("ffmpeg has no stdout"))?;
            child = Some(c);
            Box::new(stdout)
        }
        (None, Some(path)) if path.as_os_str() != "-" => Box::new(
            tokio::fs::File::open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        _ => Box::new(tokio::io::stdin()),
    };

    // The status line, every second on a TTY, every 10 s in logs.
    let status_every = if progress.tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    let shared_stats = Arc::new(std::sync::Mutex::new(producer.stats()));
    let input_result = {
        let reading = put_mkv(&producer, input);
        tokio::pin!(reading);
        let mut tick = tokio::time::interval(status_every);
        tick.tick().await;
        let mut last = (0u64, Instant::now());
        loop {
            tokio::select! {
                r = &mut reading => break r,
                _ = tick.tick() => {
                    let s = producer.stats();
                    progress.status(&s, &mut last);
                    *shared_stats.lock().unwrap_or_else(|p| p.into_inner()) = s;
                }
            }
        }
    };
    if let Some(mut c) = child {
        let status = c.wait().await.context("waiting for ffmpeg")?;
        if !status.success() {
            progress.line(&format!(
                "ffmpeg exited with {status}; uploading what it produced"
            ));
        }
    }
    let summary = match input_result {
        Ok(input) => {
            if !args.quiet {
                progress.line(&format!(
                    "input ended: {} frames, {} bytes; waiting for every fragment to be persisted",
                    input.frames, input.bytes
                ));
            }
            producer.finish(None).await
        }
        Err(e) => {
            // Upload what was read before the input went bad, then report the input error.
            let finished = producer.finish(Some(Duration::from_secs(60))).await;
            if let Err(f) = finished {
                progress.line(&format!("the upload did not finish: {f}"));
            }
            bail!("{}", explain(&e));
        }
    };
    let summary = summary.map_err(|e| anyhow!("{}", explain(&e)))?;
    let s = &summary.stats;
    if !args.quiet {
        progress.line(&format!(
            "done: {} fragment(s) persisted, {} dropped, {} bytes sent over {} connection(s)",
            s.fragments_persisted, s.fragments_dropped, s.bytes_sent, s.connections
        ));
    }
    if s.fragments_dropped > 0 || progress.dropped.load(Ordering::Relaxed) {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// An error, with advice for the common ones.
fn explain(e: &Error) -> String {
    if e.is_auth() {
        format!(
            "{e}\nThe server refused the credentials: check --access-key-id/--secret-access-key, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the profile, and --region."
        )
    } else {
        e.to_string()
    }
}
