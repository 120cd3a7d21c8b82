//! H.264 decode throughput of `FrameDecoder` (feature `decode`), on clips ffmpeg makes at bench
//! time: `cargo bench -p timeshard-parser --features decode --bench decode`.
//!
//! Each clip (testsrc2, libx264 yuv420p, 25 fps, a key frame every second, B-frames on, or off
//! as most cameras send) is rewritten as one cluster per key frame, read into fragments, and
//! decoded three times with each selection; the best round is reported, frames out per second
//! of wall time on one thread, RGB conversion included.

use std::process::Command;
use std::time::Instant;

use timeshard_parser::decode::{FrameDecoder, Selection};
use timeshard_parser::mkv::write;
use timeshard_parser::{FragmentReader, MkvEvent, MkvReader, SegmentInfo};

fn clip(size: &str, seconds: u32, extra: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=25"))
        .args([
            "-t",
            &seconds.to_string(),
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
        ])
        .args(["-g", "25"])
        .args(extra)
        .args(["-f", "matroska", "-"])
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

fn fragments(mkv: &[u8]) -> Vec<timeshard_parser::Fragment> {
    let mut reader = MkvReader::new();
    reader.push(mkv);
    let mut doc = Vec::new();
    let mut cluster = 0i64;
    let mut cluster_start = 0i64;
    loop {
        let ev = match reader.next_event().expect("valid") {
            Some(e) => Some(e),
            None => reader.finish().expect("valid"),
        };
        match ev {
            None => break,
            Some(MkvEvent::Tracks(t)) => {
                write::ebml_header(&mut doc);
                write::segment_start_unknown(&mut doc);
                write::info(&mut doc, &SegmentInfo::default());
                write::tracks(&mut doc, &t);
            }
            Some(MkvEvent::ClusterStart { timecode }) => cluster = timecode as i64,
            Some(MkvEvent::Frame(mut f)) => {
                let ts = cluster + i64::from(f.timecode);
                if f.key {
                    cluster_start = ts;
                    write::cluster_start_unknown(&mut doc, ts as u64);
                }
                f.timecode = (ts - cluster_start) as i16;
                write::simple_block(&mut doc, &f);
            }
            Some(_) => {}
        }
    }
    let mut r = FragmentReader::new();
    r.push(&doc);
    let mut out = Vec::new();
    while let Some(f) = r.next_fragment().expect("valid") {
        out.push(f);
    }
    while let Some(f) = r.finish().expect("valid") {
        out.push(f);
    }
    out
}

fn main() {
    for (size, b_frames, extra) in [
        ("320x240", "B-frames", &[][..]),
        ("1280x720", "B-frames", &[][..]),
        ("1280x720", "no B", &["-bf", "0"][..]),
    ] {
        let Some(mkv) = clip(size, 4, extra) else {
            println!("skipped: ffmpeg with libx264 is needed");
            return;
        };
        let fragments = fragments(&mkv);
        for (name, selection) in [
            ("every frame", Selection::All),
            ("every 5th", Selection::EveryNth(5)),
            ("key frames only", Selection::KeyFramesOnly),
        ] {
            let mut best = f64::MAX;
            let mut count = 0;
            for _ in 0..3 {
                let started = Instant::now();
                let mut decoder = FrameDecoder::new(selection);
                count = 0;
                for f in &fragments {
                    count += decoder.decode_fragment(f).expect("decodes").len();
                }
                best = best.min(started.elapsed().as_secs_f64());
            }
            println!(
                "{size:>9} {b_frames:<9} {name:<16} {:>8.1} frames/s out ({count} frames in {:.1} ms; 100 input frames)",
                count as f64 / best,
                best * 1000.0
            );
        }
    }
}
