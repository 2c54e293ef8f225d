//! Forged tokens from a client with announce rights, against real servers: copies of a live
//! instance's real heartbeat and full token with a `seq` pushed ahead, and a forged goodbye.
//! None of them removes, pins or redirects the instance; each is counted; and a real graceful
//! stop is still seen as a goodbye, a hundred times in a row.

use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_announcer::{Announcer, AnnouncerHandle};
use herald_e2e::{
    RawPublisher, etcd, init_tracing, is_added, is_removed, nats, prefix, subscriber,
    subscriber_with_etcd, wait_event,
};
use herald_shared::{Received, State, Token, codec};
use herald_subscriber::{Event, EventStream, RemovalCause, Strategy, Subscriber};
use herald_testkit::{EtcdServer, NatsServer};

const INTERVAL: Duration = Duration::from_millis(200);
const EVENT_WAIT: Duration = Duration::from_secs(10);
/// How long the forged instance must stay listed and picked.
const WATCHED: Duration = Duration::from_secs(10);

async fn announcer(
    nats_url: &str,
    etcd_endpoints: Option<&[String]>,
    prefix: &str,
) -> AnnouncerHandle {
    let mut builder = Announcer::builder("svc", "127.0.0.1:9000")
        .nats(nats(nats_url))
        .prefix(prefix)
        .instance("real")
        .interval(INTERVAL);
    if let Some(endpoints) = etcd_endpoints {
        builder = builder.etcd(etcd(endpoints));
    }
    builder.start().await.expect("announcer starts")
}

/// The next full token of `instance` heard on the bus, as a forger would copy it.
async fn copy_a_real_token(client: &async_nats::Client, prefix: &str, instance: &str) -> Token {
    let subject = herald_shared::Subjects::new(prefix)
        .unwrap()
        .announce("svc");
    let mut sub = client.subscribe(subject).await.expect("subscribe");
    let deadline = Instant::now() + EVENT_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, sub.next())
            .await
            .expect("a full token within the wait")
            .expect("subscription open");
        if let Ok(Received::Token(t)) = codec::receive(&msg.payload, "svc")
            && t.instance == instance
        {
            return t.to_owned();
        }
    }
}

/// Publishes `t` with `seq` as a full token and as a heartbeat.
async fn forge_both(raw: &RawPublisher, t: &Token, seq: u64) {
    let mut forged = t.clone();
    forged.seq = seq;
    raw.token(&forged).await;
    let beat = codec::encode_heartbeat(&forged).expect("valid");
    raw.bytes("svc", beat).await;
    raw.flush().await;
}

/// Servers, a subscriber and the real instance it lists, and a forger's connection.
struct Scene {
    _nats: NatsServer,
    _etcd: Option<EtcdServer>,
    sub: Subscriber,
    events: EventStream,
    _real: AnnouncerHandle,
    raw: RawPublisher,
    prefix: String,
}

impl Scene {
    async fn start(test: &str, with_etcd: bool) -> Scene {
        init_tracing();
        let nats_server = NatsServer::start().await;
        let etcd_server = match with_etcd {
            true => Some(EtcdServer::start().await),
            false => None,
        };
        let endpoints = etcd_server.as_ref().map(EtcdServer::endpoints);
        let prefix = prefix(test);
        let sub = match &endpoints {
            Some(endpoints) => subscriber_with_etcd(&nats_server.url(), endpoints, &prefix).await,
            None => subscriber(&nats_server.url(), &prefix).await,
        };
        let mut events = sub.events();
        let real = announcer(&nats_server.url(), endpoints.as_deref(), &prefix).await;
        wait_event(&mut events, EVENT_WAIT, "Added(real)", |e| {
            is_added(e, "real")
        })
        .await;
        let raw = RawPublisher::connect(&nats_server.url(), &prefix).await;
        Scene {
            _nats: nats_server,
            _etcd: etcd_server,
            sub,
            events,
            _real: real,
            raw,
            prefix,
        }
    }
}

/// Forges a copy of the instance's real tokens with `seq` at 2^64-1 and at seq + 5000, then
/// checks for [`WATCHED`] that the instance stays listed, picked, and refreshed by its real
/// tokens, that the forgeries are counted as jumps, and that no loss is made up.
async fn forged_seqs_change_nothing(scene: Scene) {
    let Scene {
        sub,
        mut events,
        raw,
        prefix,
        ..
    } = scene;
    let real = copy_a_real_token(&raw.client, &prefix, "real").await;
    let before = sub.stats();
    forge_both(&raw, &real, u64::MAX).await;
    forge_both(&raw, &real, real.seq + 5_000).await;

    let started = Instant::now();
    let mut last_seq = 0;
    while started.elapsed() < WATCHED {
        let listed = sub
            .get("svc", "real")
            .expect("the real instance stays listed");
        assert_eq!(listed.state(), State::Up, "and up");
        assert!(
            listed.seq() < real.seq + 5_000,
            "its seq is the real run's, not a forgery's: {}",
            listed.seq()
        );
        last_seq = last_seq.max(listed.seq());
        let picked = sub
            .pick("svc", Strategy::RoundRobin)
            .expect("the real instance is picked");
        assert_eq!(picked.id(), "real");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = sub.stats();
    let periods = (WATCHED.as_millis() / INTERVAL.as_millis()) as u64;
    assert!(
        last_seq >= real.seq + periods / 2,
        "its real tokens kept being applied: seq {} after {periods} periods from {}",
        last_seq,
        real.seq
    );
    assert!(
        after.accepted - before.accepted >= periods / 2,
        "real tokens accepted: {}",
        after.accepted - before.accepted
    );
    assert_eq!(
        after.seq_jump_drops - before.seq_jump_drops,
        4,
        "the four forgeries are counted as seq jumps"
    );
    assert!(
        after.tokens_lost - before.tokens_lost < 5,
        "no loss is made up from a forged seq: {}",
        after.tokens_lost - before.tokens_lost
    );
    assert_eq!(after.stale_epoch_drops, before.stale_epoch_drops);
    assert_eq!(after.heartbeats_unknown, before.heartbeats_unknown);
    nothing_removed(&mut events).await;
}

/// Asserts that no event received so far removed an instance.
async fn nothing_removed(events: &mut EventStream) {
    while let Ok(Some(e)) = tokio::time::timeout(Duration::ZERO, events.next()).await {
        assert!(
            !matches!(e, Event::Removed { .. }),
            "nothing was removed: {e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_seq_neither_removes_nor_pins_a_registered_instance() {
    forged_seqs_change_nothing(Scene::start("forged_seq_registry", true).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_seq_neither_removes_nor_pins_an_instance_without_etcd() {
    forged_seqs_change_nothing(Scene::start("forged_seq_bus", false).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_goodbye_does_not_remove_a_registered_instance() {
    let scene = Scene::start("forged_goodbye", true).await;
    // The servers and the real announcer stay in `scene` until the end.
    let Scene {
        sub,
        mut events,
        raw,
        prefix,
        ..
    } = scene;
    let real = copy_a_real_token(&raw.client, &prefix, "real").await;

    // Within the pace, so that it is believed as far as a bus message can be.
    let mut goodbye = real.clone();
    goodbye.seq = real.seq + 20;
    goodbye.state = State::Leaving;
    raw.token(&goodbye).await;
    raw.flush().await;
    wait_event(
        &mut events,
        EVENT_WAIT,
        "the forged goodbye stops picks",
        |e| matches!(e, Event::Updated(i) if i.id() == "real" && i.state() == State::Leaving),
    )
    .await;
    wait_event(
        &mut events,
        EVENT_WAIT,
        "the next real token refutes it",
        |e| matches!(e, Event::Updated(i) if i.id() == "real" && i.state() == State::Up),
    )
    .await;
    assert_eq!(
        sub.stats().refuted_goodbyes,
        1,
        "the forged goodbye is counted"
    );

    // Far ahead: a jump, not even a pause in picks.
    goodbye.seq = real.seq + 5_000;
    let jumps = sub.stats().seq_jump_drops;
    raw.token(&goodbye).await;
    raw.flush().await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let listed = sub
            .get("svc", "real")
            .expect("the real instance stays listed");
        assert_eq!(
            listed.state(),
            State::Up,
            "a goodbye far ahead changes nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sub.stats().seq_jump_drops, jumps + 1);
    nothing_removed(&mut events).await;
    assert_eq!(sub.stats().goodbyes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_graceful_stop_is_a_goodbye_a_hundred_times_in_a_row() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let prefix = prefix("goodbye_100");
    let sub = subscriber_with_etcd(&nats_server.url(), &etcd_server.endpoints(), &prefix).await;
    let mut events = sub.events();
    let mut slowest = Duration::ZERO;
    for round in 0..100 {
        let handle = announcer(&nats_server.url(), Some(&etcd_server.endpoints()), &prefix).await;
        wait_event(&mut events, EVENT_WAIT, "Added(real)", |e| {
            is_added(e, "real")
        })
        .await;
        let stopping = Instant::now();
        handle.shutdown().await.expect("a graceful stop");
        let removed = wait_event(
            &mut events,
            EVENT_WAIT,
            "Removed(real)",
            |e| matches!(e, Event::Removed { instance, .. } if instance.id() == "real"),
        )
        .await;
        assert!(
            is_removed(&removed, "real", RemovalCause::Goodbye),
            "stop {round} was seen as {removed:?}"
        );
        slowest = slowest.max(stopping.elapsed());
    }
    let stats = sub.stats();
    assert_eq!(stats.goodbyes, 100);
    assert_eq!(stats.deregistrations, 0);
    assert_eq!(
        stats.refuted_goodbyes, 0,
        "no real goodbye was taken for a forgery"
    );
    eprintln!("slowest stop to removal: {slowest:?}");
}
