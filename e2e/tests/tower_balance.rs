//! tower/tonic integration: a tonic client balancing over servers discovered through Herald
//! spreads requests over all of them, and stops sending to one right after its graceful stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use herald_announcer::Announcer;
use herald_e2e::{init_tracing, is_removed, nats, prefix, subscriber, wait_event};
use herald_subscriber::RemovalCause;
use herald_testkit::{NatsServer, free_port};
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A gRPC server (the standard health service) counting the requests it serves.
async fn grpc_server(port: u16) -> Arc<AtomicUsize> {
    let served = Arc::new(AtomicUsize::new(0));
    let (_reporter, health) = tonic_health::server::health_reporter();
    let counter = served.clone();
    let layer = tower::ServiceBuilder::new()
        .map_request(move |req| {
            counter.fetch_add(1, Ordering::Relaxed);
            req
        })
        .into_inner();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        let _keep = _reporter;
        Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    served
}

/// A tonic channel balancing over the subscriber's view of `grpc`.
fn balanced(sub: &herald_subscriber::Subscriber) -> Channel {
    let (channel, tx) = Channel::balance_channel::<String>(16);
    let mut discover = sub.discover("grpc", |i| {
        Endpoint::from_shared(format!("http://{}", i.addr())).expect("valid endpoint")
    });
    tokio::spawn(async move {
        // tonic's balancer takes its own change type.
        use tonic::transport::channel::Change as TonicChange;
        while let Some(Ok(change)) = discover.next().await {
            let change = match change {
                tower::discover::Change::Insert(k, e) => TonicChange::Insert(k, e),
                tower::discover::Change::Remove(k) => TonicChange::Remove(k),
            };
            if tx.send(change).await.is_err() {
                break;
            }
        }
    });
    channel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_balances_over_discovered_servers_and_drops_a_stopped_one() {
    init_tracing();
    let nats_server = NatsServer::start().await;
    let prefix = prefix("tower");
    let mut counters = Vec::new();
    let mut announcers = Vec::new();
    for i in 0..3 {
        let port = free_port();
        counters.push(grpc_server(port).await);
        let a = Announcer::builder("grpc", format!("127.0.0.1:{port}"))
            .nats(nats(&nats_server.url()))
            .prefix(&prefix)
            .instance(format!("s{i}"))
            .start()
            .await
            .unwrap();
        announcers.push(a);
    }
    let sub = subscriber(&nats_server.url(), &prefix).await;
    herald_e2e::eventually(Duration::from_secs(2), "three servers listed", || {
        sub.instances("grpc").len() == 3
    })
    .await;

    let channel = balanced(&sub);
    let mut client = HealthClient::new(channel);
    let call = async |client: &mut HealthClient<Channel>| {
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("a balanced call succeeds");
    };
    for _ in 0..300 {
        call(&mut client).await;
    }
    let spread: Vec<usize> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert!(
        spread.iter().all(|n| *n >= 30),
        "requests must reach all three servers: {spread:?}"
    );

    let mut events = sub.events();
    let stopped = announcers.remove(1);
    stopped.shutdown().await.unwrap();
    wait_event(
        &mut events,
        Duration::from_secs(2),
        "Removed(s1, goodbye)",
        |e| is_removed(e, "s1", RemovalCause::Goodbye),
    )
    .await;
    // The balancer applies the removal asynchronously: within a short window, a run of 50
    // calls in a row must miss the stopped server...
    let settle = std::time::Instant::now();
    loop {
        let before = counters[1].load(Ordering::Relaxed);
        for _ in 0..50 {
            call(&mut client).await;
        }
        if counters[1].load(Ordering::Relaxed) == before {
            break;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(5),
            "s1 still served calls 5 s after its goodbye"
        );
    }
    // ...and from then on it never gets another, while the others share everything.
    let before: Vec<usize> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    for _ in 0..300 {
        call(&mut client).await;
    }
    let after: Vec<usize> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert_eq!(
        after[1], before[1],
        "the stopped server got calls after its goodbye"
    );
    assert_eq!((after[0] - before[0]) + (after[2] - before[2]), 300);
    assert!(
        after[0] > before[0] + 50 && after[2] > before[2] + 50,
        "{before:?} -> {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_on_a_removed_endpoint_is_not_cut() {
    use tonic_health::ServingStatus;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    init_tracing();
    let nats_server = NatsServer::start().await;
    let prefix = prefix("inflight");
    let port = free_port();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("job", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    // The server goes on serving after its announcer stopped, as it does while it drains.
    tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );
    let announcer = Announcer::builder("grpc", format!("127.0.0.1:{port}"))
        .nats(nats(&nats_server.url()))
        .prefix(&prefix)
        .instance("s0")
        .start()
        .await
        .unwrap();
    let sub = subscriber(&nats_server.url(), &prefix).await;
    let mut events = sub.events();
    let channel = balanced(&sub);
    let mut client = HealthClient::new(channel);
    // A long call: a watch of the service's health, one message per change.
    let mut watch = client
        .watch(HealthCheckRequest {
            service: "job".into(),
        })
        .await
        .expect("the watch starts")
        .into_inner();
    let first = watch.message().await.expect("a first status").unwrap();
    assert_eq!(first.status(), Wire::Serving);

    announcer.shutdown().await.unwrap();
    wait_event(&mut events, Duration::from_secs(2), "Removed(s0)", |e| {
        is_removed(e, "s0", RemovalCause::Goodbye)
    })
    .await;
    // The balancer has applied the removal once a new call finds no endpoint.
    let removed = std::time::Instant::now();
    loop {
        let call = client.check(HealthCheckRequest {
            service: "job".into(),
        });
        if tokio::time::timeout(Duration::from_millis(100), call)
            .await
            .is_err()
        {
            break;
        }
        assert!(
            removed.elapsed() < Duration::from_secs(5),
            "new calls still reach s0 5 s after its goodbye"
        );
    }
    // The call made before the removal goes on: it still receives what the server sends.
    reporter
        .set_service_status("job", ServingStatus::NotServing)
        .await;
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the in-flight call still receives")
        .expect("the in-flight call was not cut")
        .expect("the stream goes on");
    assert_eq!(next.status(), Wire::NotServing);
}
