//! Heartbeats: a compact token is the full token the live entry of its instance already
//! holds, with the heartbeat's `seq` and load. The merge rules judge it as such; only a
//! refresh is carried out, since a heartbeat says nothing a record could be built from. One
//! for an instance not listed under its epoch (a subscriber that missed the full token, or a
//! new incarnation it has not heard of) is dropped, and its service is probed: every
//! instance of it answers in full.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use herald_shared::token::{MetaRef, TOKEN_VERSION};
use herald_shared::{Heartbeat, TokenRef};

use super::Store;
use crate::merge::{self, Effect, Input};

/// Most services waiting for a probe: past them, a heartbeat of an unknown instance is only
/// counted (the next full token, at most `full_token_every` tokens later, lists it anyway).
const PROBE_REQUESTS_MAX: usize = 1024;

impl Store {
    /// Applies a heartbeat received on the announce subject of `service`.
    pub(super) fn apply_heartbeat(&mut self, service: &str, beat: &Heartbeat<'_>) {
        let facts = self.facts(service, beat.instance);
        let input = Input::Heartbeat {
            epoch: beat.epoch,
            seq: beat.seq,
        };
        let outcome = merge::merge(self.mode, &facts, input);
        if let Some(reason) = outcome.dropped {
            self.count_drop(reason, service, beat.instance);
            return;
        }
        let listed = self
            .services
            .get(service)
            .and_then(|s| s.live(beat.instance))
            .cloned();
        if let (Effect::Refresh, Some(entry)) = (outcome.effect, listed) {
            let mut meta = MetaRef::default();
            for (k, v) in entry.addr_meta.meta() {
                meta.push(k, v);
            }
            let t = TokenRef {
                v: TOKEN_VERSION,
                service,
                instance: beat.instance,
                addr: entry.addr_meta.addr(),
                load: beat.load,
                weight: entry.weight,
                zone: entry.zone.as_deref(),
                state: entry.announced_state(),
                meta,
                epoch: beat.epoch,
                seq: beat.seq,
                ttl_ms: entry.ttl_ms.load(Relaxed),
                sent_at_ms: 0,
                conn: None,
            };
            // Not `carry_token`: the connection index keeps what the last full token said,
            // and there is no send time to take a latency from.
            self.refresh(&entry, &t, &outcome, self.clock.now_ms());
            self.note_run(service, beat.instance, &outcome);
            self.counters.accepted.fetch_add(1, Relaxed);
            self.counters.heartbeats.fetch_add(1, Relaxed);
            if outcome.probe {
                self.request_probe(service, beat, "connection of a listed instance unknown");
            }
        } else if outcome.probe {
            self.heartbeat_unknown(service, beat);
        }
    }

    fn heartbeat_unknown(&mut self, service: &str, beat: &Heartbeat<'_>) {
        self.counters.heartbeats_unknown.fetch_add(1, Relaxed);
        self.request_probe(
            service,
            beat,
            "heartbeat of an instance not listed under its epoch",
        );
    }

    /// Asks for a probe of `service`, whose instances then answer in full.
    fn request_probe(&mut self, service: &str, beat: &Heartbeat<'_>, why: &'static str) {
        // During the first listing the instance may be on a page still to come, and once
        // the listing is applied every announcer is probed anyway.
        if self.first_listing || self.probe_requests.iter().any(|s| **s == *service) {
            return;
        }
        if self.probe_requests.len() < PROBE_REQUESTS_MAX {
            tracing::debug!(
                service,
                instance = beat.instance,
                epoch = beat.epoch,
                why,
                "probing the service"
            );
            self.probe_requests.push(Arc::from(service));
        }
    }

    /// The services to probe because of heartbeats of unknown instances, since last asked.
    pub(crate) fn take_probe_requests(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.probe_requests)
    }
}
