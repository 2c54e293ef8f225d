//! The comparison table, the per-run details, and the verdict on the claim, all computed from
//! the [`Outcome`]s of a run.

use std::fmt::Write as _;
use std::time::Duration;

use crate::peers::phases::Phase;
use crate::peers::scenario::Outcome;
use crate::peers::settings::Kind;

/// Milliseconds, with fewer decimals as they grow.
pub(crate) fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    match v {
        v if v < 10.0 => format!("{v:.2}"),
        v if v < 100.0 => format!("{v:.1}"),
        v => format!("{v:.0}"),
    }
}

/// A rate or a share with two significant decimals when small.
pub(crate) fn num(v: f64) -> String {
    if v == 0.0 {
        "0".to_owned()
    } else if v < 1.0 {
        format!("{v:.3}")
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

/// `p50 / p99 / max` in ms, and how many changes were never seen.
fn latency(p: &Phase) -> String {
    let mut s = match &p.latency {
        Some(l) => format!("{} / {} / {}", ms(l.p50), ms(l.p99), ms(l.max)),
        None => "none seen".to_owned(),
    };
    if p.missed > 0 {
        let _ = write!(s, " ({} missed)", p.missed);
    }
    if p.failed > 0 {
        let _ = write!(s, " ({} failed)", p.failed);
    }
    s
}

/// The comparison table, Markdown.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut t = String::from(
        "| system | N | join p50 / p99 / max ms | leave p50 / p99 / max ms | crash p50 / p99 / max ms \
         | etcd req/s | of which keep-alives/s | etcd CPU | NATS msgs/s | nats-server CPU \
         | harness CPU | false removals |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let l = &o.load;
        let listed = if o.listed < o.size {
            format!(" ({} listed)", o.listed)
        } else {
            String::new()
        };
        let build = if o.overlapped_build {
            " (build ran)"
        } else {
            ""
        };
        let _ = writeln!(
            t,
            "| {}{build} | {}{listed} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            o.kind.label(),
            o.size,
            latency(&o.joins),
            latency(&o.leaves),
            latency(&o.crashes),
            num(l.etcd_requests),
            num(l.keep_alives),
            num(l.etcd_cpu),
            num(l.nats_msgs),
            num(l.nats_cpu),
            num(l.harness_cpu),
            o.false_removals,
        );
    }
    t
}

/// What else each run reported: start-up, removal causes, the systems' own counters.
pub fn details(outcomes: &[Outcome]) -> String {
    let mut t = String::new();
    for o in outcomes {
        let _ = write!(
            t,
            "{} at {} ({} process{}): other processes used {:.2} cores in the steady window; {} started ({} failed) and listed in {:.1} s; steady \
             window {:.1} s, {} leases revoked in it; leave causes {:?}; crash causes {:?}",
            o.kind.label(),
            o.size,
            o.processes,
            if o.processes == 1 { "" } else { "es" },
            o.load.other_cpu,
            o.size - o.start_failures,
            o.start_failures,
            o.start_up.as_secs_f64(),
            o.load.seconds,
            o.load.leases_revoked,
            o.leaves.causes,
            o.crashes.causes,
        );
        for (what, n) in &o.notes {
            let _ = write!(t, "; {what} {n}");
        }
        if o.lagged > 0 {
            let _ = write!(t, "; EVENTS LOST {}", o.lagged);
        }
        t.push('\n');
    }
    t
}

fn find(outcomes: &[Outcome], kind: Kind, size: usize) -> Option<&Outcome> {
    outcomes.iter().find(|o| o.kind == kind && o.size == size)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::INFINITY }
}

/// `(p50, p99)` of a phase, when any change was seen.
fn p50_p99(p: &Phase) -> Option<(Duration, Duration)> {
    p.latency.map(|l| (l.p50, l.p99))
}

/// The verdict on "at the same crash-detection time, Herald puts at least 5x less load on
/// etcd than etcd-only discovery, and discovers changes faster than polling", size by size.
pub fn verdict(outcomes: &[Outcome], sizes: &[usize]) -> String {
    let mut v = String::new();
    for &size in sizes {
        let etcd = find(outcomes, Kind::EtcdOnly, size);
        let polling = find(outcomes, Kind::Polling, size);
        for herald in [Kind::Herald, Kind::HeraldShared] {
            let Some(h) = find(outcomes, herald, size) else {
                continue;
            };
            let _ = writeln!(v, "N = {size}, {}:", herald.label());
            if let Some(e) = etcd {
                let req = ratio(e.load.etcd_requests, h.load.etcd_requests);
                let cpu = ratio(e.load.etcd_cpu, h.load.etcd_cpu);
                let crash = match (p50_p99(&h.crashes), p50_p99(&e.crashes)) {
                    (Some((hp50, hp99)), Some((ep50, ep99))) => format!(
                        "crash detection p50 {} vs {} ms, p99 {} vs {} ms",
                        ms(hp50),
                        ms(ep50),
                        ms(hp99),
                        ms(ep99)
                    ),
                    _ => "crash detection not comparable (none seen)".to_owned(),
                };
                let holds = req >= 5.0 && cpu >= 5.0;
                let _ = writeln!(
                    v,
                    "  etcd load: {req:.1}x fewer requests/s, {cpu:.1}x less etcd CPU than \
                     etcd-only ({crash}): {}",
                    if holds {
                        "HOLDS (>= 5x on both)"
                    } else {
                        "DOES NOT HOLD (< 5x on one)"
                    }
                );
            }
            if let Some(p) = polling {
                for (what, hp, pp) in [
                    ("join", &h.joins, &p.joins),
                    ("leave", &h.leaves, &p.leaves),
                    ("crash", &h.crashes, &p.crashes),
                ] {
                    let line = match (p50_p99(hp), p50_p99(pp)) {
                        (Some((h50, h99)), Some((p50, p99))) => {
                            let faster = h50 < p50 && h99 < p99;
                            format!(
                                "p50 {} vs {} ms, p99 {} vs {} ms: {}",
                                ms(h50),
                                ms(p50),
                                ms(h99),
                                ms(p99),
                                if faster { "faster" } else { "NOT faster" }
                            )
                        }
                        _ => "not comparable (none seen)".to_owned(),
                    };
                    let _ = writeln!(v, "  {what} vs polling: {line}");
                }
            }
        }
    }
    v
}
