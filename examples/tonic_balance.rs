//! A tonic client balancing over gRPC servers discovered through Herald.
//!
//! Starts three gRPC servers (the standard health service) that announce themselves, then a
//! client whose channel follows Herald's view of the service (`Subscriber::discover`), sends
//! requests, stops one server gracefully, and sends more: the stopped server gets none.
//! Uses `HERALD_NATS_URL` when set, a local nats-server otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use herald_announcer::Announcer;
use herald_shared::NatsConfig;
use herald_subscriber::Subscriber;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

async fn serve(counter: Arc<AtomicUsize>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (reporter, health) = tonic_health::server::health_reporter();
    let layer = tower::ServiceBuilder::new()
        .map_request(move |req| {
            counter.fetch_add(1, Ordering::Relaxed);
            req
        })
        .into_inner();
    tokio::spawn(async move {
        let _reporter = reporter;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(incoming)
            .await;
    });
    Ok(addr)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (_local, url) = match std::env::var("HERALD_NATS_URL") {
        Ok(url) if !url.is_empty() => (None, url),
        _ => {
            let server = herald_testkit::NatsServer::start().await;
            let url = server.url();
            (Some(server), url)
        }
    };
    let nats = NatsConfig::new([url]);
    let mut counters = Vec::new();
    let mut announcers = Vec::new();
    for i in 0..3 {
        let counter = Arc::new(AtomicUsize::new(0));
        let addr = serve(counter.clone()).await?;
        counters.push(counter);
        announcers.push(
            Announcer::builder("greeter", addr)
                .nats(nats.clone())
                .instance(format!("greeter-{i}"))
                .start()
                .await?,
        );
    }

    let subscriber = Subscriber::builder()
        .nats(nats)
        .service("greeter")
        .start()
        .await?;
    subscriber
        .pick_wait(
            "greeter",
            herald_subscriber::Strategy::Random,
            Duration::from_secs(2),
        )
        .await?;
    let (channel, tx) = Channel::balance_channel::<String>(16);
    let mut discover = subscriber.discover("greeter", |i| {
        Endpoint::from_shared(format!("http://{}", i.addr())).expect("valid address")
    });
    tokio::spawn(async move {
        while let Some(Ok(change)) = discover.next().await {
            let change = match change {
                tower::discover::Change::Insert(k, e) => Change::Insert(k, e),
                tower::discover::Change::Remove(k) => Change::Remove(k),
            };
            if tx.send(change).await.is_err() {
                break;
            }
        }
    });
    let mut client = HealthClient::new(channel);
    let request = || HealthCheckRequest {
        service: String::new(),
    };
    for _ in 0..300 {
        client.check(request()).await?;
    }
    let counts = |c: &[Arc<AtomicUsize>]| {
        c.iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    };
    println!("after 300 calls, per server: {:?}", counts(&counters));

    announcers.remove(1).shutdown().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = counts(&counters);
    for _ in 0..300 {
        client.check(request()).await?;
    }
    let after = counts(&counters);
    println!("greeter-1 stopped; after 300 more calls, per server: {after:?}");
    anyhow::ensure!(after[1] == before[1], "the stopped server still got calls");
    Ok(())
}
