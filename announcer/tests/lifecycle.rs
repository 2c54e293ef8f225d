//! Start, periodic tokens, drain, metadata, shutdown and drop, against a real nats-server.

mod common;

use std::time::Duration;

use common::{Observer, SERVICE, announce_subject, announcer, ms_between};
use herald_announcer::{Announcer, Connection, ErrorKind};
use herald_shared::{NatsConfig, NatsEvent, State, unix_micros};
use herald_testkit::NatsServer;
use tokio::time::Instant;

#[tokio::test]
async fn start_publishes_the_first_token_before_returning() {
    let server = NatsServer::start().await;
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;

    let before = unix_micros();
    let announcer = announcer(&server)
        .zone("eu-1")
        .weight(7)
        .meta("version", "1.4.2")
        .load(0.3)
        .start()
        .await
        .expect("announcer starts");
    let after = unix_micros();
    assert_eq!(
        announcer.stats().tokens_sent,
        1,
        "start sends exactly one token"
    );

    let first = observer
        .expect(Duration::from_secs(1), "the first token")
        .await
        .token;
    assert!(
        (before..=after).contains(&first.seq),
        "the first seq is the start time in micros: {before} <= {} <= {after}",
        first.seq
    );
    assert_eq!(first.service, SERVICE);
    assert_eq!(first.instance, "billing-1");
    assert_eq!(first.addr, "10.0.0.7:8080");
    assert_eq!(first.state, State::Up);
    assert_eq!(first.zone.as_deref(), Some("eu-1"));
    assert_eq!(first.weight, 7);
    assert_eq!(first.meta.get("version").map(String::as_str), Some("1.4.2"));
    assert_eq!(first.load, 0.3);
    assert_eq!(first.epoch, 0, "no registration: epoch 0");
    assert_eq!(first.ttl_ms, 3_000, "ttl defaults to 3 x interval");
    assert_eq!(announcer.token(), first, "token() is the last token sent");
    assert_eq!(announcer.instance(), "billing-1");
    assert_eq!(announcer.service(), SERVICE);
}

#[tokio::test]
async fn start_on_a_shared_client_publishes_before_returning() {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;

    let announcer = Announcer::builder(SERVICE, "10.0.0.7:8080")
        .connection(&Connection::new(client.clone()))
        .start()
        .await
        .expect("announcer starts on a shared client");
    // One connection's messages reach a subscriber in order: a marker published after
    // start() returned arrives after the first token only if start() published it.
    publish_marker(&client).await;
    let first = observer
        .expect(Duration::from_secs(1), "the first token")
        .await
        .token;
    assert_eq!(
        first.instance,
        announcer.instance(),
        "the first token precedes anything published after start() returned"
    );
    assert!(
        first
            .instance
            .starts_with(|c: char| c.is_ascii_alphanumeric())
            && first.instance.len() > 17,
        "a generated instance id is {{host}}-{{16 hex}}: {}",
        first.instance
    );
}

fn marker() -> herald_shared::Token {
    herald_shared::Token::new(SERVICE, "marker", "marker:1")
}

/// Publishes [`marker`] on `client`: every message `client` published before it reaches a
/// subscriber before it.
async fn publish_marker(client: &async_nats::Client) {
    client
        .publish(
            announce_subject(),
            herald_shared::codec::encode(&marker()).unwrap().into(),
        )
        .await
        .unwrap();
}

fn is_marker(seen: &common::Seen) -> bool {
    seen.token.instance == marker().instance
}

#[tokio::test]
async fn periodic_tokens_are_jittered_and_numbered() {
    let server = NatsServer::start().await;
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;
    let interval = Duration::from_millis(300);
    let _announcer = announcer(&server).interval(interval).start().await.unwrap();

    let mut seen = Vec::new();
    for i in 0..11 {
        seen.push(observer.expect(interval * 2, &format!("token {i}")).await);
    }
    // Gaps as the announcer stamped them when it sent each token: jitter is +-10 %
    // (270..330 ms), and the next token is timed from the moment the last one went out, so
    // a busy machine can only lengthen a gap, never shorten it (1 ms of slack for the
    // millisecond stamps).
    let gaps: Vec<u64> = seen
        .windows(2)
        .map(|w| w[1].token.sent_at_ms - w[0].token.sent_at_ms)
        .collect();
    for (i, gap) in gaps.iter().enumerate() {
        assert!(
            *gap >= 269,
            "gap {i} must be at least 0.9 x 300 ms: {gaps:?}"
        );
    }
    let span: u64 = gaps.iter().sum();
    assert!(
        span < 10 * 330 + 3_000,
        "ten gaps take about ten intervals, not far more: {gaps:?}"
    );
    let spread = gaps.iter().max().unwrap() - gaps.iter().min().unwrap();
    assert!(spread > 5, "periodic gaps must be jittered: {gaps:?}");
    for w in seen.windows(2) {
        assert_eq!(
            w[1].token.seq,
            w[0].token.seq + 1,
            "seq grows by exactly one per token"
        );
    }
    eprintln!("periodic gaps as sent (ms): {gaps:?}");
}

#[tokio::test]
async fn drain_publishes_draining_at_once_and_keeps_it() {
    let server = NatsServer::start().await;
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;
    let interval = Duration::from_secs(5);
    let announcer = announcer(&server).interval(interval).start().await.unwrap();
    observer
        .expect(Duration::from_secs(1), "the first token")
        .await;

    let asked = Instant::now();
    announcer.drain().await.expect("drain succeeds");
    let returned = Instant::now();
    // drain() returns once the draining token is flushed: it is the next token, well
    // before the next period (5 s).
    let drained = observer
        .expect(Duration::from_secs(2), "the draining token")
        .await;
    assert_eq!(drained.token.state, State::Draining);
    eprintln!(
        "drain(): returned after {:.1} ms, token seen after {:.1} ms",
        ms_between(asked, returned),
        ms_between(asked, drained.at)
    );
    let next = observer
        .expect(interval * 2, "the next periodic token")
        .await;
    assert_eq!(
        next.token.state,
        State::Draining,
        "later tokens stay draining"
    );
    assert_eq!(next.token.seq, drained.token.seq + 1);
}

#[tokio::test]
async fn set_meta_publishes_at_once_and_refuses_bad_maps() {
    let server = NatsServer::start().await;
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;
    let announcer = announcer(&server)
        .interval(Duration::from_secs(5))
        .meta("version", "1")
        .start()
        .await
        .unwrap();
    observer
        .expect(Duration::from_secs(1), "the first token")
        .await;

    announcer.set_meta([("version", "2")]).await.unwrap();
    // The next periodic token is 5 s away: a token within 2 s is the metadata one.
    let updated = observer
        .expect(Duration::from_secs(2), "the metadata token")
        .await;
    assert_eq!(
        updated.token.meta.get("version").map(String::as_str),
        Some("2")
    );

    let too_many = (0..33).map(|i| (format!("k{i}"), "v".to_owned()));
    let sent = announcer.stats().tokens_sent;
    let err = announcer.set_meta(too_many).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(
        err.field(),
        Some("meta"),
        "the error names the field: {err}"
    );
    assert_eq!(
        announcer.stats().tokens_sent,
        sent,
        "a refused map publishes nothing"
    );
    assert_eq!(
        announcer.token().meta.get("version").map(String::as_str),
        Some("2"),
        "a refused map keeps the previous metadata"
    );

    // On the wire too: the token of the next valid map directly follows the metadata one.
    announcer.set_meta([("version", "3")]).await.unwrap();
    let next = observer
        .expect(Duration::from_secs(2), "the next metadata token")
        .await;
    assert_eq!(
        next.token.meta.get("version").map(String::as_str),
        Some("3")
    );
    assert_eq!(
        next.token.seq,
        updated.token.seq + 1,
        "nothing went out between the two accepted maps"
    );
}

#[tokio::test]
async fn shutdown_sends_leaving_and_returns_well_within_the_deadline() {
    let server = NatsServer::start().await;
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let interval = Duration::from_millis(200);
    let announcer = announcer(&server)
        .connection(&Connection::new(client.clone()))
        .interval(interval)
        .shutdown_timeout(Duration::from_secs(20))
        .start()
        .await
        .unwrap();
    let first = observer
        .expect(Duration::from_secs(1), "the first token")
        .await;

    let asked = Instant::now();
    announcer.shutdown().await.expect("shutdown succeeds");
    let took = ms_between(asked, Instant::now());
    assert!(
        took < 5_000.0,
        "shutdown returns when the goodbye is flushed, not at its deadline (20 s): took \
         {took:.1} ms"
    );
    let mut last = observer
        .expect(Duration::from_secs(2), "the leaving token")
        .await;
    while last.token.state != State::Leaving {
        // A periodic token may have gone out just before shutdown().
        last = observer
            .expect(Duration::from_secs(2), "the leaving token")
            .await;
    }
    assert!(
        last.token.seq > first.token.seq,
        "leaving carries the next seq"
    );
    eprintln!("shutdown(): returned after {took:.1} ms");
    // The announcer published on `client`: whatever it sent after the leaving token would
    // arrive before a marker published on the same connection now.
    publish_marker(&client).await;
    let next = observer.expect(Duration::from_secs(2), "the marker").await;
    assert!(
        is_marker(&next),
        "nothing follows the leaving token: saw {} (state {}, seq {})",
        next.token.instance,
        next.token.state,
        next.token.seq
    );
}

#[tokio::test]
async fn dropping_the_handle_stops_tokens_without_a_goodbye() {
    let server = NatsServer::start().await;
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let interval = Duration::from_millis(200);
    let announcer = announcer(&server)
        .connection(&Connection::new(client.clone()))
        .interval(interval)
        .start()
        .await
        .unwrap();
    observer
        .expect(Duration::from_secs(1), "the first token")
        .await;
    observer.expect(interval * 2, "a periodic token").await;

    let stopped = announcer.stopped();
    drop(announcer);
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("a dropped handle stops its task");
    // A token sent just before the drop may still be on its way; nothing after it, and
    // no goodbye. The announcer published on `client`: everything it sent arrives before a
    // marker published on the same connection now.
    publish_marker(&client).await;
    let mut after = Vec::new();
    loop {
        let seen = observer.expect(Duration::from_secs(2), "the marker").await;
        if is_marker(&seen) {
            break;
        }
        after.push(seen);
    }
    assert!(
        after.len() <= 1 && after.iter().all(|s| s.token.state == State::Up),
        "a dropped handle stops the tokens without a leaving token: {:?}",
        after
            .iter()
            .map(|s| (s.token.seq, s.token.state))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn shutdown_times_out_when_nats_is_gone() {
    let mut server = NatsServer::start().await;
    let (client, events) = NatsConfig::new([server.url()]).connect().await.unwrap();
    let announcer = Announcer::builder(SERVICE, "10.0.0.7:8080")
        .connection(&Connection::new(client))
        .interval(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let mut events = events.subscribe();
    server.kill();
    // Until the client has noticed, a goodbye could still be written to the dead socket.
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("the client notices the server is gone")
            .unwrap();
        if event == NatsEvent::Disconnected {
            break;
        }
    }

    let asked = Instant::now();
    let err = announcer.shutdown().await.unwrap_err();
    let took = ms_between(asked, Instant::now());
    assert_eq!(
        err.kind(),
        ErrorKind::TimedOut,
        "no server, no flush: {err}"
    );
    assert!(
        (295.0..3_000.0).contains(&took),
        "shutdown gives up at its deadline (300 ms), never before, took {took:.1} ms"
    );
}
