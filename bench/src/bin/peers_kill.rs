//! Crashes as real processes die: instances in host processes, a crash is a SIGKILL of one,
//! timed from the kill to the `Removed` at every consumer; Herald with disconnect advisories,
//! Herald with its TTL alone, and NATS polling, side by side (see
//! `herald_bench::peers::kill`). Prints one table, each consumer's figures, and the verdict on
//! the target (p99 under 300 ms with the default grace, 10x better than the 3 s TTL, better
//! than polling, no false removal).
//!
//! `cargo build --release -p herald-bench --bins && target/release/peers_kill [--size 1000]
//! [--samples 100] [--per-process 10] [--consumers 2] [--grace 200ms]
//! [--cells herald-advisories@3s,herald@3s,herald@2s,polling@2s,polling@1s,polling@500ms]
//! [--steady 10s] [--seed N]`

use std::time::Instant;

use herald_bench::peers::kill::cell::{DEFAULT_CELLS, parse_duration};
use herald_bench::peers::kill::{self, Cell, KillSettings, report};
use herald_bench::peers::quiet;

/// A cell that overlapped a build is run again, up to this many times in all.
const ATTEMPTS: usize = 3;

fn main() {
    let settings = parse(std::env::args().skip(1).collect());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run(settings));
}

async fn run(settings: KillSettings) {
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

fn parse(args: Vec<String>) -> KillSettings {
    let host = std::env::current_exe()
        .expect("own path")
        .with_file_name("peers_host");
    let mut s = KillSettings::bench(host);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
                .as_str()
        };
        let count = |v: &str| v.parse().unwrap_or_else(|_| usage("bad count"));
        let duration =
            |v: &str| parse_duration(v).unwrap_or_else(|| usage(&format!("bad duration {v}")));
        match arg.as_str() {
            "--size" => s.size = count(value()),
            "--samples" => s.samples = count(value()),
            "--per-process" => s.per_process = count(value()).max(1),
            "--consumers" => s.consumers = count(value()).max(1),
            "--grace" => s.grace = duration(value()),
            "--steady" => s.steady = duration(value()),
            "--herald-lease" => s.herald_lease = duration(value()),
            "--seed" => s.seed = value().parse().unwrap_or_else(|_| usage("bad seed")),
            "--cells" => {
                s.cells = value()
                    .split(',')
                    .map(|c| Cell::parse(c).unwrap_or_else(|| usage(&format!("bad cell {c}"))))
                    .collect();
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    s
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: peers_kill [--size 1000] [--samples 100] [--per-process 10] \
         [--consumers 2] [--grace 200ms] [--cells {DEFAULT_CELLS}] [--steady 10s] \
         [--herald-lease 30s] [--seed N]\n(a cell is herald-advisories|herald|polling@TARGET)"
    );
    std::process::exit(2);
}
