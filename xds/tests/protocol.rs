//! The ADS protocol against a tonic client, with real announcers and a real subscriber behind
//! the server: subscriptions answered at once (an unknown service too), views pushed as they
//! change, a NACK never answered with the same content, a client subscribing again answered
//! again, a change of names honoured whatever the nonce.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Node};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use herald_announcer::{Announcer, AnnouncerHandle};
use herald_shared::NatsConfig;
use herald_subscriber::Subscriber;
use herald_testkit::NatsServer;
use herald_xds::{Bound, Type, XdsServer};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(5);

struct Setup {
    nats: NatsServer,
    server: XdsServer,
    uri: String,
    prefix: String,
    _stop: tokio_util::sync::DropGuard,
}

async fn setup() -> Setup {
    setup_following(&[]).await
}

/// A server over a subscriber that follows `services` (every service when empty).
async fn setup_following(services: &[&str]) -> Setup {
    let nats = NatsServer::start().await;
    let prefix = format!("xds{}", fastrand::u32(..));
    let mut builder = Subscriber::builder()
        .nats(NatsConfig::new([nats.url()]))
        .prefix(&prefix);
    for service in services {
        builder = builder.service(*service);
    }
    let subscriber = Arc::new(builder.start().await.expect("subscriber starts"));
    let server = XdsServer::new(subscriber);
    let bound = Bound::bind("127.0.0.1:0").await.expect("binds");
    let uri = format!("http://{}", bound.uri());
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = server.clone();
    let cancelled = stop.clone();
    tokio::spawn(async move {
        serving
            .serve(bound, async move { cancelled.cancelled().await })
            .await
            .expect("serves");
    });
    Setup {
        nats,
        server,
        uri,
        prefix,
        _stop: stop.drop_guard(),
    }
}

async fn announce(s: &Setup, id: &str, addr: &str, load: f32) -> AnnouncerHandle {
    Announcer::builder("db", addr)
        .nats(NatsConfig::new([s.nats.url()]))
        .prefix(&s.prefix)
        .instance(id)
        .load(load)
        .interval(Duration::from_millis(200))
        .start()
        .await
        .expect("announcer starts")
}

/// One ADS stream, driven by hand.
struct Client {
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
}

impl Client {
    async fn connect(uri: &str) -> Client {
        let mut client = AggregatedDiscoveryServiceClient::connect(uri.to_owned())
            .await
            .expect("connects");
        let (tx, rx) = mpsc::channel(16);
        let responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("stream opens")
            .into_inner();
        Client {
            requests: tx,
            responses,
        }
    }

    async fn ask(&self, t: Type, names: &[&str], ack_of: Option<&DiscoveryResponse>) {
        self.send(t, names, ack_of, None).await;
    }

    async fn send(
        &self,
        t: Type,
        names: &[&str],
        ack_of: Option<&DiscoveryResponse>,
        error: Option<&str>,
    ) {
        let request = DiscoveryRequest {
            version_info: ack_of.map(|r| r.version_info.clone()).unwrap_or_default(),
            node: Some(Node {
                id: "test-node".into(),
                ..Default::default()
            }),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            type_url: t.url().to_owned(),
            response_nonce: ack_of.map(|r| r.nonce.clone()).unwrap_or_default(),
            error_detail: error.map(|m| RpcStatus {
                code: 3,
                message: m.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.requests.send(request).await.expect("request sent");
    }

    async fn next(&mut self, within: Duration) -> Option<DiscoveryResponse> {
        match tokio::time::timeout(within, self.responses.next()).await {
            Ok(Some(Ok(r))) => Some(r),
            Ok(Some(Err(status))) => panic!("stream failed: {status}"),
            Ok(None) => panic!("stream ended"),
            Err(_) => None,
        }
    }

    /// Asks for the Listener of `name`, a type this stream has not asked for, and returns
    /// the next response, which must be that Listener: the server reads one request at a
    /// time and sends what is due before reading the next, so a response due after an
    /// earlier request would have come first.
    async fn barrier(&mut self, name: &str, what: &str) -> DiscoveryResponse {
        self.ask(Type::Listener, &[name], None).await;
        let r = self
            .next(WAIT)
            .await
            .unwrap_or_else(|| panic!("no Listener after {what}"));
        assert_eq!(
            r.type_url,
            Type::Listener.url(),
            "{what}: the next response answers the later request"
        );
        r
    }

    async fn expect(&mut self, t: Type, what: &str) -> DiscoveryResponse {
        let r = self
            .next(WAIT)
            .await
            .unwrap_or_else(|| panic!("no response: {what}"));
        assert_eq!(r.type_url, t.url(), "{what}");
        r
    }

    /// Endpoint responses until one satisfies `cond`, acknowledging each.
    async fn endpoints_until(
        &mut self,
        names: &[&str],
        what: &str,
        cond: impl Fn(&[ClusterLoadAssignment]) -> bool,
    ) -> Vec<ClusterLoadAssignment> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let r = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("no endpoints: {what}"));
            assert_eq!(r.type_url, Type::Endpoints.url());
            self.ask(Type::Endpoints, names, Some(&r)).await;
            let got = assignments(&r);
            if cond(&got) {
                return got;
            }
        }
    }
}

fn assignments(r: &DiscoveryResponse) -> Vec<ClusterLoadAssignment> {
    r.resources
        .iter()
        .map(|any| ClusterLoadAssignment::decode(any.value.as_slice()).expect("decodes"))
        .collect()
}

/// (address, health, weight) of every endpoint of an assignment.
fn endpoints(cla: &ClusterLoadAssignment) -> Vec<(String, i32, u32)> {
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                panic!("an endpoint")
            };
            let Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                sa,
            )) = ep.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                panic!("a socket address")
            };
            let port = match sa.port_specifier {
                Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p)) => p,
                _ => 0,
            };
            (
                format!("{}:{port}", sa.address),
                e.health_status,
                e.load_balancing_weight.map_or(0, |w| w.value),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gets_listener_cluster_and_endpoints_and_follows_the_view() {
    let s = setup().await;
    let a = announce(&s, "a", "127.0.0.1:7001", 0.1).await;
    let mut c = Client::connect(&s.uri).await;

    c.ask(Type::Listener, &["db"], None).await;
    let lds = c.expect(Type::Listener, "listener").await;
    assert_eq!(lds.resources.len(), 1);
    c.ask(Type::Listener, &["db"], Some(&lds)).await;
    c.ask(Type::Cluster, &["db"], None).await;
    let cds = c.expect(Type::Cluster, "cluster").await;
    assert_eq!(cds.resources.len(), 1);
    c.ask(Type::Cluster, &["db"], Some(&cds)).await;
    c.ask(Type::Endpoints, &["db"], None).await;
    c.endpoints_until(&["db"], "a listed", |got| {
        got.len() == 1
            && endpoints(&got[0])
                == vec![(
                    "127.0.0.1:7001".to_owned(),
                    HealthStatus::Healthy as i32,
                    9_091,
                )]
    })
    .await;

    let b = announce(&s, "b", "127.0.0.1:7002", 0.9).await;
    c.endpoints_until(&["db"], "b added, weighted by its load", |got| {
        endpoints(&got[0]).len() == 2
    })
    .await;
    b.drain().await.expect("drains");
    c.endpoints_until(&["db"], "b draining", |got| {
        endpoints(&got[0]).contains(&(
            "127.0.0.1:7002".to_owned(),
            HealthStatus::Draining as i32,
            1_099,
        ))
    })
    .await;
    b.shutdown().await.expect("stops");
    c.endpoints_until(&["db"], "b gone", |got| endpoints(&got[0]).len() == 1)
        .await;
    drop(a);
    let stats = s.server.stats();
    assert!(stats.responses_of(Type::Endpoints) >= 4);
    assert_eq!(stats.clients, 1);
    assert!(
        stats.push.counts.iter().sum::<u64>() >= 3,
        "the pushes of b's join, drain and goodbye are timed: {:?}",
        stats.push
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_is_answered_at_once_with_an_empty_assignment() {
    let s = setup().await;
    let mut c = Client::connect(&s.uri).await;
    let asked = tokio::time::Instant::now();
    c.ask(Type::Listener, &["nobody"], None).await;
    let lds = c
        .expect(Type::Listener, "listener of an unknown service")
        .await;
    c.ask(Type::Endpoints, &["nobody"], None).await;
    let eds = c.expect(Type::Endpoints, "its assignment").await;
    assert!(
        asked.elapsed() < Duration::from_millis(100),
        "answered within 100 ms: {:?}",
        asked.elapsed()
    );
    assert_eq!(lds.resources.len(), 1);
    let got = assignments(&eds);
    assert_eq!(got.len(), 1);
    assert!(got[0].endpoints.is_empty(), "no endpoint yet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_the_subscriber_does_not_follow_stays_empty_and_is_counted() {
    let s = setup_following(&["db"]).await;
    // Announced first, so that it would be listed by the time db is, were it followed.
    let _mail = Announcer::builder("mail", "127.0.0.1:7100")
        .nats(NatsConfig::new([s.nats.url()]))
        .prefix(&s.prefix)
        .instance("m")
        .interval(Duration::from_millis(200))
        .start()
        .await
        .expect("announcer starts");
    let _db = announce(&s, "d", "127.0.0.1:7101", 0.1).await;
    let mut c = Client::connect(&s.uri).await;
    c.ask(Type::Endpoints, &["db", "mail"], None).await;
    c.endpoints_until(&["db", "mail"], "db's instance", |got| {
        for cla in got.iter().filter(|cla| cla.cluster_name == "mail") {
            assert!(
                cla.endpoints.is_empty(),
                "mail is not followed: its assignment stays empty: {cla:?}"
            );
        }
        got.iter()
            .any(|cla| cla.cluster_name == "db" && !cla.endpoints.is_empty())
    })
    .await;
    assert!(
        s.server.stats().not_followed >= 1,
        "the ask for mail is counted: {:?}",
        s.server.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_response_is_not_sent_again_and_a_change_still_goes_out() {
    let s = setup().await;
    let a = announce(&s, "a", "127.0.0.1:7001", 0.1).await;
    let mut c = Client::connect(&s.uri).await;
    c.ask(Type::Endpoints, &["db"], None).await;
    // The first response may come before the subscriber heard `a`: acknowledged, then the
    // one that lists it is refused.
    let first = loop {
        let r = c.expect(Type::Endpoints, "assignment").await;
        if endpoints(&assignments(&r)[0]).len() == 1 {
            break r;
        }
        c.ask(Type::Endpoints, &["db"], Some(&r)).await;
    };
    let responses = s.server.stats().responses_of(Type::Endpoints);
    c.send(
        Type::Endpoints,
        &["db"],
        Some(&first),
        Some("refused for the test"),
    )
    .await;
    c.barrier("db", "the refused content is not sent again")
        .await;
    let stats = s.server.stats();
    assert_eq!(stats.nacks_of(Type::Endpoints), 1);
    assert_eq!(
        stats.responses_of(Type::Endpoints),
        responses,
        "no endpoints response since the refused one"
    );
    a.set_load(0.5).expect("a valid load");
    let changed = c.expect(Type::Endpoints, "a change after the NACK").await;
    assert_ne!(changed.nonce, first.nonce);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_again_or_renaming_on_a_stale_nonce_is_answered() {
    let s = setup().await;
    let _a = announce(&s, "a", "127.0.0.1:7001", 0.1).await;
    let mut c = Client::connect(&s.uri).await;
    c.ask(Type::Cluster, &["db"], None).await;
    let stale = c.expect(Type::Cluster, "cluster").await;
    c.ask(Type::Cluster, &["db"], Some(&stale)).await;
    c.barrier("db", "an ACK gets nothing").await;
    assert_eq!(
        s.server.stats().responses_of(Type::Cluster),
        1,
        "an ACK gets nothing"
    );

    // The same names without a nonce: the client subscribes again (after a reconnect).
    c.ask(Type::Cluster, &["db"], None).await;
    let again = c.expect(Type::Cluster, "subscribed again").await;
    assert_eq!(again.resources.len(), 1);

    // A new name on the old nonce.
    c.ask(Type::Cluster, &["db", "other"], Some(&stale)).await;
    let renamed = c.expect(Type::Cluster, "names changed").await;
    assert_eq!(renamed.resources.len(), 2, "the whole subscribed set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_services_of_ten_instances_on_one_stream_are_answered() {
    let s = setup().await;
    // 10,000 instances, announced as any NATS client could (one token each, a long TTL).
    let raw = async_nats::connect(s.nats.url()).await.expect("connects");
    let subjects = herald_shared::Subjects::new(&s.prefix).unwrap();
    for svc in 0..1_000u32 {
        for i in 0..10u32 {
            let mut t = herald_shared::Token::new(
                format!("svc{svc}"),
                format!("i{i}"),
                format!("10.{}.{}.{i}:80", svc / 256, svc % 256),
            );
            t.seq = 1;
            t.ttl_ms = 600_000;
            let bytes = herald_shared::codec::encode(&t).unwrap();
            raw.publish(subjects.announce(&t.service), bytes.into())
                .await
                .unwrap();
        }
    }
    raw.flush().await.unwrap();
    let names: Vec<String> = (0..1_000).map(|i| format!("svc{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut c = Client::connect(&s.uri).await;
    c.ask(Type::Cluster, &refs, None).await;
    let cds = c.expect(Type::Cluster, "clusters").await;
    assert_eq!(cds.resources.len(), 1_000);
    c.ask(Type::Cluster, &refs, Some(&cds)).await;
    c.ask(Type::Endpoints, &refs, None).await;
    // Endpoints go out per resource: the first response holds every assignment, later ones
    // only those that changed.
    let mut latest = std::collections::HashMap::new();
    let mut responses = 0;
    while latest.len() < 1_000 || latest.values().any(|n| *n != 10) {
        let r = c.expect(Type::Endpoints, "every instance listed").await;
        responses += 1;
        c.ask(Type::Endpoints, &refs, Some(&r)).await;
        for cla in assignments(&r) {
            latest.insert(cla.cluster_name.clone(), endpoints(&cla).len());
        }
    }
    assert!(responses >= 1);
    assert_eq!(latest.len(), 1_000);
}
