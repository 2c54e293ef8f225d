//! The soak's end ([`Soak::finish`]): nothing missing against the truth (every start added,
//! every end removed), and the findings turned into a [`Report`], delays as percentiles.

use std::time::Duration;

use super::report::Report;
use super::soak::Soak;
use super::truth::Violation;
use crate::stats::Summary;

impl Soak {
    pub(super) fn finish(mut self, stats: herald_subscriber::Stats, elapsed: Duration) -> Report {
        // Nothing missing against the truth: every start added, every end removed (after
        // the wind-down every instance has ended).
        let mut missing = Vec::new();
        for (id, inc) in &self.instances {
            if inc.joined.is_none() {
                continue;
            }
            if inc.added.is_none() {
                missing.push((Violation::MissingAdded, format!("{id}: never added")));
            }
            if inc.removed.is_none() || inc.listed {
                missing.push((Violation::MissingRemoved, format!("{id}: not removed")));
            }
        }
        for (kind, detail) in missing {
            self.violation(kind, detail);
        }
        let summary = |v: &mut Vec<Duration>| (!v.is_empty()).then(|| Summary::of(v));
        let violations = self
            .violations
            .iter()
            .map(|(kind, v)| {
                let details: Vec<&String> = v.iter().filter(|d| !d.is_empty()).collect();
                format!("{kind:?} x{}: {details:?}", v.len())
            })
            .collect();
        let joined = self.instances.values().filter(|i| i.joined.is_some());
        let unanswered = self.in_flight() as u64;
        Report {
            unanswered,
            started: self.retired + joined.count() as u64,
            tracked_at_end: self.instances.len(),
            tokens_after_death: self.retired_tokens_after_death
                + self
                    .instances
                    .values()
                    .map(|i| i.tokens_after_death)
                    .sum::<u64>(),
            join_delay: summary(&mut self.join_delays),
            crash_removal: summary(&mut self.crash_removals),
            crash_since_last_token: summary(&mut self.crash_since_token),
            leave_removal: summary(&mut self.leave_removals),
            causes: self
                .causes
                .iter()
                .map(|((label, _), (cause, n))| (*label, *cause, *n))
                .collect(),
            zombies: self
                .zombies
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect(),
            missing_live: self
                .missing_live
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect(),
            phantoms: self
                .phantoms
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect(),
            violations,
            settings: self.settings,
            elapsed,
            actions: self.actions,
            join_failures: self.join_failures,
            leave_errors: self.leave_errors,
            tokens_seen: self.tokens_seen,
            checks: self.checks,
            false_removals: self.false_removals,
            starved_expiries: self.starved_expiries,
            early_expiries: self.early_expiries,
            leaves_expired: self.leaves_expired,
            max_stale_at_check: self.max_stale_at_check,
            rss: self.rss,
            heap: self.heap,
            converged: self.converged,
            emptied: self.emptied,
            stats,
        }
    }
}
