//! An announcer's `start()` → the first grpcio call routed to it, against `start()` → `Added`
//! in the serving subscriber, in the same rounds.
//!
//! Each round has a service of its own. A grpcio client (`bench/grpc/first_call.py`, Python
//! from `scripts/install-deps`' venv) asks for `xds:///SERVICE` and queues one wait-for-ready
//! call; once the xDS server has answered it the service's empty assignment, an announcer of
//! a tonic backend starts. The backend stamps the first call it receives. Every stamp is an
//! `Instant` in this process: the backends, the announcers, the subscriber and the xDS server
//! run in it; grpcio and nats-server in their own processes on loopback.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_announcer::Announcer;
use herald_shared::NatsConfig;
use herald_subscriber::{Event, EventStream};
use herald_xds::{Type, XdsServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::TIMEOUT;

/// The venv `scripts/install-deps` makes, with grpcio.
pub(crate) fn default_python() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/test-venv/bin/python"
    ))
}

/// A gRPC backend (the standard health service) on a free port, sending the moment of each
/// call it receives.
async fn backend() -> (String, mpsc::UnboundedReceiver<Instant>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("bound").to_string();
    let (tx, calls) = mpsc::unbounded_channel();
    let (reporter, health) = tonic_health::server::health_reporter();
    let stamp = tower::ServiceBuilder::new()
        .map_request(move |req| {
            let _ = tx.send(Instant::now());
            req
        })
        .into_inner();
    tokio::spawn(async move {
        let _reporter = reporter;
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let _ = tonic::transport::Server::builder()
            .layer(stamp)
            .add_service(health)
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, calls)
}

async fn added(events: &mut EventStream, service: &str) -> Instant {
    loop {
        let e = tokio::time::timeout(TIMEOUT, events.next())
            .await
            .expect("an event in time")
            .expect("events open");
        if let Event::Added(i) = &e
            && i.service() == service
        {
            return Instant::now();
        }
    }
}

/// The grpcio client's next line, by [`TIMEOUT`].
async fn said(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .expect("the grpcio client answers in time")
        .expect("its stdout is readable")
        .expect("the grpcio client runs")
}

/// Runs `rounds` rounds against `server` (listening at `uri`), announcing on `nats`/`prefix`.
pub(crate) async fn measure(
    python: &std::path::Path,
    rounds: u64,
    server: &XdsServer,
    subscriber: Arc<herald_subscriber::Subscriber>,
    uri: &str,
    nats: &str,
    prefix: &str,
) {
    if !python.exists() {
        println!(
            "  first grpcio call: skipped, no {} (scripts/install-deps makes it)",
            python.display()
        );
        return;
    }
    let bootstrap =
        std::env::temp_dir().join(format!("herald-bench-xds-{}.json", std::process::id()));
    std::fs::write(&bootstrap, herald_xds::bootstrap::json(uri, "bench", None))
        .expect("bootstrap written");
    let mut client = tokio::process::Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/grpc/first_call.py"))
        .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the grpcio client starts");
    let mut stdin = client.stdin.take().expect("piped");
    let mut lines = BufReader::new(client.stdout.take().expect("piped")).lines();
    let mut events = subscriber.events();
    let (mut to_start, mut to_added, mut to_call, mut after_added, mut direct) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut announcers = Vec::new();
    for round in 0..rounds {
        let service = format!("first{round}");
        let (addr, mut calls) = backend().await;
        let answered = server.stats().responses_of(Type::Endpoints);
        stdin
            .write_all(format!("{service}\n").as_bytes())
            .await
            .expect("the grpcio client reads");
        assert_eq!(said(&mut lines).await, format!("asked {service}"));
        // The client holds the service's (empty) assignment: its call waits for an endpoint.
        let asked = Instant::now();
        while server.stats().responses_of(Type::Endpoints) == answered {
            assert!(
                asked.elapsed() < TIMEOUT,
                "the grpcio client asked for endpoints"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let start = Instant::now();
        let announcer = Announcer::builder(&service, &addr)
            .nats(NatsConfig::new([nats]))
            .prefix(prefix)
            .instance(format!("{service}-0"))
            .start()
            .await
            .expect("announcer starts");
        let started = Instant::now();
        let added_at = added(&mut events, &service).await;
        let called = tokio::time::timeout(TIMEOUT, calls.recv())
            .await
            .expect("the first call in time")
            .expect("the backend runs");
        assert_eq!(said(&mut lines).await, format!("served {service}"));
        to_start.push(started - start);
        to_added.push(added_at - start);
        to_call.push(called.saturating_duration_since(start));
        after_added.push(called.saturating_duration_since(added_at));
        announcers.push(announcer);
        // The same first call on a channel made straight to a new backend: what connecting
        // costs grpcio without xDS.
        let (addr, mut calls) = backend().await;
        let asked = Instant::now();
        stdin
            .write_all(format!("direct {addr}\n").as_bytes())
            .await
            .expect("the grpcio client reads");
        let called = tokio::time::timeout(TIMEOUT, calls.recv())
            .await
            .expect("the direct call in time")
            .expect("the backend runs");
        // A call answered at once may be told before it is told queued.
        let mut told = [said(&mut lines).await, said(&mut lines).await];
        told.sort();
        assert_eq!(told, [format!("asked {addr}"), format!("served {addr}")]);
        direct.push(called.saturating_duration_since(asked));
    }
    println!("  first grpcio call: {rounds} rounds, one new service each, its call queued before");
    super::print_summaries(
        "    ",
        [
            ("start() returned", &mut to_start),
            ("start() -> subscriber's Added", &mut to_added),
            ("start() -> first grpcio call at the backend", &mut to_call),
            ("Added -> first grpcio call", &mut after_added),
            ("new channel to a new backend, no xDS -> call", &mut direct),
        ],
    );
    for a in announcers {
        a.shutdown().await.expect("a graceful stop");
    }
    let _ = std::fs::remove_file(&bootstrap);
}
