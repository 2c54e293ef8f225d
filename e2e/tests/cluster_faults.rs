//! Herald on a 3-node NATS cluster and a 3-node etcd cluster, under the faults a cluster is
//! there to absorb:
//! - the NATS node the announcers use dies: they move to another node, their tokens keep
//!   coming, and no subscriber (each on another node) drops them;
//! - the same node is restarted in lame-duck mode: it closes every announcer's connection
//!   (advisories say `Server Shutdown`), they move, and nothing is removed;
//! - the etcd leader dies: no registration is lost, epochs stay, keep-alives go on after the
//!   election, and the subscribers' watches keep delivering;
//! - both at once, with an announcer crashing meanwhile: once every killed process is back,
//!   every subscriber lists exactly the live instances, each added once, and the crashed one
//!   is gone (its connection closed: within its TTL) and stays gone.
//!
//! Each client lists its preferred node first with `retain_servers_order`, the other nodes
//! after it for failover. The servers publish disconnect advisories and every subscriber
//! follows them: none of these faults may read as a crash.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use herald_announcer::{Announcer, AnnouncerBuilder, AnnouncerHandle};
use herald_e2e::{etcd, etcd_client, eventually, init_tracing, is_added, is_removed, prefix};
use herald_shared::{NatsConfig, Subjects};
use herald_subscriber::{Event, EventStream, RemovalCause, Subscriber};
use herald_testkit::{ADVISORY_SUBJECT, EtcdCluster, NatsCluster, http};

const SVC: &str = "svc";
const INTERVAL: Duration = Duration::from_millis(200);
const TTL: Duration = Duration::from_millis(1_000);
/// Long enough that an election (500 ms timeout here) and a loaded machine cannot lose it;
/// renewed every 2 s.
const LEASE_TTL: Duration = Duration::from_secs(6);
/// nats-server 2.9's shortest lame-duck mode: clients are closed from 1 s on, at most 1 s
/// apart.
const LAME_DUCK: &str = "lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"1s\"";
/// The node the announcers connect to (the one killed); subscribers use the others.
const ANNOUNCER_NODE: usize = 0;

/// Both clusters, and the prefix of the test.
struct Clusters {
    nats: NatsCluster,
    etcd: EtcdCluster,
    prefix: String,
}

impl Clusters {
    async fn start(test: &str) -> Clusters {
        let started = Instant::now();
        let (nats, etcd) = tokio::join!(
            NatsCluster::start_with(3, |b| b.advisories().config(LAME_DUCK)),
            EtcdCluster::start(3)
        );
        eprintln!("{test}: clusters formed in {:?}", started.elapsed());
        Clusters {
            nats,
            etcd,
            prefix: prefix(test),
        }
    }

    /// NATS settings that try node `node` first, then the others in member order.
    fn preferring(&self, node: usize, name: &str) -> NatsConfig {
        let urls = self.nats.urls();
        let mut ordered = vec![urls[node].clone()];
        ordered.extend(
            urls.iter()
                .enumerate()
                .filter(|&(i, _)| i != node)
                .map(|(_, u)| u.clone()),
        );
        let mut config = NatsConfig::new(ordered);
        config.retain_servers_order = true;
        config.name = Some(name.to_owned());
        config
    }

    /// An announcer of `id` on `node`, registered in etcd (every endpoint listed).
    fn announcer(&self, id: &str, node: usize) -> AnnouncerBuilder {
        Announcer::builder(SVC, "127.0.0.1:9000")
            .nats(self.preferring(node, &format!("ann-{id}")))
            .etcd(etcd(&self.etcd.endpoints()))
            .prefix(&self.prefix)
            .instance(id)
            .interval(INTERVAL)
            .ttl(TTL)
            .lease_ttl(LEASE_TTL)
    }

    /// A subscriber of every service on `node`, with etcd; checks that it landed there.
    async fn subscriber(&self, node: usize) -> Subscriber {
        let sub = Subscriber::builder()
            .nats(self.preferring(node, &format!("sub-n{node}")))
            .etcd(etcd(&self.etcd.endpoints()))
            .prefix(&self.prefix)
            .disconnect_advisories(ADVISORY_SUBJECT)
            .start()
            .await
            .expect("subscriber starts");
        assert_eq!(
            sub.client().server_info().server_name,
            format!("n{node}"),
            "the subscriber connects to its preferred node first"
        );
        sub
    }

    /// Names of the client connections node `node` serves.
    async fn connections(&self, node: usize) -> String {
        http::get(self.nats.nodes()[node].monitor_port(), "/connz?limit=1024")
            .await
            .expect("nats monitoring answers")
            .body
    }

    /// Panics unless every announcer in `ids` is connected to one of `nodes`.
    async fn assert_on(&self, nodes: &[usize], ids: &[&str], what: &str) {
        let mut served = String::new();
        for &n in nodes {
            served.push_str(&self.connections(n).await);
        }
        for id in ids {
            assert!(
                served.contains(&format!("\"name\": \"ann-{id}\"")),
                "{what}: announcer {id} is not connected to nodes {nodes:?}"
            );
        }
    }

    fn key(&self, id: &str) -> String {
        Subjects::new(&self.prefix).unwrap().key(SVC, id)
    }

    /// Endpoints of the running etcd members.
    fn live_endpoints(&self) -> Vec<String> {
        (0..self.etcd.len())
            .filter(|&i| self.etcd.member(i).is_running())
            .map(|i| self.etcd.member(i).endpoint())
            .collect()
    }

    /// The key's `(mod_revision, lease)` read through `endpoints`, `None` when absent.
    async fn holder(&self, endpoints: &[String], id: &str) -> Option<(u64, i64)> {
        let mut client = etcd_client(endpoints).await;
        let resp = client.get(self.key(id), None).await.expect("etcd get");
        resp.kvs()
            .first()
            .map(|kv| (kv.mod_revision() as u64, kv.lease()))
    }
}

/// Each listed instance's seq.
fn seqs(sub: &Subscriber) -> HashMap<String, u64> {
    sub.instances(SVC)
        .iter()
        .map(|i| (i.id().to_owned(), i.seq()))
        .collect()
}

/// Whether every instance of `before` is listed with a higher seq.
fn advanced(sub: &Subscriber, before: &HashMap<String, u64>) -> bool {
    let now = seqs(sub);
    before
        .iter()
        .all(|(id, s)| now.get(id).is_some_and(|n| n > s))
}

/// The events delivered so far, without waiting.
fn drain(events: &mut EventStream) -> Vec<Event> {
    std::iter::from_fn(|| events.next().now_or_never().flatten()).collect()
}

/// `(id, cause)` of every removal in `events`; panics on a lagged stream.
fn removals(events: &[Event]) -> Vec<(String, RemovalCause)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Removed { instance, cause } => Some((instance.id().to_owned(), *cause)),
            Event::Lagged { missed } => panic!("the event stream lagged by {missed}"),
            _ => None,
        })
        .collect()
}

/// Ids sorted, for comparisons.
fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// Waits until `sub` lists exactly `live`.
async fn lists_exactly(sub: &Subscriber, live: &[&str], what: &str) {
    let want = sorted(live);
    eventually(Duration::from_secs(5), what, || {
        let mut ids = sub.instances(SVC).ids();
        ids.sort();
        ids == want
    })
    .await;
}

/// Starts `builder` while an etcd member is down: `start()` itself must get past the dead
/// member (the etcd channel balances over every endpoint listed, so its lease grant or claim
/// may go to the dead one; it tries again while the call deadline allows). Returns the handle
/// and how long `start()` took.
async fn start_during_outage(builder: AnnouncerBuilder) -> (AnnouncerHandle, Duration) {
    let began = Instant::now();
    let handle = builder
        .start()
        .await
        .expect("an announcer starts while an etcd member is down, on the first call");
    (handle, began.elapsed())
}

/// Starts `ids` on the announcer node.
async fn start_all(c: &Clusters, ids: &[&str]) -> Vec<AnnouncerHandle> {
    let mut out = Vec::new();
    for id in ids {
        out.push(
            c.announcer(id, ANNOUNCER_NODE)
                .start()
                .await
                .expect("announcer starts"),
        );
    }
    c.assert_on(&[ANNOUNCER_NODE], ids, "at start").await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcers_move_to_another_nats_node_and_no_subscriber_drops_them() {
    init_tracing();
    let mut c = Clusters::start("natsnode").await;
    let subs = [c.subscriber(1).await, c.subscriber(2).await];
    let mut events: Vec<EventStream> = subs.iter().map(Subscriber::events).collect();
    let ids = ["a0", "a1", "a2"];
    let announcers = start_all(&c, &ids).await;
    for sub in &subs {
        lists_exactly(sub, &ids, "every announcer listed").await;
    }
    let at_kill: Vec<_> = subs.iter().map(seqs).collect();

    c.nats.node(ANNOUNCER_NODE).kill();
    let killed = Instant::now();
    eventually(
        Duration::from_secs(10),
        "every announcer reconnected",
        || announcers.iter().all(|a| a.stats().reconnects >= 1),
    )
    .await;
    let reconnected = killed.elapsed();
    for (sub, before) in subs.iter().zip(&at_kill) {
        eventually(
            Duration::from_secs(5),
            "every instance's seq advances after the kill",
            || advanced(sub, before),
        )
        .await;
    }
    let fresh = killed.elapsed();
    c.assert_on(&[1, 2], &ids, "after the kill").await;

    // Two TTLs with the node still dead: tokens keep coming through the other nodes.
    let mid: Vec<_> = subs.iter().map(seqs).collect();
    tokio::time::sleep(TTL * 2).await;
    for (sub, mid) in subs.iter().zip(&mid) {
        assert!(
            advanced(sub, mid),
            "seqs keep advancing while the node is dead: {:?} then {:?}",
            mid,
            seqs(sub)
        );
    }

    c.nats.node(ANNOUNCER_NODE).restart().await;
    c.nats.wait_for_routes().await;
    let restarted = killed.elapsed();
    tokio::time::sleep(TTL).await;
    for (sub, events) in subs.iter().zip(&mut events) {
        lists_exactly(sub, &ids, "the same three listed after the restart").await;
        let stats = sub.stats();
        assert_eq!(stats.added, 3, "each instance added once: {stats:?}");
        assert_eq!(
            stats.reconnects, 0,
            "the subscriber's own node never went away"
        );
        let removed = removals(&drain(events));
        assert!(
            removed.is_empty(),
            "no subscriber removes an announcer whose node died: {removed:?}"
        );
    }
    for a in &announcers {
        let s = a.stats();
        assert_eq!(
            (s.lease_losses, s.registrations),
            (0, 1),
            "a NATS fault leaves the registration alone: {s:?}"
        );
    }
    eprintln!(
        "natsnode: announcers reconnected {reconnected:?} after the kill, every instance fresh \
         in both subscribers after {fresh:?}; node back and routed at {restarted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lame_duck_restart_of_the_announcers_node_removes_nothing() {
    init_tracing();
    let mut c = Clusters::start("lameduck").await;
    let subs = [c.subscriber(1).await, c.subscriber(2).await];
    let mut events: Vec<EventStream> = subs.iter().map(Subscriber::events).collect();
    let ids = ["l0", "l1", "l2"];
    let announcers = start_all(&c, &ids).await;
    for sub in &subs {
        lists_exactly(sub, &ids, "every announcer listed").await;
    }

    let began = Instant::now();
    c.nats
        .node(ANNOUNCER_NODE)
        .lame_duck(Duration::from_secs(20))
        .await;
    let left = began.elapsed();
    eventually(
        Duration::from_secs(10),
        "every announcer reconnected",
        || announcers.iter().all(|a| a.stats().reconnects >= 1),
    )
    .await;
    c.assert_on(&[1, 2], &ids, "after lame-duck mode").await;
    for sub in &subs {
        eventually(
            Duration::from_secs(10),
            "the closed connections were reported to the subscriber",
            || sub.stats().disconnect_advisories >= 1,
        )
        .await;
    }
    c.nats.node(ANNOUNCER_NODE).restart().await;
    c.nats.wait_for_routes().await;
    // A grace and a TTL after the last close: a false removal would have happened by now.
    let settled: Vec<_> = subs.iter().map(seqs).collect();
    tokio::time::sleep(TTL + Duration::from_millis(500)).await;
    for ((sub, events), before) in subs.iter().zip(&mut events).zip(&settled) {
        lists_exactly(sub, &ids, "the same three listed throughout").await;
        assert!(advanced(sub, before), "tokens keep coming: {:?}", seqs(sub));
        let removed = removals(&drain(events));
        assert!(
            removed.is_empty(),
            "a server leaving in lame-duck mode is no crash of its clients: {removed:?}"
        );
        let stats = sub.stats();
        assert_eq!(stats.added, 3, "each instance added once: {stats:?}");
        assert_eq!(stats.disconnections, 0, "{stats:?}");
    }
    eprintln!("lameduck: the node closed its clients and left in {left:?}; nothing was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_leader_dies_and_no_registration_is_lost() {
    init_tracing();
    let mut c = Clusters::start("leader").await;
    let subs = [c.subscriber(1).await, c.subscriber(2).await];
    let mut events: Vec<EventStream> = subs.iter().map(Subscriber::events).collect();
    let ids = ["a0", "a1", "a2"];
    let announcers = start_all(&c, &ids).await;
    let epochs: Vec<u64> = announcers.iter().map(AnnouncerHandle::epoch).collect();
    for sub in &subs {
        lists_exactly(sub, &ids, "every announcer listed").await;
    }
    eventually(Duration::from_secs(5), "a first keep-alive each", || {
        announcers.iter().all(|a| a.stats().keep_alives >= 1)
    })
    .await;

    let leader = c.etcd.wait_for_leader().await;
    let before: Vec<u64> = announcers.iter().map(|a| a.stats().keep_alives).collect();
    c.etcd.kill(leader);
    let killed = Instant::now();
    let new_leader = c.etcd.wait_for_leader().await;
    let elected = killed.elapsed();
    assert_ne!(new_leader, leader);
    eventually(
        LEASE_TTL * 2,
        "every announcer's keep-alives continue after the election",
        || {
            announcers
                .iter()
                .zip(&before)
                .all(|(a, b)| a.stats().keep_alives >= b + 2)
        },
    )
    .await;
    let renewed = killed.elapsed();
    for (a, epoch) in announcers.iter().zip(&epochs) {
        let s = a.stats();
        assert_eq!(
            (s.lease_losses, s.registrations, a.epoch()),
            (0, 1, *epoch),
            "the registration survived the leader's death: {s:?}"
        );
    }
    let survivors = c.live_endpoints();
    for (id, epoch) in ids.iter().zip(&epochs) {
        let (revision, lease) = c
            .holder(&survivors, id)
            .await
            .expect("the key is still there");
        assert_eq!(revision, *epoch, "{id}: the registration was not rewritten");
        assert_ne!(lease, 0);
    }

    // The subscribers' watches still deliver: a registration made after the election arrives.
    let registered: Vec<u64> = subs.iter().map(|s| s.stats().registrations).collect();
    let (late, late_start) = start_during_outage(c.announcer("late", ANNOUNCER_NODE)).await;
    for (sub, before) in subs.iter().zip(&registered) {
        eventually(
            Duration::from_secs(5),
            "the watch delivers a registration made after the election",
            || sub.stats().registrations > *before,
        )
        .await;
    }

    c.etcd.restart(leader).await;
    c.etcd.wait_for_leader().await;
    let restarted = killed.elapsed();
    let back = [c.etcd.member(leader).endpoint()];
    for (id, epoch) in ids.iter().zip(&epochs) {
        assert_eq!(
            c.holder(&back, id).await.map(|h| h.0),
            Some(*epoch),
            "the restarted member serves {id}'s registration"
        );
    }
    assert_eq!(
        c.holder(&back, "late").await.map(|h| h.0),
        Some(late.epoch()),
        "the restarted member caught up with the write it missed"
    );
    let all = ["a0", "a1", "a2", "late"];
    for (sub, events) in subs.iter().zip(&mut events) {
        lists_exactly(sub, &all, "every instance listed after the restart").await;
        for (id, epoch) in ids.iter().zip(&epochs) {
            assert_eq!(sub.get(SVC, id).map(|i| i.epoch()), Some(*epoch));
        }
        let stats = sub.stats();
        assert_eq!(stats.added, 4, "each instance added once: {stats:?}");
        assert_eq!(
            (stats.expirations, stats.deregistrations, stats.fenced),
            (0, 0, 0),
            "{stats:?}"
        );
        let removed = removals(&drain(events));
        assert!(removed.is_empty(), "nothing removed: {removed:?}");
    }
    eprintln!(
        "leader: new etcd leader {elected:?} after the kill, two more keep-alives each by \
         {renewed:?}; old leader back at {restarted:?}; the late start() took \
         {late_start:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_both_faults_heal_every_subscriber_converges_without_zombies() {
    init_tracing();
    let mut c = Clusters::start("converge").await;
    // One subscriber on the node that dies too: it keeps its view through its own outage.
    let subs = [
        c.subscriber(0).await,
        c.subscriber(1).await,
        c.subscriber(2).await,
    ];
    let mut events: Vec<EventStream> = subs.iter().map(Subscriber::events).collect();
    let ids = ["a0", "a1", "a2"];
    let announcers = start_all(&c, &ids).await;
    let epochs: Vec<u64> = announcers.iter().map(AnnouncerHandle::epoch).collect();
    let doomed = start_all(&c, &["doomed"]).await.pop().unwrap();
    for sub in &subs {
        lists_exactly(sub, &["a0", "a1", "a2", "doomed"], "every announcer listed").await;
    }

    let leader = c.etcd.wait_for_leader().await;
    c.nats.node(ANNOUNCER_NODE).kill();
    c.etcd.kill(leader);
    let killed = Instant::now();
    eventually(
        Duration::from_secs(10),
        "every announcer reconnected",
        || announcers.iter().all(|a| a.stats().reconnects >= 1),
    )
    .await;
    c.etcd.wait_for_leader().await;

    // A join, then a crash, while both faults last.
    let (late, late_start) = start_during_outage(c.announcer("late", 1)).await;
    let crashed = Instant::now();
    drop(doomed);
    // Each stream is read at once, so that each removal is timed when it comes out.
    let expiring = events.iter_mut().enumerate().map(|(i, events)| async move {
        let mut seen = Vec::new();
        let deadline = Instant::now() + TTL + Duration::from_secs(3);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = tokio::time::timeout(left, events.next())
                .await
                .unwrap_or_else(|_| panic!("subscriber {i}: doomed not expired; saw {seen:?}"))
                .expect("event stream open");
            let gone = is_removed(&e, "doomed", RemovalCause::Disconnected);
            seen.push(e);
            if gone {
                return (i, crashed.elapsed(), seen);
            }
        }
    });
    let mut expiry = Vec::new();
    for (i, gone, seen) in futures::future::join_all(expiring).await {
        assert!(
            !removals(&seen).iter().any(|(id, _)| id != "doomed"),
            "subscriber {i}: only the crashed instance leaves: {seen:?}"
        );
        assert!(
            gone < TTL,
            "subscriber {i}: the crashed instance's connection closed, yet it left only {gone:?} \
             after the crash, not before its TTL"
        );
        expiry.push(gone);
    }
    for sub in &subs {
        assert!(
            sub.get(SVC, "doomed").is_none(),
            "no zombie: the crashed instance is not listed after its TTL"
        );
    }

    c.nats.node(ANNOUNCER_NODE).restart().await;
    c.nats.wait_for_routes().await;
    c.etcd.restart(leader).await;
    c.etcd.wait_for_leader().await;
    let healed = killed.elapsed();

    // The crashed instance's key goes at its lease's expiry (a new leader renews every
    // lease once, so up to two lease TTLs after the crash).
    let endpoints = c.etcd.endpoints();
    let mut client = etcd_client(&endpoints).await;
    let key = c.key("doomed");
    let deadline = Instant::now() + LEASE_TTL * 2 + Duration::from_secs(5);
    loop {
        let resp = client.get(key.as_str(), None).await;
        if resp.is_ok_and(|r| r.kvs().is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the crashed instance's key outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key_gone = crashed.elapsed();
    // One more TTL, for any late or re-listed trace of it to show up.
    tokio::time::sleep(TTL).await;

    let live = ["a0", "a1", "a2", "late"];
    for (i, (sub, events)) in subs.iter().zip(&mut events).enumerate() {
        lists_exactly(sub, &live, "exactly the live instances listed").await;
        let stats = sub.stats();
        assert_eq!(
            stats.added, 5,
            "subscriber {i}: each of the 5 instances ever started added once: {stats:?}"
        );
        assert_eq!(
            (
                stats.disconnections,
                stats.expirations,
                stats.goodbyes,
                stats.deregistrations,
                stats.fenced
            ),
            (1, 0, 0, 0, 0),
            "subscriber {i}: only the crash removed anything: {stats:?}"
        );
        let rest = drain(events);
        let removed = removals(&rest);
        assert!(
            removed.is_empty(),
            "subscriber {i}: nothing removed after the crash: {removed:?}"
        );
        assert!(
            !rest.iter().any(|e| is_added(e, "doomed")),
            "subscriber {i}: the crashed instance never comes back"
        );
    }
    assert_eq!(
        subs[0].stats().reconnects,
        1,
        "the subscriber on the dead node reconnected once"
    );
    let endpoints = c.etcd.endpoints();
    for (a, (id, epoch)) in announcers.iter().zip(ids.iter().zip(&epochs)) {
        let s = a.stats();
        assert_eq!(
            (s.lease_losses, s.registrations, a.epoch()),
            (0, 1, *epoch),
            "{id}: {s:?}"
        );
        assert_eq!(c.holder(&endpoints, id).await.map(|h| h.0), Some(*epoch));
    }
    assert_eq!(
        c.holder(&endpoints, "late").await.map(|h| h.0),
        Some(late.epoch())
    );
    eprintln!(
        "converge: crashed instance removed {expiry:?} after the crash (per subscriber); \
         both faults healed {healed:?} after the kills; its key went {key_gone:?} after the \
         crash; the late start() took {late_start:?}"
    );
}
