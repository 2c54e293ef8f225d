//! The store: every live instance, owned by the ingest task alone.
//!
//! One task applies every change, so the per-service index, the expiry schedule and the
//! moka cache can never disagree, and the ingest path takes no lock at all. Readers never
//! touch this: they read the snapshots [`crate::view`] publishes.
//!
//! Expiry is twofold. moka holds every live entry with a per-entry expiry (the entry's TTL
//! plus a grace), which bounds memory and gives exact `get` semantics; but moka's timer wheel
//! ticks about once a second (2^30 ns buckets), too coarse to remove an instance within
//! 100 ms of its deadline. So the store also keeps a min-heap of deadlines, swept every few
//! milliseconds. A token that only refreshes an instance updates atomics in place: it pushes
//! nothing and writes nothing to moka. When the sweep finds an entry whose deadline moved,
//! it re-arms the heap and moka once, so each entry costs one cache write per TTL instead of
//! one per token.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use herald_shared::{TokenRef, codec};
use moka::sync::Cache;
use tokio::sync::broadcast;

use crate::event::{Event, RemovalCause};
use crate::instance::{Entry, Instance};
use crate::merge::{self, Known, Verdict};
use crate::stats::Counters;
use crate::view::{Clock, ServiceView, Snapshot, Views};

mod registry;

/// How long moka keeps an entry past its deadline: its timer wheel is coarse, and the
/// sweep, not moka, is what removes instances on time.
const MOKA_GRACE: Duration = Duration::from_millis(2_500);

/// Cache key: (service, instance).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key(Arc<str>, Arc<str>);

/// moka expiry: each entry lives until its own deadline plus [`MOKA_GRACE`].
struct DeadlineExpiry {
    clock: Arc<Clock>,
}

impl DeadlineExpiry {
    fn remaining(&self, e: &Entry) -> Option<Duration> {
        let left = e.deadline.load(Relaxed).saturating_sub(self.clock.now_ms());
        Some(Duration::from_millis(left) + MOKA_GRACE)
    }
}

impl moka::Expiry<Key, Arc<Entry>> for DeadlineExpiry {
    fn expire_after_create(&self, _: &Key, e: &Arc<Entry>, _: Instant) -> Option<Duration> {
        self.remaining(e)
    }

    fn expire_after_update(
        &self,
        _: &Key,
        e: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.remaining(e)
    }
}

/// A removed instance's last `(epoch, seq)`, kept while its late tokens could still arrive.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    known: Known,
    ttl: Duration,
}

struct TombstoneExpiry;

impl moka::Expiry<Key, Tombstone> for TombstoneExpiry {
    fn expire_after_create(&self, _: &Key, t: &Tombstone, _: Instant) -> Option<Duration> {
        Some(t.ttl)
    }

    fn expire_after_update(
        &self,
        _: &Key,
        t: &Tombstone,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(t.ttl)
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

struct ServiceState {
    name: Arc<str>,
    instances: HashMap<Arc<str>, Arc<Entry>>,
    /// The same instances in snapshot order (zone, then id), kept sorted as they come and
    /// go, so that publishing a snapshot is a copy, not a sort.
    sorted: Vec<Instance>,
    view: Arc<ServiceView>,
    dirty: bool,
}

fn snapshot_order(e: &Entry) -> (Option<&str>, &str) {
    (e.zone.as_deref(), &e.id)
}

impl ServiceState {
    /// Lists `entry`, replacing the record with its id, if any.
    fn put(&mut self, entry: Arc<Entry>) {
        if let Some(old) = self.instances.insert(entry.id.clone(), entry.clone()) {
            self.unsort(&old);
        }
        let pos = self
            .sorted
            .binary_search_by(|i| snapshot_order(&i.0).cmp(&snapshot_order(&entry)))
            .unwrap_or_else(|p| p);
        self.sorted.insert(pos, Instance(entry));
    }

    /// Unlists the record with this id.
    fn take(&mut self, id: &str) {
        if let Some(old) = self.instances.remove(id) {
            self.unsort(&old);
        }
    }

    fn unsort(&mut self, e: &Entry) {
        if let Ok(pos) = self
            .sorted
            .binary_search_by(|i| snapshot_order(&i.0).cmp(&snapshot_order(e)))
        {
            self.sorted.remove(pos);
        }
    }
}

/// Every live instance, the expiry schedule, and the change log of the current batch.
pub(crate) struct Store {
    services: HashMap<Arc<str>, ServiceState>,
    dirty: Vec<Arc<str>>,
    heap: BinaryHeap<Reverse<Due>>,
    cache: Cache<Key, Arc<Entry>>,
    tombstones: Cache<Key, Tombstone>,
    views: Arc<Views>,
    clock: Arc<Clock>,
    counters: Arc<Counters>,
    events: broadcast::Sender<Event>,
    pending: Vec<Event>,
    live: usize,
    require_registration: bool,
    /// Per `service/instance`, the epoch it had in an etcd cluster that has since been
    /// replaced (see `registry::forget_epochs`). Empty except after a cluster change.
    retired: HashMap<String, u64>,
}

impl Store {
    pub(crate) fn new(
        views: Arc<Views>,
        counters: Arc<Counters>,
        events: broadcast::Sender<Event>,
    ) -> Self {
        let clock = views.clock.clone();
        Store {
            services: HashMap::new(),
            dirty: Vec::new(),
            heap: BinaryHeap::new(),
            cache: Cache::builder()
                .expire_after(DeadlineExpiry {
                    clock: clock.clone(),
                })
                .build(),
            tombstones: Cache::builder().expire_after(TombstoneExpiry).build(),
            views,
            clock,
            counters,
            events,
            pending: Vec::new(),
            live: 0,
            require_registration: false,
            retired: HashMap::new(),
        }
    }

    /// Drop every unregistered (epoch 0) token.
    pub(crate) fn require_registration(&mut self, on: bool) {
        self.require_registration = on;
    }

    pub(crate) fn clock(&self) -> Arc<Clock> {
        self.clock.clone()
    }

    /// Applies one payload received on the announce subject of `subject_service`.
    pub(crate) fn ingest(&mut self, subject_service: &str, payload: &[u8]) {
        self.counters.received.fetch_add(1, Relaxed);
        match codec::accept(payload, subject_service) {
            Ok(token) => self.apply(&token),
            Err(reason) => {
                self.counters.reject(reason);
                tracing::debug!(%reason, subject_service, "token rejected");
            }
        }
    }

    /// Applies one valid token: the merge rules decide, the store carries the verdict out.
    pub(crate) fn apply(&mut self, t: &TokenRef<'_>) {
        if self.require_registration && t.epoch == 0 {
            self.counters.dropped(merge::DropReason::Unregistered);
            return;
        }
        if !self.retired.is_empty() {
            if let Some(unregistered) = self.unretire(t) {
                // An epoch of a replaced cluster means nothing in this one: the token counts
                // as unregistered until its announcer registers again.
                if self.upsert(&unregistered) {
                    self.counters.accepted.fetch_add(1, Relaxed);
                }
                return;
            }
        }
        if self.upsert(t) {
            self.counters.accepted.fetch_add(1, Relaxed);
            self.counters
                .latency(t.sent_at_ms, herald_shared::unix_millis());
        }
    }

    /// The merge rules for one token from any source; returns whether it was accepted.
    fn upsert(&mut self, t: &TokenRef<'_>) -> bool {
        let now = self.clock.now_ms();
        let svc = match self.services.get_mut(t.service) {
            Some(s) => s,
            None => {
                let name: Arc<str> = Arc::from(t.service);
                let view = self.views.get_or_create(t.service);
                self.services.entry(name.clone()).or_insert(ServiceState {
                    name,
                    instances: HashMap::new(),
                    sorted: Vec::new(),
                    view,
                    dirty: false,
                })
            }
        };
        let live = svc.instances.get(t.instance);
        let known = live.map(|e| Known {
            epoch: e.epoch,
            seq: e.seq.load(Relaxed),
        });
        let tombstone = if known.is_none() {
            self.tombstones
                .get(&Key(svc.name.clone(), Arc::from(t.instance)))
                .map(|t| t.known)
        } else {
            None
        };
        match merge::merge(known, tombstone, t) {
            Verdict::Drop(reason) => {
                self.counters.dropped(reason);
                if reason == merge::DropReason::GoodbyeUnknown {
                    self.bury(t, Arc::from(t.instance));
                }
                tracing::trace!(
                    ?reason,
                    service = t.service,
                    instance = t.instance,
                    "token dropped"
                );
                return false;
            }
            Verdict::Goodbye => {
                let entry = live.cloned().expect("goodbye verdict implies a live entry");
                entry.seq.store(t.seq, Relaxed);
                self.remove(&entry, RemovalCause::Goodbye);
            }
            Verdict::Upsert => match live {
                Some(entry) if entry.same_identity(t) => {
                    let entry = entry.clone();
                    self.refresh(&entry, t, now);
                }
                Some(old) => {
                    let lost = if old.epoch == t.epoch {
                        merge::lost_between(old.seq.load(Relaxed), t.seq)
                    } else {
                        0
                    };
                    self.counters.tokens_lost.fetch_add(lost, Relaxed);
                    let old = old.clone();
                    self.insert(t, now, Some(old));
                }
                None => {
                    self.insert(t, now, None);
                }
            },
        }
        true
    }

    /// A token that changes no identity field: update in place, allocate nothing.
    fn refresh(&mut self, entry: &Arc<Entry>, t: &TokenRef<'_>, now: u64) {
        let lost = merge::lost_between(entry.seq.load(Relaxed), t.seq);
        if lost > 0 {
            self.counters.tokens_lost.fetch_add(lost, Relaxed);
        }
        entry.seq.store(t.seq, Relaxed);
        entry.ttl_ms.store(t.ttl_ms, Relaxed);
        entry.deadline.store(now + u64::from(t.ttl_ms), Relaxed);
        let state_changed = entry.state() != t.state;
        let load_changed = entry.load().to_bits() != t.load.to_bits();
        if state_changed {
            entry.set_state(t.state);
            self.mark_dirty(&entry.service);
            tracing::info!(service = t.service, instance = t.instance, state = %t.state, "instance state changed");
        }
        if load_changed {
            entry.set_load(t.load);
        }
        if state_changed || load_changed {
            self.counters.updated.fetch_add(1, Relaxed);
            self.pending.push(Event::Updated(Instance(entry.clone())));
        }
    }

    /// Adds a new instance, or replaces `old` with a new record.
    fn insert(&mut self, t: &TokenRef<'_>, now: u64, old: Option<Arc<Entry>>) -> Arc<Entry> {
        let svc = self
            .services
            .get_mut(t.service)
            .expect("upsert created the service");
        let deadline = now + u64::from(t.ttl_ms);
        let zone = t.zone.map(Arc::from);
        let entry = Arc::new(Entry::new(svc.name.clone(), zone, t, deadline));
        svc.put(entry.clone());
        self.cache
            .insert(Key(entry.service.clone(), entry.id.clone()), entry.clone());
        self.heap.push(Reverse(Due {
            at: deadline,
            entry: entry.clone(),
        }));
        let service = svc.name.clone();
        self.mark_dirty(&service);
        if old.is_some() {
            self.counters.updated.fetch_add(1, Relaxed);
            tracing::info!(
                service = t.service,
                instance = t.instance,
                epoch = t.epoch,
                addr = t.addr,
                "instance record changed"
            );
            self.pending.push(Event::Updated(Instance(entry.clone())));
        } else {
            self.live += 1;
            self.counters.added.fetch_add(1, Relaxed);
            tracing::info!(
                service = t.service,
                instance = t.instance,
                epoch = t.epoch,
                addr = t.addr,
                "instance added"
            );
            self.pending.push(Event::Added(Instance(entry.clone())));
        }
        entry
    }

    /// Remembers a departed instance's last `(epoch, seq)` for as long as its late tokens
    /// could arrive (its TTL).
    fn bury(&self, t: &TokenRef<'_>, id: Arc<str>) {
        let Some(svc) = self.services.get(t.service) else {
            return;
        };
        self.tombstones.insert(
            Key(svc.name.clone(), id),
            Tombstone {
                known: Known {
                    epoch: t.epoch,
                    seq: t.seq,
                },
                ttl: Duration::from_millis(u64::from(t.ttl_ms)),
            },
        );
    }

    /// Removes a live entry for `cause`.
    pub(crate) fn remove(&mut self, entry: &Arc<Entry>, cause: RemovalCause) {
        let Some(svc) = self.services.get_mut(&entry.service) else {
            return;
        };
        match svc.instances.get(&entry.id) {
            Some(current) if Arc::ptr_eq(current, entry) => {}
            _ => return,
        }
        svc.take(&entry.id);
        let key = Key(entry.service.clone(), entry.id.clone());
        self.cache.invalidate(&key);
        self.tombstones.insert(
            key,
            Tombstone {
                known: Known {
                    epoch: entry.epoch,
                    seq: entry.seq.load(Relaxed),
                },
                ttl: Duration::from_millis(u64::from(entry.ttl_ms.load(Relaxed))),
            },
        );
        let service = svc.name.clone();
        self.mark_dirty(&service);
        self.live -= 1;
        self.counters.removed(cause);
        tracing::info!(service = %entry.service, instance = %entry.id, cause = cause.as_str(), "instance removed");
        self.pending.push(Event::Removed {
            instance: Instance(entry.clone()),
            cause,
        });
    }

    /// Removes every instance whose deadline has passed; re-arms those refreshed since they
    /// were scheduled. While preserving, due entries get a fresh TTL instead.
    pub(crate) fn sweep(&mut self) {
        let now = self.clock.now_ms();
        let preserving = self.clock.preserving.load(Relaxed);
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.at > now {
                break;
            }
            let Some(Reverse(Due { entry, .. })) = self.heap.pop() else {
                break;
            };
            if !self.is_current(&entry) {
                continue;
            }
            let mut deadline = entry.deadline.load(Relaxed);
            if preserving && deadline <= now {
                deadline = now + u64::from(entry.ttl_ms.load(Relaxed));
                entry.deadline.store(deadline, Relaxed);
            }
            if deadline > now {
                self.cache
                    .insert(Key(entry.service.clone(), entry.id.clone()), entry.clone());
                self.heap.push(Reverse(Due {
                    at: deadline,
                    entry,
                }));
            } else {
                self.remove(&entry, RemovalCause::Expired);
            }
        }
        self.cache.run_pending_tasks();
    }

    fn is_current(&self, entry: &Arc<Entry>) -> bool {
        self.services
            .get(&entry.service)
            .and_then(|s| s.instances.get(&entry.id))
            .is_some_and(|cur| Arc::ptr_eq(cur, entry))
    }

    /// Gives every live instance one fresh TTL from now (after our own reconnect: the
    /// silence was ours, not theirs).
    pub(crate) fn refresh_all_deadlines(&mut self) {
        let now = self.clock.now_ms();
        for svc in self.services.values() {
            for e in svc.instances.values() {
                let fresh = now + u64::from(e.ttl_ms.load(Relaxed));
                if e.deadline.load(Relaxed) < fresh {
                    e.deadline.store(fresh, Relaxed);
                }
            }
        }
    }

    fn mark_dirty(&mut self, service: &Arc<str>) {
        if let Some(svc) = self.services.get_mut(service) {
            if !svc.dirty {
                svc.dirty = true;
                self.dirty.push(service.clone());
            }
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
        for event in self.pending.drain(..) {
            // No receiver is not an error: events are optional for consumers.
            let _ = self.events.send(event);
        }
    }

    /// Live entries whose state is not `leaving`, for diagnostics and tests.
    #[cfg(test)]
    pub(crate) fn ids(&self, service: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .services
            .get(service)
            .map(|s| {
                s.instances
                    .values()
                    .filter(|e| e.state() != herald_shared::State::Leaving)
                    .map(|e| e.id.to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_shared::{State, Token};

    fn store() -> (Store, broadcast::Receiver<Event>, Arc<Counters>) {
        let views = Arc::new(Views::new(Arc::new(Clock::new())));
        let counters = Arc::new(Counters::default());
        let (tx, rx) = broadcast::channel(1024);
        (Store::new(views, counters.clone(), tx), rx, counters)
    }

    fn token(id: &str, seq: u64) -> Token {
        let mut t = Token::new("svc", id, "10.0.0.1:80");
        t.seq = seq;
        t.ttl_ms = 200;
        t
    }

    #[test]
    fn refresh_only_tokens_do_not_schedule_or_event() {
        let (mut s, mut rx, c) = store();
        s.apply(&token("a", 1).as_ref());
        s.flush();
        assert!(matches!(rx.try_recv(), Ok(Event::Added(_))));
        for seq in 2..100 {
            s.apply(&token("a", seq).as_ref());
        }
        s.flush();
        assert!(
            rx.try_recv().is_err(),
            "pure refreshes must not emit events"
        );
        assert_eq!(s.heap.len(), 1, "pure refreshes must not push deadlines");
        assert_eq!(c.snapshot().accepted, 99);
    }

    #[test]
    fn goodbye_leaves_a_tombstone_against_late_tokens() {
        let (mut s, _rx, c) = store();
        s.apply(&token("a", 10).as_ref());
        let mut bye = token("a", 11);
        bye.state = State::Leaving;
        s.apply(&bye.as_ref());
        assert!(s.ids("svc").is_empty());
        s.apply(&token("a", 9).as_ref());
        assert!(
            s.ids("svc").is_empty(),
            "a late token must not resurrect a departed instance"
        );
        assert_eq!(c.snapshot().duplicate_drops, 1);
    }

    #[test]
    fn seq_gaps_count_lost_tokens() {
        let (mut s, _rx, c) = store();
        s.apply(&token("a", 10).as_ref());
        s.apply(&token("a", 15).as_ref());
        assert_eq!(c.snapshot().tokens_lost, 4);
    }

    #[test]
    fn sweep_removes_only_what_is_due() {
        let (mut s, _rx, c) = store();
        s.apply(&token("a", 1).as_ref());
        s.sweep();
        assert_eq!(s.ids("svc"), vec!["a"]);
        std::thread::sleep(Duration::from_millis(250));
        s.sweep();
        assert!(
            s.ids("svc").is_empty(),
            "an entry past its TTL must be swept"
        );
        assert_eq!(c.snapshot().expirations, 1);
    }
}
