//! Invalid settings fail at start, name their field, and publish nothing.

mod common;

use std::time::Duration;

use common::{Observer, announcer};
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

#[tokio::test]
async fn invalid_settings_fail_at_start_naming_the_field_and_publish_nothing() {
    let server = NatsServer::start().await;
    // Everything under the default prefix and under the prefix of the `prefix` case.
    let mut observer = Observer::new(&server.url(), "herald.>").await;
    let mut wide = Observer::new(&server.url(), "a.>").await;

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
    observer
        .expect_silence(
            Duration::from_millis(300),
            "an announcer that failed validation publishes nothing",
        )
        .await;
    wide.expect_silence(Duration::from_millis(10), "nothing under any prefix")
        .await;
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
