//! Golden byte fixtures pin the token's wire format: a change to these bytes is a change to
//! the protocol and must be made on purpose (regenerate with `HERALD_BLESS=1 cargo test -p
//! herald-shared --test golden`, and say why in the commit).

use std::collections::BTreeMap;
use std::path::PathBuf;

use herald_shared::{State, Token, codec};
use serde::Serialize;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn check(name: &str, bytes: &[u8]) {
    let path = fixture(name);
    if std::env::var_os("HERALD_BLESS").is_some() {
        std::fs::write(&path, bytes).expect("write fixture");
    }
    let golden = std::fs::read(&path).expect("fixture exists");
    assert_eq!(
        bytes,
        golden.as_slice(),
        "encoding of {name} changed: the wire format moved"
    );
}

fn full() -> Token {
    let mut t = Token::new("billing", "billing-7f3a", "10.1.2.3:8443");
    t.load = 0.625;
    t.weight = 150;
    t.zone = Some("eu-west-1a".into());
    t.state = State::Draining;
    t.meta = BTreeMap::from([
        ("version".into(), "2.4.1".into()),
        ("proto".into(), "grpc".into()),
    ]);
    t.epoch = 123_456;
    t.seq = 1_764_000_000_000_042;
    t.ttl_ms = 3_000;
    t.sent_at_ms = 1_764_000_000_123;
    t
}

#[test]
fn full_token_bytes_are_pinned() {
    let t = full();
    let bytes = codec::encode(&t).unwrap();
    check("token_v1_full.msgpack", &bytes);
    assert_eq!(codec::decode(&bytes).unwrap().to_owned(), t);
    assert!(
        bytes.len() < 300,
        "a typical token stays small: {} bytes",
        bytes.len()
    );
}

#[test]
fn minimal_token_bytes_are_pinned() {
    let t = Token::new("a", "b", "h:1");
    check("token_v1_minimal.msgpack", &codec::encode(&t).unwrap());
}

/// What a newer sender might write: every v1 field plus fields v1 does not know.
#[derive(Serialize)]
struct FutureToken {
    v: u8,
    service: &'static str,
    instance: &'static str,
    addr: &'static str,
    load: f32,
    weight: u32,
    state: &'static str,
    meta: BTreeMap<&'static str, &'static str>,
    epoch: u64,
    seq: u64,
    ttl_ms: u32,
    sent_at_ms: u64,
    capacity: Vec<u32>,
    tls: BTreeMap<&'static str, bool>,
    region: &'static str,
}

#[test]
fn unknown_fields_are_ignored() {
    let future = FutureToken {
        v: 2,
        service: "billing",
        instance: "b-1",
        addr: "10.0.0.1:80",
        load: 1.5,
        weight: 100,
        state: "up",
        meta: BTreeMap::from([("k", "v")]),
        epoch: 9,
        seq: 77,
        ttl_ms: 1_000,
        sent_at_ms: 5,
        capacity: vec![1, 2, 3],
        tls: BTreeMap::from([("required", true)]),
        region: "eu",
    };
    let bytes = rmp_serde::to_vec_named(&future).unwrap();
    check("token_v2_extra_fields.msgpack", &bytes);
    let t = codec::accept(&bytes, "billing").expect("a newer token with extra fields decodes");
    assert_eq!((t.instance, t.load, t.epoch, t.seq), ("b-1", 1.5, 9, 77));
    assert_eq!(t.meta.iter().collect::<Vec<_>>(), vec![("k", "v")]);
}

#[test]
fn optional_fields_take_their_defaults() {
    // A sender in another language writing only the required fields.
    #[derive(Serialize)]
    struct Bare {
        service: &'static str,
        instance: &'static str,
        addr: &'static str,
        load: f32,
        seq: u64,
        ttl_ms: u32,
    }
    let bytes = rmp_serde::to_vec_named(&Bare {
        service: "s",
        instance: "i",
        addr: "h:1",
        load: 0.0,
        seq: 1,
        ttl_ms: 500,
    })
    .unwrap();
    let t = codec::accept(&bytes, "s").unwrap();
    assert_eq!(
        (t.weight, t.state, t.epoch, t.zone),
        (100, State::Up, 0, None)
    );
}

#[test]
fn heartbeat_bytes_are_pinned_and_a_third_of_the_full_token() {
    let t = full();
    let beat = codec::encode_heartbeat(&t).unwrap();
    check("heartbeat_v1.msgpack", &beat);
    let full = codec::encode(&t).unwrap();
    assert!(
        beat.len() * 3 <= full.len() + 10,
        "heartbeat {} B against a full token of {} B",
        beat.len(),
        full.len()
    );
}

#[test]
fn a_reader_older_than_heartbeats_refuses_one_as_malformed() {
    // Such a reader decodes the map into the whole token, as `Token`'s derived
    // `Deserialize` does: it finds no `service` and refuses the payload.
    let beat = codec::encode_heartbeat(&full()).unwrap();
    assert!(rmp_serde::from_slice::<Token>(&beat).is_err());
}
