//! `motion`: follows a live stream and prints one line per decoded frame:
//!
//! ```text
//! 2024-05-01T12:00:00.040Z fragment=91343852333181432392682062606743692270383393426 motion=3.52
//! ```
//!
//! the frame's absolute server timestamp (RFC 3339, milliseconds, UTC), the fragment it came in
//! and a motion score: the mean absolute difference of luma (BT.601) between this frame and the
//! previous decoded one, from 0 (identical) to 255. The first frame, and a frame whose size
//! differs from the previous one, score 0.
//!
//! This is the shape of an ML consumer: frames arrive decoded on the SDK's decoder thread, the
//! "model" (here the frame difference) runs on a blocking thread so it never stalls the
//! download, and each result is printed with the frame's timestamp. Reconnects are the SDK's
//! job; the program runs until Ctrl-C (or `--max-frames`).

use std::fmt;
use std::future::Future;
use std::io::Write;

use anyhow::Context as _;
use timeshard_producer::StartSelector;
use timeshard_producer::consumer::{DecodedFrame, FrameSource, Selection};

use crate::common::{Connection, parse_time, rfc3339_ms};

/// The command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "motion",
    version,
    about = "Follow a live video stream and print a motion score per decoded frame.",
    after_help = "Example:\n  motion --endpoint http://127.0.0.1:4567 --stream cam1 --every 5"
)]
pub struct MotionArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Score every Nth frame (1: every frame).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub every: u32,
    /// Where to start: `now`, `earliest`, or a server time (RFC 3339 or epoch ms).
    #[arg(long, default_value = "now", value_parser = parse_start)]
    pub start: StartSelector,
    /// Stop after this many frames (default: run until Ctrl-C).
    #[arg(long)]
    pub max_frames: Option<u64>,
}

fn parse_start(text: &str) -> Result<StartSelector, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "now" => Ok(StartSelector::Now),
        "earliest" => Ok(StartSelector::Earliest),
        _ => parse_time(text).map(StartSelector::ServerTimestamp),
    }
}

/// One output line.
#[derive(Debug, Clone, PartialEq)]
pub struct MotionLine {
    /// Absolute server time of the frame, epoch ms.
    pub timestamp_ms: i64,
    /// `-` when the fragment had no number.
    pub fragment_number: String,
    /// 0 to 255.
    pub score: f64,
}

impl fmt::Display for MotionLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} fragment={} motion={:.2}",
            rfc3339_ms(self.timestamp_ms),
            self.fragment_number,
            self.score
        )
    }
}

impl MotionLine {
    /// Reads a line back (for tests and for whoever pipes the output on).
    pub fn parse(line: &str) -> Option<MotionLine> {
        let mut parts = line.split_whitespace();
        let timestamp_ms = chrono::DateTime::parse_from_rfc3339(parts.next()?)
            .ok()?
            .timestamp_millis();
        let fragment_number = parts.next()?.strip_prefix("fragment=")?.to_owned();
        let score = parts.next()?.strip_prefix("motion=")?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(MotionLine {
            timestamp_ms,
            fragment_number,
            score,
        })
    }
}

/// The "model": remembers the previous frame's luma and scores the next against it.
#[derive(Debug, Default)]
pub struct MotionScorer {
    previous: Option<(usize, usize, Vec<u8>)>,
}

impl MotionScorer {
    /// The frame's motion score against the previous frame scored (0 for the first, or after
    /// a change of size).
    pub fn score(&mut self, frame: &DecodedFrame) -> f64 {
        let (width, height) = (frame.width as usize, frame.height as usize);
        let current = luma(&frame.rgb);
        let score = match &self.previous {
            Some((w, h, previous)) if (*w, *h) == (width, height) => {
                mean_abs_diff(previous, &current)
            }
            _ => 0.0,
        };
        self.previous = Some((width, height, current));
        score
    }
}

/// BT.601 luma of RGB8 pixels, in integer arithmetic (weights 77, 150, 29 out of 256).
pub fn luma(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| {
            let y = 77 * u32::from(p[0]) + 150 * u32::from(p[1]) + 29 * u32::from(p[2]);
            (y >> 8) as u8
        })
        .collect()
}

/// Mean absolute difference of two equally long planes, 0 to 255.
pub fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    if a.is_empty() || a.len() != b.len() {
        return 0.0;
    }
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.len() as f64
}

/// Follows the stream and writes a [`MotionLine`] per frame to `out` until `stop` completes,
/// `--max-frames` is reached, or an error ends the stream. Returns the number of lines.
pub async fn run(
    args: &MotionArgs,
    out: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> anyhow::Result<u64> {
    let client = args.connection.client()?;
    let selection = if args.every <= 1 {
        Selection::All
    } else {
        Selection::EveryNth(args.every)
    };
    tracing::info!(
        stream = %args.connection.stream,
        endpoint = %args.connection.endpoint,
        start = ?args.start,
        every = args.every,
        "following; Ctrl-C stops"
    );
    let mut frames = client.frames(FrameSource::Live(args.start.clone()), selection);
    let mut scorer = Some(MotionScorer::default());
    let mut lines = 0u64;
    let mut last_error = None;
    tokio::pin!(stop);
    loop {
        if args.max_frames.is_some_and(|max| lines >= max) {
            break;
        }
        let next = tokio::select! {
            biased;
            () = &mut stop => break,
            next = frames.next() => next,
        };
        let frame = match next {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                // A fragment that could not be decoded is skipped; an error that ends the
                // stream comes last, before `None`.
                tracing::warn!("{e}");
                last_error = Some(e);
                continue;
            }
            None => match last_error {
                Some(e) => return Err(e).context("the live stream ended"),
                None => break,
            },
        };
        last_error = None;
        // The model's work goes to a blocking thread, as inference would.
        let mut s = scorer.take().unwrap_or_default();
        let (s, frame, score) = tokio::task::spawn_blocking(move || {
            let score = s.score(&frame);
            (s, frame, score)
        })
        .await
        .context("the scoring thread failed")?;
        scorer = Some(s);
        let line = MotionLine {
            timestamp_ms: frame.timestamp_ms,
            fragment_number: frame.fragment_number.unwrap_or_else(|| "-".to_owned()),
            score,
        };
        writeln!(out, "{line}").context("writing the output")?;
        out.flush().context("writing the output")?;
        lines += 1;
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let line = MotionLine {
            timestamp_ms: 1_714_564_800_040,
            fragment_number: "91343852333181432392682062606743692270383393426".to_owned(),
            score: 3.5,
        };
        let text = line.to_string();
        assert_eq!(
            text,
            "2024-05-01T12:00:00.040Z fragment=91343852333181432392682062606743692270383393426 motion=3.50"
        );
        assert_eq!(MotionLine::parse(&text), Some(line));
        assert_eq!(MotionLine::parse("2024-05-01T12:00:00Z motion=1"), None);
    }

    #[test]
    fn luma_and_differences() {
        assert_eq!(luma(&[255, 255, 255, 0, 0, 0, 255, 0, 0]), [255, 0, 76]);
        assert_eq!(mean_abs_diff(&[0, 10, 255], &[10, 0, 0]), 275.0 / 3.0);
        assert_eq!(mean_abs_diff(&[1, 2], &[1]), 0.0);
    }

    #[test]
    fn start_selectors() {
        assert_eq!(parse_start("NOW"), Ok(StartSelector::Now));
        assert_eq!(parse_start("earliest"), Ok(StartSelector::Earliest));
        assert_eq!(
            parse_start("2024-05-01T12:00:00.040Z"),
            Ok(StartSelector::ServerTimestamp(1_714_564_800_040))
        );
        assert!(parse_start("later").is_err());
    }
}
