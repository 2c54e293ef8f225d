//! etcd's authority as a user meets it: a filtered subscriber hears nothing of other
//! services from either source, and spoofed tokens on the bus change nothing of a registered
//! instance — each is counted under its own reason and the real tokens keep flowing.

use std::time::Duration;

use futures::StreamExt;
use herald_announcer::{Announcer, AnnouncerHandle};
use herald_e2e::{RawPublisher, eventually, init_tracing, nats, prefix};
use herald_shared::Token;
use herald_subscriber::{Event, Subscriber};
use herald_testkit::{EtcdServer, NatsServer};

const INTERVAL: Duration = Duration::from_millis(100);
const TTL: Duration = Duration::from_millis(500);

async fn announcer(
    nats_url: &str,
    etcd: &[String],
    prefix: &str,
    service: &str,
    id: &str,
) -> AnnouncerHandle {
    Announcer::builder(service, "127.0.0.1:9000")
        .nats(nats(nats_url))
        .etcd(herald_e2e::etcd(etcd))
        .prefix(prefix)
        .instance(id)
        .interval(INTERVAL)
        .ttl(TTL)
        .start()
        .await
        .expect("announcer starts")
}

async fn registry_subscriber(nats_url: &str, etcd: &[String], prefix: &str) -> Subscriber {
    herald_e2e::subscriber_with_etcd(nats_url, etcd, prefix).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_subscriber_knows_nothing_of_other_services() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let (url, endpoints) = (nats_server.url(), etcd_server.endpoints());
    let prefix = prefix("filter");
    let mine = announcer(&url, &endpoints, &prefix, "etest", "e1").await;
    let mut others = Vec::new();
    for id in ["b1", "b2"] {
        others.push(announcer(&url, &endpoints, &prefix, "billing", id).await);
    }
    let sub = Subscriber::builder()
        .nats(nats(&url))
        .etcd(herald_e2e::etcd(&endpoints))
        .prefix(&prefix)
        .service("etest")
        .start()
        .await
        .unwrap();
    let mut events = sub.events();
    // Billing churns for several TTLs: joins, graceful stops and crashes.
    for round in 0..4 {
        let joined = announcer(&url, &endpoints, &prefix, "billing", &format!("c{round}")).await;
        tokio::time::sleep(TTL).await;
        if round % 2 == 0 {
            joined.shutdown().await.unwrap();
        } else {
            drop(joined);
        }
    }
    tokio::time::sleep(TTL * 2).await;
    let mut seen = Vec::new();
    while let Some(Some(e)) = events.now_or_never_event() {
        seen.push(e);
    }
    for e in &seen {
        let service = match e {
            Event::Added(i) | Event::Updated(i) => i.service().to_owned(),
            Event::Removed { instance, .. } => instance.service().to_owned(),
            other => panic!("unexpected event {other:?}"),
        };
        assert_eq!(service, "etest", "an event of another service: {e:?}");
    }
    assert_eq!(sub.services(), vec!["etest"]);
    assert!(sub.instances("billing").is_empty());
    let stats = sub.stats();
    assert_eq!(
        stats.registrations, 1,
        "only etest's registration is read: {stats:?}"
    );
    assert_eq!(stats.instances, 1);
    assert_eq!(
        (stats.expirations, stats.goodbyes, stats.deregistrations),
        (0, 0, 0),
        "nothing of billing is removed, because nothing of it was listed: {stats:?}"
    );
    assert_eq!((stats.unregistered_drops, stats.held_now), (0, 0));
    assert_eq!(sub.instances("etest").ids(), vec!["e1"]);
    drop(others);
    mine.shutdown().await.unwrap();
}

/// `events.next()` without waiting.
trait NowOrNever {
    fn now_or_never_event(&mut self) -> Option<Option<Event>>;
}

impl NowOrNever for herald_subscriber::EventStream {
    fn now_or_never_event(&mut self) -> Option<Option<Event>> {
        futures::FutureExt::now_or_never(self.next())
    }
}

/// A registered instance and a raw publisher that knows its epoch, id and seq.
struct Target {
    handle: AnnouncerHandle,
    sub: Subscriber,
    publisher: RawPublisher,
}

impl Target {
    async fn start(nats_server: &NatsServer, etcd_server: &EtcdServer, test: &str) -> Target {
        let (url, endpoints) = (nats_server.url(), etcd_server.endpoints());
        let prefix = prefix(test);
        let sub = registry_subscriber(&url, &endpoints, &prefix).await;
        let handle = announcer(&url, &endpoints, &prefix, "svc", "real").await;
        eventually(
            Duration::from_secs(3),
            "the real instance confirmed",
            || sub.get("svc", "real").is_some_and(|i| i.is_confirmed()),
        )
        .await;
        let publisher = RawPublisher::connect(&url, &prefix).await;
        Target {
            handle,
            sub,
            publisher,
        }
    }

    /// A copy of the real token, far ahead in seq, as a spoofer would make it.
    fn spoof(&self) -> Token {
        let mut t = self.handle.token();
        t.seq += 1_000_000;
        t
    }

    /// The real instance stays listed at its own address while its tokens keep being
    /// accepted, for longer than its TTL.
    async fn still_real(&self, addr: &str) {
        let mut events = self.sub.events();
        let before = self.sub.get("svc", "real").expect("listed").seq();
        tokio::time::sleep(TTL * 2).await;
        let now = self.sub.get("svc", "real").expect("still listed");
        assert_eq!(now.addr(), addr, "the registered address is kept");
        assert_eq!(now.epoch(), self.handle.epoch());
        assert!(now.seq() > before, "real tokens keep being accepted");
        while let Some(Some(e)) = events.now_or_never_event() {
            assert!(
                !matches!(e, Event::Removed { .. }),
                "nothing may be removed: {e:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_address_with_the_registered_epoch_is_dropped() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let target = Target::start(&nats_server, &etcd_server, "spoof_addr").await;
    let addr = target.sub.get("svc", "real").unwrap().addr().to_owned();
    let mut spoof = target.spoof();
    spoof.addr = "7.7.7.7:77".into();
    target.publisher.token(&spoof).await;
    target.publisher.flush().await;
    eventually(Duration::from_secs(2), "the spoof counted", || {
        target.sub.stats().identity_mismatch_drops == 1
    })
    .await;
    target.still_real(&addr).await;
    let stats = target.sub.stats();
    assert_eq!(
        (stats.duplicate_drops, stats.unregistered_drops),
        (0, 0),
        "{stats:?}"
    );
    target.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_epoch_ahead_of_etcd_is_held_then_dropped_as_unregistered() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let target = Target::start(&nats_server, &etcd_server, "spoof_epoch").await;
    let addr = target.sub.get("svc", "real").unwrap().addr().to_owned();
    let mut spoof = target.spoof();
    spoof.epoch = 1_000_000_000_000;
    spoof.ttl_ms = 15_000;
    spoof.addr = "7.7.7.7:77".into();
    target.publisher.token(&spoof).await;
    target.publisher.flush().await;
    eventually(Duration::from_secs(2), "the spoof held", || {
        target.sub.stats().held_now == 1
    })
    .await;
    target.still_real(&addr).await;
    eventually(Duration::from_secs(4), "the held spoof dropped", || {
        target.sub.stats().unregistered_drops == 1
    })
    .await;
    assert_eq!(target.sub.stats().held_now, 0);
    target.still_real(&addr).await;
    target.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_spoof_is_counted_as_unregistered() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let target = Target::start(&nats_server, &etcd_server, "spoof_zero").await;
    let addr = target.sub.get("svc", "real").unwrap().addr().to_owned();
    let mut spoof = target.spoof();
    spoof.epoch = 0;
    spoof.addr = "7.7.7.7:77".into();
    target.publisher.token(&spoof).await;
    let mut stranger = target.spoof();
    stranger.epoch = 0;
    stranger.instance = "stranger".into();
    target.publisher.token(&stranger).await;
    target.publisher.flush().await;
    eventually(Duration::from_secs(2), "both spoofs counted", || {
        target.sub.stats().unregistered_drops == 2
    })
    .await;
    target.still_real(&addr).await;
    assert!(target.sub.get("svc", "stranger").is_none());
    assert_eq!(target.sub.stats().stale_epoch_drops, 0);
    target.handle.shutdown().await.unwrap();
}
