//! Peer baselines: Herald, etcd-only discovery and NATS polling, side by side in one run, at
//! the same crash-detection target (see `herald_bench::peers`). Prints one table comparing
//! join, leave and crash-detection latency with the load each puts on etcd and NATS, then
//! the verdict on the claim it tests.
//!
//! `cargo run --release -p herald-bench --bin peers [-- --sizes 1000,5000] [--samples 100]
//! [--target 2s] [--steady 10s] [--only herald,herald-shared,etcd,polling] [--per-process N] [--herald-lease 30s] [--seed N]`
//!
//! Without `--per-process`, every instance lives in this one process, on one NATS and one
//! etcd connection; with it, instances are spread over simulated processes of N instances,
//! each with its own connections (and its own session for Herald's shared lease).

use std::time::{Duration, Instant};

use herald_bench::peers::servers::Servers;
use herald_bench::peers::{Kind, Settings, quiet, report, scenario};

/// A cell that overlapped a build is run again, up to this many times in all (each attempt
/// first waits for the machine to be quiet: `quiet::gated`).
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

async fn run(settings: Settings) {
    let began = Instant::now();
    let timing = settings.timing();
    let (min_ttl, granted) = {
        let probe = Servers::start().await;
        (
            probe.granted_lease_ttl(Duration::from_secs(1)).await,
            probe.granted_lease_ttl(timing.etcd_lease).await,
        )
    };
    println!(
        "peer baselines: sizes {:?}, {} per process, {} joins per run (then {} of them leave \
         and {} crash), steady window {:?}, seed {}",
        settings.sizes,
        settings
            .per_process
            .map_or("all instances".to_owned(), |p| format!("{p} instances")),
        2 * settings.samples,
        settings.samples,
        settings.samples,
        settings.steady,
        settings.seed
    );
    println!(
        "crash-detection target {:?}: herald interval {:?}, token TTL {:?} (lease {:?}, the \
         authority only); etcd-only lease asked {:?}, granted {:?} (a 1 s ask gets {:?} from \
         this etcd), keep-alive every third; polling every {:?}, reply window {:?}\n",
        timing.target,
        timing.herald_interval,
        timing.herald_ttl,
        timing.herald_lease,
        timing.etcd_lease,
        granted,
        min_ttl,
        timing.poll_period,
        timing.poll_window
    );
    let mut outcomes = Vec::new();
    for &size in &settings.sizes {
        for &kind in &settings.kinds {
            let outcome = quiet::gated(
                ATTEMPTS,
                || {
                    println!(
                        "[{:>5.1} s] {} at {size} ...",
                        began.elapsed().as_secs_f64(),
                        kind.label()
                    );
                    scenario::run(kind, size, &settings)
                },
                |run| run.disturbed().then_some(run.load.other_cpu),
            )
            .await;
            println!(
                "  done: etcd {:.0} req/s ({:.0} keep-alives/s), etcd CPU {:.2}, \
                 {} false removals",
                outcome.load.etcd_requests,
                outcome.load.keep_alives,
                outcome.load.etcd_cpu,
                outcome.false_removals
            );
            outcomes.push(outcome);
        }
    }
    println!("\n{}", report::table(&outcomes));
    println!("{}", report::details(&outcomes));
    println!("verdict:\n{}", report::verdict(&outcomes, &settings.sizes));
    println!("run took {:.1} s", began.elapsed().as_secs_f64());
}

fn parse(args: Vec<String>) -> Settings {
    let mut s = Settings::bench();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
                .as_str()
        };
        match arg.as_str() {
            "--sizes" => {
                s.sizes = value()
                    .split(',')
                    .map(|n| n.parse().unwrap_or_else(|_| usage("bad size")))
                    .collect();
            }
            "--samples" => s.samples = value().parse().unwrap_or_else(|_| usage("bad count")),
            "--target" => s.target = duration(value()),
            "--steady" => s.steady = duration(value()),
            "--herald-lease" => s.herald_lease = duration(value()),
            "--per-process" => {
                s.per_process = Some(value().parse().unwrap_or_else(|_| usage("bad count")));
            }
            "--seed" => s.seed = value().parse().unwrap_or_else(|_| usage("bad seed")),
            "--only" => {
                s.kinds = value()
                    .split(',')
                    .map(|k| Kind::from_name(k).unwrap_or_else(|| usage(&format!("no system {k}"))))
                    .collect();
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    s
}

/// `2s`, `1500ms`, or a bare number of seconds.
fn duration(v: &str) -> Duration {
    let parsed = match v.strip_suffix("ms") {
        Some(n) => n.parse().ok().map(Duration::from_millis),
        None => v
            .trim_end_matches('s')
            .parse()
            .ok()
            .map(Duration::from_secs),
    };
    parsed.unwrap_or_else(|| usage(&format!("bad duration {v}")))
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: peers [--sizes 1000,5000] [--samples 100] [--target 2s] [--steady 10s] \
         [--only herald,herald-shared,etcd,polling] [--per-process N] [--herald-lease 30s] [--seed N]"
    );
    std::process::exit(2);
}
