//! The store: every key the subscriber knows, owned by the ingest task alone.
//!
//! For each instance it keeps the live entry and the etcd registration (`service`), and
//! beside them the tombstones of recent removals (moka: keyed, read on every token of an
//! unknown instance, each with its own time to live) and the tokens held while their
//! registration is awaited (`held`), and, with disconnect advisories, which connection carried
//! each instance's latest token (`conns`). Every input is judged by [`crate::merge::merge`]; the
//! store gathers the facts it needs and carries the outcome out (`carry`), nothing more.
//!
//! One task applies every change, so the per-service index and the expiry schedule can never
//! disagree and the ingest path takes no lock at all. Readers never touch this: they read the
//! snapshots [`crate::view`] publishes. Prompt expiry comes from a min-heap of deadlines
//! swept every few milliseconds (`expiry`); a token that only refreshes an instance updates
//! atomics in place and pushes nothing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use herald_shared::{Received, State, TokenRef, codec};
use moka::sync::Cache;
use tokio::sync::broadcast;

use crate::event::Event;
use crate::instance::{Entry, Fingerprint};
use crate::merge::{self, Facts, Input, Known, Live, Mode, Registered, TokenFacts};
use crate::stats::Counters;
use crate::view::{Clock, Snapshot, Views};

mod carry;
#[cfg(test)]
mod conn_tests;
mod conns;
mod expiry;
#[cfg(test)]
mod forgery_tests;
mod heartbeat;
mod held;
mod key_map;
#[cfg(test)]
mod model_tests;
mod registry;
mod service;
#[cfg(test)]
mod tests;

use conns::Conns;
use held::HeldTokens;
use key_map::KeyMap;
use service::ServiceState;

/// Cache key: (service, instance).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key(Arc<str>, Arc<str>);

/// A removed instance's last `(epoch, seq)`, kept while its late tokens could still arrive.
///
/// It holds until `until_ms` on the store's clock; moka keeps it `ttl` (plus
/// [`EVICTION_SLACK`]) of real time, only to reclaim its memory.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    known: Known,
    ttl: Duration,
    until_ms: u64,
}

/// How much longer than its TTL moka keeps a tombstone: the store's clock decides when it
/// stops holding, so a test that drives that clock by hand or pauses tokio's must not see it
/// evicted by real time first.
const EVICTION_SLACK: Duration = if cfg!(test) {
    Duration::from_secs(3600)
} else {
    Duration::ZERO
};

struct TombstoneExpiry;

impl moka::Expiry<Key, Tombstone> for TombstoneExpiry {
    fn expire_after_create(&self, _: &Key, t: &Tombstone, _: Instant) -> Option<Duration> {
        Some(t.ttl + EVICTION_SLACK)
    }

    fn expire_after_update(
        &self,
        _: &Key,
        t: &Tombstone,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(t.ttl + EVICTION_SLACK)
    }
}

/// One scheduled deadline check.
struct Due {
    at: u64,
    entry: Arc<Entry>,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.at.cmp(&o.at)
    }
}

/// Every known key, the expiry schedule, and the change log of the current batch.
pub(crate) struct Store {
    mode: Mode,
    services: FastMap<Arc<str>, ServiceState>,
    dirty: Vec<Arc<str>>,
    heap: BinaryHeap<Reverse<Due>>,
    tombstones: Cache<Key, Tombstone>,
    /// Keys recently warned of as announced by two processes at once.
    conflict_warned: Cache<Key, ()>,
    held: HeldTokens,
    /// Which connection carried each instance's latest token; only with disconnect
    /// advisories.
    conns: Option<Conns>,
    /// Per key, the epoch it had in an etcd cluster that has since been replaced. Empty
    /// except after a cluster change.
    retired: KeyMap<u64>,
    views: Arc<Views>,
    clock: Arc<Clock>,
    counters: Arc<Counters>,
    events: broadcast::Sender<Event>,
    pending: Vec<Event>,
    /// Services to probe: a heartbeat came for an instance they do not list.
    probe_requests: Vec<Arc<str>>,
    live: usize,
    /// The first etcd listing is being applied (see [`Store::begin_first_listing`]).
    first_listing: bool,
}

impl Store {
    pub(crate) fn new(
        mode: Mode,
        views: Arc<Views>,
        counters: Arc<Counters>,
        events: broadcast::Sender<Event>,
    ) -> Self {
        let clock = views.clock.clone();
        Store {
            mode,
            services: FastMap::default(),
            dirty: Vec::new(),
            heap: BinaryHeap::new(),
            tombstones: Cache::builder()
                .max_capacity(1_000_000)
                .expire_after(TombstoneExpiry)
                .build(),
            conflict_warned: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            held: HeldTokens::default(),
            conns: None,
            retired: KeyMap::default(),
            views,
            clock,
            counters,
            events,
            pending: Vec::new(),
            probe_requests: Vec::new(),
            live: 0,
            first_listing: false,
        }
    }

    /// The first etcd listing starts: until [`Store::end_first_listing`], an instance it adds
    /// is logged at debug and raises no event (nobody holds the subscriber yet: `start()`
    /// returns once the listing is applied), and up to [`held::MAX_HELD_WHILE_LISTING`]
    /// tokens may wait for a registration on a later page.
    pub(crate) fn begin_first_listing(&mut self) {
        self.first_listing = true;
        self.held.set_limit(held::MAX_HELD_WHILE_LISTING);
    }

    /// The first listing of every scope is applied: one line says what it holds.
    pub(crate) fn end_first_listing(&mut self) {
        self.first_listing = false;
        self.held.set_limit(held::MAX_HELD);
        tracing::info!(
            instances = self.live,
            services = self.services.len(),
            held = self.held.len(),
            "first etcd listing applied"
        );
    }

    pub(crate) fn clock(&self) -> Arc<Clock> {
        self.clock.clone()
    }

    /// Follows which connection carries each instance, so that a closed connection removes
    /// its instances after `grace` (see [`Store::connection_closed`]).
    pub(crate) fn follow_connections(&mut self, grace: Duration) {
        self.conns = Some(Conns::new(grace.as_millis() as u64));
    }

    /// A disconnect advisory said the host of connection `conn` closed it: once the grace
    /// has passed, every instance whose latest token still came over it is removed. Returns
    /// whether any instance came over it.
    pub(crate) fn connection_closed(&mut self, conn: &str) -> bool {
        let now = self.clock.now_ms();
        self.conns.as_mut().is_some_and(|c| c.closed(conn, now))
    }

    /// A connection ended for a reason that says nothing of its instances' processes
    /// (server shutdown, lame duck, stale connection): their TTL still decides.
    pub(crate) fn connection_ended(&mut self, conn: &str) {
        if let Some(c) = &mut self.conns {
            c.ended(conn);
        }
    }

    /// Applies one payload received on the announce subject of `subject_service`.
    pub(crate) fn ingest(&mut self, subject_service: &str, payload: &[u8]) {
        self.counters.received.fetch_add(1, Relaxed);
        match codec::receive(payload, subject_service) {
            Ok(Received::Token(token)) => self.apply(&token),
            Ok(Received::Heartbeat(beat)) => self.apply_heartbeat(subject_service, &beat),
            Err(reason) => {
                self.counters.reject(reason);
                tracing::debug!(%reason, subject_service, "token rejected");
            }
        }
    }

    /// Applies one valid token: the merge rules decide, the store carries the outcome out.
    pub(crate) fn apply(&mut self, t: &TokenRef<'_>) {
        // One clock read and one lookup of the key serve the whole token.
        let now = self.clock.now_ms();
        let svc = self.services.get(t.service);
        let slot = svc.and_then(|s| s.slots.get(t.instance));
        let facts = self.facts_of(svc, slot, t.service, t.instance, now);
        let fingerprint = Fingerprint::of(t);
        let input = Input::Token(TokenFacts {
            epoch: t.epoch,
            seq: t.seq,
            leaving: t.state == State::Leaving,
            matches_registration: slot
                .and_then(|s| s.registration.as_ref())
                .is_none_or(|r| r.record.same_identity_exact(t, fingerprint)),
            matches_live: slot
                .and_then(|s| s.live.as_ref())
                .is_none_or(|l| l.same_fingerprint(fingerprint)),
        });
        let outcome = merge::merge(self.mode, &facts, input);
        self.carry_token(t, outcome, now);
    }

    /// What is known of one key, as [`merge::merge`] needs it.
    fn facts(&self, service: &str, instance: &str) -> Facts {
        let svc = self.services.get(service);
        let slot = svc.and_then(|s| s.slots.get(instance));
        self.facts_of(svc, slot, service, instance, self.clock.now_ms())
    }

    /// [`Store::facts`] of a key whose service state and slot were looked up already.
    fn facts_of(
        &self,
        svc: Option<&ServiceState>,
        slot: Option<&service::Slot>,
        service: &str,
        instance: &str,
        now: u64,
    ) -> Facts {
        let live = slot.and_then(|s| s.live.as_ref());
        Facts {
            live: live.map(|e| {
                let quiet_ms = u64::from((now as u32).wrapping_sub(e.heard_ms.load(Relaxed)));
                Live {
                    epoch: e.epoch,
                    seq: e.seq.load(Relaxed),
                    confirmed: e.is_confirmed(),
                    quiet_ms,
                    ttl_ms: e.ttl_ms.load(Relaxed),
                    // Nothing is accepted after a goodbye but what refutes it or repeats it.
                    goodbye_ms: e.goodbye_pending().then_some(quiet_ms),
                }
            }),
            registration: slot
                .and_then(|s| s.registration.as_ref())
                .map(|r| Registered {
                    epoch: r.epoch,
                    lease: r.lease,
                }),
            tombstone: match live {
                Some(_) => None,
                None => self
                    .tombstones
                    .get(&key_of(svc.map(|s| &s.name), service, instance))
                    .filter(|t| t.until_ms > now)
                    .map(|t| t.known),
            },
            held: self.held.known(service, instance),
            retired: self.retired.get(service, instance).copied(),
            hold_full: self.held.is_full(),
            connection_unknown: self
                .conns
                .as_ref()
                .zip(live)
                .is_some_and(|(c, e)| c.unknown(e)),
        }
    }

    /// The state of `service`, created (with its view) when missing.
    fn service_state(&mut self, service: &str) -> &mut ServiceState {
        if !self.services.contains_key(service) {
            let name: Arc<str> = Arc::from(service);
            let view = self.views.get_or_create(service);
            self.services
                .insert(name.clone(), ServiceState::new(name, view));
        }
        self.services.get_mut(service).expect("inserted above")
    }

    fn key(&self, service: &str, instance: &str) -> Key {
        key_of(
            self.services.get(service).map(|s| &s.name),
            service,
            instance,
        )
    }

    fn mark_dirty(&mut self, service: &Arc<str>) {
        if let Some(svc) = self.services.get_mut(service)
            && !svc.dirty
        {
            svc.dirty = true;
            self.dirty.push(service.clone());
        }
    }

    /// Publishes the snapshots of changed services, then the batch's events, in that order:
    /// a consumer reacting to `Added` already finds the instance in `instances()`.
    pub(crate) fn flush(&mut self) {
        for name in self.dirty.drain(..) {
            if let Some(svc) = self.services.get_mut(&name) {
                svc.dirty = false;
                let list = svc.sorted.clone();
                svc.view
                    .publish(Arc::new(Snapshot::from_sorted(list, self.clock.clone())));
            }
        }
        self.counters.instances.store(self.live as u64, Relaxed);
        self.counters
            .held_now
            .store(self.held.len() as u64, Relaxed);
        if self.first_listing {
            // No receiver can exist before `start()` returns.
            self.pending.clear();
        }
        for event in self.pending.drain(..) {
            // No receiver is not an error: events are optional for consumers.
            let _ = self.events.send(event);
        }
    }

    /// Schedules a deadline check of `entry`.
    fn schedule(&mut self, entry: &Arc<Entry>) {
        self.heap.push(Reverse(Due {
            at: entry.deadline.load(Relaxed),
            entry: entry.clone(),
        }));
    }
}

/// A key, sharing the service name's allocation when the service is known.
fn key_of(name: Option<&Arc<str>>, service: &str, instance: &str) -> Key {
    Key(
        name.cloned().unwrap_or_else(|| Arc::from(service)),
        Arc::from(instance),
    )
}

/// The hasher of the maps the ingest path reads per token. Their keys are service names and
/// instance ids from the network; the hasher's seed is random per process, so that nobody can
/// choose names that collide, and names are bounded (64 and 128 bytes).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
