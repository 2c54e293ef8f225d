//! Republish right after NATS comes back.

mod common;

use std::time::Duration;

use common::{Observer, SERVICE, announce_subject, announcer, ms_between};
use herald_announcer::{Announcer, Connection};
use herald_shared::{NatsConfig, NatsEvent};
use herald_testkit::NatsServer;
use tokio::time::Instant;

/// A long interval, so that the token seen after the restart can only be the republish.
const INTERVAL: Duration = Duration::from_secs(5);

/// How long the server stays down: long enough for the reconnect backoff to reach its cap,
/// which is the slow case of the republish.
const OUTAGE: Duration = Duration::from_millis(1_000);

#[tokio::test]
async fn an_announcer_with_its_own_connection_republishes_after_a_restart() {
    let mut server = NatsServer::start().await;
    // The observer reconnects faster than the announcer (20 ms vs 500 ms backoff cap), so it
    // is nearly always back first; when it is not, the republish may have been missed and
    // the kill/restart is tried again.
    let mut fast = NatsConfig::new([server.url()]);
    fast.max_reconnect_delay = Duration::from_millis(20);
    let (client, events) = fast.connect().await.unwrap();
    let mut observer = Observer::on(client, &announce_subject()).await;
    let announcer = announcer(&server).interval(INTERVAL).start().await.unwrap();
    observer
        .expect(Duration::from_secs(1), "the first token")
        .await;

    for attempt in 1..=3 {
        let mut connected = events.subscribe();
        let reconnects_before = announcer.stats().reconnects;
        server.kill();
        tokio::time::sleep(OUTAGE).await;
        server.restart().await;
        let restarted = Instant::now();
        let restarted_wall_ms = herald_shared::unix_millis();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(3), connected.recv())
                .await
                .expect("the observer reconnects")
                .unwrap();
            if event == NatsEvent::Connected {
                break;
            }
        }
        herald_shared::round_trip::confirm_subscriptions(&observer.client, Duration::from_secs(2))
            .await
            .unwrap();
        if announcer.stats().reconnects > reconnects_before {
            eprintln!("attempt {attempt}: the announcer came back before the observer; again");
            continue;
        }
        // A republish of an earlier attempt may still be on its way: skip what was sent
        // before this restart.
        let token = loop {
            let seen = observer
                .expect(Duration::from_secs(2), "the republished token")
                .await;
            if seen.token.sent_at_ms >= restarted_wall_ms {
                break seen;
            }
        };
        let after = ms_between(restarted, token.at);
        assert!(
            after < 1_000.0,
            "republished {after:.0} ms after the restart, not within 1 s"
        );
        assert_eq!(token.token.service, SERVICE);
        assert!(
            announcer.stats().reconnects > reconnects_before,
            "the reconnect is counted"
        );
        eprintln!("republished {after:.0} ms after the restart (attempt {attempt})");
        return;
    }
    panic!("the observer never came back before the announcer in 3 restarts");
}

#[tokio::test]
async fn an_announcer_on_a_shared_client_republishes_after_a_restart() {
    let mut server = NatsServer::start().await;
    let (client, _events) = NatsConfig::new([server.url()]).connect().await.unwrap();
    // Same connection as the announcer: async-nats restores subscriptions before it sends
    // anything queued after the reconnect, so the observer cannot miss the republish.
    let mut observer = Observer::on(client.clone(), &announce_subject()).await;
    let announcer = Announcer::builder(SERVICE, "10.0.0.7:8080")
        .connection(&Connection::new(client))
        .interval(INTERVAL)
        .start()
        .await
        .unwrap();
    observer
        .expect(Duration::from_secs(1), "the first token")
        .await;

    server.kill();
    tokio::time::sleep(OUTAGE).await;
    server.restart().await;
    let restarted = Instant::now();
    let token = observer
        .expect(Duration::from_secs(2), "the republished token")
        .await;
    let after = ms_between(restarted, token.at);
    assert!(
        after < 1_000.0,
        "republished {after:.0} ms after the restart, not within 1 s"
    );
    assert_eq!(announcer.stats().reconnects, 1, "one reconnect counted");
    eprintln!("shared client: republished {after:.0} ms after the restart");
}
