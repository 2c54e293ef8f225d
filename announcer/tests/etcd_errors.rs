//! What a real etcd answers when it cannot be used, and how the announcer reports it: the kind
//! names what to fix, each layer of the error says its own words once, and etcd's own message
//! is at the end of the `source()` chain.

use std::time::Duration;

use herald_announcer::ErrorKind;
use herald_shared::{EtcdConfig, EtcdError};
use herald_testkit::{EtcdServer, NatsServer};

mod common;

/// Every layer's words, outermost first.
fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut layer = Some(e);
    while let Some(l) = layer {
        out.push(l.to_string());
        layer = l.source();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_an_auth_error_with_etcds_message_in_the_source() {
    let etcd = EtcdServer::builder().auth("right-password").start().await;
    let mut config = EtcdConfig::new(etcd.endpoints());
    config.credentials = Some(("root".into(), "wrong-password".into()));
    config.connect_timeout = Duration::from_secs(2);

    let Err(err) = config.connect().await else {
        panic!("a wrong password must fail");
    };
    assert!(
        matches!(err, EtcdError::Auth(_)),
        "a wrong password is sorted as refused credentials: {err:?}"
    );
    let layers = chain(&err);
    assert_eq!(layers[0], "etcd refused the credentials", "{layers:?}");
    assert!(
        layers[1].contains("authentication failed"),
        "the source carries etcd's own message: {layers:?}"
    );

    let nats = NatsServer::start().await;
    let err = common::announcer(&nats)
        .etcd(config)
        .start()
        .await
        .expect_err("start() must fail on refused credentials");
    assert_eq!(err.kind(), ErrorKind::EtcdAuth, "{err}");
    let layers = chain(&err);
    assert_eq!(layers[0], "etcd refused the credentials", "{layers:?}");
    assert!(
        layers[1].contains("authentication failed"),
        "etcd's message follows the announcer's kind: {layers:?}"
    );
    for pair in layers.windows(2) {
        assert!(
            !pair[0].contains(&pair[1]),
            "a layer must not repeat its source: {layers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_does_not_answer_is_unreachable_and_names_the_deadline() {
    // The kernel accepts the connection; nothing ever answers on it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = EtcdConfig::new([format!("http://{}", silent.local_addr().unwrap())]);
    config.connect_timeout = Duration::from_millis(500);
    let Err(err) = config.connect().await else {
        panic!("nobody answers");
    };
    assert!(matches!(err, EtcdError::Unreachable(_)), "{err:?}");
    let layers = chain(&err);
    assert_eq!(layers[0], "etcd unreachable", "{layers:?}");
    assert_eq!(layers[1], "no answer within 500ms", "{layers:?}");
}

#[tokio::test]
async fn an_endpoint_that_refuses_connections_is_unreachable_at_once() {
    let mut config = EtcdConfig::new([format!("http://127.0.0.1:{}", herald_testkit::free_port())]);
    config.connect_timeout = Duration::from_secs(5);
    let started = std::time::Instant::now();
    let Err(err) = config.connect().await else {
        panic!("nobody listens");
    };
    assert!(matches!(err, EtcdError::Unreachable(_)), "{err:?}");
    let layers = chain(&err);
    assert!(
        layers.iter().any(|l| l.contains("Connection refused")),
        "{layers:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "said at once, not at the 5 s deadline: {:?}",
        started.elapsed()
    );
}
