//! save-jpegs: save the frames of a time range as JPEG files
//! ([`timeshard_samples::save_jpegs`]); prints a summary.

use std::process::ExitCode;

use clap::Parser as _;
use timeshard_samples::common;
use timeshard_samples::save_jpegs::{self, SaveArgs};

fn main() -> ExitCode {
    let args = SaveArgs::parse();
    common::init_logging();
    let runtime = match common::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("save-jpegs: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(save_jpegs::run(&args)) {
        Ok(summary) => {
            println!("{summary} to {}", args.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("save-jpegs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
