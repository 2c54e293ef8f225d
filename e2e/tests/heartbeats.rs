//! Heartbeats between a real announcer and subscriber: an instance refreshed by compact
//! tokens stays listed with no probe at steady state and still expires by its TTL when it
//! crashes; a heartbeat of an instance the subscriber does not list makes it probe that
//! service.

use std::time::Duration;

use futures::StreamExt;
use herald_announcer::Announcer;
use herald_e2e::{
    RawPublisher, eventually, init_tracing, is_added, is_removed, nats, prefix, subscriber, token,
    wait_event,
};
use herald_shared::{Subjects, codec, round_trip};
use herald_subscriber::{Event, RemovalCause};
use herald_testkit::NatsServer;

const INTERVAL: Duration = Duration::from_millis(100);
const TTL: Duration = Duration::from_millis(400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_on_heartbeats_stays_listed_without_probes_and_expires_when_it_crashes() {
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("beats");
    let sub = subscriber(&server.url(), &prefix).await;
    let mut events = sub.events();
    let announcer = Announcer::builder("svc", "127.0.0.1:7000")
        .nats(nats(&server.url()))
        .prefix(&prefix)
        .instance("a")
        .interval(INTERVAL)
        .ttl(TTL)
        .full_token_every(10)
        .start()
        .await
        .unwrap();
    wait_event(&mut events, Duration::from_secs(5), "a listed", |e| {
        is_added(e, "a")
    })
    .await;
    let probes = sub.stats().probes_sent;

    // Five TTLs of mostly heartbeats (time is the behaviour here): never removed.
    let watch = tokio::time::timeout(TTL * 5, async {
        while let Some(e) = events.next().await {
            assert!(
                !matches!(e, Event::Removed { .. }),
                "removed while announcing: {e:?}"
            );
        }
    });
    let _ = watch.await;
    let stats = sub.stats();
    assert!(stats.heartbeats >= 10, "{stats:?}");
    assert_eq!(stats.heartbeats_unknown, 0);
    assert_eq!(stats.probes_sent, probes, "no probe at steady state");
    assert!(announcer.stats().heartbeats_sent >= 10);
    assert_eq!(sub.instances("svc").len(), 1);

    drop(announcer);
    wait_event(&mut events, TTL * 5, "a expired", |e| {
        is_removed(e, "a", RemovalCause::Expired)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_of_an_instance_not_listed_probes_its_service() {
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("beatprobe");
    let sub = subscriber(&server.url(), &prefix).await;
    let subjects = Subjects::new(&prefix).unwrap();
    let watcher = async_nats::connect(server.url()).await.unwrap();
    let mut probes = watcher.subscribe(subjects.probe("svc")).await.unwrap();
    round_trip::confirm_subscriptions(&watcher, Duration::from_secs(5))
        .await
        .unwrap();

    let publisher = RawPublisher::connect(&server.url(), &prefix).await;
    let ghost = token("svc", "ghost", 7, TTL);
    publisher
        .bytes("svc", codec::encode_heartbeat(&ghost).unwrap())
        .await;
    publisher.flush().await;

    tokio::time::timeout(Duration::from_secs(5), probes.next())
        .await
        .expect("a probe of svc")
        .expect("probe subscription open");
    eventually(Duration::from_secs(5), "the heartbeat counted", || {
        sub.stats().heartbeats_unknown == 1
    })
    .await;
    assert!(sub.instances("svc").is_empty(), "a heartbeat lists nothing");
}
