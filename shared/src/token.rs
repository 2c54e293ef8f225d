//! The discovery token, version 1: what one announcement of one instance says.
//!
//! [`Token`] owns its strings and is what announcers build and encode. [`TokenRef`] borrows
//! them from a received payload, so the subscriber's hot path decodes and validates a token
//! without allocating. Both describe the same MessagePack map (see [`crate::codec`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The token format version this crate writes.
pub const TOKEN_VERSION: u8 = 1;

/// The weight of an instance that does not set one.
pub const DEFAULT_WEIGHT: u32 = 100;

/// Lifecycle state an instance announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Serving; eligible for picks.
    #[default]
    Up,
    /// Still listed, but consumers stop picking it (a rolling restart is under way).
    Draining,
    /// Gone: the last token of a graceful stop. Subscribers remove the instance at once.
    Leaving,
}

impl State {
    /// The wire name: `up`, `draining` or `leaving`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Draining => "draining",
            State::Leaving => "leaving",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

fn default_version() -> u8 {
    TOKEN_VERSION
}

/// One announcement of one instance, owning its fields.
///
/// # Examples
///
/// ```
/// use herald_shared::{Token, codec};
///
/// let token = Token::new("billing", "billing-1", "10.0.0.7:8080");
/// let bytes = codec::encode(&token).unwrap();
/// let back = codec::decode(&bytes).unwrap().to_owned();
/// assert_eq!(back, token);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    /// Format version ([`TOKEN_VERSION`] when written by this crate).
    #[serde(default = "default_version")]
    pub v: u8,
    /// Service name, `[A-Za-z0-9_-]{1,64}`.
    pub service: String,
    /// Instance id, unique within the service, `[A-Za-z0-9_.:-]{1,128}`.
    pub instance: String,
    /// Where the instance serves, `host:port`.
    pub addr: String,
    /// Current load, finite and `>= 0` (utilisation or in-flight requests, as the service says).
    pub load: f32,
    /// Relative weight for weighted picks.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Zone or rack, for zone-preferring picks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Lifecycle state.
    #[serde(default)]
    pub state: State,
    /// Free-form metadata (at most 32 entries, keys up to 64 B, values up to 256 B).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// etcd revision of the current registration; `0` when not registered.
    #[serde(default)]
    pub epoch: u64,
    /// Sequence number: start time in microseconds, plus one per token.
    pub seq: u64,
    /// How long a subscriber keeps the instance without a newer token, in milliseconds.
    pub ttl_ms: u32,
    /// Sender's wall clock at send time, in Unix milliseconds (informational only).
    #[serde(default)]
    pub sent_at_ms: u64,
    /// The NATS connection that carries the token, `{server_id}/{client_id}` from the
    /// server's INFO; it changes after a reconnect. A subscriber that follows disconnect
    /// advisories removes the instance when this connection closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
}

/// The name of a NATS connection as tokens' `conn` and disconnect advisories give it:
/// `{server_id}/{client_id}`.
///
/// ```
/// assert_eq!(herald_shared::token::connection_name("NSRV", 42), "NSRV/42");
/// ```
pub fn connection_name(server_id: &str, client_id: u64) -> String {
    format!("{server_id}/{client_id}")
}

impl Token {
    /// A token for an `up` instance with default weight, no zone or metadata, epoch 0, and a
    /// 3 s TTL. Fields are public; set the rest directly.
    pub fn new(
        service: impl Into<String>,
        instance: impl Into<String>,
        addr: impl Into<String>,
    ) -> Self {
        Token {
            v: TOKEN_VERSION,
            service: service.into(),
            instance: instance.into(),
            addr: addr.into(),
            load: 0.0,
            weight: DEFAULT_WEIGHT,
            zone: None,
            state: State::Up,
            meta: BTreeMap::new(),
            epoch: 0,
            seq: 1,
            ttl_ms: 3_000,
            sent_at_ms: 0,
            conn: None,
        }
    }

    /// A borrowed view of this token, for validation.
    pub fn as_ref(&self) -> TokenRef<'_> {
        let mut meta = MetaRef::default();
        for (k, v) in &self.meta {
            meta.push(k, v);
        }
        TokenRef {
            v: self.v,
            service: &self.service,
            instance: &self.instance,
            addr: &self.addr,
            load: self.load,
            weight: self.weight,
            zone: self.zone.as_deref(),
            state: self.state,
            meta,
            epoch: self.epoch,
            seq: self.seq,
            ttl_ms: self.ttl_ms,
            sent_at_ms: self.sent_at_ms,
            conn: self.conn.as_deref(),
        }
    }
}

/// A token whose strings borrow from the received payload: decoding one does not allocate.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRef<'a> {
    /// See [`Token::v`].
    pub v: u8,
    /// See [`Token::service`].
    pub service: &'a str,
    /// See [`Token::instance`].
    pub instance: &'a str,
    /// See [`Token::addr`].
    pub addr: &'a str,
    /// See [`Token::load`].
    pub load: f32,
    /// See [`Token::weight`].
    pub weight: u32,
    /// See [`Token::zone`].
    pub zone: Option<&'a str>,
    /// See [`Token::state`].
    pub state: State,
    /// See [`Token::meta`].
    pub meta: MetaRef<'a>,
    /// See [`Token::epoch`].
    pub epoch: u64,
    /// See [`Token::seq`].
    pub seq: u64,
    /// See [`Token::ttl_ms`].
    pub ttl_ms: u32,
    /// See [`Token::sent_at_ms`].
    pub sent_at_ms: u64,
    /// See [`Token::conn`].
    pub conn: Option<&'a str>,
}

impl TokenRef<'_> {
    /// Copies the borrowed fields into an owned [`Token`].
    pub fn to_owned(&self) -> Token {
        Token {
            v: self.v,
            service: self.service.to_owned(),
            instance: self.instance.to_owned(),
            addr: self.addr.to_owned(),
            load: self.load,
            weight: self.weight,
            zone: self.zone.map(str::to_owned),
            state: self.state,
            meta: self
                .meta
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            epoch: self.epoch,
            seq: self.seq,
            ttl_ms: self.ttl_ms,
            sent_at_ms: self.sent_at_ms,
            conn: self.conn.map(str::to_owned),
        }
    }
}

/// A compact token: what a periodic token says when nothing changed but freshness and load.
///
/// On the wire it is the token map with only `instance`, `epoch`, `seq` and `load` (the
/// service is the subject's): about a third of a full token. An announcer sends full tokens
/// at start, on every change, after a reconnect, in answer to a probe and every Nth token;
/// between them, heartbeats. A subscriber applies one only to the live instance of that
/// epoch, as the full token it already holds with a new `seq` and load; for an instance it
/// does not know, it probes the service. A reader older than heartbeats finds no `service`
/// and refuses the map as malformed: it counts it and keeps the instance by the full tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heartbeat<'a> {
    /// See [`Token::instance`].
    pub instance: &'a str,
    /// See [`Token::epoch`].
    pub epoch: u64,
    /// See [`Token::seq`].
    pub seq: u64,
    /// See [`Token::load`].
    pub load: f32,
}

/// Most metadata entries a valid token carries.
pub const MAX_META_ENTRIES: usize = 32;

/// Entries of [`MetaRef`] kept inline; more spill to the heap.
const INLINE_META: usize = 4;

/// Borrowed metadata: the first entries inline (most tokens carry a few, and decoding them
/// allocates nothing), the rest, up to [`MAX_META_ENTRIES`], in a spill vector; and the number
/// of entries the payload really had, so that validation can reject a larger map.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct MetaRef<'a> {
    inline: [(&'a str, &'a str); INLINE_META],
    /// Entries past the inline ones (at most `MAX_META_ENTRIES - INLINE_META`).
    spill: Vec<(&'a str, &'a str)>,
    total: usize,
}

impl<'a> MetaRef<'a> {
    /// Adds an entry; past [`MAX_META_ENTRIES`] it is only counted.
    pub fn push(&mut self, key: &'a str, value: &'a str) {
        if self.total < INLINE_META {
            self.inline[self.total] = (key, value);
        } else if self.total < MAX_META_ENTRIES {
            self.spill.push((key, value));
        }
        self.total += 1;
    }

    /// The entries kept, in payload order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + Clone + '_ {
        let kept = self.total.min(MAX_META_ENTRIES);
        (0..kept).map(move |i| match i.checked_sub(INLINE_META) {
            None => self.inline[i],
            Some(j) => self.spill[j],
        })
    }

    /// Number of entries the payload carried (may exceed what was kept).
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the payload carried no entries.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl fmt::Debug for MetaRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}
