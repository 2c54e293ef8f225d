//! The churn soak for CI: 30 seconds of announcers joining, crashing and leaving against a
//! subscriber with etcd (see `herald_bench::churn`), on a fixed seed. No false removal, no
//! zombie, a clean event stream, convergence, and a flat RSS.

use std::time::Duration;

use herald_bench::churn::{self, Settings};

#[global_allocator]
static ALLOC: herald_bench::alloc::Counting = herald_bench::alloc::Counting;

/// RSS growth tolerated between the first sample (after the warm-up) and the last. What the
/// subscriber may rightly grow by in 30 s is small: at most a few dozen instances live, and
/// one tombstone (about 0.5 KiB) per etcd deletion, kept 10 minutes. Allocator and runtime
/// noise of a debug build stays within a few MiB (0.2 MiB measured).
const RSS_GROWTH_BOUND: u64 = 8 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_seconds_of_churn_lose_nothing_and_leave_no_zombie() {
    let seed = std::env::var("HERALD_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let settings = Settings::new(
        herald_testkit::bin_exe("herald-bench", env!("CARGO_BIN_EXE_herald-bench")),
        Duration::from_secs(30),
        seed,
    );
    let report = churn::run(settings).await;
    println!("{report}");
    assert!(
        report.false_removals.is_empty(),
        "no live instance may be removed before its TTL since its last token: {:?}",
        report.false_removals
    );
    assert!(
        report.zombies.is_empty(),
        "no dead instance may stay listed past TTL + margin: {:?}",
        report.zombies
    );
    assert!(
        report.violations.is_empty(),
        "the event stream must be ordered, without duplicates, with nothing missing: {:?}",
        report.violations
    );
    assert!(
        report.early_expiries.is_empty(),
        "no crashed instance may expire before its TTL: {:?}",
        report.early_expiries
    );
    assert!(
        report.actions[0] >= 20 && report.actions[1] >= 5 && report.actions[2] >= 5,
        "the run must really churn: {:?} (joins, crashes, leaves, loads)",
        report.actions
    );
    let problems = report.problems(RSS_GROWTH_BOUND);
    assert!(problems.is_empty(), "the soak failed: {problems:#?}");
}

/// With disconnect advisories, every crash (its connection closed as the handle drops) is
/// removed as `disconnected`, long before its TTL, and no live instance is removed: the
/// connection an advisory names carried only the crashed announcer's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_seconds_of_churn_with_advisories_remove_every_crash_as_disconnected() {
    let program = herald_testkit::bin_exe("herald-bench", env!("CARGO_BIN_EXE_herald-bench"));
    let mut settings = Settings::new(program, Duration::from_secs(30), 31);
    settings.disconnect_grace = Some(herald_subscriber::DEFAULT_DISCONNECT_GRACE);
    let report = churn::run(settings).await;
    println!("{report}");
    assert!(
        report.false_removals.is_empty(),
        "no live instance may be removed by an advisory or before its TTL: {:?}",
        report.false_removals
    );
    assert!(
        report.violations.is_empty(),
        "every crash removed as disconnected, and a clean event stream: {:?}",
        report.violations
    );
    let crashes = report.actions[1];
    let disconnected = report
        .causes
        .iter()
        .find(|(ending, cause, _)| {
            *ending == "crash" && *cause == herald_subscriber::RemovalCause::Disconnected
        })
        .map_or(0, |(_, _, n)| *n);
    assert!(
        crashes >= 5,
        "the run must really crash announcers: {crashes}"
    );
    assert_eq!(disconnected, crashes, "every crash removed as disconnected");
    let removal = report.crash_removal.expect("crash removals measured");
    assert!(
        removal.max < report.settings.ttl,
        "a crash is removed well inside its TTL with advisories: {removal}"
    );
    let problems = report.problems(RSS_GROWTH_BOUND);
    assert!(problems.is_empty(), "the soak failed: {problems:#?}");
}
