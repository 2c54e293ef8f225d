//! One live instance as the subscriber knows it.
//!
//! The fields a token can change without changing the instance's identity (load, state,
//! seq, deadline) are atomics, so that a token which only refreshes an instance updates it in
//! place: no allocation, no cache write, no snapshot rebuild. Everything else is immutable; a
//! token that changes it (address, zone, weight, metadata, epoch) replaces the entry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

use herald_shared::{State, Token, TokenRef};

use crate::packed::AddrMeta;

/// The shared record behind an [`Instance`] handle.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) service: Arc<str>,
    pub(crate) id: Arc<str>,
    /// Hash of `id`, for rendezvous (affinity) picks.
    pub(crate) id_hash: u64,
    /// The address and the metadata, in one block.
    pub(crate) addr_meta: AddrMeta,
    /// Shared with the other instances of the service in the same zone.
    pub(crate) zone: Option<Arc<str>>,
    pub(crate) weight: u32,
    pub(crate) epoch: u64,
    load: AtomicU32,
    state: AtomicU8,
    pub(crate) seq: AtomicU64,
    pub(crate) ttl_ms: AtomicU32,
    /// Milliseconds since the store's clock origin after which the entry is expired.
    pub(crate) deadline: AtomicU64,
    /// When its last token was accepted (or it was listed), in milliseconds since the store's
    /// clock origin, wrapping every 49 days: how far its `seq` may have advanced since is
    /// measured from it. Not the deadline's start: a fresh TTL granted after our own
    /// reconnect is no token. Fits beside the other 32-bit fields, in no extra word.
    pub(crate) heard_ms: AtomicU32,
    /// A token of it was heard since the subscriber started; an entry known only from its
    /// etcd registration is unconfirmed.
    pub(crate) confirmed: AtomicBool,
    /// The number of the NATS connection its latest token came over (0: unknown), kept only
    /// when the subscriber follows disconnect advisories (`store::conns`).
    pub(crate) conn: AtomicU32,
    /// Fingerprint of the identity fields, so that a refresh compares one inline word
    /// instead of reading the strings from their separate heap blocks.
    identity: Fingerprint,
}

/// A 64-bit fingerprint of what makes a record besides its epoch (weight, address, zone,
/// metadata). Fx-style, eight bytes a step: cheap enough for every token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint(u64);

impl Fingerprint {
    /// The fingerprint of a token's identity fields.
    pub(crate) fn of(t: &TokenRef<'_>) -> Fingerprint {
        Fingerprint(identity(t))
    }
}

fn identity(t: &TokenRef<'_>) -> u64 {
    let mut h = Fx(0);
    h.word(u64::from(t.weight));
    h.str(t.addr);
    match t.zone {
        Some(z) => h.str(z),
        None => h.word(u64::MAX),
    }
    h.word(t.meta.len() as u64);
    for (k, v) in t.meta.iter() {
        h.str(k);
        h.str(v);
    }
    h.0
}

struct Fx(u64);

impl Fx {
    fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn str(&mut self, s: &str) {
        self.word(s.len() as u64);
        let mut chunks = s.as_bytes().chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.word(u64::from_le_bytes(tail));
    }
}

fn state_to_u8(s: State) -> u8 {
    match s {
        State::Up => 0,
        State::Draining => 1,
        State::Leaving => 2,
    }
}

/// A goodbye awaiting its registration's deletion: the entry reads as leaving, and keeps the
/// state its instance announced before (`GOODBYE_PENDING + that state`) in case the goodbye
/// proves false.
const GOODBYE_PENDING: u8 = 3;

fn state_from_u8(v: u8) -> State {
    match v {
        0 => State::Up,
        1 => State::Draining,
        _ => State::Leaving,
    }
}

impl Entry {
    pub(crate) fn new(
        service: Arc<str>,
        zone: Option<Arc<str>>,
        t: &TokenRef<'_>,
        deadline: u64,
    ) -> Entry {
        Entry {
            service,
            id: Arc::from(t.instance),
            id_hash: crate::hash::hash_str(t.instance),
            addr_meta: AddrMeta::new(t.addr, t.meta.iter()),
            zone,
            weight: t.weight,
            epoch: t.epoch,
            load: AtomicU32::new(t.load.to_bits()),
            state: AtomicU8::new(state_to_u8(t.state)),
            seq: AtomicU64::new(t.seq),
            ttl_ms: AtomicU32::new(t.ttl_ms),
            deadline: AtomicU64::new(deadline),
            heard_ms: AtomicU32::new(deadline.saturating_sub(u64::from(t.ttl_ms)) as u32),
            confirmed: AtomicBool::new(true),
            conn: AtomicU32::new(0),
            identity: Fingerprint::of(t),
        }
    }

    /// A new record with `record`'s identity (TTL included) and epoch, keeping `live`'s live
    /// fields (load, state, seq, deadline, confirmation): a registration rewritten under the
    /// same lease, or an instance listed unregistered that registered.
    pub(crate) fn with_live_of(record: &Entry, live: &Entry) -> Entry {
        let mut e = live.with_epoch(record.epoch);
        e.ttl_ms = AtomicU32::new(record.ttl_ms.load(Relaxed));
        e.addr_meta = record.addr_meta.clone();
        e.zone = record.zone.clone();
        e.weight = record.weight;
        e.identity = record.identity;
        e
    }

    /// A copy under another epoch, keeping the live fields (load, state, seq, deadline).
    pub(crate) fn with_epoch(&self, epoch: u64) -> Entry {
        Entry {
            service: self.service.clone(),
            id: self.id.clone(),
            id_hash: self.id_hash,
            addr_meta: self.addr_meta.clone(),
            zone: self.zone.clone(),
            weight: self.weight,
            epoch,
            load: AtomicU32::new(self.load.load(Relaxed)),
            state: AtomicU8::new(self.state.load(Relaxed)),
            seq: AtomicU64::new(self.seq.load(Relaxed)),
            ttl_ms: AtomicU32::new(self.ttl_ms.load(Relaxed)),
            deadline: AtomicU64::new(self.deadline.load(Relaxed)),
            heard_ms: AtomicU32::new(self.heard_ms.load(Relaxed)),
            confirmed: AtomicBool::new(self.confirmed.load(Relaxed)),
            conn: AtomicU32::new(self.conn.load(Relaxed)),
            identity: self.identity,
        }
    }

    /// Whether the token describes the same identity fields, by fingerprint (bus mode: a
    /// change of record, not a security boundary).
    pub(crate) fn same_fingerprint(&self, fingerprint: Fingerprint) -> bool {
        self.identity == fingerprint
    }

    /// Whether the token's identity fields and TTL equal this record's, compared exactly
    /// (registry mode: what a publisher on the bus must not be able to change).
    pub(crate) fn same_identity_exact(&self, t: &TokenRef<'_>, fingerprint: Fingerprint) -> bool {
        self.identity == fingerprint
            && self.ttl_ms.load(Relaxed) == t.ttl_ms
            && self.weight == t.weight
            && self.zone.as_deref() == t.zone
            && self.addr_meta.equals(t.addr, t.meta.iter())
    }

    pub(crate) fn is_confirmed(&self) -> bool {
        self.confirmed.load(Relaxed)
    }

    pub(crate) fn load(&self) -> f32 {
        f32::from_bits(self.load.load(Relaxed))
    }

    pub(crate) fn set_load(&self, load: f32) {
        self.load.store(load.to_bits(), Relaxed);
    }

    pub(crate) fn state(&self) -> State {
        state_from_u8(self.state.load(Relaxed))
    }

    /// Sets the state its instance announced; a pending goodbye is forgotten.
    pub(crate) fn set_state(&self, s: State) {
        self.state.store(state_to_u8(s), Relaxed);
    }

    /// A goodbye of a registered instance arrived: it reads as leaving until its deletion
    /// removes it, or a token of its run refutes the goodbye.
    pub(crate) fn await_deletion(&self) {
        let now = self.state.load(Relaxed);
        if now < GOODBYE_PENDING {
            self.state.store(GOODBYE_PENDING + now, Relaxed);
        }
    }

    /// Whether a goodbye of it awaits its registration's deletion.
    pub(crate) fn goodbye_pending(&self) -> bool {
        self.state.load(Relaxed) >= GOODBYE_PENDING
    }

    /// The state its instance announced last, not counting a pending goodbye: what a
    /// heartbeat, which carries no state, goes on saying.
    pub(crate) fn announced_state(&self) -> State {
        let v = self.state.load(Relaxed);
        state_from_u8(v.checked_sub(GOODBYE_PENDING).unwrap_or(v))
    }
}

/// A live instance: a cheap, clonable handle.
///
/// Identity fields are fixed for the life of the handle. [`Instance::load`] and
/// [`Instance::state`] read the latest values the subscriber accepted, so a handle kept from
/// an earlier snapshot still sees current load.
#[derive(Clone)]
pub struct Instance(pub(crate) Arc<Entry>);

impl Instance {
    /// Builds an instance from a token, outside any subscriber: for testing pick strategies
    /// and for tools that decode tokens themselves.
    ///
    /// ```
    /// use herald_shared::Token;
    /// use herald_subscriber::Instance;
    ///
    /// let mut token = Token::new("billing", "b-1", "10.0.0.7:8080");
    /// token.load = 0.5;
    /// let instance = Instance::from_token(&token);
    /// assert_eq!(instance.load(), 0.5);
    /// ```
    pub fn from_token(token: &Token) -> Instance {
        let t = token.as_ref();
        Instance(Arc::new(Entry::new(
            Arc::from(t.service),
            t.zone.map(Arc::from),
            &t,
            u64::MAX,
        )))
    }

    /// Service name.
    pub fn service(&self) -> &str {
        &self.0.service
    }

    /// Instance id.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// Address as announced (`host:port`).
    pub fn addr(&self) -> &str {
        self.0.addr_meta.addr()
    }

    /// The address as a socket address, when the host is an IP literal (parsed on each
    /// call: a few tens of nanoseconds, rather than 32 bytes in every record).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.addr().parse().ok()
    }

    /// Zone, when announced.
    pub fn zone(&self) -> Option<&str> {
        self.0.zone.as_deref()
    }

    /// Relative weight.
    pub fn weight(&self) -> u32 {
        self.0.weight
    }

    /// Metadata entries in wire order.
    pub fn meta(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.addr_meta.meta()
    }

    /// One metadata value.
    pub fn meta_get(&self, key: &str) -> Option<&str> {
        self.meta().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// etcd epoch of the registration (0 when not registered).
    pub fn epoch(&self) -> u64 {
        self.0.epoch
    }

    /// Latest accepted load.
    pub fn load(&self) -> f32 {
        self.0.load()
    }

    /// Latest accepted state. With etcd, an instance that said goodbye reads as `Leaving`
    /// (and is no longer picked) until the deletion of its registration removes it, a
    /// millisecond or two later; should a later token of it refute the goodbye, its state is
    /// what it announces again.
    pub fn state(&self) -> State {
        self.0.state()
    }

    /// Whether picks may choose this instance (it is `up`).
    pub fn is_available(&self) -> bool {
        self.0.state() == State::Up
    }

    /// Whether a token of this instance was heard since the subscriber started. An instance
    /// known only from its etcd registration is unconfirmed: listed, picked only when no
    /// confirmed instance is available, and removed when no token arrives within its TTL.
    pub fn is_confirmed(&self) -> bool {
        self.0.is_confirmed()
    }

    /// Latest accepted `seq`.
    pub fn seq(&self) -> u64 {
        self.0.seq.load(Relaxed)
    }

    /// Whether two handles denote the same record (same incarnation and identity fields).
    pub fn same_record(&self, other: &Instance) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("service", &self.service())
            .field("id", &self.id())
            .field("addr", &self.addr())
            .field("load", &self.load())
            .field("state", &self.state())
            .field("zone", &self.zone())
            .field("weight", &self.weight())
            .field("epoch", &self.epoch())
            .field("confirmed", &self.is_confirmed())
            .finish()
    }
}
