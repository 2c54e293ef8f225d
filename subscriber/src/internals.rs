//! The subscriber's hot path without NATS or etcd, for micro-benchmarks and allocation tests
//! (feature `internals`). Not a stable API: it exists so that the cost of each step of
//! ingest can be measured apart, on the code the subscriber runs.
//!
//! ```
//! use herald_shared::{Token, codec};
//! use herald_subscriber::internals::{BareStore, merge_refresh};
//!
//! let mut store = BareStore::new();
//! let mut token = Token::new("billing", "b1", "10.0.0.1:80");
//! token.seq = 1;
//! store.ingest("billing", &codec::encode(&token).unwrap());
//! store.flush();
//! assert_eq!(store.listed("billing"), 1);
//! assert!(merge_refresh(true, 1, 2), "a newer token refreshes a live instance");
//! ```

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::Stats;
use crate::merge::{self, Effect, Facts, Input, Live, Mode, Registered, TokenFacts};
use crate::stats::Counters;
use crate::store::Store;
use crate::view::{Clock, Views};

/// Keys the first page of the subscriber's etcd listing asks for, for a plain listing to
/// compare with.
pub const LISTING_PAGE: i64 = crate::etcd_sync::PAGE;

/// Keys the next page of the subscriber's etcd listing asks for, after `keys` keys and
/// `bytes` bytes of keys and values.
pub fn listing_page_after(keys: usize, bytes: usize) -> i64 {
    crate::etcd_sync::page_after(keys, bytes)
}

/// The store a subscriber's ingest task drives (bus rules, no etcd), fed directly: no
/// connection, no task, no channel in between.
pub struct BareStore {
    store: Store,
    views: Arc<Views>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for BareStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BareStore").finish_non_exhaustive()
    }
}

impl Default for BareStore {
    fn default() -> Self {
        Self::new()
    }
}

impl BareStore {
    /// An empty store without etcd. Nobody reads its events, as in a subscriber whose
    /// `events()` nobody called. Its clock stands still until [`BareStore::advance_clock`]
    /// moves it: a benchmark feeds one instance far faster than an announcer may send, and
    /// says how much time its tokens stand for.
    pub fn new() -> Self {
        let views = Arc::new(Views::new(Arc::new(Clock::manual())));
        let (events, _) = broadcast::channel(1024);
        let counters = Arc::new(Counters::default());
        let store = Store::new(
            Mode {
                registry: false,
                allow_unregistered: true,
            },
            views.clone(),
            counters.clone(),
            events,
        );
        BareStore {
            store,
            views,
            counters,
        }
    }

    /// Checks `payload`, received on the announce subject of `subject_service`, and applies
    /// it: what ingest does with each message.
    pub fn ingest(&mut self, subject_service: &str, payload: &[u8]) {
        self.store.ingest(subject_service, payload);
    }

    /// Moves the store's clock `ms` milliseconds on: a token may advance `seq` by about one
    /// per 5 ms of it (`herald_shared::pace`).
    pub fn advance_clock(&self, ms: u64) {
        self.views.clock.advance(ms);
    }

    /// Publishes the snapshot of every service that changed: what ingest does after each
    /// batch of messages.
    pub fn flush(&mut self) {
        self.store.flush();
    }

    /// The counters, as [`Subscriber::stats`](crate::Subscriber::stats) gives them.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// How many instances of `service` its published snapshot lists.
    pub fn listed(&self, service: &str) -> usize {
        self.views
            .with_snapshot(service, |snapshot, _| snapshot.instances.len())
            .unwrap_or(0)
    }
}

/// The merge decision for the commonest input: a token `(7, token_seq)` of a live, confirmed
/// instance last seen at `(7, live_seq)` one second ago, with the same identity; `registry`:
/// its registration (epoch 7) is known, as with etcd. Returns whether the token refreshes the
/// instance (a newer seq within the pace) rather than being dropped.
pub fn merge_refresh(registry: bool, live_seq: u64, token_seq: u64) -> bool {
    let facts = Facts {
        live: Some(Live {
            epoch: 7,
            seq: live_seq,
            confirmed: true,
            quiet_ms: 1_000,
            ttl_ms: 3_000,
            goodbye_ms: None,
        }),
        registration: registry.then_some(Registered { epoch: 7, lease: 1 }),
        ..Facts::default()
    };
    let mode = Mode {
        registry,
        allow_unregistered: false,
    };
    let input = Input::Token(TokenFacts {
        epoch: 7,
        seq: token_seq,
        leaving: false,
        matches_registration: true,
        matches_live: true,
    });
    merge::merge(mode, &facts, input).effect == Effect::Refresh
}
