//! Stale epochs, duplicates and reordered tokens injected by a raw publisher are dropped and
//! counted; goodbyes remove at once and cannot be undone by late tokens.

use std::time::{Duration, Instant};

use herald_e2e::{
    RawPublisher, init_tracing, is_added, is_removed, prefix, subscriber, token, wait_event,
};
use herald_shared::State;
use herald_subscriber::RemovalCause;
use herald_testkit::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_duplicate_tokens_are_dropped_and_counted() {
    init_tracing();
    let nats = NatsServer::start().await;
    let prefix = prefix("merge");
    let sub = subscriber(&nats.url(), &prefix).await;
    let publisher = RawPublisher::connect(&nats.url(), &prefix).await;
    let mut events = sub.events();
    let ttl = Duration::from_secs(30);

    let mut t = token("svc", "a", 100, ttl);
    t.epoch = 5;
    t.load = 0.5;
    publisher.token(&t).await;
    wait_event(&mut events, Duration::from_secs(5), "Added(a)", |e| {
        is_added(e, "a")
    })
    .await;

    let mut stale = t.clone();
    stale.epoch = 4;
    stale.seq = 500;
    stale.load = 0.9;
    publisher.token(&stale).await; // older incarnation
    let mut stale_bye = stale.clone();
    stale_bye.state = State::Leaving;
    stale_bye.seq = 501;
    publisher.token(&stale_bye).await; // an old incarnation's goodbye
    publisher.token(&t).await; // exact duplicate
    let mut reordered = t.clone();
    reordered.seq = 99;
    reordered.load = 0.9;
    publisher.token(&reordered).await; // older seq, same epoch
    let mut newer = t.clone();
    newer.seq = 103; // 101 and 102 lost
    newer.load = 0.7;
    publisher.token(&newer).await;
    publisher.token(&token("svc", "marker", 1, ttl)).await;
    wait_event(&mut events, Duration::from_secs(5), "Added(marker)", |e| {
        is_added(e, "marker")
    })
    .await;

    let stats = sub.stats();
    assert_eq!(
        stats.stale_epoch_drops, 2,
        "both tokens of epoch 4 are stale"
    );
    assert_eq!(
        stats.duplicate_drops, 2,
        "the duplicate and the reordered token"
    );
    assert_eq!(stats.tokens_lost, 2, "seq 101 and 102 never arrived");
    let a = sub
        .get("svc", "a")
        .expect("a survives the old incarnation's goodbye");
    assert_eq!((a.load(), a.seq(), a.epoch()), (0.7, 103, 5));

    // A goodbye removes at once; a token sent before it, arriving late, cannot resurrect.
    let mut bye = newer.clone();
    bye.seq = 104;
    bye.state = State::Leaving;
    let sent = Instant::now();
    publisher.token(&bye).await;
    wait_event(
        &mut events,
        Duration::from_secs(5),
        "Removed(a, goodbye)",
        |e| is_removed(e, "a", RemovalCause::Goodbye),
    )
    .await;
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "goodbye must act at once, not after the TTL"
    );
    let mut late = newer.clone();
    late.seq = 103;
    publisher.token(&late).await;
    publisher.token(&token("svc", "marker2", 1, ttl)).await;
    wait_event(&mut events, Duration::from_secs(5), "Added(marker2)", |e| {
        is_added(e, "marker2")
    })
    .await;
    assert!(
        sub.get("svc", "a").is_none(),
        "a late token must not bring a departed instance back"
    );
    assert_eq!(sub.stats().goodbyes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_one_instance_id_are_noticed_without_etcd() {
    init_tracing();
    let nats = NatsServer::start().await;
    let prefix = prefix("tworuns");
    let sub = subscriber(&nats.url(), &prefix).await;
    let start = |addr: &'static str| {
        herald_announcer::Announcer::builder("svc", addr)
            .nats(herald_e2e::nats(&nats.url()))
            .prefix(&prefix)
            .instance("same")
            .interval(Duration::from_millis(100))
            .start()
    };
    let older = start("10.0.0.1:1").await.unwrap();
    herald_e2e::eventually(Duration::from_secs(2), "the first run listed", || {
        sub.get("svc", "same").is_some()
    })
    .await;
    // A second process with the same id, after the first one's start-up check (at most 1 s)
    // is over, with room for a loaded machine: only the newcomer's check hears the other run
    // (a later run, so a larger seq, far ahead of the listed one: as a forgery would be).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let newer = start("10.0.0.2:2").await.unwrap();
    herald_e2e::eventually(Duration::from_secs(3), "the conflict counted", || {
        sub.stats().two_runs == 1
    })
    .await;
    assert_eq!(
        sub.get("svc", "same")
            .map(|i| i.addr().to_owned())
            .as_deref(),
        Some("10.0.0.1:1"),
        "the run listed first keeps its place while it announces"
    );
    let dropped = sub.stats().seq_jump_drops;
    herald_e2e::eventually(
        Duration::from_secs(3),
        "the other run's tokens keep being dropped, as too far ahead",
        || sub.stats().seq_jump_drops > dropped,
    )
    .await;
    assert_eq!(
        sub.get("svc", "same")
            .map(|i| i.addr().to_owned())
            .as_deref(),
        Some("10.0.0.1:1"),
        "and the listed run stays"
    );
    assert_eq!(
        sub.stats().two_runs,
        1,
        "counted once a minute, not per token"
    );
    herald_e2e::eventually(Duration::from_secs(3), "the newer process warned", || {
        newer.stats().namesakes_heard == 1
    })
    .await;
    assert_eq!(
        older.stats().namesakes_heard,
        0,
        "it started alone and listens only at start"
    );
    // Once the listed run is gone, the other one takes its place within half a TTL.
    older.shutdown().await.ok();
    herald_e2e::eventually(Duration::from_secs(3), "the other run listed", || {
        sub.get("svc", "same")
            .is_some_and(|i| i.addr() == "10.0.0.2:2")
    })
    .await;
    newer.shutdown().await.unwrap();
}
