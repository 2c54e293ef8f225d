//! `herald-bench`: every benchmark of Herald in one program, a subcommand each, each
//! starting its own servers and printing its own figures (`BENCHMARKS.md` quotes them).
//!
//! ```text
//! cargo run --release -p herald-bench -- propagation
//! cargo run --release -p herald-bench -- ingest [--tokens N] [--rounds N] [--only raw|decode|herald] [--layout SxP]
//! cargo run --release -p herald-bench -- memory [--classes]
//! cargo run --release -p herald-bench -- scale [--case SPEC]... [--window 30s] ...
//! cargo run --release -p herald-bench -- peers [--sizes 1000,5000] ...
//! cargo run --release -p herald-bench -- peers-kill [--cells herald-advisories@3s,...] ...
//! cargo run --release -p herald-bench -- churn [--duration 600s] [--seed N] [--advisories]
//! cargo run --release -p herald-bench -- xds [--changes N] [--first-calls N] [--clients N]
//! cargo run --release -p herald-bench -- rolling [--backends 3,30] [--drains 0s,1s] [--sweep ...]
//! ```
//!
//! `herald-bench help SUBCOMMAND` says what each measures and takes. The benchmarks that
//! run processes of their own (ingest's publisher, scale's cases and hosts, the kill
//! comparison's hosts, the churn soak's fleet) start this same program with a hidden
//! subcommand.

use clap::{Parser, Subcommand};

mod churn;
mod ingest;
mod memory;
mod peers;
mod peers_kill;
mod propagation;
mod rolling;
mod scale;
mod xds;

/// Counts heap allocations for `memory` and `churn`; the others switch counting off first
/// thing, so that it costs them one relaxed load per allocation.
#[global_allocator]
static ALLOC: herald_bench::alloc::Counting = herald_bench::alloc::Counting;

/// Herald's benchmarks against real nats-server and etcd processes it starts itself.
#[derive(Debug, Parser)]
#[command(name = "herald-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Propagation latency: a join and a goodbye to the subscriber, against raw NATS.
    Propagation,
    /// Ingest throughput of one subscriber, against raw async-nats and the decoder alone.
    Ingest(ingest::Args),
    /// Heap bytes per cached instance.
    Memory(memory::Args),
    /// 10k and 50k announcers in host processes against one subscriber of everything.
    Scale(scale::Args),
    /// Herald, etcd-only discovery and NATS polling side by side at one crash-detection
    /// target.
    Peers(herald_bench::peers::Settings),
    /// Crashes as real processes die (SIGKILL): with disconnect advisories, with the TTL
    /// alone, and NATS polling.
    PeersKill(herald_bench::peers::kill::KillSettings),
    /// Churn soak: announcers join, crash and leave at random, checked against the truth.
    Churn(churn::Args),
    /// xDS: view change to EDS response, against the subscriber's own event; a burst's
    /// responses.
    Xds(xds::Args),
    /// Rolling restarts: failed calls with and without the drain, and the drain that fails
    /// no call.
    Rolling(rolling::Args),
    /// Ingest's publishing process.
    #[command(hide = true)]
    IngestPublisher { url: String },
    /// One case of `scale`, printing its outcome as a `result {json}` line.
    #[command(hide = true)]
    ScaleCase { settings: String },
    /// A host process of `scale`.
    #[command(hide = true)]
    ScaleHost { settings: String },
    /// A host process of `peers-kill`.
    #[command(hide = true)]
    KillHost { settings: String },
    /// The announcers' process of `churn`.
    #[command(hide = true)]
    ChurnFleet { settings: String },
    /// The xDS server's process of `xds`.
    #[command(hide = true)]
    XdsAgent { settings: String },
}

fn main() {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Memory(_) | Command::Churn(_) | Command::ChurnFleet { .. }
    ) {
        herald_bench::alloc::count(false);
    }
    match cli.command {
        Command::Propagation => propagation::run(),
        Command::Ingest(args) => ingest::run(args),
        Command::Memory(args) => memory::run(args),
        Command::Scale(args) => scale::run(args),
        Command::Peers(args) => peers::run(args),
        Command::PeersKill(args) => peers_kill::run(args),
        Command::Churn(args) => churn::run(args),
        Command::Xds(args) => xds::run(args),
        Command::Rolling(args) => rolling::run_all(args),
        Command::IngestPublisher { url } => ingest::publisher_process(url),
        Command::ScaleCase { settings } => scale::run_case(&settings),
        Command::ScaleHost { settings } => scale::host_process(&settings),
        Command::KillHost { settings } => peers_kill::host_process(&settings),
        Command::ChurnFleet { settings } => churn::fleet_process(&settings),
        Command::XdsAgent { settings } => xds::agent_process(&settings),
    }
}

/// A runtime of two worker threads, the machine's cores.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A runtime of one thread, as in a small service process.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
