//! The harness's state ([`Soak`]): the truth by instance, what the events said, and the
//! findings so far; and its own bookkeeping (violations recorded, instances retired once
//! their story is over). The checks live in `orders.rs`, `events.rs`, `listing.rs` and
//! `finish.rs`, each an `impl Soak` block of its own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use herald_subscriber::RemovalCause;

use super::settings::Settings;
use super::truth::{Incarnation, Violation};

/// The harness's state: the truth, what the events said, and the findings so far.
pub(super) struct Soak {
    pub(super) settings: Settings,
    pub(super) started: Instant,
    pub(super) instances: BTreeMap<String, Incarnation>,
    pub(super) next_id: u64,
    pub(super) actions: [u64; 4],
    pub(super) join_failures: u64,
    pub(super) leave_errors: u64,
    pub(super) tokens_seen: u64,
    pub(super) checks: u64,
    pub(super) false_removals: Vec<String>,
    pub(super) starved_expiries: u64,
    pub(super) early_expiries: Vec<String>,
    pub(super) zombies: BTreeMap<String, String>,
    pub(super) missing_live: BTreeMap<String, String>,
    pub(super) phantoms: BTreeMap<String, String>,
    pub(super) violations: BTreeMap<Violation, Vec<String>>,
    pub(super) leaves_expired: u64,
    pub(super) join_delays: Vec<Duration>,
    pub(super) crash_removals: Vec<Duration>,
    pub(super) crash_since_token: Vec<Duration>,
    pub(super) leave_removals: Vec<Duration>,
    pub(super) causes: BTreeMap<(&'static str, &'static str), (RemovalCause, u64)>,
    pub(super) max_stale_at_check: Duration,
    pub(super) rss: Vec<(Duration, u64)>,
    pub(super) heap: Vec<(Duration, u64)>,
    pub(super) converged: bool,
    pub(super) emptied: bool,
    /// Joined instances forgotten by `retire`.
    pub(super) retired: u64,
    pub(super) retired_tokens_after_death: u64,
}

impl Soak {
    pub(super) fn new(settings: Settings, started: Instant) -> Soak {
        Soak {
            settings,
            started,
            instances: BTreeMap::new(),
            next_id: 0,
            actions: [0; 4],
            join_failures: 0,
            leave_errors: 0,
            tokens_seen: 0,
            checks: 0,
            false_removals: Vec::new(),
            starved_expiries: 0,
            early_expiries: Vec::new(),
            zombies: BTreeMap::new(),
            missing_live: BTreeMap::new(),
            phantoms: BTreeMap::new(),
            violations: BTreeMap::new(),
            leaves_expired: 0,
            join_delays: Vec::new(),
            crash_removals: Vec::new(),
            crash_since_token: Vec::new(),
            leave_removals: Vec::new(),
            causes: BTreeMap::new(),
            max_stale_at_check: Duration::ZERO,
            rss: Vec::new(),
            heap: Vec::new(),
            converged: false,
            emptied: false,
            retired: 0,
            retired_tokens_after_death: 0,
        }
    }

    pub(super) fn violation(&mut self, kind: Violation, detail: String) {
        let v = self.violations.entry(kind).or_default();
        if v.len() < 5 {
            v.push(detail);
        } else {
            v.push(String::new());
        }
    }

    /// Orders sent and not answered yet.
    pub(super) fn in_flight(&self) -> usize {
        self.instances
            .values()
            .filter(|i| {
                (i.joined.is_none() && !i.failed)
                    || i.end.as_ref().is_some_and(|e| e.done.is_none())
            })
            .count()
    }

    pub(super) fn alive_ids(&self) -> Vec<String> {
        self.instances
            .iter()
            .filter(|(_, i)| i.alive())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Forgets instances whose story is over (ended, removed, and dead well past their
    /// TTL), so that this harness's own memory stays flat and the RSS is the subscriber's.
    /// An event or a listing that names one of them later is still caught: ids are numbered
    /// and never reused.
    pub(super) fn retire(&mut self, now: Instant) {
        let keep_for = self.settings.ttl + self.settings.sweep_margin + Duration::from_secs(2);
        let over: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, i)| {
                i.joined.is_some()
                    && i.removed.is_some()
                    && !i.listed
                    && i.dead_since()
                        .is_some_and(|d| now.saturating_duration_since(d) > keep_for)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in over {
            if let Some(i) = self.instances.remove(&id) {
                self.retired += 1;
                self.retired_tokens_after_death += i.tokens_after_death;
            }
        }
    }

    /// Whether `id` names an instance started earlier and since retired.
    pub(super) fn is_retired(&self, id: &str) -> bool {
        !self.instances.contains_key(id)
            && id
                .strip_prefix('i')
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n < self.next_id)
    }
}
