//! `save-jpegs`: saves the frames of a time range as JPEG files, `DIR/<timestamp_ms>.jpg`, the
//! timestamp on the clock the range was given in (epoch ms; a second frame in the same
//! millisecond gets `-1`, `-2`, ... appended). Every frame, every Nth, or key frames only.
//!
//! The fragments come from ListFragments and GetMediaForFragmentList through the SDK's media
//! client, which decodes them on its own thread; JPEG encoding and writing run on blocking
//! threads.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use timeshard_producer::consumer::{DecodedFrame, FrameSource, Selection, TimestampType};

use crate::common::{Connection, parse_time, rfc3339_ms};

/// The command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "save-jpegs",
    version,
    about = "Save the frames of a time range of a video stream as JPEG files.",
    after_help = "Example:\n  save-jpegs --endpoint http://127.0.0.1:4567 --stream cam1 \\\n      --start 2024-05-01T12:00:00Z --end 2024-05-01T12:00:10Z --every 25 --out frames/"
)]
pub struct SaveArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Start of the range, inclusive: RFC 3339 (2024-05-01T12:00:00Z) or epoch ms.
    #[arg(long, value_parser = parse_time)]
    pub start: i64,
    /// End of the range, inclusive: RFC 3339 or epoch ms.
    #[arg(long, value_parser = parse_time)]
    pub end: i64,
    /// Which timestamps the range and the file names are on.
    #[arg(long, value_enum, default_value_t = Clock::Server)]
    pub clock: Clock,
    /// Save key frames only (decodes only those: the fastest).
    #[arg(long, conflicts_with = "every")]
    pub key_frames_only: bool,
    /// Save every Nth frame of the range, starting with its first.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub every: Option<u32>,
    /// The directory to write to (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// JPEG quality, 1 to 100.
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,
}

/// The clock of `--start`, `--end` and the file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Clock {
    /// When the server received the fragment.
    Server,
    /// The producer's (camera's) timestamps.
    Producer,
}

impl SaveArgs {
    fn selection(&self) -> Selection {
        match (self.key_frames_only, self.every) {
            (true, _) => Selection::KeyFramesOnly,
            (false, Some(n)) if n > 1 => Selection::EveryNth(n),
            _ => Selection::All,
        }
    }
}

/// What a run wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The files, in frame order.
    pub files: Vec<PathBuf>,
    pub bytes: u64,
    /// Timestamps (on the chosen clock) of the first and last frame saved.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// Width and height of the last frame saved.
    pub size: Option<(u64, u64)>,
    /// Fragments that could not be decoded (skipped).
    pub decode_errors: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} JPEG file(s), {} bytes",
            self.files.len(),
            self.bytes
        )?;
        if let Some((w, h)) = self.size {
            write!(f, ", {w}x{h}")?;
        }
        if let (Some(first), Some(last)) = (self.first_ms, self.last_ms) {
            write!(f, ", frames {} .. {}", rfc3339_ms(first), rfc3339_ms(last))?;
        }
        if self.decode_errors > 0 {
            write!(
                f,
                "; {} fragment(s) could not be decoded",
                self.decode_errors
            )?;
        }
        Ok(())
    }
}

/// Saves the range's selected frames under `args.out`.
pub async fn run(args: &SaveArgs) -> anyhow::Result<Summary> {
    if args.end < args.start {
        anyhow::bail!("--end is before --start");
    }
    let client = args.connection.client()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let clock = match args.clock {
        Clock::Server => TimestampType::Server,
        Clock::Producer => TimestampType::Producer,
    };
    let mut frames = client.frames(
        FrameSource::Range {
            clock,
            start_ms: args.start,
            end_ms: args.end,
        },
        args.selection(),
    );
    let mut summary = Summary::default();
    let mut used = HashSet::new();
    let mut last_error = None;
    while let Some(next) = frames.next().await {
        let frame = match next {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!("{e}");
                summary.decode_errors += 1;
                last_error = Some(e);
                continue;
            }
        };
        last_error = None;
        let at = match args.clock {
            Clock::Server => frame.timestamp_ms,
            Clock::Producer => frame.producer_timestamp_ms.unwrap_or(frame.timestamp_ms),
        };
        let path = free_name(&args.out, at, &used);
        used.insert(path.clone());
        let size = (frame.width as u64, frame.height as u64);
        let bytes = save(frame, path.clone(), args.quality).await?;
        summary.first_ms.get_or_insert(at);
        summary.last_ms = Some(at);
        summary.size = Some(size);
        summary.bytes += bytes;
        summary.files.push(path);
    }
    // An error as the very last item is what ended the range early.
    if let Some(e) = last_error {
        summary.decode_errors -= 1;
        return Err(e).context(format!(
            "the range stopped early after {} file(s)",
            summary.files.len()
        ));
    }
    Ok(summary)
}

/// `DIR/<ms>.jpg`, or `DIR/<ms>-<n>.jpg` when this run already wrote that name. (A file from
/// an earlier run is overwritten.)
fn free_name(dir: &Path, at_ms: i64, used: &HashSet<PathBuf>) -> PathBuf {
    let mut n = 0;
    loop {
        let name = if n == 0 {
            format!("{at_ms}.jpg")
        } else {
            format!("{at_ms}-{n}.jpg")
        };
        let path = dir.join(name);
        if !used.contains(&path) {
            return path;
        }
        n += 1;
    }
}

/// Encodes and writes one frame on a blocking thread; returns the file's size.
async fn save(frame: DecodedFrame, path: PathBuf, quality: u8) -> anyhow::Result<u64> {
    tokio::task::spawn_blocking(move || {
        let jpeg = timeshard_parser::decode::encode_jpeg(&frame, quality)
            .with_context(|| format!("encoding {}", path.display()))?;
        std::fs::write(&path, &jpeg).with_context(|| format!("writing {}", path.display()))?;
        Ok(jpeg.len() as u64)
    })
    .await
    .context("the JPEG thread failed")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_one_millisecond_get_a_suffix() {
        let dir = Path::new("out");
        let mut used = HashSet::new();
        let a = free_name(dir, 1000, &used);
        used.insert(a.clone());
        let b = free_name(dir, 1000, &used);
        used.insert(b.clone());
        assert_eq!(a, dir.join("1000.jpg"));
        assert_eq!(b, dir.join("1000-1.jpg"));
        assert_eq!(free_name(dir, 1040, &used), dir.join("1040.jpg"));
    }
}
