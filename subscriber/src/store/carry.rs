//! Carrying out what the merge rules decided: listing, refreshing, replacing and removing
//! entries, and keeping tombstones and held tokens. No rule is decided here.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use herald_shared::TokenRef;

use super::{Key, Store, Tombstone};
use crate::event::{Event, RemovalCause};
use crate::instance::{Entry, Instance};
use crate::merge::{self, DropReason, Effect, HeldChange, Outcome, TombstoneChange};

impl Store {
    /// Carries out the outcome of a token, judged at `now`.
    pub(super) fn carry_token(&mut self, t: &TokenRef<'_>, outcome: Outcome, now: u64) {
        if let Some(reason) = outcome.dropped {
            self.count_drop(reason, t.service, t.instance);
            if matches!(reason, DropReason::Duplicate | DropReason::SeqJump) {
                self.warn_if_two_runs(t);
            }
        }
        if let HeldChange::Hold { superseded } = outcome.held {
            if superseded {
                self.count_drop(DropReason::Duplicate, t.service, t.instance);
            }
            let key = self.key(t.service, t.instance);
            self.held.hold(key, t.to_owned(), now);
            self.counters.held.fetch_add(1, Relaxed);
            tracing::debug!(
                service = t.service,
                instance = t.instance,
                epoch = t.epoch,
                "token held until etcd shows its registration"
            );
        }
        self.change_tombstone(t.service, t.instance, outcome.tombstone, t.ttl_ms);
        let live = self
            .services
            .get(t.service)
            .and_then(|s| s.live(t.instance))
            .cloned();
        match (outcome.effect, live) {
            (Effect::Add { .. }, None) => self.insert(t, now, None),
            (Effect::Refresh | Effect::Leave, Some(entry)) => {
                self.refresh(&entry, t, &outcome, now);
                if let Some(conns) = &mut self.conns {
                    conns.carried(&entry, t.conn);
                }
            }
            (Effect::Replace, Some(old)) => {
                if old.epoch == t.epoch && !outcome.rebased {
                    let lost = merge::lost_between(old.seq.load(Relaxed), t.seq);
                    self.counters.tokens_lost.fetch_add(lost, Relaxed);
                }
                self.insert(t, now, Some(old));
            }
            (Effect::Remove(cause), Some(entry)) => {
                entry.seq.store(t.seq, Relaxed);
                // The removed instance reads as what it said last (`leaving` for a goodbye).
                entry.set_state(t.state);
                self.remove(&entry, cause);
            }
            _ => {}
        }
        if outcome.accepted() {
            self.note_run(t.service, t.instance, &outcome);
            self.counters.accepted.fetch_add(1, Relaxed);
            self.counters
                .latency(t.sent_at_ms, herald_shared::unix_millis());
        }
    }

    /// A token far behind or far ahead of the listed run of the same epoch, while that run
    /// announces: another process announces the same instance id (without etcd nothing
    /// refuses it), or someone forges its tokens. Said once a minute per key.
    fn warn_if_two_runs(&self, t: &TokenRef<'_>) {
        let Some(live) = self
            .services
            .get(t.service)
            .and_then(|s| s.live(t.instance))
        else {
            return;
        };
        let apart = live.seq.load(Relaxed).abs_diff(t.seq);
        if live.epoch != t.epoch || apart <= merge::NEW_RUN_JUMP {
            return;
        }
        let key = self.key(t.service, t.instance);
        if self.conflict_warned.contains_key(&key) {
            return;
        }
        self.conflict_warned.insert(key, ());
        self.counters.two_runs.fetch_add(1, Relaxed);
        tracing::warn!(
            service = t.service,
            instance = t.instance,
            listed_addr = live.addr_meta.addr(),
            other_addr = t.addr,
            "tokens far from the listed run of an instance that announces: two processes announce the same instance id, or its tokens are forged; the listed run keeps its place while it announces, the other tokens are dropped"
        );
    }

    pub(super) fn count_drop(&self, reason: DropReason, service: &str, instance: &str) {
        self.counters.dropped(reason);
        tracing::trace!(?reason, service, instance, "token dropped");
    }

    /// Counts what a token showed of its run: a re-based `seq`, a refuted goodbye.
    pub(super) fn note_run(&self, service: &str, instance: &str, outcome: &Outcome) {
        if outcome.rebased {
            self.counters.rebased.fetch_add(1, Relaxed);
            tracing::info!(
                service,
                instance,
                "token far from the listed run accepted after a quiet spell: seq re-based"
            );
        }
        if outcome.refuted_goodbye {
            self.counters.refuted_goodbyes.fetch_add(1, Relaxed);
            tracing::warn!(
                service,
                instance,
                "a goodbye was not followed by the deletion of the registration, and the instance announces on: the goodbye was forged"
            );
        }
    }

    /// A token that changes no identity field (`Refresh`), or a registered instance's goodbye
    /// (`Leave`): update in place, allocate nothing.
    pub(super) fn refresh(
        &mut self,
        entry: &Arc<Entry>,
        t: &TokenRef<'_>,
        outcome: &Outcome,
        now: u64,
    ) {
        if !outcome.rebased {
            let lost = merge::lost_between(entry.seq.load(Relaxed), t.seq);
            if lost > 0 {
                self.counters.tokens_lost.fetch_add(lost, Relaxed);
            }
        }
        entry.seq.store(t.seq, Relaxed);
        entry.ttl_ms.store(t.ttl_ms, Relaxed);
        entry.heard_ms.store(now as u32, Relaxed);
        let deadline = now + u64::from(t.ttl_ms);
        if entry.deadline.swap(deadline, Relaxed) > deadline {
            // A shorter TTL: the deadline now comes before the scheduled check.
            self.schedule(entry);
        }
        let state_changed = entry.state() != t.state;
        let load_changed = entry.load().to_bits() != t.load.to_bits();
        let confirmed_now = !entry.confirmed.swap(true, Relaxed);
        if outcome.effect == Effect::Leave {
            if !entry.goodbye_pending() {
                entry.await_deletion();
                self.mark_dirty(&entry.service);
                tracing::info!(
                    service = t.service,
                    instance = t.instance,
                    "goodbye heard: no longer picked, removed when its registration is deleted"
                );
            }
        } else if state_changed || outcome.refuted_goodbye {
            entry.set_state(t.state);
            self.mark_dirty(&entry.service);
            tracing::info!(service = t.service, instance = t.instance, state = %t.state, "instance state changed");
        }
        if confirmed_now {
            tracing::debug!(
                service = t.service,
                instance = t.instance,
                "registered instance confirmed on NATS"
            );
        }
        if load_changed {
            entry.set_load(t.load);
        }
        if state_changed || load_changed || confirmed_now {
            self.counters.updated.fetch_add(1, Relaxed);
            self.pending.push(Event::Updated(Instance(entry.clone())));
        }
    }

    /// Lists a new entry built from `t`, replacing `old` if given.
    fn insert(&mut self, t: &TokenRef<'_>, now: u64, old: Option<Arc<Entry>>) {
        let svc = self.service_state(t.service);
        let zone = svc.zone(t.zone);
        let entry = Entry::new(svc.name.clone(), zone, t, now + u64::from(t.ttl_ms));
        if let Some(conns) = &mut self.conns {
            // Moved from the old record's connection, if it changed.
            if let Some(old) = &old {
                entry.conn.store(old.conn.load(Relaxed), Relaxed);
            }
            conns.carried(&entry, t.conn);
        }
        self.list(Arc::new(entry), old);
    }

    /// Lists `entry`, replacing `old` if given: the index, the schedule, the event.
    pub(super) fn list(&mut self, entry: Arc<Entry>, old: Option<Arc<Entry>>) {
        let service = self.service_state(&entry.service).name.clone();
        self.service_state(&service).put(entry.clone());
        self.schedule(&entry);
        self.mark_dirty(&service);
        let (epoch, addr, confirmed) = (entry.epoch, entry.addr_meta.addr(), entry.is_confirmed());
        if self.first_listing {
            // Nobody holds the subscriber yet: one line at the end says what was listed.
            if old.is_some() {
                self.counters.updated.fetch_add(1, Relaxed);
            } else {
                self.live += 1;
                self.counters.added.fetch_add(1, Relaxed);
            }
            tracing::debug!(%service, instance = %entry.id, epoch, addr, confirmed, "instance listed");
        } else if old.is_some() {
            self.counters.updated.fetch_add(1, Relaxed);
            tracing::info!(%service, instance = %entry.id, epoch, addr, confirmed, "instance record changed");
            self.pending.push(Event::Updated(Instance(entry)));
        } else {
            self.live += 1;
            self.counters.added.fetch_add(1, Relaxed);
            tracing::info!(%service, instance = %entry.id, epoch, addr, confirmed, "instance added");
            self.pending.push(Event::Added(Instance(entry)));
        }
    }

    /// Removes a live entry for `cause` (its tombstone is the outcome's business).
    pub(super) fn remove(&mut self, entry: &Arc<Entry>, cause: RemovalCause) {
        let Some(svc) = self.services.get_mut(&entry.service) else {
            return;
        };
        match svc.live(&entry.id) {
            Some(current) if Arc::ptr_eq(current, entry) => {}
            _ => return,
        }
        svc.take(&entry.id);
        let service = svc.name.clone();
        if let Some(conns) = &mut self.conns {
            conns.forget(entry);
        }
        self.mark_dirty(&service);
        self.live -= 1;
        self.counters.removed(cause);
        tracing::info!(service = %entry.service, instance = %entry.id, cause = cause.as_str(), "instance removed");
        self.pending.push(Event::Removed {
            instance: Instance(entry.clone()),
            cause,
        });
    }

    /// Writes or clears the tombstone of a key; `ttl_ms` is how long late tokens of it may
    /// still arrive (a deregistration fence holds longer).
    pub(super) fn change_tombstone(
        &self,
        service: &str,
        instance: &str,
        change: TombstoneChange,
        ttl_ms: u32,
    ) {
        match change {
            TombstoneChange::Keep => {}
            TombstoneChange::Clear => self.tombstones.invalidate(&self.key(service, instance)),
            TombstoneChange::Set(known) => {
                let ttl = merge::tombstone_lifetime(known, ttl_ms);
                let until_ms = self.clock.now_ms() + ttl.as_millis() as u64;
                let tombstone = Tombstone {
                    known,
                    ttl,
                    until_ms,
                };
                self.tombstones
                    .insert(self.key(service, instance), tombstone);
            }
        }
    }

    /// Carries out a held-token change that does not hold a new token.
    pub(super) fn change_held(&mut self, key: &Key, change: HeldChange) {
        match change {
            HeldChange::Keep | HeldChange::Hold { .. } => {}
            HeldChange::Drop(reason) => {
                if self.held.take(key).is_some() {
                    self.count_drop(reason, &key.0, &key.1);
                }
            }
            HeldChange::Release => {
                if let Some(token) = self.held.take(key) {
                    tracing::debug!(service = %key.0, instance = %key.1, "held token released");
                    self.apply(&token.as_ref());
                }
            }
        }
    }
}
