//! Heartbeats on the wire: between full tokens, periodic tokens go compact; a change, the
//! token after it, a probe answer and every tenth token go in full.

mod common;

use std::time::Duration;

use common::{Observer, SERVICE, announce_subject, announcer};
use herald_shared::Subjects;
use herald_testkit::NatsServer;

/// Fast enough for a few dozen tokens in a few seconds.
const INTERVAL: Duration = Duration::from_millis(100);

/// `F` for each full token and `h` for each heartbeat among the next `n` tokens.
async fn kinds(observer: &mut Observer, n: usize) -> String {
    let mut out = String::new();
    for _ in 0..n {
        let seen = observer.expect(Duration::from_secs(2), "a token").await;
        out.push(if seen.heartbeat { 'h' } else { 'F' });
    }
    out
}

#[tokio::test]
async fn periodic_tokens_go_compact_between_full_ones() {
    let server = NatsServer::start().await;
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;
    let announcer = announcer(&server)
        .full_token_every(10)
        .interval(INTERVAL)
        .meta("version", "1.0.0")
        .start()
        .await
        .unwrap();

    // The first token, its repeat, nine heartbeats, the tenth in full, nine more.
    assert_eq!(kinds(&mut observer, 21).await, "FFhhhhhhhhhFhhhhhhhhh");
    let (mut beat, mut full) = (0, usize::MAX);
    for _ in 0..10 {
        let seen = observer.expect(Duration::from_secs(2), "a token").await;
        if seen.heartbeat {
            beat = beat.max(seen.bytes);
        } else {
            full = full.min(seen.bytes);
        }
    }
    assert!(
        beat > 0 && beat * 2 < full,
        "a heartbeat of {beat} B against a full token of {full} B"
    );

    // A change goes in full, and so does the token after it.
    announcer.set_meta([("version", "1.0.1")]).await.unwrap();
    let change = loop {
        let seen = observer.expect(Duration::from_secs(2), "the change").await;
        if seen.token.meta.get("version").map(String::as_str) == Some("1.0.1") && !seen.heartbeat {
            break seen;
        }
    };
    assert_eq!(change.token.service, SERVICE);
    let repeat = observer.expect(Duration::from_secs(2), "its repeat").await;
    assert!(!repeat.heartbeat, "the token after a change is full too");
    assert_eq!(repeat.token.meta["version"], "1.0.1");

    // A probe is answered in full.
    observer
        .client
        .publish(Subjects::default().probe(SERVICE), bytes::Bytes::new())
        .await
        .unwrap();
    // The answer is full; a token or two sent before the probe arrived may come first.
    let mut answer = None;
    for _ in 0..5 {
        let seen = observer.expect(Duration::from_secs(2), "the answer").await;
        if !seen.heartbeat && announcer.stats().probe_answers >= 1 {
            answer = Some(seen);
            break;
        }
    }
    let answer = answer.expect("a full token answering the probe within five tokens");
    assert_eq!(answer.token.meta["version"], "1.0.1");
    assert!(announcer.stats().probe_answers >= 1);

    let stats = announcer.stats();
    assert!(
        stats.heartbeats_sent >= 18 && stats.heartbeats_sent < stats.tokens_sent,
        "{stats:?}"
    );
}

#[tokio::test]
async fn full_token_every_1_sends_no_heartbeat() {
    let server = NatsServer::start().await;
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;
    let announcer = announcer(&server)
        .full_token_every(1)
        .interval(INTERVAL)
        .start()
        .await
        .unwrap();
    assert_eq!(kinds(&mut observer, 12).await, "F".repeat(12));
    assert_eq!(announcer.stats().heartbeats_sent, 0);
}

#[tokio::test]
async fn full_token_every_out_of_bounds_is_refused_naming_it() {
    let server = NatsServer::start().await;
    for n in [0, 1001] {
        let err = announcer(&server)
            .full_token_every(n)
            .start()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("full_token_every"), "{err}");
    }
}
