//! A NATS restart: while the subscriber is cut off nothing expires (the silence is its own),
//! and after the restart every instance is fresh again within about a second plus one
//! interval, with nothing duplicated.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_announcer::Announcer;
use herald_e2e::{eventually, init_tracing, nats, prefix, subscriber};
use herald_subscriber::Event;
use herald_testkit::NatsServer;

const INTERVAL: Duration = Duration::from_millis(200);
const TTL: Duration = Duration::from_millis(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_expires_while_nats_is_down_and_all_is_fresh_after() {
    init_tracing();
    let mut server = NatsServer::start().await;
    let prefix = prefix("restart");
    let sub = subscriber(&server.url(), &prefix).await;
    let mut events = sub.events();
    let mut announcers = Vec::new();
    for i in 0..5 {
        let a = Announcer::builder("svc", "127.0.0.1:7000")
            .nats(nats(&server.url()))
            .prefix(&prefix)
            .instance(format!("a{i}"))
            .interval(INTERVAL)
            .ttl(TTL)
            .start()
            .await
            .unwrap();
        announcers.push(a);
    }
    eventually(Duration::from_secs(3), "5 listed", || {
        sub.instances("svc").len() == 5
    })
    .await;
    while let Some(Some(_)) = futures::FutureExt::now_or_never(events.next()) {}

    server.kill();
    let killed = Instant::now();
    let seq_at_kill: HashMap<String, u64> = sub
        .instances("svc")
        .iter()
        .map(|i| (i.id().to_owned(), i.seq()))
        .collect();
    // The outage itself is the behaviour under test: two TTLs of silence.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(
        sub.instances("svc").len(),
        5,
        "instances expired while our own link was down"
    );
    assert_eq!(sub.stats().expirations, 0);

    server.restart().await;
    let restarted = Instant::now();
    eventually(
        Duration::from_secs(5),
        "every instance fresh after the restart",
        || {
            sub.instances("svc")
                .iter()
                .all(|i| i.seq() > seq_at_kill[i.id()])
        },
    )
    .await;
    tracing::info!(outage = ?restarted - killed, fresh_after = ?restarted.elapsed(), "recovered");

    // Past one more TTL nothing was lost either: the fresh TTL after reconnect held.
    tokio::time::sleep(TTL).await;
    let stats = sub.stats();
    assert_eq!(stats.expirations, 0, "{stats:?}");
    assert_eq!(stats.added, 5, "no instance was added twice");
    assert!(stats.reconnects >= 1, "the reconnect was seen: {stats:?}");
    while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
        assert!(
            !matches!(e, Event::Added(_) | Event::Removed { .. }),
            "membership flapped: {e:?}"
        );
    }
    assert_eq!(sub.instances("svc").len(), 5);
}
