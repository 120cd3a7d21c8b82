//! Prints the MkvReader events of a file (or stdin), one per line, frames summarized.
//! `cargo run -p timeshard-parser --example mkv-events -- file.mkv [--frames]`

use std::io::Read;

use timeshard_parser::{MkvEvent, MkvReader};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let show_frames = args.iter().any(|a| a == "--frames");
    let mut input = Vec::new();
    match args.iter().find(|a| !a.starts_with("--")) {
        Some(path) => input = std::fs::read(path)?,
        None => {
            std::io::stdin().read_to_end(&mut input)?;
        }
    }
    let mut reader = MkvReader::new();
    reader.push(&input);
    let mut frames = 0usize;
    let mut frame_bytes = 0usize;
    let flush = |frames: &mut usize, frame_bytes: &mut usize| {
        if *frames > 0 {
            println!("  {frames} frames, {frame_bytes} bytes");
            *frames = 0;
            *frame_bytes = 0;
        }
    };
    loop {
        let event = match reader.finish() {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(e) => {
                flush(&mut frames, &mut frame_bytes);
                println!("error: {e}");
                std::process::exit(1);
            }
        };
        match event {
            MkvEvent::Frame(f) if !show_frames => {
                frames += 1;
                frame_bytes += f.data.len();
            }
            MkvEvent::Frame(f) => println!(
                "  Frame track={} tc={} key={} invisible={} discardable={} len={}",
                f.track,
                f.timecode,
                f.key,
                f.invisible,
                f.discardable,
                f.data.len()
            ),
            other => {
                flush(&mut frames, &mut frame_bytes);
                println!("@{} {other:?}", reader.position());
            }
        }
    }
    flush(&mut frames, &mut frame_bytes);
    println!("end at byte {}", reader.position());
    Ok(())
}
