//! etcd as the authority, seen from the subscriber: cold start from a consistent listing,
//! deregistration and takeover fencing through the merge rules, unregistered tokens, and
//! clear errors for an unreachable or refusing etcd.

use std::time::{Duration, Instant};

use herald_e2e::{
    RawPublisher, etcd, etcd_client, init_tracing, is_added, is_removed, lease, nats, prefix,
    register, token, wait_event,
};
use herald_subscriber::{ErrorKind, RemovalCause, Strategy, Subscriber};
use herald_testkit::{EtcdServer, NatsServer};

use herald_e2e::subscriber_with_etcd as subscriber;

/// Registers `n` instances of `svc{i % services}` with `meta_bytes` of metadata, in
/// transactions of 100 puts.
async fn register_many(
    client: &mut etcd_client::Client,
    prefix: &str,
    n: usize,
    services: usize,
    meta_bytes: usize,
) {
    register_named(
        client,
        prefix,
        n,
        |i| format!("svc{}", i % services),
        meta_bytes,
    )
    .await;
}

/// Registers `n` instances, the `i`th in service `service(i)`, with `meta_bytes` of
/// metadata, in transactions of 100 puts.
async fn register_named(
    client: &mut etcd_client::Client,
    prefix: &str,
    n: usize,
    service: impl Fn(usize) -> String,
    meta_bytes: usize,
) {
    let subjects = herald_shared::Subjects::new(prefix).unwrap();
    let lease = lease(client, 600).await;
    let mut ops = Vec::new();
    for i in 0..n {
        let mut t = token(
            &service(i),
            &format!("inst-{i:06}"),
            1,
            Duration::from_secs(60),
        );
        // Metadata values are at most 256 bytes: larger padding takes several.
        for k in 0..meta_bytes.div_ceil(200) {
            let len = (meta_bytes - k * 200).min(200);
            t.meta.insert(format!("pad{k}"), "x".repeat(len));
        }
        let value = herald_shared::codec::encode(&t).unwrap();
        ops.push(etcd_client::TxnOp::put(
            subjects.key(&t.service, &t.instance),
            value,
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        ));
        if ops.len() == 100 || i + 1 == n {
            client
                .txn(etcd_client::Txn::new().and_then(std::mem::take(&mut ops)))
                .await
                .expect("txn");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_lists_every_registration_before_start_returns() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let prefix = prefix("cold");
    let mut client = etcd_client(&etcd_server.endpoints()).await;
    register_many(&mut client, &prefix, 1_000, 10, 16).await;

    // Nothing broadcasts: whatever is listed came from etcd.
    let sub = subscriber(&nats_server.url(), &etcd_server.endpoints(), &prefix).await;
    let listed: usize = (0..10)
        .map(|s| sub.instances(&format!("svc{s}")).len())
        .sum();
    assert_eq!(
        listed, 1_000,
        "every registration is listed the moment start() returns"
    );
    let picked = sub
        .pick("svc3", Strategy::PowerOfTwoChoices)
        .expect("a pick before any broadcast");
    assert!(
        picked.epoch() > 0,
        "a registered instance carries its etcd epoch"
    );
    assert_eq!(sub.stats().registrations, 1_000);
    assert_eq!(sub.stats().received, 0, "no token was involved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_over_the_response_limit_is_paged_at_one_revision() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let prefix = prefix("paged");
    let mut client = etcd_client(&etcd_server.endpoints()).await;
    // 20k registrations of about 250 B: over etcd-client's 4 MiB response limit in one get.
    register_many(&mut client, &prefix, 20_000, 4, 150).await;
    let sub = subscriber(&nats_server.url(), &etcd_server.endpoints(), &prefix).await;
    let listed: usize = (0..4)
        .map(|s| sub.instances(&format!("svc{s}")).len())
        .sum();
    assert_eq!(listed, 20_000);
    let epochs: std::collections::HashSet<u64> =
        sub.instances("svc0").iter().map(|i| i.epoch()).collect();
    assert!(
        epochs.len() > 1,
        "registrations written at different revisions keep their own epochs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_shrink_when_values_grow_past_the_response_limit() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let prefix = prefix("mixed");
    let mut client = etcd_client(&etcd_server.endpoints()).await;
    // Small values first (in key order), so that pages grow large; then values of 3 KB,
    // where a page of that many keys is over etcd-client's 4 MiB.
    register_named(&mut client, &prefix, 2_000, |_| "a-small".into(), 16).await;
    register_named(&mut client, &prefix, 1_500, |_| "b-large".into(), 3_000).await;
    let sub = subscriber(&nats_server.url(), &etcd_server.endpoints(), &prefix).await;
    assert_eq!(sub.instances("a-small").len(), 2_000);
    assert_eq!(sub.instances("b-large").len(), 1_500);
    assert_eq!(sub.stats().registrations, 3_500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_taken_in_while_a_large_registry_is_listed() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let prefix = prefix("streamed");
    let mut client = etcd_client(&etcd_server.endpoints()).await;
    register_many(&mut client, &prefix, 20_000, 4, 16).await;

    // A steady stream of tokens (of instances etcd does not hold: dropped as unregistered)
    // into a subscription of 1,024 slots, about 5,000 a second: a listing of 40 pages that
    // left them waiting would overflow it after about 200 ms.
    let publisher = RawPublisher::connect(&nats_server.url(), &prefix).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seq = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..100 {
                    seq += 1;
                    let t = token("svc0", &format!("stray-{i}"), seq, Duration::from_secs(3));
                    publisher.token(&t).await;
                }
                publisher.flush().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut config = nats(&nats_server.url());
    config.subscription_capacity = 1024;
    let sub = Subscriber::builder()
        .nats(config)
        .etcd(etcd(&etcd_server.endpoints()))
        .prefix(&prefix)
        .start()
        .await
        .expect("subscriber starts");
    let at_start = sub.stats();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    stream.await.unwrap();

    let listed: usize = (0..4)
        .map(|s| sub.instances(&format!("svc{s}")).len())
        .sum();
    assert_eq!(
        listed, 20_000,
        "every registration listed when start() returns"
    );
    assert!(
        at_start.received > 0,
        "tokens were taken in while etcd was read: {at_start:?}"
    );
    assert_eq!(
        at_start.slow_consumer_events, 0,
        "nothing waited for the listing to end: {at_start:?}"
    );
    assert_eq!(at_start.etcd_resyncs, 1, "one listing: {at_start:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_delete_removes_at_once_and_old_tokens_stay_out() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let prefix = prefix("del");
    let mut client = etcd_client(&etcd_server.endpoints()).await;
    let publisher = RawPublisher::connect(&nats_server.url(), &prefix).await;
    let sub = subscriber(&nats_server.url(), &etcd_server.endpoints(), &prefix).await;
    let mut events = sub.events();

    let mut t = token("svc", "a", 10, Duration::from_secs(30));
    let lease_id = lease(&mut client, 60).await;
    t.epoch = register(&mut client, &prefix, &t, lease_id).await;
    wait_event(
        &mut events,
        Duration::from_secs(2),
        "Added(a) from the watch",
        |e| is_added(e, "a"),
    )
    .await;
    publisher.token(&t).await;

    let key = herald_shared::Subjects::new(&prefix)
        .unwrap()
        .key("svc", "a");
    client.delete(key, None).await.unwrap();
    // The cause tells the deletion from an expiry, which the token's TTL (30 s) puts far off.
    wait_event(
        &mut events,
        Duration::from_secs(5),
        "Removed(a, deregistered)",
        |e| is_removed(e, "a", RemovalCause::Deregistered),
    )
    .await;

    // The deleted incarnation keeps broadcasting: its tokens are dropped.
    let stale_before = sub.stats().stale_epoch_drops + sub.stats().duplicate_drops;
    for seq in 11..15 {
        t.seq = seq;
        publisher.token(&t).await;
    }
    let mut unregistered = token("svc", "a", 100, Duration::from_secs(30));
    unregistered.epoch = 0;
    publisher.token(&unregistered).await;
    // A registered marker's token, published last, is confirmed once all the above is judged.
    let mut marker = token("svc", "marker", 1, Duration::from_secs(30));
    marker.epoch = register(&mut client, &prefix, &marker, lease_id).await;
    publisher.token(&marker).await;
    herald_e2e::eventually(Duration::from_secs(2), "the marker confirmed", || {
        sub.get("svc", "marker").is_some_and(|m| m.is_confirmed())
    })
    .await;
    assert!(
        sub.get("svc", "a").is_none(),
        "a deleted registration must not come back by broadcast"
    );
    let stats = sub.stats();
    assert_eq!(
        stats.stale_epoch_drops + stats.duplicate_drops - stale_before,
        4,
        "the deleted epoch's tokens are stale: {stats:?}"
    );
    assert_eq!(
        stats.unregistered_drops, 1,
        "epoch 0 is unregistered: {stats:?}"
    );

    // A new registration (higher epoch) is welcome.
    let mut again = token("svc", "a", 1, Duration::from_secs(30));
    again.epoch = register(&mut client, &prefix, &again, lease_id).await;
    wait_event(&mut events, Duration::from_secs(2), "Added(a) again", |e| {
        is_added(e, "a")
    })
    .await;
    assert_eq!(sub.get("svc", "a").unwrap().epoch(), again.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_by_another_lease_fences_the_old_incarnation() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let prefix = prefix("takeover");
    let mut client = etcd_client(&etcd_server.endpoints()).await;
    let publisher = RawPublisher::connect(&nats_server.url(), &prefix).await;
    let sub = subscriber(&nats_server.url(), &etcd_server.endpoints(), &prefix).await;
    let mut events = sub.events();

    let mut old = token("svc", "dup", 50, Duration::from_secs(30));
    old.addr = "10.0.0.1:1".into();
    let first_lease = lease(&mut client, 60).await;
    old.epoch = register(&mut client, &prefix, &old, first_lease).await;
    wait_event(&mut events, Duration::from_secs(2), "Added(dup)", |e| {
        is_added(e, "dup")
    })
    .await;

    let mut new = token("svc", "dup", 1, Duration::from_secs(30));
    new.addr = "10.0.0.2:2".into();
    let second_lease = lease(&mut client, 60).await;
    new.epoch = register(&mut client, &prefix, &new, second_lease).await;
    wait_event(
        &mut events,
        Duration::from_secs(2),
        "Removed(dup, fenced)",
        |e| is_removed(e, "dup", RemovalCause::Fenced),
    )
    .await;
    wait_event(
        &mut events,
        Duration::from_secs(2),
        "Added(dup) under the new epoch",
        |e| is_added(e, "dup"),
    )
    .await;

    // The fenced incarnation's tokens are dropped, whatever their seq.
    old.seq = 1_000_000;
    publisher.token(&old).await;
    new.seq = 2;
    new.load = 0.5;
    publisher.token(&new).await;
    wait_event(
        &mut events,
        Duration::from_secs(2),
        "Updated(dup, load 0.5)",
        |e| matches!(e, herald_subscriber::Event::Updated(i) if i.id() == "dup" && i.load() == 0.5),
    )
    .await;
    let dup = sub.get("svc", "dup").unwrap();
    assert_eq!((dup.addr(), dup.epoch()), ("10.0.0.2:2", new.epoch));
    assert_eq!(sub.stats().stale_epoch_drops, 1);
    assert_eq!(sub.stats().fenced, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_tokens_are_dropped_by_default_with_etcd() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let prefix = prefix("require");
    let mut client = etcd_client(&etcd_server.endpoints()).await;
    let publisher = RawPublisher::connect(&nats_server.url(), &prefix).await;
    let sub = Subscriber::builder()
        .nats(nats(&nats_server.url()))
        .etcd(etcd(&etcd_server.endpoints()))
        .prefix(&prefix)
        .start()
        .await
        .unwrap();
    let mut events = sub.events();
    publisher
        .token(&token("svc", "rogue", 1, Duration::from_secs(30)))
        .await;
    let mut ok = token("svc", "registered", 1, Duration::from_secs(30));
    ok.epoch = register(&mut client, &prefix, &ok, 0).await;
    wait_event(
        &mut events,
        Duration::from_secs(2),
        "Added(registered)",
        |e| is_added(e, "registered"),
    )
    .await;
    ok.seq = 2;
    publisher.token(&ok).await;
    herald_e2e::eventually(Duration::from_secs(2), "the rogue token judged", || {
        sub.stats().unregistered_drops == 1
    })
    .await;
    assert_eq!(sub.instances("svc").ids(), vec!["registered"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_and_wrong_password_fail_fast_and_say_which() {
    init_tracing();
    let nats_server = NatsServer::start().await;
    let mut config = etcd(&[format!("http://127.0.0.1:{}", herald_testkit::free_port())]);
    config.connect_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = Subscriber::builder()
        .nats(nats(&nats_server.url()))
        .etcd(config)
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Etcd);
    let text = herald_e2e::chain(&err);
    assert!(text.contains("unreachable"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    let etcd_server = EtcdServer::builder().auth("right-password").start().await;
    let mut config = etcd(&etcd_server.endpoints());
    config.credentials = Some(("root".into(), "wrong-password".into()));
    config.connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = Subscriber::builder()
        .nats(nats(&nats_server.url()))
        .etcd(config)
        .start()
        .await
        .unwrap_err();
    let text = herald_e2e::chain(&err);
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );

    let mut config = etcd(&etcd_server.endpoints());
    config.credentials = Some(("root".into(), "right-password".into()));
    Subscriber::builder()
        .nats(nats(&nats_server.url()))
        .etcd(config)
        .start()
        .await
        .expect("the right password works");
}
