//! Tokens held while the registration they claim is awaited (registry mode): at most one per
//! instance and a bounded number in all, each for a fixed time. The bound is the same for
//! every token, so the order of arrival is the order of timeouts and a queue replaces a heap.

use std::collections::VecDeque;

use herald_shared::Token;

use super::Key;
use super::key_map::KeyMap;
use crate::merge::Known;

/// How long a token waits for its registration. etcd's watch delivers a write within
/// milliseconds; a token still unmatched after this is taken as unregistered.
pub(crate) const HOLD_FOR_MS: u64 = 2_000;

/// Most tokens held at once, so that a flood of made-up instances cannot grow memory.
pub(super) const MAX_HELD: usize = 10_000;

/// Most tokens held at once while the first etcd listing is read: the capacity of the
/// subscription's buffer, where these tokens would otherwise wait for the listing to end.
pub(crate) const MAX_HELD_WHILE_LISTING: usize = 65_536;

#[derive(Debug)]
struct HeldToken {
    token: Token,
    until: u64,
}

#[derive(Debug)]
pub(super) struct HeldTokens {
    tokens: KeyMap<HeldToken>,
    timeouts: VecDeque<(u64, Key)>,
    limit: usize,
}

impl Default for HeldTokens {
    fn default() -> Self {
        HeldTokens {
            tokens: KeyMap::default(),
            timeouts: VecDeque::new(),
            limit: MAX_HELD,
        }
    }
}

impl HeldTokens {
    pub(super) fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// The held token's `(epoch, seq)` for a key.
    pub(super) fn known(&self, service: &str, instance: &str) -> Option<Known> {
        self.tokens
            .get(service, instance)
            .map(|h| Known::token(h.token.epoch, h.token.seq))
    }

    pub(super) fn is_full(&self) -> bool {
        self.tokens.len() >= self.limit
    }

    pub(super) fn hold(&mut self, key: Key, token: Token, now: u64) {
        let until = now + HOLD_FOR_MS;
        self.tokens.insert(&key, HeldToken { token, until });
        self.timeouts.push_back((until, key));
    }

    pub(super) fn take(&mut self, key: &Key) -> Option<Token> {
        self.tokens.remove(&key.0, &key.1).map(|h| h.token)
    }

    /// The key of the next held token whose time is up, removing its queue entry.
    pub(super) fn next_timed_out(&mut self, now: u64) -> Option<Key> {
        while let Some((until, _)) = self.timeouts.front() {
            if *until > now {
                return None;
            }
            let (until, key) = self.timeouts.pop_front()?;
            // A key held again since has a later deadline of its own in the queue.
            if self
                .tokens
                .get(&key.0, &key.1)
                .is_some_and(|h| h.until == until)
            {
                return Some(key);
            }
        }
        None
    }

    pub(super) fn len(&self) -> usize {
        self.tokens.len()
    }
}
