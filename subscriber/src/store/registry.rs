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

fn retired_key(service: &str, instance: &str) -> String {
    format!("{service}/{instance}")
}

impl Store {
    /// `t` with epoch 0 when its epoch is one its instance had in a replaced cluster.
    pub(super) fn unretire<'a>(
        &self,
        t: &herald_shared::TokenRef<'a>,
    ) -> Option<herald_shared::TokenRef<'a>> {
        let retired = self.retired.get(&retired_key(t.service, t.instance))?;
        (*retired == t.epoch && t.epoch > 0).then(|| {
            let mut unregistered = t.clone();
            unregistered.epoch = 0;
            unregistered
        })
    }

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
        if !self.retired.is_empty() {
            let key = retired_key(&reg.service, &reg.instance);
            if self.retired.get(&key) == Some(&reg.revision) {
                // The new cluster reached the same revision: that epoch is this cluster's now.
                self.retired.remove(&key);
            }
        }
        // The registration's own tokens (or a newer registration's) arrived first: the entry
        // already says all this write says. Not a duplicate token: nothing to count.
        if let Some(e) = self.current(&reg.service, &reg.instance)
            && e.epoch >= reg.revision
        {
            if e.epoch == reg.revision {
                e.lease.store(reg.lease, Relaxed);
            }
            return;
        }
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
        let key = Key(service, Arc::from(instance));
        let fence = revision.saturating_sub(1);
        if self.tombstones.get(&key).is_some_and(|t| {
            t.known.epoch > fence || (t.known.epoch == fence && t.known.seq == u64::MAX)
        }) {
            return; // a later deletion (or the same one) already fences more
        }
        self.tombstones.insert(
            key,
            Tombstone {
                known: Known {
                    epoch: fence,
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
    ///
    /// Tokens already in flight still carry the old epochs; until each announcer registers
    /// again they are taken as unregistered (epoch 0), so that a late old-cluster token can
    /// neither raise the entry above its new registration nor be fenced against it.
    pub(crate) fn forget_epochs(&mut self) {
        self.tombstones.invalidate_all();
        self.retired.clear();
        let stale: Vec<_> = self
            .services
            .values()
            .flat_map(|s| s.instances.values())
            .filter(|e| e.epoch > 0)
            .cloned()
            .collect();
        for old in stale {
            self.retired
                .insert(retired_key(&old.service, &old.id), old.epoch);
            let fresh = Arc::new(old.with_epoch(0, 0));
            let svc = self.services.get_mut(&old.service).expect("listed above");
            svc.put(fresh.clone());
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herald_shared::{Token, codec};
    use tokio::sync::broadcast;

    use super::*;
    use crate::stats::Counters;
    use crate::view::{Clock, Views};

    fn store() -> Store {
        let views = Arc::new(Views::new(Arc::new(Clock::new())));
        let (tx, _) = broadcast::channel(64);
        Store::new(views, Arc::new(Counters::default()), tx)
    }

    fn token(epoch: u64, seq: u64) -> Token {
        let mut t = Token::new("svc", "a", "10.0.0.1:80");
        t.epoch = epoch;
        t.seq = seq;
        t.ttl_ms = 10_000;
        t
    }

    fn put(s: &mut Store, revision: u64, lease: i64) {
        s.register(&Registration {
            service: "svc".into(),
            instance: "a".into(),
            value: codec::encode(&token(0, 0)).unwrap(),
            revision,
            lease,
        });
    }

    fn epoch(s: &Store) -> Option<u64> {
        s.current("svc", "a").map(|e| e.epoch)
    }

    #[test]
    fn late_tokens_of_a_replaced_cluster_cannot_outrank_the_new_registration() {
        let mut s = store();
        put(&mut s, 32, 7);
        s.apply(&token(32, 100).as_ref());
        s.forget_epochs();
        assert_eq!(epoch(&s), Some(0), "the old cluster's epoch is forgotten");
        s.apply(&token(32, 101).as_ref());
        assert_eq!(
            epoch(&s),
            Some(0),
            "a late old-cluster token only refreshes"
        );
        put(&mut s, 2, 9);
        assert_eq!(epoch(&s), Some(2), "the new cluster's registration wins");
        s.apply(&token(32, 102).as_ref());
        assert_eq!(
            epoch(&s),
            Some(2),
            "a later old-cluster token must not raise the epoch back"
        );
        s.apply(&token(2, 103).as_ref());
        let e = s.current("svc", "a").unwrap();
        assert_eq!(
            (e.epoch, e.seq.load(Relaxed)),
            (2, 103),
            "new-epoch tokens are accepted"
        );
    }

    #[test]
    fn a_registration_behind_its_own_tokens_is_no_duplicate() {
        let mut s = store();
        s.apply(&token(10, 5).as_ref());
        put(&mut s, 10, 3);
        let e = s.current("svc", "a").unwrap();
        assert_eq!(
            (e.epoch, e.seq.load(Relaxed)),
            (10, 5),
            "the token's state stays"
        );
        assert_eq!(e.lease.load(Relaxed), 3, "the lease is learnt");
        let stats = s.counters.snapshot();
        assert_eq!(
            stats.duplicate_drops, 0,
            "a late PUT is not a duplicate token"
        );
        assert_eq!(stats.registrations, 1);
        s.apply(&token(10, 5).as_ref());
        assert_eq!(
            s.counters.snapshot().duplicate_drops,
            1,
            "a replayed token still is"
        );
    }

    #[test]
    fn a_deletion_fences_every_older_epoch() {
        let mut s = store();
        put(&mut s, 10, 1);
        s.deregister("svc", "a", 12);
        assert!(epoch(&s).is_none());
        s.apply(&token(10, 5).as_ref());
        s.apply(&token(0, 5).as_ref());
        assert!(
            epoch(&s).is_none(),
            "tokens below the deletion's revision are dropped"
        );
        s.apply(&token(13, 1).as_ref());
        assert_eq!(epoch(&s), Some(13), "a newer registration comes back");
    }
}
