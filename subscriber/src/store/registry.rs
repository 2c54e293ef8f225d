//! What etcd says — a PUT, a DELETE, a replaced cluster, a full listing — turned into inputs
//! of the merge rules and carried out.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use herald_shared::{State, Token, codec, validate};

use super::Store;
use super::service::Registration as Record;
use crate::etcd_sync::{Listing, Registration};
use crate::event::RemovalCause;
use crate::instance::Entry;
use crate::merge::{self, Effect, Input, RegistrationChange, RetiredChange};

/// Whether `service` is in the part of the registry a listing or a cluster change covers
/// (`None`: every service).
fn in_scope(scope: Option<&str>, service: &str) -> bool {
    scope.is_none_or(|s| s == service)
}

/// The token a registration holds, checked against its key; its epoch is the write's
/// revision.
fn registered_token(reg: &Registration) -> Option<Token> {
    let token = codec::decode(&reg.value).ok()?;
    if validate::token(&token).is_err()
        || token.service != reg.service
        || token.instance != reg.instance
    {
        return None;
    }
    let mut t = token.to_owned();
    t.epoch = reg.revision;
    t.seq = 0;
    if t.state == State::Leaving {
        t.state = State::Up;
    }
    Some(t)
}

impl Store {
    /// Applies an etcd PUT.
    pub(crate) fn register(&mut self, reg: &Registration) {
        let Some(token) = registered_token(reg) else {
            tracing::warn!(
                service = reg.service,
                instance = reg.instance,
                "registration value is not a valid token for its key; ignored"
            );
            return;
        };
        self.counters.registrations.fetch_add(1, Relaxed);
        let facts = self.facts(&reg.service, &reg.instance);
        let input = Input::Put {
            revision: reg.revision,
            lease: reg.lease,
        };
        let outcome = merge::merge(self.mode, &facts, input);
        let key = self.key(&reg.service, &reg.instance);
        if let RegistrationChange::Set(r) = outcome.registration {
            let now = self.clock.now_ms();
            let t = token.as_ref();
            let svc = self.service_state(&reg.service);
            let zone = svc.zone(t.zone);
            let record = Entry::new(svc.name.clone(), zone, &t, now + u64::from(t.ttl_ms));
            record.confirmed.store(false, Relaxed);
            let record = Arc::new(record);
            let live = svc.live(&reg.instance).cloned();
            let listed = match (outcome.effect, live) {
                (Effect::Add { .. }, None) => Some((record, None)),
                (Effect::Replace, Some(old)) => {
                    let new = Entry::with_live_of(&record, &old);
                    Some((Arc::new(new), Some(old)))
                }
                (Effect::Fence, Some(old)) => {
                    self.remove(&old, RemovalCause::Fenced);
                    Some((record, None))
                }
                (_, _) => {
                    self.set_registration(&key.1, &reg.service, r, record);
                    None
                }
            };
            if let Some((entry, old)) = listed {
                self.set_registration(&key.1, &reg.service, r, entry.clone());
                self.list(entry, old);
            }
        }
        if outcome.retired == RetiredChange::Clear {
            self.retired.remove(&key.0, &key.1);
        }
        self.change_held(&key, outcome.held);
    }

    fn set_registration(
        &mut self,
        id: &Arc<str>,
        service: &str,
        r: merge::Registered,
        record: Arc<Entry>,
    ) {
        self.service_state(service).slot(id).registration = Some(Record {
            epoch: r.epoch,
            lease: r.lease,
            record,
        });
    }

    /// Applies an etcd DELETE at `revision`.
    pub(crate) fn deregister(&mut self, service: &str, instance: &str, revision: u64) {
        self.apply_deletion(service, instance, Input::Delete { revision });
    }

    /// Carries out a deletion the merge rules judge: a DELETE, or a key a full listing
    /// left out.
    fn apply_deletion(&mut self, service: &str, instance: &str, input: Input) {
        let facts = self.facts(service, instance);
        let outcome = merge::merge(self.mode, &facts, input);
        let key = self.key(service, instance);
        if let Effect::Remove(cause) = outcome.effect
            && let Some(entry) = self.services.get(service).and_then(|s| s.live(instance))
        {
            let entry = entry.clone();
            self.remove(&entry, cause);
        }
        if outcome.registration == RegistrationChange::Clear
            && let Some(svc) = self.services.get_mut(service)
        {
            if let Some(slot) = svc.slots.get_mut(instance) {
                slot.registration = None;
            }
            svc.forget_if_empty(instance);
        }
        self.change_tombstone(service, instance, outcome.tombstone, 0);
        self.change_held(&key, outcome.held);
    }

    /// A different etcd cluster answers for `scope`: every epoch and tombstone learnt from
    /// the old one is forgotten (see [`merge`]'s cluster change).
    pub(crate) fn forget_epochs(&mut self, scope: Option<&str>) {
        match scope {
            None => self.tombstones.invalidate_all(),
            Some(service) => {
                for (key, _) in self.tombstones.iter() {
                    if &*key.0 == service {
                        self.tombstones.invalidate(&*key);
                    }
                }
            }
        }
        let keys: Vec<(Arc<str>, Arc<str>)> = self
            .services
            .values()
            .filter(|s| in_scope(scope, &s.name))
            .flat_map(|s| s.slots.keys().map(|id| (s.name.clone(), id.clone())))
            .collect();
        // A retired epoch matters only while its entry is listed (see the cluster change).
        let services = &self.services;
        self.retired.retain(|service, id, _| {
            !in_scope(scope, service)
                || services
                    .get(service)
                    .is_some_and(|s| s.slots.contains_key(id))
        });
        for (service, id) in keys {
            let facts = self.facts(&service, &id);
            let outcome = merge::merge(self.mode, &facts, Input::ClusterChange);
            let key = self.key(&service, &id);
            let svc = self.service_state(&service);
            let live = svc.live(&id).cloned();
            if outcome.registration == RegistrationChange::Clear {
                svc.slot(&id).registration = None;
            }
            if let (Effect::Retire, Some(old)) = (outcome.effect, live) {
                let fresh = Arc::new(old.with_epoch(0));
                self.list(fresh, Some(old));
            }
            match outcome.retired {
                RetiredChange::Set(epoch) => {
                    self.retired.insert(&key, epoch);
                }
                RetiredChange::Clear => {
                    self.retired.remove(&key.0, &key.1);
                }
                RetiredChange::Keep => {}
            }
            self.service_state(&service).forget_if_empty(&id);
        }
        self.counters.etcd_cluster_changes.fetch_add(1, Relaxed);
    }

    /// Brings the store in line with a full listing of its scope: every key of the scope
    /// that the listing leaves out is judged as such ([`Input::Unlisted`]: a registered one
    /// is deregistered as of the listing's revision), and every listed one is applied.
    pub(crate) fn reconcile(&mut self, listing: &Listing) {
        let scope = listing.scope.as_deref();
        let listed: HashSet<(&str, &str)> = listing
            .registrations
            .iter()
            .map(|r| (r.service.as_str(), r.instance.as_str()))
            .collect();
        let unlisted: Vec<(Arc<str>, Arc<str>)> = self
            .services
            .values()
            .filter(|s| in_scope(scope, &s.name))
            .flat_map(|s| s.slots.keys().map(|id| (s.name.clone(), id.clone())))
            .filter(|(s, i)| !listed.contains(&(&**s, &**i)))
            .collect();
        let after = u64::try_from(listing.revision).unwrap_or(0) + 1;
        for (service, instance) in unlisted {
            self.apply_deletion(&service, &instance, Input::Unlisted { revision: after });
        }
        for reg in &listing.registrations {
            self.register(reg);
        }
        self.counters.etcd_resyncs.fetch_add(1, Relaxed);
    }

    /// Applies a page of a scope's first listing as it arrives. Until the listing is
    /// complete ([`Store::first_listing_read`]) no registration of the scope comes from
    /// anywhere else: the watch starts after it.
    pub(crate) fn register_page(&mut self, page: &[Registration]) {
        for reg in page {
            self.register(reg);
        }
    }

    /// Ends a scope's first listing. Nothing can have vanished from it: before it the store
    /// knew no registration of the scope, and in registry mode no token lists an epoch
    /// without one.
    pub(crate) fn first_listing_read(&mut self) {
        self.counters.etcd_resyncs.fetch_add(1, Relaxed);
    }
}
