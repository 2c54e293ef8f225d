//! What etcd says, applied to the store through the same merge rules as tokens.
//!
//! A registration is the token written at registration, with the write's revision as its
//! epoch: merged like any token, it fences out every token of a lower epoch. A deletion at
//! revision `r` removes the instance unless a newer registration was already seen, and leaves
//! a tombstone `(r - 1, seq max)`, so that the merge rules drop every late token of an epoch
//! below `r`: the old incarnation cannot come back while it still broadcasts.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use herald_shared::{State, codec, validate};

use super::{Key, Store, Tombstone};
use crate::etcd_sync::{Listing, Registration};
use crate::event::RemovalCause;
use crate::merge::Known;

/// How long a deregistration tombstone holds. An announcer cut off from etcd keeps
/// broadcasting its old epoch until it can register again; for this long its tokens are
/// dropped instead of resurrecting the deleted registration.
const DEREGISTERED_TOMBSTONE: Duration = Duration::from_secs(600);

impl Store {
    fn current(&self, service: &str, instance: &str) -> Option<Arc<crate::instance::Entry>> {
        self.services.get(service)?.instances.get(instance).cloned()
    }

    /// Applies an etcd PUT.
    pub(crate) fn register(&mut self, reg: &Registration) {
        let Ok(mut t) = codec::decode(&reg.value) else {
            tracing::warn!(
                service = reg.service,
                instance = reg.instance,
                "registration value is not a token; ignored"
            );
            return;
        };
        if validate::token(&t).is_err() || t.service != reg.service || t.instance != reg.instance {
            tracing::warn!(
                service = reg.service,
                instance = reg.instance,
                "registration value does not match its key or breaks a bound; ignored"
            );
            return;
        }
        t.epoch = reg.revision;
        t.seq = 0;
        if t.state == State::Leaving {
            t.state = State::Up;
        }
        self.counters.registrations.fetch_add(1, Relaxed);
        // Another lease overwrote a registered instance's key: a takeover. The old
        // incarnation is fenced; the new one is added under the higher epoch.
        if let Some(old) = self.current(&reg.service, &reg.instance) {
            let lease = old.lease.load(Relaxed);
            if lease != 0 && lease != reg.lease && old.epoch < reg.revision {
                self.remove(&old, RemovalCause::Fenced);
            }
        }
        self.upsert(&t);
        if let Some(e) = self.current(&reg.service, &reg.instance) {
            if e.epoch == reg.revision {
                e.lease.store(reg.lease, Relaxed);
            }
        }
    }

    /// Applies an etcd DELETE at `revision`.
    pub(crate) fn deregister(&mut self, service: &str, instance: &str, revision: u64) {
        if let Some(e) = self.current(service, instance) {
            if e.epoch >= revision {
                return; // a newer registration was already seen
            }
            self.remove(&e, RemovalCause::Deregistered);
        }
        let service: Arc<str> = self
            .services
            .get(service)
            .map_or_else(|| Arc::from(service), |s| s.name.clone());
        self.tombstones.insert(
            Key(service, Arc::from(instance)),
            Tombstone {
                known: Known {
                    epoch: revision.saturating_sub(1),
                    seq: u64::MAX,
                },
                ttl: DEREGISTERED_TOMBSTONE,
            },
        );
    }

    /// A different etcd cluster answers: its revisions are not comparable with the old
    /// one's, so every epoch and tombstone learnt from the old cluster is forgotten. Live
    /// instances stay (their broadcasts are as good as ever) under epoch 0, so that no token
    /// of the new cluster's smaller epochs is taken for a stale one.
    pub(crate) fn forget_epochs(&mut self) {
        self.tombstones.invalidate_all();
        let stale: Vec<_> = self
            .services
            .values()
            .flat_map(|s| s.instances.values())
            .filter(|e| e.epoch > 0)
            .cloned()
            .collect();
        for old in stale {
            let fresh = Arc::new(old.with_epoch(0, 0));
            let svc = self.services.get_mut(&old.service).expect("listed above");
            svc.instances.insert(fresh.id.clone(), fresh.clone());
            self.cache
                .insert(Key(fresh.service.clone(), fresh.id.clone()), fresh.clone());
            self.heap.push(std::cmp::Reverse(super::Due {
                at: fresh.deadline.load(Relaxed),
                entry: fresh.clone(),
            }));
            let service = fresh.service.clone();
            self.mark_dirty(&service);
            self.pending
                .push(crate::Event::Updated(crate::Instance(fresh)));
        }
        self.counters.etcd_cluster_changes.fetch_add(1, Relaxed);
    }

    /// Brings the store in line with a full listing: registered instances that vanished are
    /// deregistered (as of the listing's revision), and every listed one is applied.
    pub(crate) fn reconcile(&mut self, listing: &Listing) {
        let listed: HashSet<(&str, &str)> = listing
            .registrations
            .iter()
            .map(|r| (r.service.as_str(), r.instance.as_str()))
            .collect();
        let vanished: Vec<(Arc<str>, Arc<str>)> = self
            .services
            .values()
            .flat_map(|s| s.instances.values())
            .filter(|e| e.epoch > 0 && !listed.contains(&(&*e.service, &*e.id)))
            .map(|e| (e.service.clone(), e.id.clone()))
            .collect();
        let after = u64::try_from(listing.revision).unwrap_or(0) + 1;
        for (service, instance) in vanished {
            self.deregister(&service, &instance, after);
        }
        for reg in &listing.registrations {
            self.register(reg);
        }
        self.counters.etcd_resyncs.fetch_add(1, Relaxed);
    }
}
