//! The store carrying outcomes out: events, schedule, counters, held tokens.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use herald_shared::{State, Token, codec};
use tokio::sync::broadcast;

use super::*;
use crate::etcd_sync::Registration;
use crate::view::Clock;

const REGISTRY: Mode = Mode {
    registry: true,
    allow_unregistered: false,
};

fn store(mode: Mode) -> (Store, broadcast::Receiver<Event>, Arc<Counters>) {
    let views = Arc::new(Views::new(Arc::new(Clock::manual())));
    let counters = Arc::new(Counters::default());
    let (tx, rx) = broadcast::channel(1024);
    (Store::new(mode, views, counters.clone(), tx), rx, counters)
}

fn token(id: &str, epoch: u64, seq: u64) -> Token {
    let mut t = Token::new("svc", id, "10.0.0.1:80");
    t.epoch = epoch;
    t.seq = seq;
    t.ttl_ms = 200;
    t
}

fn put(s: &mut Store, id: &str, revision: u64, lease: i64) {
    s.register(&Registration {
        service: "svc".into(),
        instance: id.into(),
        value: codec::encode(&token(id, 0, 0)).unwrap(),
        revision,
        lease,
    });
}

fn live(s: &Store, id: &str) -> Option<Arc<crate::instance::Entry>> {
    s.services.get("svc")?.live(id).cloned()
}

fn ids(s: &Store) -> Vec<String> {
    let mut v: Vec<String> = s
        .services
        .get("svc")
        .map(|svc| svc.sorted.iter().map(|i| i.id().to_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn refresh_only_tokens_do_not_schedule_or_event() {
    let (mut s, mut rx, c) = store(Mode::BUS);
    s.apply(&token("a", 0, 1).as_ref());
    s.flush();
    let event = rx.try_recv();
    assert!(matches!(event, Ok(Event::Added(_))), "{event:?}");
    for seq in 2..100 {
        s.apply(&token("a", 0, seq).as_ref());
    }
    s.flush();
    assert!(
        rx.try_recv().is_err(),
        "pure refreshes must not emit events"
    );
    assert_eq!(s.heap.len(), 1, "pure refreshes must not push deadlines");
    assert_eq!(c.snapshot().accepted, 99);
}

#[test]
fn goodbye_leaves_a_tombstone_against_late_tokens() {
    let (mut s, _rx, c) = store(Mode::BUS);
    s.apply(&token("a", 0, 10).as_ref());
    let mut bye = token("a", 0, 11);
    bye.state = State::Leaving;
    s.apply(&bye.as_ref());
    assert!(ids(&s).is_empty());
    s.apply(&token("a", 0, 9).as_ref());
    assert!(
        ids(&s).is_empty(),
        "a late token must not resurrect a departed instance"
    );
    assert_eq!(c.snapshot().duplicate_drops, 1);
    s.clock.advance(199);
    s.apply(&token("a", 0, 10).as_ref());
    assert!(
        ids(&s).is_empty(),
        "the tombstone holds for the token's TTL"
    );
    s.clock.advance(1);
    s.apply(&token("a", 0, 10).as_ref());
    assert_eq!(
        ids(&s),
        vec!["a"],
        "after its TTL the tombstone holds no more (on the store's clock, not moka's)"
    );
}

/// On tokio's clock, with the sweep on a 20 ms timer as the ingest loop runs it, an
/// instance goes within one sweep period after its TTL, and not before.
#[tokio::test(start_paused = true)]
async fn on_paused_time_the_sweep_removes_an_instance_within_a_period_after_its_ttl() {
    let views = Arc::new(Views::new(Arc::new(Clock::new())));
    let (tx, _rx) = broadcast::channel(16);
    let mut s = Store::new(Mode::BUS, views, Arc::new(Counters::default()), tx);
    let start = tokio::time::Instant::now();
    s.apply(&token("a", 0, 1).as_ref());
    let mut sweeps = tokio::time::interval(std::time::Duration::from_millis(20));
    while !ids(&s).is_empty() {
        sweeps.tick().await;
        s.sweep();
    }
    let gone = start.elapsed().as_millis();
    assert!(
        (200..=220).contains(&gone),
        "TTL 200 ms, swept every 20 ms: gone after {gone} ms"
    );
}

#[test]
fn seq_gaps_count_lost_tokens() {
    let (mut s, _rx, c) = store(Mode::BUS);
    s.apply(&token("a", 0, 10).as_ref());
    s.apply(&token("a", 0, 15).as_ref());
    assert_eq!(c.snapshot().tokens_lost, 4);
}

#[test]
fn after_our_own_outage_the_tokens_sent_meanwhile_continue_their_runs() {
    use std::sync::atomic::Ordering::Relaxed;
    let (mut s, _rx, c) = store(Mode::BUS);
    s.apply(&token("a", 0, 1_000).as_ref());
    // Our NATS link is down for five minutes: nothing expires, and after the reconnect every
    // instance gets a fresh TTL, which is no token of it.
    s.clock.preserving.store(true, Relaxed);
    s.clock.advance(300_000);
    s.sweep();
    s.clock.preserving.store(false, Relaxed);
    s.refresh_all_deadlines();
    // One token a second was sent meanwhile, well beyond the burst a moment allows.
    s.apply(&token("a", 0, 1_300).as_ref());
    let stats = c.snapshot();
    assert_eq!(
        (stats.seq_jump_drops, stats.rebased),
        (0, 0),
        "the run continues: five minutes passed since its last token"
    );
    assert_eq!(live(&s, "a").unwrap().seq.load(Relaxed), 1_300);
    assert_eq!(stats.tokens_lost, 299, "tokens lost to our outage are loss");
}

#[test]
fn sweep_removes_only_what_is_due() {
    let (mut s, _rx, c) = store(Mode::BUS);
    s.apply(&token("a", 0, 1).as_ref());
    s.clock.advance(199);
    s.sweep();
    assert_eq!(ids(&s), vec!["a"], "not due yet");
    s.clock.advance(1);
    s.sweep();
    assert!(ids(&s).is_empty(), "an entry at its deadline must be swept");
    assert_eq!(c.snapshot().expirations, 1);
}

#[test]
fn a_registration_is_listed_unconfirmed_until_its_token() {
    let (mut s, mut rx, c) = store(REGISTRY);
    put(&mut s, "a", 10, 3);
    s.flush();
    let e = live(&s, "a").expect("listed from etcd");
    assert!(!e.is_confirmed(), "known only from etcd");
    let event = rx.try_recv();
    assert!(matches!(event, Ok(Event::Added(_))), "{event:?}");
    s.apply(&token("a", 10, 5).as_ref());
    s.flush();
    assert!(e.is_confirmed(), "its token confirms it in place");
    assert!(matches!(rx.try_recv(), Ok(Event::Updated(_))));
    assert_eq!(
        s.services["svc"].slots["a"]
            .registration
            .as_ref()
            .map(|r| r.lease),
        Some(3),
        "the registration keeps its lease"
    );
    assert_eq!(c.snapshot().duplicate_drops, 0);
}

#[test]
fn an_unconfirmed_registration_expires_after_its_ttl() {
    let (mut s, _rx, c) = store(REGISTRY);
    put(&mut s, "a", 10, 3);
    s.clock.advance(200);
    s.sweep();
    assert!(live(&s, "a").is_none(), "no token within its TTL");
    assert_eq!(c.snapshot().expirations, 1);
    s.apply(&token("a", 10, 7).as_ref());
    assert!(
        live(&s, "a").is_some_and(|e| e.is_confirmed()),
        "the registration still holds: a later token lists it again"
    );
}

#[test]
fn a_token_ahead_of_its_registration_is_held_then_applied() {
    let (mut s, _rx, c) = store(REGISTRY);
    s.apply(&token("a", 10, 5).as_ref());
    assert!(live(&s, "a").is_none(), "not applied before etcd shows it");
    assert_eq!(c.snapshot().held_now, 0, "the gauge moves on flush");
    s.flush();
    assert_eq!(c.snapshot().held_now, 1);
    put(&mut s, "a", 10, 3);
    let e = live(&s, "a").expect("listed by its registration");
    assert!(e.is_confirmed(), "the held token confirmed it");
    assert_eq!(e.seq.load(Relaxed), 5);
    s.flush();
    assert_eq!(c.snapshot().held_now, 0);
    assert_eq!(c.snapshot().accepted, 1);
}

#[test]
fn a_held_token_without_registration_is_dropped_as_unregistered() {
    let (mut s, _rx, c) = store(REGISTRY);
    s.apply(&token("a", 10, 5).as_ref());
    s.clock.advance(held::HOLD_FOR_MS - 1);
    s.sweep();
    assert_eq!(c.snapshot().unregistered_drops, 0, "still within the bound");
    s.clock.advance(1);
    s.sweep();
    assert_eq!(c.snapshot().unregistered_drops, 1);
    put(&mut s, "a", 10, 3);
    assert!(
        live(&s, "a").is_some_and(|e| !e.is_confirmed()),
        "the timed-out token is gone"
    );
}

#[test]
fn a_spoofed_address_is_dropped_and_the_real_tokens_keep_flowing() {
    let (mut s, _rx, c) = store(REGISTRY);
    put(&mut s, "a", 10, 3);
    s.apply(&token("a", 10, 5).as_ref());
    let mut spoof = token("a", 10, 1_000_000);
    spoof.addr = "7.7.7.7:77".into();
    s.apply(&spoof.as_ref());
    let mut longer = token("a", 10, 1_000_001);
    longer.ttl_ms = 15_000;
    s.apply(&longer.as_ref());
    assert_eq!(c.snapshot().identity_mismatch_drops, 2);
    s.apply(&token("a", 10, 6).as_ref());
    let e = live(&s, "a").unwrap();
    assert_eq!(e.addr_meta.addr(), "10.0.0.1:80");
    assert_eq!(e.seq.load(Relaxed), 6, "the real token is not a duplicate");
}

#[test]
fn a_deletion_fences_every_older_epoch() {
    let (mut s, _rx, c) = store(REGISTRY);
    put(&mut s, "a", 10, 1);
    s.deregister("svc", "a", 12);
    assert!(live(&s, "a").is_none());
    s.apply(&token("a", 10, 5).as_ref());
    s.apply(&token("a", 11, 5).as_ref());
    assert!(
        live(&s, "a").is_none(),
        "tokens below the deletion's revision are dropped"
    );
    assert_eq!(c.snapshot().stale_epoch_drops, 2);
    put(&mut s, "a", 13, 1);
    s.apply(&token("a", 13, 1).as_ref());
    assert_eq!(
        live(&s, "a").map(|e| e.epoch),
        Some(13),
        "a newer registration comes back"
    );
}

#[test]
fn late_tokens_of_a_replaced_cluster_cannot_outrank_the_new_registration() {
    let (mut s, _rx, _c) = store(REGISTRY);
    let epoch = |s: &Store| live(s, "a").map(|e| e.epoch);
    put(&mut s, "a", 32, 7);
    s.apply(&token("a", 32, 100).as_ref());
    s.forget_epochs(None);
    assert_eq!(epoch(&s), Some(0), "the old cluster's epoch is forgotten");
    s.apply(&token("a", 32, 101).as_ref());
    assert_eq!(
        live(&s, "a").unwrap().seq.load(Relaxed),
        101,
        "a late old-cluster token refreshes"
    );
    put(&mut s, "a", 2, 9);
    assert_eq!(epoch(&s), Some(2), "the new cluster's registration wins");
    s.apply(&token("a", 32, 102).as_ref());
    assert_eq!(
        epoch(&s),
        Some(2),
        "a later old-cluster token must not raise the epoch back"
    );
    s.apply(&token("a", 2, 103).as_ref());
    let e = live(&s, "a").unwrap();
    assert_eq!(
        (e.epoch, e.seq.load(Relaxed)),
        (2, 103),
        "new-epoch tokens are accepted"
    );
}

#[test]
fn a_cluster_change_of_one_scope_leaves_the_others_alone() {
    let (mut s, _rx, _c) = store(REGISTRY);
    put(&mut s, "a", 32, 7);
    s.register(&Registration {
        service: "other".into(),
        instance: "b".into(),
        value: codec::encode(&Token::new("other", "b", "10.0.0.2:80")).unwrap(),
        revision: 33,
        lease: 7,
    });
    s.forget_epochs(Some("other"));
    assert_eq!(live(&s, "a").map(|e| e.epoch), Some(32));
    assert_eq!(
        s.services
            .get("other")
            .and_then(|o| o.live("b"))
            .map(|e| e.epoch),
        Some(0)
    );
}

fn beat(id: &str, epoch: u64, seq: u64, load: f32) -> Vec<u8> {
    let mut t = token(id, epoch, seq);
    t.load = load;
    codec::encode_heartbeat(&t).unwrap()
}

#[test]
fn a_heartbeat_refreshes_its_listed_instance_as_its_full_token_would() {
    let (mut s, mut rx, c) = store(Mode::BUS);
    s.apply(&token("a", 0, 1).as_ref());
    s.flush();
    let event = rx.try_recv();
    assert!(matches!(event, Ok(Event::Added(_))), "{event:?}");
    let e = live(&s, "a").unwrap();
    let deadline = e.deadline.load(Relaxed);
    s.clock.advance(150);
    s.ingest("svc", &beat("a", 0, 2, 0.0));
    s.flush();
    assert_eq!(e.seq.load(Relaxed), 2);
    assert_eq!(e.deadline.load(Relaxed), deadline + 150, "a fresh TTL");
    assert!(rx.try_recv().is_err(), "nothing changed but freshness");
    s.ingest("svc", &beat("a", 0, 3, 0.75));
    s.flush();
    assert_eq!(e.load(), 0.75);
    assert!(
        matches!(rx.try_recv(), Ok(Event::Updated(_))),
        "the load moved"
    );
    assert!(
        live(&s, "a").is_some_and(|l| Arc::ptr_eq(&l, &e)),
        "the same record"
    );
    let stats = c.snapshot();
    assert_eq!(
        (stats.heartbeats, stats.accepted, stats.heartbeats_unknown),
        (2, 3, 0)
    );
    assert!(s.take_probe_requests().is_empty());
}

#[test]
fn a_heartbeat_of_an_unknown_instance_or_epoch_asks_for_a_probe_of_its_service() {
    let (mut s, mut rx, c) = store(Mode::BUS);
    s.ingest("svc", &beat("a", 0, 2, 0.0));
    s.ingest("svc", &beat("b", 0, 2, 0.0));
    s.flush();
    assert!(ids(&s).is_empty(), "a heartbeat lists nothing");
    assert!(rx.try_recv().is_err());
    let asked = s.take_probe_requests();
    assert_eq!(
        asked.iter().map(|s| &**s).collect::<Vec<_>>(),
        ["svc"],
        "once per service"
    );
    s.apply(&token("a", 5, 1).as_ref());
    s.ingest("svc", &beat("a", 4, 9, 0.0));
    assert_eq!(
        live(&s, "a").unwrap().seq.load(Relaxed),
        1,
        "another epoch refreshes nothing"
    );
    assert_eq!(s.take_probe_requests().len(), 1);
    assert_eq!(c.snapshot().heartbeats_unknown, 3);
}

#[test]
fn an_old_heartbeat_is_a_duplicate() {
    let (mut s, _rx, c) = store(Mode::BUS);
    s.apply(&token("a", 0, 10).as_ref());
    s.ingest("svc", &beat("a", 0, 9, 0.5));
    let e = live(&s, "a").unwrap();
    assert_eq!((e.seq.load(Relaxed), e.load()), (10, 0.0));
    assert_eq!(c.snapshot().duplicate_drops, 1);
}

#[test]
fn a_heartbeat_confirms_a_registration_and_expires_nothing_early() {
    let (mut s, _rx, c) = store(REGISTRY);
    put(&mut s, "a", 10, 3);
    s.flush();
    let e = live(&s, "a").unwrap();
    assert!(!e.is_confirmed());
    s.ingest("svc", &beat("a", 10, 5, 0.0));
    assert!(e.is_confirmed(), "the registered incarnation speaks");
    s.ingest("svc", &beat("a", 11, 6, 0.0));
    assert_eq!(e.seq.load(Relaxed), 5, "not the registered epoch");
    assert_eq!(c.snapshot().heartbeats, 1);
}

fn registration(id: &str, revision: u64) -> Registration {
    Registration {
        service: "svc".into(),
        instance: id.into(),
        value: codec::encode(&token(id, 0, 0)).unwrap(),
        revision,
        lease: 3,
    }
}

#[test]
fn the_first_listing_holds_tokens_ahead_of_their_page_and_raises_no_event() {
    let (mut s, mut rx, c) = store(REGISTRY);
    s.begin_first_listing();
    // More tokens ahead of their registrations than the usual bound lets wait.
    let n = held::MAX_HELD + 2_000;
    let early: Vec<String> = (0..n).map(|i| format!("i{i:05}")).collect();
    for id in &early {
        s.apply(&token(id, 10, 1).as_ref());
    }
    s.flush();
    assert_eq!(c.snapshot().held_now, n as u64, "every early token waits");
    for page in early.chunks(500) {
        let regs: Vec<Registration> = page.iter().map(|id| registration(id, 10)).collect();
        s.register_page(&regs);
        s.flush();
    }
    s.first_listing_read();
    s.end_first_listing();
    s.flush();
    assert_eq!(ids(&s).len(), n);
    assert!(
        early
            .iter()
            .all(|id| live(&s, id).is_some_and(|e| e.is_confirmed())),
        "each held token confirmed its registration"
    );
    assert_eq!(c.snapshot().held_now, 0);
    assert_eq!(c.snapshot().etcd_resyncs, 1, "one full listing");
    assert!(rx.try_recv().is_err(), "the first listing raises no event");
    // After it, a new instance is an event again.
    put(&mut s, "late", 11, 3);
    s.flush();
    let event = rx.try_recv();
    assert!(matches!(event, Ok(Event::Added(_))), "{event:?}");
}

#[test]
fn a_heartbeat_during_the_first_listing_asks_for_no_probe() {
    let (mut s, _rx, c) = store(REGISTRY);
    s.begin_first_listing();
    s.ingest("svc", &beat("a", 10, 2, 0.0));
    assert!(
        s.take_probe_requests().is_empty(),
        "its registration may be on a page still to come"
    );
    s.register_page(&[registration("a", 10)]);
    s.first_listing_read();
    s.end_first_listing();
    s.ingest("svc", &beat("a", 10, 3, 0.0));
    assert!(
        live(&s, "a").is_some_and(|e| e.is_confirmed()),
        "the next heartbeat confirms the listed registration"
    );
    s.ingest("svc", &beat("b", 10, 2, 0.0));
    assert_eq!(s.take_probe_requests().len(), 1, "probes as usual after it");
    assert_eq!(c.snapshot().heartbeats_unknown, 2);
}
