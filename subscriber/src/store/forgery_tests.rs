//! One instance's real tokens at their interval, and forged tokens in between, with any `seq`
//! (within the pace, far ahead, the largest, behind), full or heartbeat, `up`, `draining` or
//! (with etcd) `leaving`, of the instance's epoch or another. Whatever the interleaving, the
//! real instance is never removed, and once the forger stops, its real tokens are applied
//! again within a few intervals (a forged state lasts until the instance's next full token:
//! heartbeats carry none).

use std::sync::Arc;

use herald_shared::pace::max_seq_advance;
use herald_shared::{State, Token, codec};
use proptest::prelude::*;
use tokio::sync::broadcast;

use super::*;
use crate::etcd_sync::Registration;
use crate::view::Clock;

const INTERVAL_MS: u64 = 1_000;
const TTL_MS: u32 = 3_000;
const EPOCH: u64 = 41;
const FIRST_SEQ: u64 = 1_765_000_000_000_000;
/// How long after a heartbeat of an unknown incarnation the announcer's answer to the probe
/// arrives: the subscriber's probe gap, and a round trip.
const PROBE_ANSWER_MS: u64 = 110;

#[derive(Debug, Clone, Copy)]
enum ForgedSeq {
    /// The real run's latest plus this much (within the pace or not).
    Ahead(u64),
    Largest,
    /// The real run's latest minus this much.
    Behind(u64),
    Any(u64),
}

#[derive(Debug, Clone, Copy)]
enum ForgedEpoch {
    Same,
    Next,
    Zero,
}

#[derive(Debug, Clone, Copy)]
struct Forgery {
    /// When, in the gap before the next real token, as a fraction of 1000.
    at: u16,
    seq: ForgedSeq,
    epoch: ForgedEpoch,
    state: State,
    heartbeat: bool,
}

/// One real token: after a gap of the interval +-10 %, full or heartbeat, with the forgeries
/// received before it.
#[derive(Debug, Clone)]
struct Step {
    gap: u64,
    heartbeat: bool,
    forgeries: Vec<Forgery>,
}

fn forgery(registry: bool) -> impl Strategy<Value = Forgery> {
    let seq = prop_oneof![
        (1..300u64).prop_map(ForgedSeq::Ahead),
        Just(ForgedSeq::Ahead(5_000)),
        Just(ForgedSeq::Largest),
        (0..300u64).prop_map(ForgedSeq::Behind),
        any::<u64>().prop_map(ForgedSeq::Any),
    ];
    let epoch = prop_oneof![
        6 => Just(ForgedEpoch::Same),
        1 => Just(ForgedEpoch::Next),
        1 => Just(ForgedEpoch::Zero),
    ];
    // Without etcd a goodbye within the pace is believed: the README says so.
    let state = if registry {
        prop_oneof![Just(State::Up), Just(State::Draining), Just(State::Leaving)].boxed()
    } else {
        prop_oneof![Just(State::Up), Just(State::Draining)].boxed()
    };
    (0..1000u16, seq, epoch, state, any::<bool>()).prop_map(|(at, seq, epoch, state, heartbeat)| {
        Forgery {
            at,
            seq,
            epoch,
            state,
            heartbeat,
        }
    })
}

fn steps(registry: bool) -> impl Strategy<Value = Vec<Step>> {
    let step = (
        900..=1100u64,
        prop::bool::weighted(0.7),
        prop::collection::vec(forgery(registry), 0..4),
    )
        .prop_map(|(gap, heartbeat, mut forgeries)| {
            forgeries.sort_by_key(|f| f.at);
            Step {
                gap,
                heartbeat,
                forgeries,
            }
        });
    prop::collection::vec(step, 1..30)
}

fn real_token(seq: u64) -> Token {
    let mut t = Token::new("svc", "real", "10.0.0.1:80");
    t.epoch = EPOCH;
    t.seq = seq;
    t.ttl_ms = TTL_MS;
    t.load = 0.25;
    t
}

fn send(store: &mut Store, t: &Token, heartbeat: bool) {
    let payload = if heartbeat {
        codec::encode_heartbeat(t)
    } else {
        codec::encode(t)
    };
    store.ingest("svc", &payload.expect("a valid token encodes"));
}

struct Run {
    store: Store,
    clock: Arc<Clock>,
    events: broadcast::Receiver<Event>,
    now: u64,
    seq: u64,
}

impl Run {
    fn new(mode: Mode) -> Run {
        let clock = Arc::new(Clock::manual());
        let views = Arc::new(Views::new(clock.clone()));
        let (tx, events) = broadcast::channel(1 << 16);
        let mut store = Store::new(mode, views, Arc::new(Counters::default()), tx);
        if mode.registry {
            store.register(&Registration {
                service: "svc".into(),
                instance: "real".into(),
                value: codec::encode(&real_token(0)).expect("encodes"),
                revision: EPOCH,
                lease: 1,
            });
        }
        let mut run = Run {
            store,
            clock,
            events,
            now: 0,
            seq: FIRST_SEQ,
        };
        send(&mut run.store, &real_token(FIRST_SEQ), false);
        run.store.flush();
        run
    }

    /// Moves the clock to `at`, sweeping every few milliseconds as the ingest task does.
    fn advance_to(&mut self, at: u64) -> Result<(), TestCaseError> {
        while self.now < at {
            let step = (at - self.now).min(20);
            self.clock.advance(step);
            self.now += step;
            self.store.sweep();
            self.store.flush();
            self.listed()?;
        }
        Ok(())
    }

    fn listed(&mut self) -> Result<(), TestCaseError> {
        while let Ok(e) = self.events.try_recv() {
            if let Event::Removed { cause, .. } = e {
                return Err(TestCaseError::fail(format!(
                    "the real instance was removed ({cause:?}) at {} ms",
                    self.now
                )));
            }
        }
        prop_assert!(
            self.entry().is_some(),
            "the real instance is listed at {} ms",
            self.now
        );
        Ok(())
    }

    fn entry(&self) -> Option<Arc<crate::instance::Entry>> {
        self.store.services.get("svc")?.live("real").cloned()
    }

    fn real(&mut self, heartbeat: bool) -> Result<(), TestCaseError> {
        self.seq += 1;
        send(&mut self.store, &real_token(self.seq), heartbeat);
        self.store.flush();
        self.listed()?;
        if !self.store.take_probe_requests().is_empty() {
            // A heartbeat the store could not place (its entry is of another epoch): the
            // subscriber probes, and the announcer answers in full a round trip later.
            let at = self.now + PROBE_ANSWER_MS;
            self.advance_to(at)?;
            self.real(false)?;
        }
        Ok(())
    }

    fn forge(&mut self, f: Forgery) -> Result<(), TestCaseError> {
        let mut t = real_token(0);
        t.seq = match f.seq {
            ForgedSeq::Ahead(n) => self.seq.saturating_add(n),
            ForgedSeq::Largest => u64::MAX,
            ForgedSeq::Behind(n) => self.seq - n,
            ForgedSeq::Any(n) => n,
        };
        t.epoch = match f.epoch {
            ForgedEpoch::Same => EPOCH,
            ForgedEpoch::Next => EPOCH + 1,
            ForgedEpoch::Zero => 0,
        };
        t.state = f.state;
        // A heartbeat carries no state: a forged goodbye goes in full.
        send(&mut self.store, &t, f.heartbeat && f.state == State::Up);
        self.store.flush();
        self.listed()
    }
}

fn run(mode: Mode, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut run = Run::new(mode);
    for step in steps {
        let start = run.now;
        for f in &step.forgeries {
            run.advance_to(start + step.gap * u64::from(f.at) / 1000)?;
            run.forge(*f)?;
        }
        run.advance_to(start + step.gap)?;
        run.real(step.heartbeat)?;
    }
    // The forger stops: within a few intervals every real token is applied again, and the
    // next full one (an announcer sends one every `full_token_every` tokens at the latest)
    // says the instance's state again.
    for i in 0..4 {
        let at = run.now + INTERVAL_MS;
        run.advance_to(at)?;
        run.real(i < 3)?;
    }
    let entry = run.entry().expect("listed");
    prop_assert_eq!(
        entry.seq.load(Relaxed),
        run.seq,
        "the real run is the listed one again"
    );
    prop_assert_eq!(entry.state(), State::Up, "and its state is the real one");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_forgery_removes_an_instance_whose_tokens_arrive_without_etcd(steps in steps(false)) {
        run(Mode::BUS, &steps)?;
    }

    #[test]
    fn no_forgery_removes_a_registered_instance_whose_tokens_arrive(steps in steps(true)) {
        run(Mode { registry: true, allow_unregistered: false }, &steps)?;
    }
}

#[test]
fn the_pace_bound_leaves_room_for_a_token_per_interval_and_its_loss() {
    // Ten lost tokens at the shortest interval still continue the run.
    assert!(max_seq_advance(50 * 11) >= 11);
}
