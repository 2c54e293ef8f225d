//! A rolling restart fails no call, with the harness of `herald-bench rolling`
//! (`herald_bench::rolling`): three gRPC backends (grpcio servers whose calls take 20 ms and
//! which exit at once on SIGTERM, cutting their calls in flight: a service that knows nothing
//! of draining) each get SIGTERM, are started again with the same id, and serve again before
//! the next one goes, while two clients call at a steady 200 calls a second each: tonic
//! through `Subscriber::discover` and its balancer, and grpcio through `xds:///` against
//! `herald serve --xds`. The backends are announced either by `herald announce` beside the
//! server (stopped first: it drains and leaves, then the server goes), or by
//! `herald announce -- CMD` (one SIGTERM does it all).
//!
//! With `--drain-for 0` the same restart is run and its failed calls printed: what the drain
//! buys.

mod common;

use std::time::Duration;

use herald_bench::rolling::{Announced, Outcome, Settings, run};

async fn rolling_restart(announced: Announced, drain: Duration) -> Outcome {
    let settings = Settings {
        herald: herald_testkit::bin_exe("herald", env!("CARGO_BIN_EXE_herald")),
        python: common::python(),
        scripts: common::script(""),
        backends: 3,
        restarts: 3,
        drain,
        announced,
        rate: 200,
        call_ms: 20,
    };
    let o = run(&settings).await;
    eprintln!("rolling restart, {announced:?} backends, --drain-for {drain:?}: {o:?}");
    for id in ["b1", "b2", "b3"] {
        for (client, calls) in [("tonic", &o.tonic), ("grpcio", &o.grpcio)] {
            assert!(
                calls.served.get(id).copied().unwrap_or(0) > 0,
                "{client} reached {id}: {o:?}"
            );
        }
    }
    assert_eq!(o.restart_took.len(), 3, "every backend restarted");
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_backends_announced_beside_them_fails_no_call() {
    let o = rolling_restart(Announced::Beside, Duration::from_secs(1)).await;
    assert_eq!((o.tonic.failed, o.grpcio.failed), (0, 0), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_backends_run_by_announce_fails_no_call() {
    let o = rolling_restart(Announced::Supervised, Duration::from_secs(1)).await;
    assert_eq!((o.tonic.failed, o.grpcio.failed), (0, 0), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_drain_the_same_restart_is_run_and_its_failures_told() {
    let o = rolling_restart(Announced::Supervised, Duration::ZERO).await;
    eprintln!(
        "without a drain: {} tonic and {} grpcio calls (of 200 a second each) failed through the restart of 3 backends",
        o.tonic.failed, o.grpcio.failed
    );
}
