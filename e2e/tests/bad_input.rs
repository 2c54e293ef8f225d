//! Malformed, oversized and spoofed tokens are counted under their reason and dropped; none
//! panics, evicts or changes a valid entry.

use std::collections::BTreeMap;
use std::time::Duration;

use herald_e2e::{RawPublisher, init_tracing, is_added, prefix, subscriber, token, wait_event};
use herald_shared::{Field, Reject, Token};
use herald_testkit::NatsServer;
use serde::Serialize;

/// Encodes without validation, as a hostile or buggy sender would.
fn raw(t: &Token) -> Vec<u8> {
    rmp_serde::to_vec_named(t).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_is_counted_and_dropped() {
    init_tracing();
    let nats = NatsServer::start().await;
    let prefix = prefix("bad_input");
    let sub = subscriber(&nats.url(), &prefix).await;
    let publisher = RawPublisher::connect(&nats.url(), &prefix).await;
    let mut events = sub.events();

    let mut valid = token("svc", "good", 100, Duration::from_secs(30));
    valid.load = 0.25;
    publisher.token(&valid).await;
    wait_event(&mut events, Duration::from_secs(5), "Added(good)", |e| {
        is_added(e, "good")
    })
    .await;

    // Each bad payload aims at the valid instance where it can, to prove it cannot touch it.
    let mut cases: Vec<(&str, Vec<u8>, Reject)> = Vec::new();
    cases.push((
        "garbage",
        b"\xde\xad\xbe\xef not msgpack".to_vec(),
        Reject::Malformed,
    ));
    let full = raw(&valid);
    cases.push((
        "truncated",
        full[..full.len() / 2].to_vec(),
        Reject::Malformed,
    ));
    cases.push(("oversized", vec![0x90; 4097], Reject::Oversized));
    #[derive(Serialize)]
    struct WrongType {
        service: &'static str,
        instance: &'static str,
        addr: &'static str,
        load: &'static str,
        seq: u64,
        ttl_ms: u32,
    }
    let wrong = rmp_serde::to_vec_named(&WrongType {
        service: "svc",
        instance: "good",
        addr: "127.0.0.1:9000",
        load: "high",
        seq: 999,
        ttl_ms: 1000,
    })
    .unwrap();
    cases.push(("wrong field type", wrong, Reject::Malformed));
    let mut nan = valid.clone();
    nan.seq = 1_000;
    nan.load = f32::NAN;
    cases.push(("NaN load", raw(&nan), Reject::Invalid(Field::Load)));
    let mut negative = nan.clone();
    negative.load = -1.0;
    cases.push((
        "negative load",
        raw(&negative),
        Reject::Invalid(Field::Load),
    ));
    let mut short_ttl = valid.clone();
    short_ttl.seq = 1_001;
    short_ttl.ttl_ms = 50;
    cases.push((
        "ttl below 100 ms",
        raw(&short_ttl),
        Reject::Invalid(Field::Ttl),
    ));
    let mut long_ttl = short_ttl.clone();
    long_ttl.ttl_ms = 7_200_000;
    cases.push(("ttl above 1 h", raw(&long_ttl), Reject::Invalid(Field::Ttl)));
    let mut many_meta = valid.clone();
    many_meta.seq = 1_002;
    many_meta.meta = (0..33).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    cases.push((
        "33 meta entries",
        raw(&many_meta),
        Reject::Invalid(Field::Meta),
    ));
    let mut long_value = valid.clone();
    long_value.seq = 1_003;
    long_value.meta = BTreeMap::from([("k".to_owned(), "v".repeat(257))]);
    cases.push((
        "meta value over 256 B",
        raw(&long_value),
        Reject::Invalid(Field::Meta),
    ));
    let mut bad_addr = valid.clone();
    bad_addr.seq = 1_004;
    bad_addr.addr = "no-port".into();
    cases.push((
        "address without port",
        raw(&bad_addr),
        Reject::Invalid(Field::Addr),
    ));

    for (_, bytes, _) in &cases {
        publisher.bytes("svc", bytes.clone()).await;
    }
    // Spoofing: a valid token for another service, published on svc's subject.
    let mut spoof = valid.clone();
    spoof.service = "other".into();
    spoof.seq = 2_000;
    publisher.bytes("svc", raw(&spoof)).await;

    // A marker after everything: NATS keeps one publisher's order, so once it is listed
    // every bad payload before it has been judged.
    publisher
        .token(&token("svc", "marker", 1, Duration::from_secs(30)))
        .await;
    wait_event(&mut events, Duration::from_secs(5), "Added(marker)", |e| {
        is_added(e, "marker")
    })
    .await;

    let stats = sub.stats();
    let mut expected: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (_, _, reason) in &cases {
        *expected.entry(reason.label()).or_default() += 1;
    }
    *expected.entry(Reject::SubjectMismatch.label()).or_default() += 1;
    for reason in Reject::all() {
        assert_eq!(
            stats.rejected(reason),
            expected.get(reason.label()).copied().unwrap_or(0),
            "count for reason {reason}"
        );
    }
    let good = sub
        .get("svc", "good")
        .expect("the valid instance is still listed");
    assert_eq!(good.load(), 0.25, "no bad token may change the valid entry");
    assert_eq!(good.seq(), 100);
    assert_eq!(
        sub.instances("svc").len(),
        2,
        "good and marker, nothing else"
    );
    assert!(
        sub.instances("other").is_empty(),
        "a spoofed token must not create an instance"
    );
    assert_eq!(stats.expirations + stats.goodbyes, 0, "nothing was evicted");
}
