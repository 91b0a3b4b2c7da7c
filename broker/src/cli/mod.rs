//! The `rafka` command line (clap).
//!
//! ```text
//! rafka start [--config F] [--node-id N] [--listen ADDR] [--data-dir DIR] [--peers 1=A,2=B]
//! rafka dev-cluster [--nodes 3]   N brokers on loopback, prints the bootstrap list
//! rafka topic create|list|describe|delete|alter ...
//! rafka produce TOPIC        one record per stdin line
//! rafka consume TOPIC [--from-beginning] [--offset N] [--partition P] [--max-messages N]
//! rafka cluster status
//! rafka group list | describe G | reset-offsets G --topic T --to-... | delete G
//! ```
//!
//! Global `--bootstrap ADDR[,ADDR]` (env `RAFKA_BOOTSTRAP`), default `127.0.0.1:9092`.
//! Errors print one line and exit non-zero.

mod clients;
mod groups;
mod start;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// rafka: a distributed commit-log broker.
#[derive(Parser)]
#[command(name = "rafka", version, about)]
pub struct Cli {
    /// Brokers to bootstrap from, comma-separated.
    #[arg(
        long,
        global = true,
        env = "RAFKA_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (with no flags: one node on 127.0.0.1:9092, data in ./rafka-data).
    Start(start::StartArgs),
    /// Run a test cluster of N brokers on loopback in this process (Ctrl-C stops it).
    DevCluster(start::DevClusterArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(clients::TopicCommand),
    /// Produce one record per line of standard input.
    Produce(clients::ProduceArgs),
    /// Print records of a topic.
    Consume(clients::ConsumeArgs),
    /// Cluster information.
    #[command(subcommand)]
    Cluster(clients::ClusterCommand),
    /// Consumer groups: list, describe (lag), reset offsets, delete.
    #[command(subcommand)]
    Group(groups::GroupCommand),
}

/// Threads for blocking work at most (see [`main`]).
const MAX_BLOCKING_THREADS: usize = 64;

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Start(_) | Command::DevCluster(_)) {
        // Client commands end quietly when their output is closed (`rafka ... | head`),
        // like other Unix tools; brokers keep ignoring SIGPIPE (a closed socket is an
        // error there, not a reason to exit).
        // SAFETY: setting a signal disposition before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // Blocking work (syncs, opening files) is short; tokio's default of up to 512
    // threads let a broker creating thousands of partitions run hundreds, each with
    // its stack and allocator heap, which stayed in its memory long after.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Start(args) => start::run(args).await,
            Command::DevCluster(args) => start::dev_cluster(args).await,
            Command::Topic(cmd) => clients::topic(&cli.bootstrap, cmd).await,
            Command::Produce(args) => clients::produce(&cli.bootstrap, args).await,
            Command::Consume(args) => clients::consume(&cli.bootstrap, args).await,
            Command::Cluster(cmd) => clients::cluster(&cli.bootstrap, cmd).await,
            Command::Group(cmd) => groups::group(&cli.bootstrap, cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
