//! Crashes as real processes die: instances in host processes, a crash is a SIGKILL of one,
//! timed from the kill to the `Removed` at every consumer; Herald with disconnect advisories,
//! Herald with its TTL alone, and NATS polling, side by side (see
//! `herald_bench::peers::kill`). Prints one table, each consumer's figures, and the verdict on
//! the target (p99 under 300 ms with the default grace, 10x better than the 3 s TTL, better
//! than polling, no false removal).
//!
//! `cargo run --release -p herald-bench -- peers-kill [--size 1000] [--samples 100]
//! [--per-process 10] [--consumers 2] [--grace 200ms]
//! [--cells herald-advisories@3s,herald@3s,herald@2s,polling@2s,polling@1s,polling@500ms]
//! [--steady 10s] [--seed N]`
//!
//! The hosts are this program, started with the hidden `kill-host` subcommand.

use std::time::Instant;

use herald_bench::child;
use herald_bench::peers::kill::host::{self, HostArgs};
use herald_bench::peers::kill::{self, KillSettings, report};
use herald_bench::peers::quiet;

/// A cell that overlapped a build is run again, up to this many times in all.
const ATTEMPTS: usize = 3;

pub(crate) fn run(mut settings: KillSettings) {
    settings.host_program = std::env::current_exe().expect("own path");
    crate::runtime().block_on(compare(settings));
}

/// A host process: a few instances of one system, until killed.
pub(crate) fn host_process(settings: &str) {
    let args: HostArgs = child::settings(settings).unwrap_or_else(|e| {
        eprintln!("kill-host: {e}");
        std::process::exit(2);
    });
    // One thread drives the host's few instances, as in a small service process.
    if crate::current_thread().block_on(host::run(args)).is_err() {
        std::process::exit(1);
    }
}

async fn compare(settings: KillSettings) {
    let began = Instant::now();
    println!(
        "kill comparison: {} instances kept up in hosts of {}, {} hosts of one instance killed \
         (SIGKILL) over {:?}, {} consumers, advisory grace {:?}, Herald lease {:?}, seed {}; \
         every cell on fresh servers with advisories on\n",
        settings.size,
        settings.per_process,
        settings.samples,
        settings.spread,
        settings.consumers,
        settings.grace,
        settings.herald_lease,
        settings.seed
    );
    let mut outcomes = Vec::new();
    for cell in &settings.cells {
        let label = cell.label(settings.grace);
        let outcome = quiet::gated(
            ATTEMPTS,
            || {
                println!("[{:>5.1} s] {label} ...", began.elapsed().as_secs_f64());
                kill::run(cell, &settings)
            },
            |o| o.disturbed().then_some(o.load.other_cpu),
        )
        .await;
        println!(
            "  done: kill -> removed at every consumer {}, causes {:?}, {} false removals",
            outcome
                .every
                .map_or("none seen".to_owned(), |s| s.to_string()),
            outcome.causes,
            outcome.false_removals
        );
        outcomes.push(outcome);
    }
    println!("\n{}", report::table(&outcomes));
    println!("{}", report::details(&outcomes));
    println!("verdict:\n{}", report::verdict(&outcomes, settings.grace));
    println!("run took {:.1} s", began.elapsed().as_secs_f64());
}
