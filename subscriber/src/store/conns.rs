//! Which NATS connection carried each instance's latest token, kept only when the subscriber
//! follows disconnect advisories (see DESIGN.md, "Crash seen as a closed connection").
//!
//! Connections are named by their token's `conn` (`{server_id}/{client_id}`) and numbered
//! here; a live entry keeps the number of its connection (`Entry::conn`, 0 for none), and each
//! connection keeps the set of its instances, so that an advisory finds them without walking
//! the cache and a token that comes over the same connection as before costs one lookup by
//! number and one string comparison. A connection whose last instance leaves is forgotten.
//!
//! A closed connection is not acted on at once: its instances are judged after a grace (a
//! client that reconnects republishes over its new connection first). The grace is the same
//! for every closure, so the pending ones form a queue in time order. A closure is remembered
//! for its grace even when no instance came over the connection yet: the advisory and the
//! process's last token arrive on different subscriptions, in either order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;

use super::Key;
use crate::instance::Entry;

/// The number of "no connection known".
const NONE: u32 = 0;
/// The number of "its full token names no connection" (an announcer too old to say).
const UNSAID: u32 = u32::MAX;

struct Connection {
    name: Box<str>,
    instances: HashSet<Key>,
}

/// The connection index and the closures waiting out their grace.
pub(super) struct Conns {
    grace_ms: u64,
    ids: HashMap<Box<str>, u32>,
    by_id: HashMap<u32, Connection>,
    next_id: u32,
    /// Closed connections, with the time their grace ends, oldest first.
    closing: VecDeque<(u64, u32)>,
}

impl Conns {
    pub(super) fn new(grace_ms: u64) -> Self {
        Conns {
            grace_ms,
            ids: HashMap::new(),
            by_id: HashMap::new(),
            next_id: NONE + 1,
            closing: VecDeque::new(),
        }
    }

    /// Records that `entry`'s latest full token came over `conn` (`None`: a sender that does
    /// not say). Nothing changes, and nothing allocates, when it is the same connection as
    /// before.
    pub(super) fn carried(&mut self, entry: &Entry, conn: Option<&str>) {
        let current = entry.conn.load(Relaxed);
        let Some(name) = conn else {
            // A sender that does not say: remembered as such, so that nothing asks again.
            if current != UNSAID {
                self.forget(entry);
                entry.conn.store(UNSAID, Relaxed);
            }
            return;
        };
        if self.by_id.get(&current).is_some_and(|c| *c.name == *name) {
            return;
        }
        self.forget(entry);
        let id = match self.ids.get(name) {
            Some(&id) => id,
            None => self.number(name),
        };
        if let Some(c) = self.by_id.get_mut(&id) {
            c.instances.insert(key_of(entry));
        }
        entry.conn.store(id, Relaxed);
    }

    /// Whether no token of `entry` named its connection yet: it was listed from etcd and
    /// confirmed by heartbeats alone.
    pub(super) fn unknown(&self, entry: &Entry) -> bool {
        entry.conn.load(Relaxed) == NONE
    }

    /// Numbers the connection `name`, not known before.
    fn number(&mut self, name: &str) -> u32 {
        let id = self.next_id;
        // Numbers are not reused while a connection could still hold one: 2^32 connections
        // seen by one subscriber would take decades.
        self.next_id = match self.next_id.checked_add(1) {
            Some(UNSAID) | None => NONE + 1,
            Some(next) => next,
        };
        self.ids.insert(Box::from(name), id);
        self.by_id.insert(
            id,
            Connection {
                name: Box::from(name),
                instances: HashSet::new(),
            },
        );
        id
    }

    /// Takes `entry` out of its connection's set (it left the view, or moved).
    pub(super) fn forget(&mut self, entry: &Entry) {
        let id = entry.conn.swap(NONE, Relaxed);
        let Some(c) = self.by_id.get_mut(&id) else {
            return;
        };
        c.instances.remove(&key_of(entry));
        if c.instances.is_empty() && !self.closing.iter().any(|&(_, closing)| closing == id) {
            self.ids.remove(&c.name);
            self.by_id.remove(&id);
        }
    }

    /// A connection closed at `now`: its instances are judged once the grace has passed.
    /// Returns whether any instance came over it so far.
    ///
    /// A connection nobody came over yet is remembered for the grace too: a token it carried
    /// can be read after the advisory of its close (they arrive on different subscriptions),
    /// and the instance it lists then goes with it.
    pub(super) fn closed(&mut self, name: &str, now: u64) -> bool {
        let (id, known) = match self.ids.get(name) {
            Some(&id) => (id, true),
            None => (self.number(name), false),
        };
        if !self.closing.iter().any(|&(_, closing)| closing == id) {
            self.closing.push_back((now + self.grace_ms, id));
        }
        known && self.by_id.get(&id).is_some_and(|c| !c.instances.is_empty())
    }

    /// A connection ended for a reason that says nothing of its instances (server shutdown,
    /// lame duck, ...): they keep their TTL, and their next token names their new connection.
    pub(super) fn ended(&mut self, name: &str) {
        if let Some(id) = self.ids.remove(name) {
            // Entries still naming it read as "no connection" until their next token.
            self.by_id.remove(&id);
        }
    }

    /// The next connection whose grace has passed by `now`, with the instances whose latest
    /// token came over it; the connection is forgotten.
    pub(super) fn next_due(&mut self, now: u64) -> Option<(u32, Vec<Key>)> {
        while let Some(&(at, id)) = self.closing.front() {
            if at > now {
                return None;
            }
            self.closing.pop_front();
            if let Some(c) = self.by_id.remove(&id) {
                self.ids.remove(&c.name);
                return Some((id, c.instances.into_iter().collect()));
            }
        }
        None
    }

    /// Connections known.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }
}

fn key_of(entry: &Entry) -> Key {
    Key(entry.service.clone(), entry.id.clone())
}
