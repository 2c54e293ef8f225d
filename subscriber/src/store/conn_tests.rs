//! Closed connections: the instances whose latest token came over one go after the grace,
//! and only those.

use std::sync::Arc;

use herald_shared::{State, Token};
use tokio::sync::broadcast;

use super::*;
use crate::event::RemovalCause;
use crate::view::Clock;

const GRACE_MS: u64 = 200;

fn store() -> (Store, broadcast::Receiver<Event>, Arc<Counters>) {
    let views = Arc::new(Views::new(Arc::new(Clock::manual())));
    let counters = Arc::new(Counters::default());
    let (tx, rx) = broadcast::channel(1024);
    let mut s = Store::new(crate::merge::Mode::BUS, views, counters.clone(), tx);
    s.follow_connections(Duration::from_millis(GRACE_MS));
    (s, rx, counters)
}

fn token(id: &str, seq: u64, conn: &str) -> Token {
    let mut t = Token::new("svc", id, "10.0.0.1:80");
    t.seq = seq;
    t.ttl_ms = 60_000;
    t.conn = Some(conn.to_owned());
    t
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

fn removed(rx: &mut broadcast::Receiver<Event>) -> Vec<(String, RemovalCause)> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let Event::Removed { instance, cause } = e {
            out.push((instance.id().to_owned(), cause));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn advance(s: &mut Store, ms: u64) {
    s.clock.advance(ms);
    s.sweep();
    s.flush();
}

#[test]
fn a_closed_connection_takes_its_instances_after_the_grace_and_only_them() {
    let (mut s, mut rx, c) = store();
    for id in ["a", "b"] {
        s.apply(&token(id, 1, "S/1").as_ref());
    }
    s.apply(&token("c", 1, "S/2").as_ref());
    s.flush();
    removed(&mut rx);

    assert!(s.connection_closed("S/1"));
    assert!(
        !s.connection_closed("S/9"),
        "nobody came over an unknown connection"
    );
    advance(&mut s, GRACE_MS - 1);
    assert_eq!(ids(&s), ["a", "b", "c"], "nothing goes within the grace");
    advance(&mut s, 1);
    assert_eq!(ids(&s), ["c"]);
    assert_eq!(
        removed(&mut rx),
        [
            ("a".to_owned(), RemovalCause::Disconnected),
            ("b".to_owned(), RemovalCause::Disconnected)
        ]
    );
    assert_eq!(c.snapshot().disconnections, 2);
    assert_eq!(
        s.conns.as_ref().map(Conns::len),
        Some(1),
        "S/1 is forgotten"
    );

    // A token it sent before dying, arriving late, does not list it again.
    s.apply(&token("a", 1, "S/1").as_ref());
    s.flush();
    assert_eq!(ids(&s), ["c"]);
}

#[test]
fn a_token_over_another_connection_within_the_grace_keeps_the_instance() {
    let (mut s, mut rx, _) = store();
    s.apply(&token("a", 1, "S/1").as_ref());
    s.apply(&token("b", 1, "S/1").as_ref());
    assert!(s.connection_closed("S/1"));
    // `a` reconnected (a new client id) and republished at once; `b` did not.
    s.apply(&token("a", 2, "S/7").as_ref());
    advance(&mut s, GRACE_MS);
    assert_eq!(ids(&s), ["a"]);
    assert_eq!(
        removed(&mut rx),
        [("b".to_owned(), RemovalCause::Disconnected)]
    );
    // Its new connection is followed: closing it takes `a` too.
    assert!(s.connection_closed("S/7"));
    advance(&mut s, GRACE_MS);
    assert_eq!(ids(&s), Vec::<String>::new());
}

#[test]
fn a_token_read_after_the_advisory_of_its_connection_goes_with_it() {
    let (mut s, mut rx, _) = store();
    // The advisory is read first: nobody came over S/1 yet.
    assert!(!s.connection_closed("S/1"));
    advance(&mut s, GRACE_MS / 2);
    // Then the token the process sent before it died.
    s.apply(&token("a", 1, "S/1").as_ref());
    s.apply(&token("b", 1, "S/2").as_ref());
    s.flush();
    advance(&mut s, GRACE_MS / 2 - 1);
    assert_eq!(ids(&s), ["a", "b"], "nothing goes within the grace");
    advance(&mut s, 1);
    assert_eq!(ids(&s), ["b"]);
    assert_eq!(
        removed(&mut rx),
        [("a".to_owned(), RemovalCause::Disconnected)]
    );
    assert_eq!(
        s.conns.as_ref().map(Conns::len),
        Some(1),
        "S/1 is forgotten once judged"
    );
}

#[test]
fn a_closed_connection_nobody_came_over_is_forgotten_after_the_grace() {
    let (mut s, mut rx, _) = store();
    assert!(!s.connection_closed("S/9"));
    advance(&mut s, GRACE_MS);
    assert_eq!(s.conns.as_ref().map(Conns::len), Some(0));
    // A token over it after the grace is followed like any other: its TTL decides.
    s.apply(&token("a", 1, "S/9").as_ref());
    advance(&mut s, GRACE_MS * 10);
    assert_eq!(ids(&s), ["a"]);
    assert_eq!(removed(&mut rx), []);
}

#[test]
fn a_connection_ended_for_another_reason_leaves_instances_to_their_ttl() {
    let (mut s, mut rx, _) = store();
    s.apply(&token("a", 1, "S/1").as_ref());
    s.connection_ended("S/1");
    advance(&mut s, GRACE_MS * 10);
    assert_eq!(ids(&s), ["a"]);
    assert!(
        !s.connection_closed("S/1"),
        "an ended connection is forgotten: a later advisory finds nobody"
    );
    // Its next token, over the new connection, is followed again.
    s.apply(&token("a", 2, "S/2").as_ref());
    assert!(s.connection_closed("S/2"));
    advance(&mut s, GRACE_MS);
    assert_eq!(
        removed(&mut rx),
        [("a".to_owned(), RemovalCause::Disconnected)]
    );
}

#[test]
fn the_index_forgets_instances_that_leave_and_connections_left_empty() {
    let (mut s, _rx, _) = store();
    s.apply(&token("a", 1, "S/1").as_ref());
    s.apply(&token("b", 1, "S/1").as_ref());
    s.apply(&token("b", 2, "S/2").as_ref());
    assert_eq!(s.conns.as_ref().map(Conns::len), Some(2));
    let mut bye = token("a", 2, "S/1");
    bye.state = State::Leaving;
    s.apply(&bye.as_ref());
    assert_eq!(
        s.conns.as_ref().map(Conns::len),
        Some(1),
        "S/1 carried nobody after the goodbye"
    );
    // A record change (new address) over the same connection keeps it followed.
    let mut moved = token("b", 3, "S/2");
    moved.addr = "10.0.0.2:80".into();
    s.apply(&moved.as_ref());
    assert!(s.connection_closed("S/2"));
    advance(&mut s, GRACE_MS);
    assert_eq!(ids(&s), Vec::<String>::new());
    assert_eq!(s.conns.as_ref().map(Conns::len), Some(0));
}

#[test]
fn without_advisories_nothing_is_followed() {
    let views = Arc::new(Views::new(Arc::new(Clock::manual())));
    let (tx, _rx) = broadcast::channel(16);
    let mut s = Store::new(
        crate::merge::Mode::BUS,
        views,
        Arc::new(Counters::default()),
        tx,
    );
    s.apply(&token("a", 1, "S/1").as_ref());
    assert!(!s.connection_closed("S/1"));
    let entry = s.services.get("svc").and_then(|x| x.live("a")).cloned();
    assert_eq!(entry.map(|e| e.conn.load(Relaxed)), Some(0));
}

#[test]
fn a_heartbeat_keeps_its_instance_on_the_connection_of_its_last_full_token() {
    let (mut s, mut rx, _c) = store();
    let full = token("a", 1, "S/1");
    s.apply(&full.as_ref());
    let mut next = full.clone();
    next.seq = 2;
    let beat = herald_shared::codec::encode_heartbeat(&next).unwrap();
    s.ingest("svc", &beat);
    s.flush();
    removed(&mut rx);
    assert!(s.connection_closed("S/1"), "the instance is still on S/1");
    advance(&mut s, GRACE_MS);
    assert_eq!(
        removed(&mut rx),
        [("a".to_owned(), RemovalCause::Disconnected)]
    );
}

/// A registration confirmed by a heartbeat, which names no connection: the subscriber
/// missed the full token (it was held and timed out, or it started after it). Without the
/// connection, a kill would read as an expiry a TTL later; a probe asks the instance for a
/// full token, which names it.
#[test]
fn an_instance_confirmed_by_a_heartbeat_is_probed_for_its_connection_and_then_goes_with_it() {
    let views = Arc::new(Views::new(Arc::new(Clock::manual())));
    let counters = Arc::new(Counters::default());
    let (tx, mut rx) = broadcast::channel(1024);
    let registry = crate::merge::Mode {
        registry: true,
        allow_unregistered: false,
    };
    let mut s = Store::new(registry, views, counters, tx);
    s.follow_connections(Duration::from_millis(GRACE_MS));
    let registered = token("a", 0, "unused");
    s.register(&crate::etcd_sync::Registration {
        service: "svc".into(),
        instance: "a".into(),
        value: herald_shared::codec::encode(&registered).unwrap(),
        revision: 7,
        lease: 1,
    });
    let _ = s.take_probe_requests();
    let mut beat = token("a", 2, "unused");
    beat.epoch = 7;
    s.ingest(
        "svc",
        &herald_shared::codec::encode_heartbeat(&beat).unwrap(),
    );
    let e = s.services.get("svc").unwrap().live("a").unwrap().clone();
    assert!(e.is_confirmed(), "the heartbeat confirms the registration");
    assert_eq!(
        s.take_probe_requests()
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>(),
        vec!["svc".to_owned()],
        "its connection unknown, its service is probed"
    );
    // The probe's answer: a full token, over the connection.
    let mut answer = token("a", 3, "S/1");
    answer.epoch = 7;
    s.apply(&answer.as_ref());
    s.flush();
    let mut beat = token("a", 4, "unused");
    beat.epoch = 7;
    s.ingest(
        "svc",
        &herald_shared::codec::encode_heartbeat(&beat).unwrap(),
    );
    assert!(
        s.take_probe_requests().is_empty(),
        "its connection known, no more probes"
    );
    assert!(s.connection_closed("S/1"));
    advance(&mut s, GRACE_MS + 1);
    assert_eq!(
        removed(&mut rx),
        vec![("a".to_owned(), RemovalCause::Disconnected)]
    );
}

/// An announcer too old to name its connection is not probed again and again.
#[test]
fn an_instance_whose_tokens_name_no_connection_is_probed_once() {
    let (mut s, _rx, _c) = store();
    let mut t = token("a", 1, "unused");
    t.conn = None;
    s.apply(&t.as_ref());
    for seq in 2..5 {
        let beat = token("a", seq, "unused");
        s.ingest(
            "svc",
            &herald_shared::codec::encode_heartbeat(&beat).unwrap(),
        );
        assert!(
            s.take_probe_requests().is_empty(),
            "its full token said it names no connection"
        );
    }
}
