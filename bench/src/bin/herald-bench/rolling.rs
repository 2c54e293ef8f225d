//! Rolling restarts ([`herald_bench::rolling`]): failed calls through a restart of every
//! backend, with and without the drain, for 3 and 30 backends and both clients, in one run;
//! then, at 3 backends, the drain that makes 20 restarts fail no call.
//!
//! `cargo build --release -p herald-cli && cargo run --release -p herald-bench -- rolling`

use std::path::PathBuf;
use std::time::Duration;

use herald_bench::rolling::{Announced, Settings, run};
use herald_bench::stats::{Summary, ms};

/// The settings of `herald-bench rolling`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Numbers of backends compared, each restarted once.
    #[arg(long, value_delimiter = ',', default_value = "3,30")]
    backends: Vec<usize>,
    /// The drains compared at each number of backends.
    #[arg(long, value_delimiter = ',', default_value = "0s,1s", value_parser = humantime::parse_duration)]
    drains: Vec<Duration>,
    /// The drains tried, shortest first, for the one that fails no call.
    #[arg(long, value_delimiter = ',', default_value = "0ms,5ms,10ms,25ms,50ms,100ms,250ms", value_parser = humantime::parse_duration)]
    sweep: Vec<Duration>,
    /// Restarts at each drain of the sweep (3 backends, round and round).
    #[arg(long, default_value_t = 20, value_parser = herald_bench::at_least_one)]
    sweep_restarts: usize,
    /// Calls a second, per client.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// How long each call takes in the backend, in milliseconds.
    #[arg(long, default_value_t = 20)]
    call_ms: u64,
    /// The `herald` program (default: the one beside this program).
    #[arg(long)]
    herald: Option<PathBuf>,
    /// A Python with grpcio (default: the venv `scripts/install-deps` makes).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Backends announced beside the server, stopped first, rather than run by
    /// `herald announce -- CMD`.
    #[arg(long)]
    beside: bool,
}

pub(crate) fn run_all(args: Args) {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let herald = args.herald.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("own path")
            .with_file_name("herald")
    });
    assert!(
        herald.exists(),
        "{} is missing: cargo build --release -p herald-cli",
        herald.display()
    );
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| root.join("target/test-venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: scripts/install-deps makes it",
        python.display()
    );
    let base = Settings {
        herald,
        python,
        scripts: root.join("cli/tests/grpc"),
        backends: 3,
        restarts: 3,
        drain: Duration::ZERO,
        announced: if args.beside {
            Announced::Beside
        } else {
            Announced::Supervised
        },
        rate: args.rate,
        call_ms: args.call_ms,
    };
    println!(
        "rolling: {:?} backends, calls of {} ms at {} a second per client (tonic through discover, grpcio through xDS)",
        base.announced, args.call_ms, args.rate
    );
    crate::runtime().block_on(async {
        println!("  every backend restarted once");
        for &backends in &args.backends {
            for &drain in &args.drains {
                let settings = Settings {
                    backends,
                    restarts: backends,
                    drain,
                    ..base.clone()
                };
                let o = run(&settings).await;
                let mut took = o.restart_took.clone();
                let took = Summary::of(&mut took);
                println!(
                    "    {backends:>3} backends, drain {:>6}: failed calls tonic {:>4} of {:>6}, grpcio {:>4} of {:>6}; a restart took p50 {} max {}",
                    humantime::format_duration(drain).to_string(),
                    o.tonic.failed,
                    o.tonic.failed + o.tonic.served.values().sum::<u64>(),
                    o.grpcio.failed,
                    o.grpcio.failed + o.grpcio.served.values().sum::<u64>(),
                    ms(took.p50),
                    ms(took.max)
                );
                for e in o.tonic.errors.iter().chain(&o.grpcio.errors).take(2) {
                    println!("        e.g. {e}");
                }
            }
        }
        println!(
            "  drain sweep: 3 backends, {} restarts at each drain",
            args.sweep_restarts
        );
        for &drain in &args.sweep {
            let settings = Settings {
                drain,
                restarts: args.sweep_restarts,
                ..base.clone()
            };
            let o = run(&settings).await;
            println!(
                "    drain {:>6}: failed calls tonic {:>3}, grpcio {:>3}; calls took p50 / p99 tonic {} / {}, grpcio {} / {}",
                humantime::format_duration(drain).to_string(),
                o.tonic.failed,
                o.grpcio.failed,
                ms(o.tonic.latency.0),
                ms(o.tonic.latency.1),
                ms(o.grpcio.latency.0),
                ms(o.grpcio.latency.1)
            );
            for e in o.tonic.errors.iter().chain(&o.grpcio.errors).take(2) {
                println!("        e.g. {e}");
            }
        }
    });
}
