//! `rafka-bench`: rafka's benchmarks.
//!
//! - `rafka-bench log`: the storage engine alone, against plain sequential file writes of
//!   the same bytes measured in the same run.

use clap::{Parser, Subcommand};

mod log_bench;
mod report;

/// rafka benchmarks.
#[derive(Parser)]
#[command(name = "rafka-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Partition log append and read throughput, beside plain file writes.
    Log(log_bench::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Log(args) => log_bench::run(args),
    }
}
