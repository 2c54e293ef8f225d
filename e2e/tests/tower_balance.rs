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
