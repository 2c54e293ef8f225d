//! Peer baselines: Herald, etcd-only discovery and NATS polling, side by side in one run, at
//! the same crash-detection target (see `herald_bench::peers`). Prints one table comparing
//! join, leave and crash-detection latency with the load each puts on etcd and NATS, then
//! the verdict on the claim it tests.
//!
//! `cargo run --release -p herald-bench -- peers [--sizes 1000,5000] [--samples 100]
//! [--target 2s] [--steady 10s] [--only herald,herald-shared,etcd,polling] [--per-process N]
//! [--herald-lease 30s] [--seed N]`
//!
//! Without `--per-process`, every instance lives in this one process, on one NATS and one
//! etcd connection; with it, instances are spread over simulated processes of N instances,
//! each with its own connections (and its own session for Herald's shared lease).

use std::time::{Duration, Instant};

use herald_bench::peers::servers::Servers;
use herald_bench::peers::{Settings, quiet, report, scenario};

/// A cell that overlapped a build is run again, up to this many times in all (each attempt
/// first waits for the machine to be quiet: `quiet::gated`).
const ATTEMPTS: usize = 3;

pub(crate) fn run(settings: Settings) {
    crate::runtime().block_on(compare(settings));
}

async fn compare(settings: Settings) {
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
