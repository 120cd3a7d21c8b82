//! motion: follow a live stream and print a motion score per decoded frame
//! ([`timeshard_samples::motion`]). Ctrl-C stops it cleanly (exit 0).

use std::process::ExitCode;

use clap::Parser as _;
use timeshard_samples::common;
use timeshard_samples::motion::{self, MotionArgs};

fn main() -> ExitCode {
    let args = MotionArgs::parse();
    common::init_logging();
    let runtime = match common::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("motion: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let stop = async {
            // An error here means no signal handler could be installed: then only
            // --max-frames or the stream's end stops the program.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        motion::run(&args, &mut std::io::stdout(), stop).await
    });
    match result {
        Ok(lines) => {
            eprintln!("motion: stopped after {lines} frame(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("motion: {e:#}");
            ExitCode::FAILURE
        }
    }
}
