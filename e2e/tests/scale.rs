//! A thousand instances over ten services: all listed with exact counts; `pick_wait` returns
//! as soon as a service's first instance appears.

use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_e2e::{RawPublisher, init_tracing, prefix, subscriber, token};
use herald_subscriber::{Event, Strategy};
use herald_testkit::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_instances_are_all_listed() {
    init_tracing();
    let nats = NatsServer::start().await;
    let prefix = prefix("scale");
    let sub = subscriber(&nats.url(), &prefix).await;
    let publisher = RawPublisher::connect(&nats.url(), &prefix).await;
    let mut events = sub.events();
    for s in 0..10 {
        for i in 0..100 {
            let t = token(
                &format!("svc{s}"),
                &format!("i{i}"),
                1,
                Duration::from_secs(60),
            );
            publisher.token(&t).await;
        }
    }
    publisher.flush().await;
    let mut added = 0;
    while added < 1000 {
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
            Ok(Some(Event::Added(_))) => added += 1,
            Ok(Some(Event::Lagged { missed })) => panic!("event stream lagged by {missed}"),
            Ok(Some(_)) => {}
            other => panic!("only {added} of 1000 instances added: {other:?}"),
        }
    }
    assert_eq!(sub.stats().instances, 1000);
    let services = sub.services();
    assert_eq!(services.len(), 10, "{services:?}");
    for s in &services {
        assert_eq!(sub.instances(s).len(), 100, "service {s}");
    }
    assert_eq!(sub.stats().added, 1000, "no instance added twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_wait_returns_when_the_first_instance_appears() {
    init_tracing();
    let nats = NatsServer::start().await;
    let prefix = prefix("pick_wait");
    let sub = std::sync::Arc::new(subscriber(&nats.url(), &prefix).await);
    let publisher = RawPublisher::connect(&nats.url(), &prefix).await;

    let err = sub
        .pick_wait("late", Strategy::Random, Duration::from_millis(100))
        .await
        .expect_err("nothing announced yet");
    assert_eq!(err.kind(), herald_subscriber::ErrorKind::TimedOut);

    let waiter = {
        let sub = sub.clone();
        tokio::spawn(async move {
            let picked = sub
                .pick_wait("late", Strategy::PowerOfTwoChoices, Duration::from_secs(10))
                .await;
            (picked, Instant::now())
        })
    };
    // Whether the waiter parks before the token or finds it at once, it must return the
    // instance; the wake-up on a snapshot change is a paused-time test of the subscriber
    // (`view::tests`), and its latency a figure of the propagation benchmark.
    let published = Instant::now();
    publisher
        .token(&token("late", "first", 1, Duration::from_secs(60)))
        .await;
    let (picked, returned) = waiter.await.unwrap();
    assert_eq!(picked.expect("an instance appeared").id(), "first");
    let waited = returned - published;
    assert!(
        waited < Duration::from_secs(5),
        "pick_wait returns on the announcement, long before its 10 s timeout: took {waited:?}"
    );
}
