//! The kill comparison at a tiny size (20 instances kept up in hosts of 10, 5 hosts killed,
//! 2 consumers), one cell per system: every consumer must see every kill as its own
//! mechanism's removal (disconnected, expired, missed poll) within generous bounds of that
//! mechanism, and must not remove an instance whose host is still up.

use std::time::Duration;

use herald_bench::peers::kill::{self, Cell, KillOutcome, KillSettings, report};

const SIZE: usize = 20;
const SAMPLES: usize = 5;
const CONSUMERS: usize = 2;
/// Room for a debug build and a busy machine on top of each mechanism's own bound.
const SLACK: Duration = Duration::from_millis(1_500);

fn settings() -> KillSettings {
    KillSettings {
        size: SIZE,
        cells: ["herald-advisories@3s", "herald@1s", "polling@1s"]
            .into_iter()
            .map(|c| Cell::parse(c).unwrap())
            .collect(),
        samples: SAMPLES,
        per_process: 10,
        consumers: CONSUMERS,
        settle: Duration::from_millis(300),
        steady: Duration::from_millis(1_000),
        spread: Duration::from_millis(500),
        listing_timeout: Duration::from_secs(60),
        ..KillSettings::bench(env!("CARGO_BIN_EXE_herald-bench"))
    }
}

fn check(o: &KillOutcome, s: &KillSettings) {
    let name = o.cell.spec();
    assert_eq!(o.start_error, None, "{name}: every host starts");
    assert_eq!(
        o.listed,
        vec![SIZE + SAMPLES; CONSUMERS],
        "{name}: every consumer lists every instance"
    );
    assert_eq!(o.missed, 0, "{name}: every consumer sees every kill");
    assert_eq!(
        o.causes.get(o.cell.detector.crash_cause()),
        Some(&(SAMPLES * CONSUMERS)),
        "{name}: every removal of a killed instance is its mechanism's ({:?})",
        o.causes
    );
    let every = o.every.expect("kills were seen");
    assert_eq!(every.n, SAMPLES, "{name}: one figure per kill");
    let bound = o.cell.bound(s.grace);
    assert!(
        every.max <= bound + SLACK,
        "{name}: every kill seen within {bound:?} + slack, the slowest took {:?}",
        every.max
    );
    assert_eq!(o.false_removals, 0, "{name}: no instance removed while up");
    assert_eq!(o.lagged, 0, "{name}: the consumers' streams kept up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_system_sees_every_kill_by_its_own_mechanism() {
    let s = settings();
    let mut outcomes = Vec::new();
    for cell in &s.cells {
        outcomes.push(kill::run(cell, &s).await);
    }
    println!("{}", report::table(&outcomes));
    println!("{}", report::details(&outcomes));
    for o in &outcomes {
        check(o, &s);
    }
}
