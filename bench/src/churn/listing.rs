//! The listing checks: the subscriber's listing against the truth every `check_every`
//! (zombies, live instances missing, phantoms), with the RSS and heap samples
//! ([`Soak::check`]); and the exact match after settling ([`Soak::listing_matches`]).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use herald_subscriber::Subscriber;

use super::settings::SERVICE;
use super::soak::Soak;
use crate::process::rss_bytes;

impl Soak {
    /// Compares the listing with the truth, and samples RSS.
    pub(super) fn check(&mut self, sub: &Subscriber, now: Instant) {
        self.checks += 1;
        let ttl = self.settings.ttl;
        let margin = self.settings.sweep_margin;
        let listed: HashSet<String> = sub.instances(SERVICE).ids().into_iter().collect();
        for id in &listed {
            let Some(inc) = self.instances.get(id) else {
                if self.is_retired(id) {
                    self.zombies
                        .entry(id.clone())
                        .or_insert_with(|| "listed long after its end".into());
                } else {
                    self.phantoms
                        .entry(id.clone())
                        .or_insert_with(|| "listed, never started".into());
                }
                continue;
            };
            if let Some(d) = inc.dead_since() {
                let age = now.saturating_duration_since(d);
                self.max_stale_at_check = self.max_stale_at_check.max(age);
                if age > ttl + margin {
                    self.zombies
                        .entry(id.clone())
                        .or_insert_with(|| format!("listed {age:?} after its end"));
                }
            }
        }
        for (id, inc) in &self.instances {
            let Some(joined) = inc.joined.filter(|_| inc.alive()) else {
                continue;
            };
            if listed.contains(id) {
                continue;
            }
            let age = now.saturating_duration_since(joined);
            if age <= self.settings.join_margin {
                continue;
            }
            // A live instance may be absent only after its own silence outlasted its TTL.
            let silent = inc.last_token.is_none_or(|t| {
                now.saturating_duration_since(t) + self.settings.expiry_slack >= ttl
            });
            if !silent {
                self.max_stale_at_check = self.max_stale_at_check.max(age);
                self.missing_live
                    .entry(id.clone())
                    .or_insert_with(|| format!("live, not listed {age:?} after start()"));
            }
        }
        // A death whose Removed is overdue is a zombie in the stream, listed or not.
        let overdue: Vec<(String, Duration)> = self
            .instances
            .iter()
            .filter(|(_, i)| i.listed)
            .filter_map(|(id, i)| {
                let age = now.saturating_duration_since(i.dead_since()?);
                (age > ttl + margin).then(|| (id.clone(), age))
            })
            .collect();
        for (id, age) in overdue {
            self.zombies
                .entry(id)
                .or_insert_with(|| format!("no Removed {age:?} after its end"));
        }
        self.retire(now);
        let since_start = now.saturating_duration_since(self.started);
        if since_start >= self.settings.rss_warmup() {
            if let Some(rss) = rss_bytes(None) {
                self.rss.push((since_start, rss));
            }
            let heap = crate::alloc::live_bytes();
            if heap > 0 {
                self.heap.push((since_start, heap as u64));
            }
        }
    }

    /// Whether the listing is exactly the live set, and the stream agrees.
    pub(super) fn listing_matches(&self, sub: &Subscriber) -> bool {
        let mut listed = sub.instances(SERVICE).ids();
        listed.sort();
        let alive = self.alive_ids();
        let mut ok = listed == alive;
        if !ok {
            eprintln!("churn: listed {listed:?}\n       alive  {alive:?}");
        }
        for inc in self.instances.values() {
            ok &= inc.alive() == inc.listed;
        }
        ok
    }
}
