//! The store against a reference model written from DESIGN.md alone.
//!
//! Random interleavings of tokens (current, stale, ahead, unregistered, spoofed; full or
//! heartbeats), etcd PUTs
//! and DELETEs, passing time and cluster changes go to the real store and to the model; after
//! every step both must list the same instances and have emitted the same events, and have
//! counted the same drops.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use herald_shared::pace::max_seq_advance;
use herald_shared::{State, Token, codec};
use proptest::prelude::*;
use tokio::sync::broadcast;

use super::*;
use crate::etcd_sync::{Listing, Registration};
use crate::event::RemovalCause;
use crate::stats::Stats;
use crate::view::Clock;

const TTL: u32 = 60_000;
/// Another TTL, for tokens that change it.
const OTHER_TTL: u32 = 120_000;
const HOLD: u64 = super::held::HOLD_FOR_MS;

#[derive(Debug, Clone, Copy)]
enum EpochPick {
    Current,
    Previous,
    Next,
    Zero,
    Huge,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Token {
        inst: u8,
        epoch: EpochPick,
        /// 0 replays the last seq sent.
        step: u8,
        /// A forged `seq` instead of the run's: 1 far ahead (+5000), 2 the largest, 3 behind.
        forged: u8,
        leaving: bool,
        spoofed_addr: bool,
        other_ttl: bool,
        load: u8,
        /// Sent as a heartbeat: only `instance`, `epoch`, `seq` and `load`.
        heartbeat: bool,
    },
    Put {
        inst: u8,
        lease: i64,
        spoofed_addr: bool,
    },
    Delete {
        inst: u8,
    },
    Advance {
        ms: u64,
    },
    ClusterChange,
}

fn op(registry: bool) -> impl Strategy<Value = Op> {
    let epoch = prop_oneof![
        4 => Just(EpochPick::Current),
        1 => Just(EpochPick::Previous),
        1 => Just(EpochPick::Next),
        1 => Just(EpochPick::Zero),
        1 => Just(EpochPick::Huge),
    ];
    let forged = prop_oneof![12 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)];
    let token = (
        0..3u8,
        epoch,
        0..3u8,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_flat_map(move |(inst, epoch, step, leaving, spoofed_addr)| {
            (
                prop::bool::weighted(0.05),
                0..2u8,
                forged.clone(),
                prop::bool::weighted(0.2),
            )
                .prop_map(move |(other_ttl, load, forged, heartbeat)| Op::Token {
                    inst,
                    epoch,
                    step,
                    forged,
                    leaving,
                    spoofed_addr,
                    other_ttl,
                    load,
                    heartbeat,
                })
        });
    let time = prop_oneof![
        Just(0u64),
        Just(400),
        Just(HOLD - 1),
        Just(HOLD),
        Just(u64::from(TTL) / 2),
        Just(u64::from(TTL) - 1),
        Just(u64::from(TTL) + 1),
        Just(u64::from(OTHER_TTL) + 1),
    ]
    .prop_map(|ms| Op::Advance { ms });
    if registry {
        prop_oneof![
            6 => token,
            3 => (0..3u8, 1..3i64, prop::bool::weighted(0.1))
                .prop_map(|(inst, lease, spoofed_addr)| Op::Put { inst, lease, spoofed_addr }),
            1 => (0..3u8).prop_map(|inst| Op::Delete { inst }),
            2 => time,
            1 => Just(Op::ClusterChange),
        ]
        .boxed()
    } else {
        prop_oneof![6 => token, 2 => time].boxed()
    }
}

fn addr(inst: u8, spoofed: bool) -> String {
    if spoofed {
        "7.7.7.7:77".into()
    } else {
        format!("10.0.0.{inst}:80")
    }
}

/// What etcd holds, as the test drives it.
#[derive(Default)]
struct Etcd {
    revision: u64,
    keys: HashMap<u8, (u64, i64, bool)>,
    past: HashMap<u8, u64>,
}

// ---- the reference model ----------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
struct MEntry {
    epoch: u64,
    seq: u64,
    addr_spoofed: bool,
    ttl: u32,
    deadline: u64,
    confirmed: bool,
    load: u8,
    /// A goodbye awaits the deletion of its registration.
    leaving: bool,
    /// When its last token was accepted, or it was listed.
    heard: u64,
}

#[derive(Debug, Clone, Copy)]
struct MToken {
    epoch: u64,
    seq: u64,
    leaving: bool,
    addr_spoofed: bool,
    ttl: u32,
    load: u8,
}

#[derive(Debug, Default)]
struct MKey {
    live: Option<MEntry>,
    /// (epoch, lease, spoofed address, ttl)
    reg: Option<(u64, i64, bool)>,
    /// (epoch, seq, fence)
    tomb: Option<(u64, u64, bool)>,
    /// When the tombstone stops holding: the TTL of the token that left or expired, or
    /// ten minutes for a deletion's fence.
    tomb_until: u64,
    held: Option<(MToken, u64)>,
    retired: Option<u64>,
}

type MEvent = (char, u8, &'static str);

struct Model {
    registry: bool,
    allowed: bool,
    now: u64,
    keys: BTreeMap<u8, MKey>,
    events: Vec<MEvent>,
    drops: BTreeMap<&'static str, u64>,
    rebased: u64,
    refuted: u64,
}

impl MKey {
    /// The tombstone, while it holds.
    fn tomb(&self, now: u64) -> Option<(u64, u64, bool)> {
        self.tomb.filter(|_| self.tomb_until > now)
    }

    fn bury(&mut self, tomb: (u64, u64, bool), until: u64) {
        self.tomb = Some(tomb);
        self.tomb_until = until;
    }
}

/// How long a deletion's fence holds.
const FENCE_MS: u64 = 600_000;

impl Model {
    fn drop(&mut self, why: &'static str) {
        *self.drops.entry(why).or_default() += 1;
    }

    /// "e < E: stale; e == E and s <= S: duplicate" against the live entry, else the
    /// tombstone (a deletion's tombstone fences its whole epoch).
    fn older_than_known(k: &MKey, e: u64, s: u64, now: u64) -> Option<&'static str> {
        let (ke, ks, fence) = match (k.live, k.tomb(now)) {
            (Some(l), _) => (l.epoch, l.seq, false),
            (None, Some(t)) => t,
            (None, None) => return None,
        };
        if e < ke || (e == ke && fence) {
            Some("stale")
        } else if e == ke && s <= ks {
            Some("duplicate")
        } else {
            None
        }
    }

    /// A heartbeat: the listed entry's full token of its epoch again, with a new `seq` and
    /// load; for any other key nothing (its service is probed).
    fn heartbeat(&mut self, i: u8, epoch: u64, seq: u64, load: u8) {
        let Some(e) = self
            .keys
            .get(&i)
            .and_then(|k| k.live)
            .filter(|e| e.epoch == epoch)
        else {
            return;
        };
        self.token(
            i,
            MToken {
                epoch,
                seq,
                leaving: false,
                addr_spoofed: e.addr_spoofed,
                ttl: e.ttl,
                load,
            },
        );
    }

    fn token(&mut self, i: u8, t: MToken) {
        let k = self.keys.entry(i).or_default();
        if !self.registry {
            return self.bus(i, t, true);
        }
        if let Some((re, _, spoof)) = k.reg {
            if t.epoch == re {
                if spoof != t.addr_spoofed || t.ttl != TTL {
                    return self.drop("identity");
                }
                return self.bus(i, t, false);
            }
            if t.epoch == 0 {
                return self.drop("unregistered");
            }
            if t.epoch < re {
                return self.drop("stale");
            }
            return self.hold(i, t);
        }
        let grandfathered =
            t.epoch > 0 && k.retired == Some(t.epoch) && k.live.is_some_and(|l| l.epoch == 0);
        if grandfathered {
            // Bound to the identity the old registration gave it.
            if k.live.is_some_and(|l| l.addr_spoofed != t.addr_spoofed) {
                return self.drop("identity");
            }
            return self.bus(i, MToken { epoch: 0, ..t }, false);
        }
        if t.epoch == 0 {
            if self.allowed {
                return self.bus(i, t, true);
            }
            return self.drop("unregistered");
        }
        self.hold(i, t)
    }

    fn hold(&mut self, i: u8, t: MToken) {
        let k = self.keys.get_mut(&i).unwrap();
        if k.live.is_none()
            && let Some(why) = Self::older_than_known(k, t.epoch, t.seq, self.now)
        {
            return self.drop(why);
        }
        if let Some((h, _)) = k.held {
            if t.epoch < h.epoch || (t.epoch == h.epoch && t.seq <= h.seq) {
                return self.drop("duplicate");
            }
            k.held = Some((t, self.now + HOLD));
            return self.drop("duplicate");
        }
        k.held = Some((t, self.now + HOLD));
    }

    /// The bus rules; `may_replace`: a token may change the record (bus mode, or an
    /// unregistered instance when allowed).
    fn bus(&mut self, i: u8, t: MToken, may_replace: bool) {
        let now = self.now;
        let k = self.keys.get_mut(&i).unwrap();
        let quiet_ms = |l: MEntry| now - l.heard;
        let quiet =
            |l: MEntry| quiet_ms(l) >= u64::from(l.ttl) / 2 || (l.leaving && quiet_ms(l) >= 500);
        match k.live {
            // "A run advances by at most the pace since its last token; after half a TTL of
            // quiet (or a goodbye 500 ms without its deletion) any token re-bases it."
            Some(l) if l.epoch == t.epoch => {
                let newer = t.seq > l.seq;
                let continues =
                    newer && (!l.confirmed || t.seq - l.seq <= max_seq_advance(quiet_ms(l)));
                if !continues && !quiet(l) {
                    return self.drop(if newer { "seq_jump" } else { "duplicate" });
                }
                if !continues {
                    self.rebased += 1;
                }
                if l.leaving && !t.leaving {
                    self.refuted += 1;
                }
            }
            // "Without etcd, an older epoch re-bases a quiet entry too."
            Some(l) if !self.registry && t.epoch < l.epoch && quiet(l) => {
                self.rebased += 1;
                if l.leaving && !t.leaving {
                    self.refuted += 1;
                }
            }
            _ => {
                if let Some(why) = Self::older_than_known(k, t.epoch, t.seq, now) {
                    return self.drop(why);
                }
            }
        }
        let k = self.keys.get_mut(&i).unwrap();
        if t.leaving
            && k.reg.is_some()
            && let Some(l) = k.live
        {
            // "A goodbye of a registered instance stops picks; its deletion removes it."
            let changed = !l.leaving || l.load != t.load || !l.confirmed;
            k.live = Some(MEntry {
                seq: t.seq,
                ttl: t.ttl,
                deadline: now + u64::from(t.ttl),
                confirmed: true,
                load: t.load,
                leaving: true,
                heard: now,
                ..l
            });
            if changed {
                self.events.push(('~', i, ""));
            }
            return;
        }
        if t.leaving {
            k.bury((t.epoch, t.seq, false), now + u64::from(t.ttl));
            if k.live.take().is_some() {
                self.events.push(('-', i, "goodbye"));
            } else {
                self.drop("goodbye_unknown");
            }
            return;
        }
        let fresh = MEntry {
            epoch: t.epoch,
            seq: t.seq,
            addr_spoofed: t.addr_spoofed,
            ttl: t.ttl,
            deadline: now + u64::from(t.ttl),
            confirmed: true,
            load: t.load,
            leaving: false,
            heard: now,
        };
        match k.live {
            None => {
                k.live = Some(fresh);
                self.events.push(('+', i, ""));
            }
            Some(l) if l.epoch == t.epoch && l.addr_spoofed == t.addr_spoofed => {
                let changed = l.load != t.load || !l.confirmed || l.leaving;
                k.live = Some(MEntry {
                    addr_spoofed: l.addr_spoofed,
                    ..fresh
                });
                if changed {
                    self.events.push(('~', i, ""));
                }
            }
            Some(_) => {
                assert!(may_replace, "the registry rules never replace from a token");
                k.live = Some(fresh);
                self.events.push(('~', i, ""));
            }
        }
    }

    fn put(&mut self, i: u8, revision: u64, lease: i64, spoofed: bool) {
        let now = self.now;
        let k = self.keys.entry(i).or_default();
        let seen = k.reg.is_some_and(|r| r.0 >= revision)
            || k.live.is_some_and(|l| l.epoch >= revision)
            || (k.live.is_none() && k.tomb(now).is_some_and(|t| t.0 >= revision));
        if seen {
            return;
        }
        let unconfirmed = MEntry {
            epoch: revision,
            seq: 0,
            addr_spoofed: spoofed,
            ttl: TTL,
            deadline: now + u64::from(TTL),
            confirmed: false,
            load: 0,
            leaving: false,
            heard: now,
        };
        match k.live {
            None => {
                k.live = Some(unconfirmed);
                self.events.push(('+', i, ""));
            }
            Some(l) if k.reg.is_some_and(|r| r.1 != lease) && l.epoch > 0 => {
                k.live = Some(unconfirmed);
                self.events.push(('-', i, "fenced"));
                self.events.push(('+', i, ""));
            }
            Some(l) => {
                // The registration gives the identity, its TTL included (a token of this
                // epoch with another TTL is refused): a later tombstone holds for it. The
                // deadline the last token set stays.
                k.live = Some(MEntry {
                    epoch: revision,
                    addr_spoofed: spoofed,
                    ttl: TTL,
                    ..l
                });
                self.events.push(('~', i, ""));
            }
        }
        k.reg = Some((revision, lease, spoofed));
        k.retired = None;
        match k.held {
            Some((h, _)) if h.epoch == revision => {
                k.held = None;
                self.token(i, h);
            }
            Some((h, _)) if h.epoch < revision => {
                k.held = None;
                self.drop("stale");
            }
            _ => {}
        }
    }

    fn delete(&mut self, i: u8, revision: u64) {
        let now = self.now;
        let k = self.keys.entry(i).or_default();
        if k.reg.is_some_and(|r| r.0 >= revision) || k.live.is_some_and(|l| l.epoch >= revision) {
            return;
        }
        match k.live.take() {
            Some(l) if l.leaving => self.events.push(('-', i, "goodbye")),
            Some(_) => self.events.push(('-', i, "deregistered")),
            None => {}
        }
        k.reg = None;
        let fence = revision - 1;
        if !k
            .tomb(now)
            .is_some_and(|t| t.0 > fence || (t.0 == fence && t.2))
        {
            k.bury((fence, u64::MAX, true), now + FENCE_MS);
        }
        if k.held.is_some_and(|(h, _)| h.epoch < revision) {
            k.held = None;
            self.drop("stale");
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        let now = self.now;
        let mut expired = Vec::new();
        let mut timed_out = 0;
        for (i, k) in &mut self.keys {
            if let Some(l) = k.live
                && l.deadline <= now
            {
                k.live = None;
                k.bury((l.epoch, l.seq, false), now + u64::from(l.ttl));
                // "A TTL of silence after a goodbye agrees with it."
                expired.push((*i, if l.leaving { "goodbye" } else { "expired" }));
            }
            if k.held.is_some_and(|(_, until)| until <= now) {
                k.held = None;
                timed_out += 1;
            }
        }
        for (i, cause) in expired {
            self.events.push(('-', i, cause));
        }
        for _ in 0..timed_out {
            self.drop("unregistered");
        }
    }

    fn cluster_change(&mut self) {
        for (i, k) in &mut self.keys {
            k.reg = None;
            k.tomb = None;
            match k.live {
                Some(l) if l.epoch > 0 => {
                    k.retired = Some(l.epoch);
                    k.live = Some(MEntry { epoch: 0, ..l });
                    self.events.push(('~', *i, ""));
                }
                Some(_) => {}
                None => k.retired = None,
            }
        }
    }

    fn visible(&self) -> Vec<(u8, u64, bool, bool, u8, bool)> {
        self.keys
            .iter()
            .filter_map(|(i, k)| {
                k.live
                    .map(|l| (*i, l.epoch, l.addr_spoofed, l.confirmed, l.load, l.leaving))
            })
            .collect()
    }
}

// ---- driving the real store --------------------------------------------------------------

fn inst_of(id: &str) -> u8 {
    id.trim_start_matches('i').parse().unwrap()
}

fn store_visible(s: &Store) -> Vec<(u8, u64, bool, bool, u8, bool)> {
    let mut v: Vec<_> = s
        .services
        .get("svc")
        .map(|svc| {
            svc.sorted
                .iter()
                .map(|i| {
                    (
                        inst_of(i.id()),
                        i.epoch(),
                        i.addr() == "7.7.7.7:77",
                        i.is_confirmed(),
                        i.load() as u8,
                        i.state() == State::Leaving,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn store_events(rx: &mut broadcast::Receiver<Event>) -> Vec<MEvent> {
    let mut v = Vec::new();
    while let Ok(e) = rx.try_recv() {
        v.push(match e {
            Event::Added(i) => ('+', inst_of(i.id()), ""),
            Event::Updated(i) => ('~', inst_of(i.id()), ""),
            Event::Removed { instance, cause } => (
                '-',
                inst_of(instance.id()),
                match cause {
                    RemovalCause::Expired => "expired",
                    RemovalCause::Goodbye => "goodbye",
                    RemovalCause::Deregistered => "deregistered",
                    RemovalCause::Fenced => "fenced",
                    RemovalCause::Disconnected => "disconnected",
                },
            ),
            Event::Lagged { .. } => unreachable!("the channel is large enough"),
        });
    }
    v
}

fn store_drops(s: &Stats) -> BTreeMap<&'static str, u64> {
    [
        ("stale", s.stale_epoch_drops),
        ("duplicate", s.duplicate_drops),
        ("seq_jump", s.seq_jump_drops),
        ("goodbye_unknown", s.goodbye_unknown_drops),
        ("unregistered", s.unregistered_drops),
        ("identity", s.identity_mismatch_drops),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect()
}

fn run(mode: Mode, ops: &[Op]) -> Result<(), TestCaseError> {
    let clock = Arc::new(Clock::manual());
    let views = Arc::new(Views::new(clock.clone()));
    let counters = Arc::new(Counters::default());
    let (tx, mut rx) = broadcast::channel(4096);
    let mut store = Store::new(mode, views, counters.clone(), tx);
    let mut model = Model {
        registry: mode.registry,
        allowed: mode.allow_unregistered,
        now: 0,
        keys: BTreeMap::new(),
        events: Vec::new(),
        drops: BTreeMap::new(),
        rebased: 0,
        refuted: 0,
    };
    let mut etcd = Etcd::default();
    let mut seqs: HashMap<u8, u64> = HashMap::new();
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Token {
                inst,
                epoch,
                step,
                forged,
                leaving,
                spoofed_addr,
                other_ttl,
                load,
                heartbeat,
            } => {
                let current = etcd.keys.get(&inst).map_or(0, |k| k.0);
                let epoch = match epoch {
                    EpochPick::Current => current,
                    EpochPick::Previous => etcd.past.get(&inst).copied().unwrap_or(0),
                    EpochPick::Next => etcd.revision + 1,
                    EpochPick::Zero => 0,
                    EpochPick::Huge => 1_000_000_000_000,
                };
                let last = seqs.entry(inst).or_insert(1_000);
                *last += u64::from(step);
                let seq = match forged {
                    0 => *last,
                    1 => *last + 5_000,
                    2 => u64::MAX,
                    _ => *last - 50,
                };
                let ttl = if other_ttl { OTHER_TTL } else { TTL };
                let mut t = Token::new("svc", format!("i{inst}"), addr(inst, spoofed_addr));
                t.epoch = epoch;
                t.seq = seq;
                t.ttl_ms = ttl;
                t.load = f32::from(load);
                if heartbeat {
                    store.ingest("svc", &codec::encode_heartbeat(&t).unwrap());
                    model.heartbeat(inst, epoch, seq, load);
                } else {
                    if leaving {
                        t.state = State::Leaving;
                    }
                    store.apply(&t.as_ref());
                    model.token(
                        inst,
                        MToken {
                            epoch,
                            seq,
                            leaving,
                            addr_spoofed: spoofed_addr,
                            ttl,
                            load,
                        },
                    );
                }
            }
            Op::Put {
                inst,
                lease,
                spoofed_addr,
            } => {
                etcd.revision += 1;
                if let Some(old) = etcd.keys.insert(inst, (etcd.revision, lease, spoofed_addr)) {
                    etcd.past.insert(inst, old.0);
                }
                let mut t = Token::new("svc", format!("i{inst}"), addr(inst, spoofed_addr));
                t.ttl_ms = TTL;
                store.register(&Registration {
                    service: "svc".into(),
                    instance: format!("i{inst}"),
                    value: codec::encode(&t).unwrap(),
                    revision: etcd.revision,
                    lease,
                });
                model.put(inst, etcd.revision, lease, spoofed_addr);
            }
            Op::Delete { inst } => {
                if let Some(old) = etcd.keys.remove(&inst) {
                    etcd.revision += 1;
                    etcd.past.insert(inst, old.0);
                    store.deregister("svc", &format!("i{inst}"), etcd.revision);
                    model.delete(inst, etcd.revision);
                }
            }
            Op::Advance { ms } => {
                clock.advance(ms);
                store.sweep();
                model.advance(ms);
            }
            Op::ClusterChange => {
                // A new cluster: no keys, revisions start again.
                etcd = Etcd::default();
                store.forget_epochs(None);
                store.reconcile(&Listing {
                    cluster_id: 2,
                    revision: 1,
                    scope: None,
                    registrations: Vec::new(),
                });
                model.cluster_change();
            }
        }
        store.flush();
        let mut got = store_events(&mut rx);
        let mut want = std::mem::take(&mut model.events);
        got.sort();
        want.sort();
        prop_assert_eq!(got, want, "events after step {} ({:?})", step, op);
        prop_assert_eq!(
            store_visible(&store),
            model.visible(),
            "view after step {} ({:?})",
            step,
            op
        );
        let stats = counters.snapshot();
        prop_assert_eq!(
            store_drops(&stats),
            model.drops.clone(),
            "drops after step {} ({:?})",
            step,
            op
        );
        prop_assert_eq!(
            (stats.rebased, stats.refuted_goodbyes),
            (model.rebased, model.refuted),
            "re-based runs and refuted goodbyes after step {} ({:?})",
            step,
            op
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn bus_mode_matches_the_model(ops in prop::collection::vec(op(false), 1..40)) {
        run(Mode::BUS, &ops)?;
    }

    #[test]
    fn registry_mode_matches_the_model(ops in prop::collection::vec(op(true), 1..60)) {
        run(Mode { registry: true, allow_unregistered: false }, &ops)?;
    }

    #[test]
    fn registry_mode_allowing_unregistered_matches_the_model(
        ops in prop::collection::vec(op(true), 1..60),
    ) {
        run(Mode { registry: true, allow_unregistered: true }, &ops)?;
    }
}
