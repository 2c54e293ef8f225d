//! xDS: how long after a view change its assignment reaches an ADS client, against the
//! moment the same change reaches the serving subscriber's events, and how many responses a
//! burst of changes to one service becomes. Every timestamp is taken with `Instant` in this
//! process; nats-server on loopback, the xDS server and a tonic ADS client in it too.
//!
//! - change: a token of a listed instance with a load that moves its endpoint weight is
//!   published; timed until the subscriber's `Updated`, and until the client reads the
//!   EDS response that carries it (one change in flight);
//! - burst: `--burst` new instances of one service are published back to back; the
//!   responses the client reads until the assignment lists them all are counted.
//!
//! - first call: an announcer's `start()` to the first grpcio call its backend receives,
//!   against `start()` to the subscriber's `Added` ([`first_call`]);
//! - fleet: memory per connected client and CPU per push, with `--clients` ADS clients of
//!   `--services` services each, against an xDS server in a process of its own ([`fleet`]).
//!
//! `cargo run --release -p herald-bench -- xds [--changes N] [--burst N] [--first-calls N]
//! [--clients N --services N --pushes N]`

mod first_call;
mod fleet;

use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use futures::StreamExt;
use herald_bench::stats::{Summary, ms};
use herald_shared::{NatsConfig, Subjects, Token, codec};
use herald_subscriber::{Event, EventStream, Subscriber};
use herald_testkit::NatsServer;
use herald_xds::{Bound, Type, XdsServer};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Longest wait for one event or response before the benchmark gives up.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// The settings of `herald-bench xds`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Changes timed one at a time.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    changes: u64,
    /// New instances published back to back into one service.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    burst: u64,
    /// Rounds of an announcer's start to the first grpcio call routed to it (0: none).
    #[arg(long, default_value_t = 100)]
    first_calls: u64,
    /// The Python with grpcio for the first-call rounds.
    #[arg(long, default_value_os_t = first_call::default_python())]
    python: std::path::PathBuf,
    /// ADS clients connected to the xDS server's process for the memory and CPU figures
    /// (0: none).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Services each of those clients subscribes to, one instance each.
    #[arg(long, default_value_t = 100, value_parser = herald_bench::at_least_one)]
    services: usize,
    /// Changes timed for the CPU per push: each reaches every client.
    #[arg(long, default_value_t = 200, value_parser = herald_bench::at_least_one)]
    pushes: usize,
}

pub(crate) fn run(args: Args) {
    crate::runtime().block_on(measure(args));
}

pub(crate) use fleet::agent_process;

/// The ADS client: requests in, responses out.
struct Client {
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: tonic::Streaming<DiscoveryResponse>,
}

impl Client {
    async fn ask(&self, names: &[&str], ack_of: Option<&DiscoveryResponse>) {
        let request = DiscoveryRequest {
            version_info: ack_of.map(|r| r.version_info.clone()).unwrap_or_default(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            type_url: Type::Endpoints.url().to_owned(),
            response_nonce: ack_of.map(|r| r.nonce.clone()).unwrap_or_default(),
            ..Default::default()
        };
        self.requests.send(request).await.expect("request sent");
    }

    /// The next response, acknowledged, and its first assignment.
    async fn next(&mut self, names: &[&str]) -> ClusterLoadAssignment {
        let r = tokio::time::timeout(TIMEOUT, self.responses.next())
            .await
            .expect("an EDS response in time")
            .expect("stream open")
            .expect("no error");
        self.ask(names, Some(&r)).await;
        ClusterLoadAssignment::decode(r.resources[0].value.as_slice()).expect("decodes")
    }
}

async fn updated(events: &mut EventStream) {
    loop {
        let e = tokio::time::timeout(TIMEOUT, events.next())
            .await
            .expect("an event in time")
            .expect("events open");
        if matches!(e, Event::Updated(_) | Event::Added(_)) {
            return;
        }
    }
}

/// One line per row: its name, then p50, p90, p99 and max in milliseconds.
fn print_summaries<const N: usize>(indent: &str, rows: [(&str, &mut Vec<Duration>); N]) {
    for (what, samples) in rows {
        let s = Summary::of(samples);
        println!(
            "{indent}{what:<45} p50 {} p90 {} p99 {} max {}",
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max)
        );
    }
}

/// The weight of an assignment's first endpoint (0 when it has none).
fn weight(cla: &ClusterLoadAssignment) -> u32 {
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| e.load_balancing_weight.map_or(0, |w| w.value))
        .next()
        .unwrap_or(0)
}

async fn measure(args: Args) {
    let nats = NatsServer::start().await;
    let prefix = "xdsbench";
    let subscriber = Arc::new(
        Subscriber::builder()
            .nats(NatsConfig::new([nats.url()]))
            .prefix(prefix)
            .start()
            .await
            .expect("subscriber starts"),
    );
    let mut events = subscriber.events();
    let server = XdsServer::new(subscriber.clone());
    let bound = Bound::bind("127.0.0.1:0").await.expect("binds");
    let bound_uri = bound.uri();
    let uri = format!("http://{bound_uri}");
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(bound, std::future::pending()).await });
    let mut ads = AggregatedDiscoveryServiceClient::connect(uri)
        .await
        .expect("connects");
    let (tx, rx) = mpsc::channel(16);
    let responses = ads
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    let mut client = Client {
        requests: tx,
        responses,
    };
    let raw = async_nats::connect(nats.url()).await.expect("connects");
    let subjects = Subjects::new(prefix).unwrap();
    let publish = |t: &Token| {
        let bytes = codec::encode(t).expect("valid token");
        raw.publish(subjects.announce(&t.service), bytes.into())
    };

    // One listed instance, then changes of its load, one in flight.
    let mut token = Token::new("svc", "i0", "127.0.0.1:7000");
    token.ttl_ms = 60_000;
    token.seq = 1;
    publish(&token).await.unwrap();
    client.ask(&["svc"], None).await;
    while weight(&client.next(&["svc"]).await) == 0 {}
    updated(&mut events).await;
    let (mut to_event, mut to_eds, mut after_event) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.changes {
        token.seq += 1;
        token.load = if i % 2 == 0 { 0.9 } else { 0.1 };
        let want = herald_xds::resources::endpoint_weight(token.weight, token.load);
        // At the announcers' pace: a token may advance seq by one per 5 ms.
        tokio::time::sleep(Duration::from_millis(6)).await;
        let sent = Instant::now();
        publish(&token).await.unwrap();
        updated(&mut events).await;
        let event = sent.elapsed();
        while weight(&client.next(&["svc"]).await) != want {}
        let eds = sent.elapsed();
        to_event.push(event);
        to_eds.push(eds);
        after_event.push(eds - event);
    }
    println!(
        "xds: one change in flight, {} changes of one instance's load (each moves its weight)",
        args.changes
    );
    print_summaries(
        "  ",
        [
            ("publish -> subscriber's Updated", &mut to_event),
            ("publish -> EDS response read by the client", &mut to_eds),
            ("Updated -> EDS response", &mut after_event),
        ],
    );

    // A burst of joins into one service.
    client.ask(&["svc", "burst"], None).await;
    let started = Instant::now();
    for i in 0..args.burst {
        let mut t = Token::new(
            "burst",
            format!("b{i}"),
            format!("10.{}.{}.{}:80", i / 65_536, (i / 256) % 256, i % 256),
        );
        t.seq = 1;
        t.ttl_ms = 60_000;
        publish(&t).await.unwrap();
    }
    raw.flush().await.unwrap();
    let mut responses = 0;
    loop {
        let r = tokio::time::timeout(TIMEOUT, client.responses.next())
            .await
            .expect("an EDS response in time")
            .expect("stream open")
            .expect("no error");
        client.ask(&["svc", "burst"], Some(&r)).await;
        let listed = r
            .resources
            .iter()
            .map(|any| ClusterLoadAssignment::decode(any.value.as_slice()).expect("decodes"))
            .filter(|cla| cla.cluster_name == "burst")
            .map(|cla| {
                cla.endpoints
                    .iter()
                    .map(|l| l.lb_endpoints.len())
                    .sum::<usize>()
            })
            .next();
        if let Some(listed) = listed {
            responses += 1;
            if listed as u64 == args.burst {
                break;
            }
        }
    }
    println!(
        "  a burst of {} joins into one service: {responses} EDS responses of it, the last {} after the first join was published",
        args.burst,
        ms(started.elapsed())
    );
    let stats = server.stats();
    println!(
        "  responses sent: {} endpoints, NACKs {}",
        stats.responses_of(Type::Endpoints),
        stats.nacks_of(Type::Endpoints)
    );
    if args.first_calls > 0 {
        first_call::measure(
            &args.python,
            args.first_calls,
            &server,
            subscriber.clone(),
            &bound_uri,
            &nats.url(),
            prefix,
        )
        .await;
    }
    if args.clients > 0 {
        fleet::measure(&nats.url(), args.clients, args.services, args.pushes).await;
    }
}
