//! `rafka-bench`: rafka's benchmarks.
//!
//! - `rafka-bench log`: the storage engine alone, against plain sequential file writes of
//!   the same bytes measured in the same run.
//! - `rafka-bench produce` / `consume`: load against a running broker.
//! - `rafka-bench group`: a consumer group's consume rate and a joining member's wait.
//! - `rafka-bench limits`: the machine's write, copy and loopback bandwidth.
//! - `rafka-bench scale`: how long until every partition of a large topic acknowledges
//!   a write (after creating it, a restart, a broker's death); `scripts/scale-bench.sh`
//!   adds idle CPU and memory per broker.
//! - `rafka-bench reassign`: a partition moved to other brokers while a producer writes
//!   to it; the move's time and the producer's latency before, during and after.
//! - `rafka-bench run WORKLOAD`: a workload file against a rafka cluster or, with
//!   `--system jetstream`, against NATS JetStream (`jetstream`: the peer driver).
//! - `rafka-bench compare DIR` / `chart DIR`: the rafka/JetStream table and SVG charts
//!   from the results `scripts/compare.sh` leaves in DIR.

/// mimalloc: the system allocator hands large buffers (fetch and produce payloads) back
/// to the kernel and faults fresh zeroed pages in for the next one; mimalloc reuses them.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

mod chart;
mod checksums;
mod compare;
mod group;
mod jetstream;
mod kafka;
mod kafka_consumer;
mod limits;
mod load;
mod log_bench;
mod rafka_driver;
mod reassign;
mod report;
mod result;
mod scale;
mod security;
mod stages;
mod workload;

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
    /// Producers against a running broker.
    Produce(load::ProduceArgs),
    /// A consumer reading a topic from the beginning.
    Consume(load::ConsumeArgs),
    /// A consumer group: its consume rate, and how fast a joining member gets its share.
    Group(group::GroupArgs),
    /// This machine's limits: fsync'd and buffered writes, memory copy, loopback TCP.
    Limits(limits::LimitsArgs),
    /// A partition moved to other brokers under a fixed-rate producer: time, latency.
    Reassign(reassign::ReassignArgs),
    /// Time until every partition of a topic acknowledges a write.
    Scale(scale::ScaleArgs),
    /// A workload file (benches/workloads/*.toml) against a cluster; JSON result.
    Run(workload::RunArgs),
    /// The rafka/JetStream table from a directory of run results.
    Compare(compare::CompareArgs),
    /// SVG charts (throughput over time, latency percentiles) of a directory of run results.
    Chart(chart::ChartArgs),
    /// A workload file's name, replication factor, flush policy and backlog bytes, on one line.
    Describe(compare::DescribeArgs),
    /// What the Kafka listener's checksum conversion (CRC-32C to CRC-32 and back) costs.
    Checksums(checksums::ChecksumArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Log(args) => log_bench::run(args),
        Command::Produce(args) => runtime()?.block_on(load::produce(args)),
        Command::Consume(args) => runtime()?.block_on(load::consume(args)),
        Command::Group(args) => runtime()?.block_on(group::run(args)),
        Command::Limits(args) => limits::run(args),
        Command::Reassign(args) => runtime()?.block_on(reassign::run(args)),
        Command::Scale(args) => runtime()?.block_on(scale::run(args)),
        Command::Run(args) => runtime()?.block_on(workload::run(args)),
        Command::Compare(args) => compare::run(args),
        Command::Chart(args) => chart::run(args),
        Command::Describe(args) => compare::describe(args),
        Command::Checksums(args) => checksums::run(args),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
