//! Invalid settings fail at start, name their field, and publish nothing.

mod common;

use std::time::Duration;

use common::announcer;
use herald_announcer::{Announcer, AnnouncerBuilder, ErrorKind};
use herald_shared::NatsConfig;
use herald_testkit::NatsServer;

fn invalid_builders(server: &NatsServer) -> Vec<(&'static str, AnnouncerBuilder)> {
    let nats = NatsConfig::new([server.url()]);
    let meta33 = (0..33).fold(announcer(server), |b, i| b.meta(format!("k{i}"), "v"));
    vec![
        (
            "service",
            Announcer::builder("bad.name", "10.0.0.7:8080").nats(nats.clone()),
        ),
        ("interval", announcer(server).interval(Duration::ZERO)),
        (
            "ttl",
            announcer(server)
                .interval(Duration::from_secs(1))
                .ttl(Duration::from_secs(1)),
        ),
        ("load", announcer(server).load(f32::NAN)),
        ("meta", meta33),
        (
            "addr",
            Announcer::builder("billing", "10.0.0.7").nats(nats.clone()),
        ),
        ("instance", announcer(server).instance("has space")),
        ("weight", announcer(server).weight(0)),
        ("zone", announcer(server).zone("eu 1")),
        ("prefix", announcer(server).prefix("a.b")),
        ("load_delta", announcer(server).load_delta(-0.5)),
        (
            "min_early_gap",
            announcer(server).min_early_gap(Duration::from_secs(2)),
        ),
        (
            "shutdown_timeout",
            announcer(server).shutdown_timeout(Duration::ZERO),
        ),
        ("nats.urls", announcer(server).nats(NatsConfig::new(["::"]))),
        ("nats", Announcer::builder("billing", "10.0.0.7:8080")),
    ]
}

/// A counter of the server's monitoring page `/varz`, such as `total_connections`.
async fn varz(server: &NatsServer, field: &str) -> u64 {
    let page = herald_testkit::http::get(server.monitor_port(), "/varz")
        .await
        .expect("/varz answers");
    assert_eq!(page.status, 200, "/varz: {}", page.body);
    let key = format!("\"{field}\":");
    let at = page
        .body
        .find(&key)
        .unwrap_or_else(|| panic!("/varz has no `{field}`: {}", page.body));
    let value = page.body[at + key.len()..].trim_start();
    let digits = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    value[..digits]
        .parse()
        .unwrap_or_else(|e| panic!("`{field}` of /varz is not a count ({e}): {value:.20}"))
}

#[tokio::test]
async fn invalid_settings_fail_at_start_naming_the_field_and_publish_nothing() {
    let server = NatsServer::start().await;
    let connections = varz(&server, "total_connections").await;
    let messages = varz(&server, "in_msgs").await;

    for (field, builder) in invalid_builders(&server) {
        let err = builder
            .start()
            .await
            .expect_err(&format!("an invalid `{field}` must fail start()"));
        assert_eq!(err.kind(), ErrorKind::Config, "`{field}`: {err}");
        assert_eq!(err.field(), Some(field), "the error names `{field}`: {err}");
        assert!(
            err.to_string().contains(field),
            "the message names `{field}`: {err}"
        );
    }
    // Validation comes before connecting: the server never saw these announcers.
    assert_eq!(
        varz(&server, "total_connections").await,
        connections,
        "an announcer that failed validation does not connect"
    );
    assert_eq!(
        varz(&server, "in_msgs").await,
        messages,
        "an announcer that failed validation publishes nothing"
    );

    // The counters do see an announcer: start() returns once its first token is flushed,
    // which the server counts before it answers the flush.
    let _valid = announcer(&server).start().await.expect("valid settings");
    assert_eq!(varz(&server, "total_connections").await, connections + 1);
    assert!(varz(&server, "in_msgs").await > messages);
}

#[tokio::test]
async fn validation_comes_before_connecting() {
    // No server listens on port 1: a connection attempt would fail with `Connect`.
    let nowhere = NatsConfig::new(["nats://127.0.0.1:1"]);
    let err = Announcer::builder("billing", "10.0.0.7:8080")
        .nats(nowhere.clone())
        .ttl(Duration::from_millis(500))
        .start()
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Config,
        "bounds are checked before connecting: {err}"
    );
    assert_eq!(err.field(), Some("ttl"));

    let mut nowhere = nowhere;
    nowhere.connect_timeout = Duration::from_millis(200);
    let err = Announcer::builder("billing", "10.0.0.7:8080")
        .nats(nowhere)
        .start()
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Connect,
        "valid settings, no server: {err}"
    );
}
