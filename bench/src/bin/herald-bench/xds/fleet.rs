//! Memory per connected xDS client and CPU per push, with an xDS server in a process of its own
//! (`herald-bench xds-agent`: a subscriber and the server, as `herald serve --xds` runs them),
//! read from `/proc`.
//!
//! One instance per service is published raw on NATS. The first client subscribes to every
//! service (Listener, Cluster and assignment each, acknowledging every response, as gRPC
//! clients do); the server's RSS then is the base. The other clients join, and the RSS they
//! add, divided by their number, is the memory per client. Then one instance's load moves at a
//! time, so that its endpoint weight changes, and each change is timed until every client
//! has read it; the server's CPU time over those changes, divided by the responses they made,
//! is the CPU per push.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use futures::StreamExt;
use herald_bench::child::{self, Child};
use herald_bench::process::{process_cpu, rss_bytes};
use herald_bench::stats::{Summary, ms};
use herald_shared::{NatsConfig, Subjects, Token, codec};
use herald_subscriber::Subscriber;
use herald_xds::{Bound, Type, XdsServer};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{TIMEOUT, weight};

const PREFIX: &str = "xdsfleet";

/// The xDS server's process settings.
#[derive(Debug, Serialize, Deserialize)]
struct AgentSettings {
    nats: String,
}

/// What the xDS server's process says once it listens.
#[derive(Debug, Serialize, Deserialize)]
struct Listening {
    uri: String,
}

/// `herald-bench xds-agent SETTINGS`: a subscriber and an xDS server over it, until stdin
/// closes.
pub(crate) fn agent_process(settings: &str) {
    let settings: AgentSettings = child::settings(settings).unwrap_or_else(|e| panic!("{e}"));
    crate::runtime().block_on(async move {
        let subscriber = Arc::new(
            Subscriber::builder()
                .nats(NatsConfig::new([settings.nats]))
                .prefix(PREFIX)
                .start()
                .await
                .expect("subscriber starts"),
        );
        let server = XdsServer::new(subscriber);
        let bound = Bound::bind("127.0.0.1:0").await.expect("binds");
        let uri = format!("http://{}", bound.uri());
        let mut orders = child::orders::<serde_json::Value>();
        child::report(&Listening { uri });
        server
            .serve(bound, async move { while orders.recv().await.is_some() {} })
            .await
            .expect("serves");
    });
}

/// An endpoint weight a client read: which client, which service, what weight.
type Read = (usize, String, u32);

fn request(t: Type, names: &[String], ack_of: Option<&DiscoveryResponse>) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: ack_of.map(|r| r.version_info.clone()).unwrap_or_default(),
        resource_names: names.to_vec(),
        type_url: t.url().to_owned(),
        response_nonce: ack_of.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// One ADS client on a connection of its own: subscribes to `names` of every type,
/// acknowledges every response and sends on `reads` each assignment's weight.
async fn client(
    uri: String,
    index: usize,
    names: Arc<Vec<String>>,
    reads: mpsc::UnboundedSender<Read>,
) {
    let mut ads = AggregatedDiscoveryServiceClient::connect(uri)
        .await
        .expect("connects")
        .max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(8);
    for t in herald_xds::types::TYPES {
        tx.send(request(t, &names, None)).await.expect("queued");
    }
    let mut responses = ads
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    while let Some(Ok(r)) = responses.next().await {
        let Some(t) = Type::of_url(&r.type_url) else {
            continue;
        };
        if tx.send(request(t, &names, Some(&r))).await.is_err() {
            return;
        }
        if t != Type::Endpoints {
            continue;
        }
        for any in &r.resources {
            let cla = ClusterLoadAssignment::decode(any.value.as_slice()).expect("decodes");
            let _ = reads.send((index, cla.cluster_name.clone(), weight(&cla)));
        }
    }
}

/// Reads until every client in `clients` read `want(service)` for every service in `services`.
async fn until_read(
    reads: &mut mpsc::UnboundedReceiver<Read>,
    clients: std::ops::Range<usize>,
    services: &[String],
    want: impl Fn(&str) -> u32,
) {
    let mut missing: HashSet<(usize, String)> = clients
        .flat_map(|c| services.iter().map(move |s| (c, s.clone())))
        .collect();
    while !missing.is_empty() {
        let (c, service, w) = tokio::time::timeout(TIMEOUT, reads.recv())
            .await
            .unwrap_or_else(|_| panic!("{} reads missing", missing.len()))
            .expect("clients run");
        if w == want(&service) {
            missing.remove(&(c, service));
        }
    }
}

/// Measures with `clients` clients of `services` services each and `pushes` changes.
pub(crate) async fn measure(nats: &str, clients: usize, services: usize, pushes: usize) {
    let exe = std::env::current_exe().expect("own path");
    let mut agent: Child<Listening> = Child::spawn(
        Path::new(&exe),
        0,
        "xds-agent",
        &AgentSettings {
            nats: nats.to_owned(),
        },
    );
    let (_, Listening { uri }) = agent
        .next(Instant::now() + TIMEOUT)
        .await
        .expect("the xDS server's process listens");
    let pid = Some(agent.pid());

    let raw = async_nats::connect(nats).await.expect("connects");
    let subjects = Subjects::new(PREFIX).expect("prefix");
    let names: Arc<Vec<String>> = Arc::new((0..services).map(|s| format!("s{s}")).collect());
    let mut tokens: Vec<Token> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut t = Token::new(
                name.as_str(),
                "i0",
                format!("10.0.{}.{}:80", i / 256, i % 256),
            );
            t.seq = 1;
            t.ttl_ms = 600_000;
            t.load = 0.1;
            t
        })
        .collect();
    for t in &tokens {
        let bytes = codec::encode(t).expect("valid token");
        raw.publish(subjects.announce(&t.service), bytes.into())
            .await
            .expect("published");
    }
    raw.flush().await.expect("flushed");
    let weight_at = |load: f32| {
        herald_xds::resources::endpoint_weight(herald_shared::token::DEFAULT_WEIGHT, load)
    };
    let (reads_tx, mut reads) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(client(
        uri.clone(),
        0,
        names.clone(),
        reads_tx.clone(),
    )));
    until_read(&mut reads, 0..1, &names, |_| weight_at(0.1)).await;
    // Let the server's allocations settle before the base.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = rss_bytes(pid).expect("the server's RSS");
    for c in 1..clients {
        tasks.push(tokio::spawn(client(
            uri.clone(),
            c,
            names.clone(),
            reads_tx.clone(),
        )));
    }
    until_read(&mut reads, 1..clients, &names, |_| weight_at(0.1)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = rss_bytes(pid).expect("the server's RSS");

    let cpu_before = process_cpu(pid).expect("the server's CPU time");
    let mut reached = Vec::with_capacity(pushes);
    for p in 0..pushes {
        let t = &mut tokens[p % services];
        t.seq += 1;
        t.load = if t.load < 0.5 { 0.9 } else { 0.1 };
        let want = weight_at(t.load);
        let service = t.service.clone();
        let bytes = codec::encode(t).expect("valid token");
        // At the announcers' pace: a token may advance seq by one per 5 ms.
        tokio::time::sleep(Duration::from_millis(6)).await;
        let sent = Instant::now();
        raw.publish(subjects.announce(&service), bytes.into())
            .await
            .expect("published");
        until_read(
            &mut reads,
            0..clients,
            std::slice::from_ref(&service),
            |_| want,
        )
        .await;
        reached.push(sent.elapsed());
    }
    let cpu = process_cpu(pid).expect("the server's CPU time") - cpu_before;
    let per_client = all.saturating_sub(base) / (clients.max(2) as u64 - 1);
    let s = Summary::of(&mut reached);
    println!(
        "  fleet: {clients} ADS clients of {services} services each, the server in its own process"
    );
    println!(
        "    server RSS: {} KiB with one client, {} KiB with {clients}: {:.1} KiB per client",
        base / 1024,
        all / 1024,
        per_client as f64 / 1024.0
    );
    println!(
        "    {pushes} changes, each read by every client: p50 {} p90 {} p99 {} max {}",
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.max)
    );
    let responses = (pushes * clients) as f64;
    println!(
        "    server CPU: {} ms in all, {:.1} us per change, {:.1} us per push (one response to one client)",
        cpu.as_millis(),
        cpu.as_secs_f64() * 1e6 / pushes as f64,
        cpu.as_secs_f64() * 1e6 / responses
    );
    agent.close();
    for t in tasks {
        t.abort();
    }
}
