//! The peer-baseline harness at a tiny size (20 instances, 5 samples of each change, a 1 s
//! crash-detection target): every system's consumer must see every join, every graceful
//! leave and every crash, within generous bounds of its own mechanism, with no false
//! removal, and the load readings must show each system's own traffic.

use std::time::Duration;

use herald_bench::peers::{Kind, Outcome, Settings, Timing, report, scenario};

const SIZE: usize = 20;
const SAMPLES: usize = 5;
/// Room for a debug build and a busy machine on top of each mechanism's own bound.
const SLACK: Duration = Duration::from_millis(1_500);

fn settings() -> Settings {
    Settings {
        sizes: vec![SIZE],
        kinds: Kind::ALL.to_vec(),
        samples: SAMPLES,
        target: Duration::from_secs(1),
        steady: Duration::from_millis(1_000),
        settle: Duration::from_millis(300),
        spread: Duration::from_millis(500),
        start_concurrency: 8,
        listing_timeout: Duration::from_secs(10),
        per_process: Some(10),
        herald_lease: Duration::from_secs(30),
        seed: 7,
    }
}

/// The latest a change may be seen: joins and leaves are pushed (Herald, etcd-only) or wait
/// for the next poll (polling); a crash waits for the TTL, the lease expiry (plus etcd's
/// 500 ms expiry check) or the next poll.
fn bounds(kind: Kind, t: &Timing) -> (Duration, Duration, Duration) {
    let poll = t.poll_period + t.poll_window;
    let pushed = Duration::from_millis(500);
    match kind {
        Kind::Herald | Kind::HeraldShared => (pushed, pushed, t.herald_ttl),
        Kind::EtcdOnly => (pushed, pushed, t.etcd_lease + Duration::from_millis(500)),
        Kind::Polling => (poll, poll, poll),
    }
}

fn check(o: &Outcome, t: &Timing) {
    let name = o.kind.name();
    assert_eq!(o.start_failures, 0, "{name}: every instance starts");
    assert_eq!(o.listed, SIZE, "{name}: the consumer lists every instance");
    let (join, leave, crash) = bounds(o.kind, t);
    for (what, phase, expected, bound) in [
        ("join", &o.joins, 2 * SAMPLES, join),
        ("leave", &o.leaves, SAMPLES, leave),
        ("crash", &o.crashes, SAMPLES, crash),
    ] {
        assert_eq!(phase.failed, 0, "{name}: no {what} fails");
        assert_eq!(phase.missed, 0, "{name}: the consumer sees every {what}");
        let l = phase.latency.expect("changes were seen");
        assert_eq!(l.n, expected, "{name}: one {what} latency per change");
        assert!(
            l.max <= bound + SLACK,
            "{name}: every {what} seen within {bound:?} + slack, the slowest took {:?}",
            l.max
        );
    }
    assert_eq!(o.false_removals, 0, "{name}: no instance removed while up");
    assert_eq!(o.lagged, 0, "{name}: the consumer's stream kept up");
    let crash = o.crashes.latency.unwrap();
    match o.kind {
        Kind::Herald | Kind::HeraldShared => {
            assert!(
                crash.p50 >= t.herald_ttl - t.herald_interval * 2,
                "{name}: a crash is found by the token TTL, not at once ({:?})",
                crash.p50
            );
            assert_eq!(
                o.leaves.causes.get("goodbye"),
                Some(&SAMPLES),
                "{name}: leaves say goodbye"
            );
            assert!(o.load.nats_msgs > 0.0, "{name}: tokens flow on NATS");
        }
        Kind::EtcdOnly => {
            assert!(
                crash.p50 >= t.etcd_lease / 3,
                "etcd: a crash is found at lease expiry, not at once ({:?})",
                crash.p50
            );
            assert!(o.load.keep_alives > 0.0, "etcd: keep-alives reach etcd");
        }
        Kind::Polling => {
            assert!(
                o.load.nats_msgs > 0.0,
                "polling: PINGs and replies flow on NATS"
            );
            assert_eq!(o.load.keep_alives, 0.0, "polling: etcd is not used");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_system_sees_joins_leaves_and_crashes() {
    let settings = settings();
    let timing = settings.timing();
    let mut outcomes = Vec::new();
    for kind in Kind::ALL {
        outcomes.push(scenario::run(kind, SIZE, &settings).await);
    }
    println!("{}", report::table(&outcomes));
    println!("{}", report::details(&outcomes));
    for o in &outcomes {
        check(o, &timing);
    }
}
