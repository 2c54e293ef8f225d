//! Time: deadlines of live entries (a min-heap swept every few milliseconds), the bound of
//! held tokens, and the grace of closed connections. The merge rules decide what a passed
//! deadline or a closed connection means; this only finds them.

use std::cmp::Reverse;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::{Due, Store};
use crate::instance::Entry;
use crate::merge::{self, Effect, Input};

impl Store {
    /// Carries out every deadline that has passed: expired entries, held tokens whose bound
    /// ran out. Entries refreshed since they were scheduled are re-armed.
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
            // Refreshed since it was scheduled: armed again for its new deadline.
            if merge::live_at(entry.deadline.load(Relaxed), now, false) {
                self.schedule(&entry);
                continue;
            }
            self.deadline_passed(&entry, now, preserving);
        }
        while let Some((conn, keys)) = self.conns.as_mut().and_then(|c| c.next_due(now)) {
            for key in keys {
                self.connection_gone(&key, conn);
            }
        }
        while let Some(key) = self.held.next_timed_out(now) {
            let facts = self.facts(&key.0, &key.1);
            let outcome = merge::merge(self.mode, &facts, Input::HeldTimeout);
            self.change_held(&key, outcome.held);
        }
        self.tombstones.run_pending_tasks();
    }

    fn deadline_passed(&mut self, entry: &Arc<Entry>, now: u64, preserving: bool) {
        let facts = self.facts(&entry.service, &entry.id);
        let outcome = merge::merge(self.mode, &facts, Input::Deadline { preserving });
        match outcome.effect {
            Effect::Extend => {
                entry
                    .deadline
                    .store(now + u64::from(entry.ttl_ms.load(Relaxed)), Relaxed);
                self.schedule(entry);
            }
            Effect::Remove(cause) => {
                self.remove(entry, cause);
                self.change_tombstone(
                    &entry.service,
                    &entry.id,
                    outcome.tombstone,
                    entry.ttl_ms.load(Relaxed),
                );
            }
            _ => {}
        }
    }

    /// The grace of connection number `conn` passed: the instance `key` goes if its latest
    /// token still came over it.
    fn connection_gone(&mut self, key: &super::Key, conn: u32) {
        let Some(entry) = self
            .services
            .get(&key.0)
            .and_then(|s| s.live(&key.1))
            .filter(|e| e.conn.load(Relaxed) == conn)
            .cloned()
        else {
            return;
        };
        let facts = self.facts(&key.0, &key.1);
        let outcome = merge::merge(self.mode, &facts, Input::ConnectionClosed);
        if let Effect::Remove(cause) = outcome.effect {
            self.remove(&entry, cause);
            self.change_tombstone(
                &key.0,
                &key.1,
                outcome.tombstone,
                entry.ttl_ms.load(Relaxed),
            );
        }
    }

    fn is_current(&self, entry: &Arc<Entry>) -> bool {
        self.services
            .get(&entry.service)
            .and_then(|s| s.live(&entry.id))
            .is_some_and(|cur| Arc::ptr_eq(cur, entry))
    }

    /// Gives every live instance one fresh TTL from now (after our own reconnect: the
    /// silence was ours, not theirs).
    pub(crate) fn refresh_all_deadlines(&mut self) {
        let now = self.clock.now_ms();
        for svc in self.services.values() {
            for e in svc.slots.values().filter_map(|s| s.live.as_ref()) {
                let deadline = merge::deadline_after_reconnect(
                    e.deadline.load(Relaxed),
                    now,
                    e.ttl_ms.load(Relaxed),
                );
                e.deadline.store(deadline, Relaxed);
            }
        }
    }
}
