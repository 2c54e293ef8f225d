//! The kill comparison's table, its details, and the verdict on the target, all computed
//! from the [`KillOutcome`]s of a run.

use std::fmt::Write as _;
use std::time::Duration;

use crate::peers::kill::cell::Detector;
use crate::peers::kill::scenario::KillOutcome;
use crate::peers::report::{ms, num};
use crate::stats::Summary;

/// The target's bound on advisories' p99, kill to removed at every consumer.
pub const TARGET_P99: Duration = Duration::from_millis(300);
/// How many times better than the TTL alone at Herald's defaults advisories must be.
pub const TARGET_RATIO: f64 = 10.0;

fn triple(s: &Option<Summary>) -> String {
    match s {
        Some(s) => format!("{} / {} / {}", ms(s.p50), ms(s.p99), ms(s.max)),
        None => "none seen".to_owned(),
    }
}

fn causes(o: &KillOutcome) -> String {
    let v: Vec<String> = o.causes.iter().map(|(c, n)| format!("{c} {n}")).collect();
    v.join(", ")
}

/// The comparison table, Markdown.
pub fn table(outcomes: &[KillOutcome]) -> String {
    let mut t = String::from(
        "| system | N | hosts (killed) | kill → removed at every consumer p50 / p99 / max ms \
         | p99 at each consumer ms | causes (all consumers) | false removals | NATS msgs/s \
         | nats-server CPU | hosts CPU | consumers CPU |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let build = if o.overlapped_build {
            " (build ran)"
        } else {
            ""
        };
        let mut every = triple(&o.every);
        if o.missed > 0 {
            let _ = write!(every, " ({} missed)", o.missed);
        }
        let each: Vec<String> = o
            .each
            .iter()
            .map(|s| s.map_or("-".to_owned(), |s| ms(s.p99)))
            .collect();
        let killed = o.every.map_or(0, |s| s.n) + o.missed;
        let l = &o.load;
        let _ = writeln!(
            t,
            "| {}{build} | {} | {} ({killed}) | {every} | {} | {} | {} | {} | {} | {} | {} |",
            o.label,
            o.size,
            o.hosts,
            each.join(", "),
            causes(o),
            o.false_removals,
            num(l.nats_msgs),
            num(l.nats_cpu),
            num(o.hosts_cpu),
            num(l.harness_cpu),
        );
    }
    t
}

/// What else each cell reported: start-up, each consumer's figures and counters.
pub fn details(outcomes: &[KillOutcome]) -> String {
    let mut t = String::new();
    for o in outcomes {
        let _ = write!(
            t,
            "{} [{}]: {} hosts started and every instance listed in {:.1} s (listed {:?}); \
             other processes used {:.2} cores in the steady window; etcd {} req/s, {} CPU",
            o.label,
            o.cell.spec(),
            o.hosts,
            o.start_up.as_secs_f64(),
            o.listed,
            o.load.other_cpu,
            num(o.load.etcd_requests),
            num(o.load.etcd_cpu),
        );
        if let Some(e) = &o.start_error {
            let _ = write!(t, "; HOSTS FAILED: {e}");
        }
        for (c, (s, counters)) in o.each.iter().zip(&o.counters).enumerate() {
            let _ = write!(t, "\n  consumer {c}: {}", triple(s));
            for (what, n) in counters {
                let _ = write!(t, "; {what} {n}");
            }
        }
        if o.lagged > 0 {
            let _ = write!(t, "\n  EVENTS LOST {}", o.lagged);
        }
        t.push('\n');
    }
    t
}

/// The verdict on the target: with advisories at `grace`, a killed process is removed at
/// every consumer with p99 under 300 ms, 10x better than the 3 s TTL, better than polling at
/// every setting run, with no false removal anywhere.
pub fn verdict(outcomes: &[KillOutcome], grace: Duration) -> String {
    let mut v = String::new();
    let p99 = |o: &KillOutcome| o.every.map(|s| s.p99);
    let clean = outcomes
        .iter()
        .all(|o| o.false_removals == 0 && o.missed == 0);
    let _ = writeln!(
        v,
        "false removals and missed crashes: {}",
        if clean {
            "none in any cell".to_owned()
        } else {
            let bad: Vec<String> = outcomes
                .iter()
                .filter(|o| o.false_removals > 0 || o.missed > 0)
                .map(|o| {
                    format!(
                        "{}: {} false, {} missed",
                        o.cell.spec(),
                        o.false_removals,
                        o.missed
                    )
                })
                .collect();
            format!("SOME: {}", bad.join("; "))
        }
    );
    for adv in outcomes
        .iter()
        .filter(|o| o.cell.detector == Detector::HeraldAdvisories)
    {
        let Some(a) = p99(adv) else {
            let _ = writeln!(v, "{}: no crash seen", adv.cell.spec());
            continue;
        };
        let all_disconnected = adv.causes.keys().all(|c| *c == "disconnected");
        let _ = writeln!(
            v,
            "{} (grace {} ms): p99 {} ms, {} 300 ms; causes {}{}",
            adv.cell.spec(),
            grace.as_millis(),
            ms(a),
            if a < TARGET_P99 { "under" } else { "NOT under" },
            causes(adv),
            if all_disconnected {
                ""
            } else {
                " (NOT all disconnected)"
            }
        );
        for other in outcomes
            .iter()
            .filter(|o| o.cell.detector != adv.cell.detector)
        {
            let Some(b) = p99(other) else { continue };
            let ratio = b.as_secs_f64() / a.as_secs_f64().max(1e-9);
            let holds = match other.cell.detector {
                Detector::Herald if other.cell.target == Duration::from_secs(3) => {
                    ratio >= TARGET_RATIO
                }
                _ => a < b,
            };
            let _ = writeln!(
                v,
                "  against {}: p99 {} vs {} ms, {ratio:.1}x: {}",
                other.label,
                ms(a),
                ms(b),
                if holds { "better" } else { "NOT better enough" }
            );
        }
    }
    v
}
