//! etcd as the authority, seen from the announcer: registration at start, the lease kept
//! alive through outages and leader changes, registering again when the lease is lost or the
//! cluster replaced, fencing by a takeover, deregistration by an operator, and the key removed
//! at once by a graceful stop or at lease expiry after a crash.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use herald_announcer::{Announcer, AnnouncerBuilder, AnnouncerHandle, ErrorKind, Stopped};
use herald_e2e::{
    RawPublisher, etcd, etcd_client, eventually, init_tracing, is_added, is_removed, nats, prefix,
    wait_event,
};
use herald_shared::{Received, State, Subjects, codec, round_trip};
use herald_subscriber::{Event, RemovalCause};
use herald_testkit::{EtcdCluster, EtcdServer, NatsServer, spawn_guarded};

const INTERVAL: Duration = Duration::from_millis(200);
const TTL: Duration = Duration::from_millis(1_000);

/// An announcer of `svc`/`id` registered in etcd, with a lease of `lease_ttl`.
fn announcer(
    nats_url: &str,
    endpoints: &[String],
    prefix: &str,
    id: &str,
    lease_ttl: Duration,
) -> AnnouncerBuilder {
    Announcer::builder("svc", "127.0.0.1:9000")
        .nats(nats(nats_url))
        .etcd(etcd(endpoints))
        .prefix(prefix)
        .instance(id)
        .interval(INTERVAL)
        .ttl(TTL)
        .lease_ttl(lease_ttl)
}

use herald_e2e::subscriber_with_etcd as subscriber;

fn key(prefix: &str, id: &str) -> String {
    Subjects::new(prefix).unwrap().key("svc", id)
}

/// The key's `(mod_revision, lease)`, or `None` when it does not exist.
async fn holder(client: &mut etcd_client::Client, key: &str) -> Option<(u64, i64)> {
    let resp = client.get(key, None).await.expect("etcd get");
    resp.kvs()
        .first()
        .map(|kv| (kv.mod_revision() as u64, kv.lease()))
}

/// Leases alive in the cluster.
async fn leases(client: &mut etcd_client::Client) -> usize {
    client.leases().await.expect("etcd leases").leases().len()
}

/// A raw subscription of `svc`'s announce subject, active on the server once returned.
async fn observe(nats_url: &str, prefix: &str) -> async_nats::Subscriber {
    let client = async_nats::connect(nats_url).await.unwrap();
    let sub = client
        .subscribe(Subjects::new(prefix).unwrap().announce("svc"))
        .await
        .unwrap();
    round_trip::confirm_subscriptions(&client, Duration::from_secs(5))
        .await
        .unwrap();
    sub
}

/// The `(epoch, seq)` of the tokens, full or heartbeats, that arrive on `raw` within
/// `window`.
async fn collect(raw: &mut async_nats::Subscriber, window: Duration) -> Vec<(Instant, u64, u64)> {
    let deadline = tokio::time::Instant::now() + window;
    let mut seen = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, raw.next()).await {
        let version = match codec::decode_received(&msg.payload).unwrap() {
            Received::Token(t) => (t.epoch, t.seq),
            Received::Heartbeat(h) => (h.epoch, h.seq),
        };
        seen.push((Instant::now(), version.0, version.1));
    }
    seen
}

/// Waits for `stopped()` and checks that nothing is sent after it resolved.
async fn assert_stopped(
    announcer: &AnnouncerHandle,
    raw: &mut async_nats::Subscriber,
    expected: Stopped,
) {
    let reason = tokio::time::timeout(Duration::from_secs(3), announcer.stopped())
        .await
        .expect("stopped() resolves within 3 s");
    assert_eq!(reason, expected, "the announcer reports why it stopped");
    let sent = announcer.stats().tokens_sent;
    // The last token it sent: one may still be on its way, none may follow it.
    let last = announcer.token();
    let late: Vec<_> = collect(raw, INTERVAL * 4)
        .await
        .into_iter()
        .filter(|&(_, epoch, seq)| epoch == last.epoch && seq > last.seq)
        .collect();
    assert!(
        late.is_empty(),
        "no token of the stopped incarnation may arrive after stopped(): {late:?}"
    );
    assert_eq!(
        announcer.stats().tokens_sent,
        sent,
        "a stopped announcer sends nothing more"
    );
    assert_eq!(
        announcer.drain().await.unwrap_err().kind(),
        ErrorKind::Stopped,
        "drain on a stopped announcer says so"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_registers_and_a_graceful_shutdown_removes_the_key_at_once() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let endpoints = etcd_server.endpoints();
    let prefix = prefix("graceful");
    let mut client = etcd_client(&endpoints).await;
    let sub = subscriber(&nats_server.url(), &endpoints, &prefix).await;
    let mut events = sub.events();

    let a = announcer(
        &nats_server.url(),
        &endpoints,
        &prefix,
        "a",
        Duration::from_secs(30),
    )
    .meta("version", "1")
    .start()
    .await
    .expect("announcer starts");
    let (revision, lease) = holder(&mut client, &key(&prefix, "a"))
        .await
        .expect("start() wrote the registration");
    assert_eq!(
        a.epoch(),
        revision,
        "the epoch is the registration's revision"
    );
    assert_ne!(lease, 0, "the registration hangs on a lease");
    assert_eq!(
        a.token().epoch,
        a.epoch(),
        "the first token carries the epoch"
    );
    assert_eq!(a.stats().registrations, 1);
    let value = client.get(key(&prefix, "a"), None).await.unwrap();
    let written = codec::decode(value.kvs()[0].value()).unwrap().to_owned();
    assert_eq!(
        (
            written.addr.as_str(),
            written.meta.get("version").map(String::as_str)
        ),
        ("127.0.0.1:9000", Some("1")),
        "the key holds the token at registration, metadata included"
    );
    wait_event(&mut events, Duration::from_secs(2), "Added(a)", |e| {
        is_added(e, "a")
    })
    .await;
    eventually(
        Duration::from_secs(2),
        "the subscriber knows the epoch",
        || sub.get("svc", "a").is_some_and(|i| i.epoch() == revision),
    )
    .await;

    let stopping = Instant::now();
    a.shutdown().await.expect("graceful shutdown");
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    assert_eq!(
        holder(&mut client, &key(&prefix, "a")).await,
        None,
        "the key is gone as soon as shutdown() returns, not at lease expiry"
    );
    assert_eq!(leases(&mut client).await, 0, "the lease is revoked");
    wait_event(
        &mut events,
        Duration::from_secs(2),
        "Removed(a, goodbye)",
        |e| is_removed(e, "a", RemovalCause::Goodbye),
    )
    .await;
    assert!(sub.instances("svc").is_empty());
}

/// The registration goes only after the server has routed the goodbye: with the server
/// frozen during `shutdown()`, the flushed goodbye waits in its socket, and so does the
/// revoke. Subscribers then see a goodbye, never a deregistration, for a graceful stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_deregisters_only_after_the_server_routed_its_goodbye() {
    init_tracing();
    let (mut nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let endpoints = etcd_server.endpoints();
    let prefix = prefix("goodbye-first");
    let mut client = etcd_client(&endpoints).await;
    let sub = subscriber(&nats_server.url(), &endpoints, &prefix).await;
    let mut events = sub.events();
    let a = announcer(
        &nats_server.url(),
        &endpoints,
        &prefix,
        "a",
        Duration::from_secs(30),
    )
    // The revoke waits for the goodbye for half of this, far longer than the freeze; and
    // the frozen server holds back tokens, so the TTL must outlast the freeze too.
    .shutdown_timeout(Duration::from_secs(20))
    .ttl(Duration::from_secs(10))
    .start()
    .await
    .expect("announcer starts");
    wait_event(&mut events, Duration::from_secs(2), "Added(a)", |e| {
        is_added(e, "a")
    })
    .await;

    nats_server.freeze();
    let stopping = tokio::spawn(a.shutdown());
    // Time is the behaviour here: a revoke right after the flush lands within milliseconds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        holder(&mut client, &key(&prefix, "a")).await.is_some(),
        "the registration stays while the goodbye waits in the frozen server"
    );
    assert!(!stopping.is_finished(), "shutdown() waits for the server");

    nats_server.thaw();
    stopping
        .await
        .expect("shutdown task")
        .expect("graceful shutdown");
    assert_eq!(
        holder(&mut client, &key(&prefix, "a")).await,
        None,
        "the key is gone when shutdown() returns"
    );
    let removed = wait_event(
        &mut events,
        Duration::from_secs(5),
        "Removed(a)",
        |e| matches!(e, Event::Removed { instance, .. } if instance.id() == "a"),
    )
    .await;
    assert!(
        is_removed(&removed, "a", RemovalCause::Goodbye),
        "a graceful stop is a goodbye: {removed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_handle_leaves_the_key_to_its_lease() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let endpoints = etcd_server.endpoints();
    let prefix = prefix("drop");
    let mut client = etcd_client(&endpoints).await;
    let a = announcer(
        &nats_server.url(),
        &endpoints,
        &prefix,
        "a",
        Duration::from_secs(30),
    )
    .start()
    .await
    .unwrap();
    let (_, lease) = holder(&mut client, &key(&prefix, "a")).await.unwrap();
    let stopped = a.stopped();
    drop(a);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), stopped)
            .await
            .expect("stopped() resolves once the handle is gone"),
        Stopped::Closed
    );
    // Give a (wrong) revoke every chance to land before looking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        holder(&mut client, &key(&prefix, "a")).await.is_some(),
        "a dropped handle does not revoke: the key goes at lease expiry, as after a crash"
    );
    let ttl = client.lease_time_to_live(lease, None).await.unwrap().ttl();
    assert!(ttl > 0, "the lease is left to run out ({ttl} s left)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_etcd_down_sends_the_goodbye_and_reports_the_revoke() {
    init_tracing();
    let (nats_server, mut etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let endpoints = etcd_server.endpoints();
    let prefix = prefix("downstop");
    let sub = subscriber(&nats_server.url(), &endpoints, &prefix).await;
    let mut events = sub.events();
    let a = announcer(
        &nats_server.url(),
        &endpoints,
        &prefix,
        "a",
        Duration::from_secs(30),
    )
    .shutdown_timeout(Duration::from_secs(1))
    .start()
    .await
    .unwrap();
    wait_event(&mut events, Duration::from_secs(2), "Added(a)", |e| {
        is_added(e, "a")
    })
    .await;
    etcd_server.kill();
    let stopping = Instant::now();
    let err = a.shutdown().await.expect_err("the lease cannot be revoked");
    let took = stopping.elapsed();
    assert!(
        matches!(err.kind(), ErrorKind::EtcdUnreachable | ErrorKind::TimedOut),
        "shutdown says the revoke failed: {err}"
    );
    assert!(
        took < Duration::from_secs(3),
        "shutdown gives up near its 1 s deadline, not at etcd's call timeouts (took {took:?})"
    );
    // etcd cannot confirm the goodbye: the instance is no longer picked at once, and goes as
    // a goodbye once a TTL of silence agrees with it.
    wait_event(
        &mut events,
        Duration::from_secs(1),
        "Updated(a, leaving)",
        |e| matches!(e, Event::Updated(i) if i.id() == "a" && i.state() == State::Leaving),
    )
    .await;
    wait_event(
        &mut events,
        TTL + Duration::from_secs(1),
        "Removed(a, goodbye)",
        |e| is_removed(e, "a", RemovalCause::Goodbye),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_process_expires_by_ttl_and_its_key_at_lease_expiry() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let endpoints = etcd_server.endpoints();
    let prefix = prefix("crash");
    let lease_ttl = Duration::from_secs(3);
    let mut client = etcd_client(&endpoints).await;
    let sub = subscriber(&nats_server.url(), &endpoints, &prefix).await;
    let mut events = sub.events();

    let mut cmd = Command::new(herald_testkit::bin_exe(
        "register_child",
        env!("CARGO_BIN_EXE_register_child"),
    ));
    cmd.args([
        nats_server.url(),
        endpoints.join(","),
        prefix.clone(),
        "svc".into(),
        "child".into(),
        INTERVAL.as_millis().to_string(),
        TTL.as_millis().to_string(),
        lease_ttl.as_secs().to_string(),
    ])
    .stdout(Stdio::piped());
    let mut child = spawn_guarded(cmd);
    let stdout = child.child_mut().stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let epoch: u64 = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("child printed {line:?}"));
    assert!(epoch > 0, "the child registered");
    wait_event(&mut events, Duration::from_secs(2), "Added(child)", |e| {
        is_added(e, "child")
    })
    .await;
    let key = key(&prefix, "child");
    let (revision, lease) = holder(&mut client, &key).await.expect("registered");
    assert_eq!(revision, epoch);
    // Watch the key from its registration on, to time its deletion exactly.
    let mut watch = client
        .watch(
            key.clone(),
            Some(etcd_client::WatchOptions::new().with_start_revision(revision as i64 + 1)),
        )
        .await
        .unwrap();
    // Let the child renew the lease at least once, so the kill lands mid-period.
    tokio::time::sleep(lease_ttl / 2).await;
    let ttl_left = client.lease_time_to_live(lease, None).await.unwrap().ttl();
    assert!(ttl_left > 0, "the child keeps its lease alive");

    let killed = Instant::now();
    child.kill();
    wait_event(
        &mut events,
        TTL + Duration::from_secs(2),
        "Removed(child, expired)",
        |e| is_removed(e, "child", RemovalCause::Expired),
    )
    .await;
    let expired = killed.elapsed();
    assert!(
        expired < lease_ttl,
        "subscribers drop a crashed instance after the broadcast TTL ({expired:?}), long before its lease ends"
    );
    assert!(
        holder(&mut client, &key).await.is_some(),
        "the key outlives the broadcast TTL: etcd only learns at lease expiry"
    );
    let deleted = loop {
        let resp = tokio::time::timeout(lease_ttl + Duration::from_secs(3), watch.message())
            .await
            .expect("the key is deleted within lease TTL + 3 s")
            .unwrap()
            .expect("watch open");
        if resp
            .events()
            .iter()
            .any(|e| e.event_type() == etcd_client::EventType::Delete)
        {
            break killed.elapsed();
        }
    };
    // The last renewal came at most a keep-alive period (a third of the TTL) before the kill,
    // and the lease then ran for the whole TTL (etcd checks expiries every 500 ms).
    let earliest = lease_ttl - lease_ttl / 3 - Duration::from_millis(300);
    assert!(
        deleted >= earliest,
        "the key went {deleted:?} after the kill, before the lease could expire ({earliest:?})"
    );
    assert!(
        deleted <= lease_ttl + Duration::from_secs(2),
        "the key went {deleted:?} after the kill, later than lease TTL + 2 s"
    );
    assert_eq!(holder(&mut client, &key).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_id_fails_to_start_and_a_takeover_fences_the_first() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let endpoints = etcd_server.endpoints();
    let prefix = prefix("dup");
    let mut client = etcd_client(&endpoints).await;
    let publisher = RawPublisher::connect(&nats_server.url(), &prefix).await;
    let sub = subscriber(&nats_server.url(), &endpoints, &prefix).await;
    let mut events = sub.events();
    let lease_ttl = Duration::from_secs(30);

    let first = announcer(&nats_server.url(), &endpoints, &prefix, "dup", lease_ttl)
        .start()
        .await
        .unwrap();
    wait_event(&mut events, Duration::from_secs(2), "Added(dup)", |e| {
        is_added(e, "dup")
    })
    .await;

    let err = announcer(&nats_server.url(), &endpoints, &prefix, "dup", lease_ttl)
        .start()
        .await
        .expect_err("a second start() of a registered id fails");
    assert_eq!(err.kind(), ErrorKind::DuplicateInstance);
    assert_eq!(err.holder_epoch(), Some(first.epoch()));
    let text = err.to_string();
    assert!(
        text.contains("`dup`") && text.contains(&format!("epoch {}", first.epoch())),
        "the error names the id and the holder's epoch: {text}"
    );
    assert_eq!(
        holder(&mut client, &key(&prefix, "dup")).await.map(|h| h.0),
        Some(first.epoch()),
        "the failed start left the registration alone"
    );
    assert_eq!(
        leases(&mut client).await,
        1,
        "the failed start revoked the lease it granted"
    );

    let mut raw = observe(&nats_server.url(), &prefix).await;
    let second = announcer(&nats_server.url(), &endpoints, &prefix, "dup", lease_ttl)
        .takeover(true)
        .start()
        .await
        .expect("takeover start");
    assert!(
        second.epoch() > first.epoch(),
        "the takeover has a higher epoch"
    );
    assert_stopped(
        &first,
        &mut raw,
        Stopped::Fenced {
            by_epoch: second.epoch(),
        },
    )
    .await;
    wait_event(
        &mut events,
        Duration::from_secs(2),
        "Removed(dup, fenced)",
        |e| is_removed(e, "dup", RemovalCause::Fenced),
    )
    .await;
    eventually(
        Duration::from_secs(2),
        "subscribers follow the new epoch",
        || {
            sub.get("svc", "dup")
                .is_some_and(|i| i.epoch() == second.epoch())
        },
    )
    .await;
    assert_eq!(
        holder(&mut client, &key(&prefix, "dup")).await.map(|h| h.0),
        Some(second.epoch()),
        "the fenced announcer left the new holder's key alone"
    );
    assert_eq!(
        leases(&mut client).await,
        1,
        "the fenced announcer revoked its own lease before stopped() resolved"
    );

    // The fenced incarnation's tokens, replayed by anyone, are dropped.
    let drops = sub.stats().stale_epoch_drops;
    let mut stale = first.token();
    for seq in 1..=3 {
        stale.seq += 1_000_000 * seq;
        stale.sent_at_ms = herald_shared::unix_millis();
        publisher.token(&stale).await;
    }
    publisher.flush().await;
    eventually(Duration::from_secs(2), "old-epoch tokens dropped", || {
        sub.stats().stale_epoch_drops == drops + 3
    })
    .await;
    assert_eq!(sub.get("svc", "dup").unwrap().epoch(), second.epoch());
    first.shutdown().await.expect("nothing left to do");
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_delete_deregisters_and_stops_the_announcer() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let endpoints = etcd_server.endpoints();
    let prefix = prefix("opdel");
    let mut client = etcd_client(&endpoints).await;
    let sub = subscriber(&nats_server.url(), &endpoints, &prefix).await;
    let mut events = sub.events();
    let a = announcer(
        &nats_server.url(),
        &endpoints,
        &prefix,
        "a",
        Duration::from_secs(30),
    )
    .start()
    .await
    .unwrap();
    wait_event(&mut events, Duration::from_secs(2), "Added(a)", |e| {
        is_added(e, "a")
    })
    .await;
    let mut raw = observe(&nats_server.url(), &prefix).await;

    let out = etcd_server.etcdctl(&["del", &key(&prefix, "a")]).await;
    assert!(out.status.success(), "etcdctl del: {out:?}");
    // The cause tells the deletion from an expiry (TTL 1 s): the announcer is still up.
    wait_event(
        &mut events,
        Duration::from_secs(5),
        "Removed(a, deregistered)",
        |e| is_removed(e, "a", RemovalCause::Deregistered),
    )
    .await;
    assert_stopped(&a, &mut raw, Stopped::Deregistered).await;
    assert_eq!(
        leases(&mut client).await,
        0,
        "the announcer revoked its lease"
    );
    assert_eq!(
        holder(&mut client, &key(&prefix, "a")).await,
        None,
        "a deregistered announcer does not register again"
    );
    assert!(sub.get("svc", "a").is_none());
    assert_eq!(a.stats().registrations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_longer_than_the_lease_keeps_the_instance_listed() {
    init_tracing();
    let (nats_server, mut etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let endpoints = etcd_server.endpoints();
    let prefix = prefix("outage");
    let lease_ttl = Duration::from_secs(2);
    let sub = subscriber(&nats_server.url(), &endpoints, &prefix).await;
    let mut events = sub.events();
    let a = announcer(&nats_server.url(), &endpoints, &prefix, "a", lease_ttl)
        .start()
        .await
        .unwrap();
    wait_event(&mut events, Duration::from_secs(2), "Added(a)", |e| {
        is_added(e, "a")
    })
    .await;
    let epoch = a.epoch();
    eventually(Duration::from_secs(3), "a first keep-alive", || {
        a.stats().keep_alives >= 1
    })
    .await;

    etcd_server.stop().await;
    let sent = a.stats().tokens_sent;
    // Time is the behaviour here: etcd stays away longer than the lease TTL.
    tokio::time::sleep(lease_ttl + Duration::from_secs(2)).await;
    let during = a.stats();
    assert!(
        during.tokens_sent >= sent + 10,
        "broadcasts continue while etcd is down: {during:?}"
    );
    assert!(
        during.keep_alive_failures > 0,
        "the failed keep-alives are counted"
    );
    assert!(
        sub.get("svc", "a").is_some(),
        "subscribers keep the instance while etcd is down"
    );

    etcd_server.restart().await;
    let renewed = during.keep_alives;
    eventually(Duration::from_secs(10), "keep-alives resume", || {
        a.stats().keep_alives >= renewed + 2
    })
    .await;
    // Observed with etcd 3.4: a restarted etcd restores its leases and gives each a full TTL
    // on becoming leader, so the lease outlives an outage longer than its TTL.
    let after = a.stats();
    assert_eq!(
        (after.lease_losses, after.registrations, a.epoch()),
        (0, 1, epoch),
        "the original lease survived the restart: no new registration ({after:?})"
    );
    let mut client = etcd_client(&endpoints).await;
    assert_eq!(
        holder(&mut client, &key(&prefix, "a")).await.map(|h| h.0),
        Some(epoch),
        "the registration is still there"
    );
    let stats = sub.stats();
    assert_eq!(
        (stats.deregistrations, stats.expirations, stats.fenced),
        (0, 0, 0),
        "subscribers kept the instance throughout"
    );
    assert_eq!(sub.get("svc", "a").map(|i| i.epoch()), Some(epoch));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_registers_again_with_a_higher_epoch() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let endpoints = etcd_server.endpoints();
    let prefix = prefix("lost");
    let lease_ttl = Duration::from_secs(3);
    let mut client = etcd_client(&endpoints).await;
    let sub = subscriber(&nats_server.url(), &endpoints, &prefix).await;
    let mut events = sub.events();
    let a = announcer(&nats_server.url(), &endpoints, &prefix, "a", lease_ttl)
        .start()
        .await
        .unwrap();
    wait_event(&mut events, Duration::from_secs(2), "Added(a)", |e| {
        is_added(e, "a")
    })
    .await;
    let old = a.epoch();
    let (_, lease) = holder(&mut client, &key(&prefix, "a")).await.unwrap();

    let revoked = Instant::now();
    client.lease_revoke(lease).await.unwrap();
    // Found at the next keep-alive (every third of the lease); a few periods of room for a
    // loaded machine, still well inside the lease.
    let period = lease_ttl / 3;
    eventually(
        period * 2,
        "registered again at the next keep-alive",
        || a.epoch() > old,
    )
    .await;
    let took = revoked.elapsed();
    let new = a.epoch();
    let stats = a.stats();
    assert_eq!(
        (stats.lease_losses, stats.registrations),
        (1, 2),
        "one loss, one new registration ({stats:?}, after {took:?})"
    );
    let (revision, new_lease) = holder(&mut client, &key(&prefix, "a")).await.unwrap();
    assert_eq!(
        revision, new,
        "the new epoch is the new registration's revision"
    );
    assert_ne!(new_lease, lease, "under a new lease");
    eventually(Duration::from_secs(2), "tokens carry the new epoch", || {
        a.token().epoch == new
    })
    .await;
    eventually(
        Duration::from_secs(2),
        "subscribers follow the new epoch",
        || sub.get("svc", "a").is_some_and(|i| i.epoch() == new),
    )
    .await;
    // etcd deleted the key with the lease and the announcer registered again at once. The
    // deletion and the new registration race (subscribers apply deletions on their next
    // sweep tick, and new-epoch tokens may come first): the instance either stayed listed
    // throughout or left and came back, but it must not stay removed.
    let mut listed = true;
    while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
        if is_added(&e, "a") {
            listed = true;
        } else if matches!(&e, Event::Removed { instance, .. } if instance.id() == "a") {
            listed = false;
        }
    }
    assert!(
        listed,
        "the instance must end listed under its new registration"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_meta_rewrites_the_registration_and_adopts_its_revision() {
    init_tracing();
    let (nats_server, etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let endpoints = etcd_server.endpoints();
    let prefix = prefix("meta");
    let mut client = etcd_client(&endpoints).await;
    let sub = subscriber(&nats_server.url(), &endpoints, &prefix).await;
    let mut events = sub.events();
    let a = announcer(
        &nats_server.url(),
        &endpoints,
        &prefix,
        "a",
        Duration::from_secs(30),
    )
    .meta("version", "1")
    .start()
    .await
    .unwrap();
    wait_event(&mut events, Duration::from_secs(2), "Added(a)", |e| {
        is_added(e, "a")
    })
    .await;
    let (old, lease) = holder(&mut client, &key(&prefix, "a")).await.unwrap();

    a.set_meta([("version", "2")]).await.expect("set_meta");
    let (revision, same_lease) = holder(&mut client, &key(&prefix, "a")).await.unwrap();
    assert!(revision > old, "the key was rewritten");
    assert_eq!(same_lease, lease, "under the same lease");
    assert_eq!(
        a.epoch(),
        revision,
        "the rewrite's revision is the new epoch"
    );
    let value = client.get(key(&prefix, "a"), None).await.unwrap();
    let written = codec::decode(value.kvs()[0].value()).unwrap().to_owned();
    assert_eq!(written.meta.get("version").map(String::as_str), Some("2"));
    eventually(
        Duration::from_secs(2),
        "subscribers see meta and epoch",
        || {
            sub.get("svc", "a")
                .is_some_and(|i| i.epoch() == revision && i.meta_get("version") == Some("2"))
        },
    )
    .await;
    let stats = sub.stats();
    assert_eq!(
        (stats.fenced, stats.deregistrations),
        (0, 0),
        "a rewrite under the same lease is an update, not a takeover"
    );
    assert_eq!(
        stats.identity_mismatch_drops, 0,
        "no token carried the new metadata before the registration did"
    );
    assert!(a.stats().lease_losses == 0 && a.stats().registrations == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_etcd_cluster_gets_the_registration_again() {
    init_tracing();
    let (nats_server, mut etcd_server) = (NatsServer::start().await, EtcdServer::start().await);
    let endpoints = etcd_server.endpoints();
    let prefix = prefix("fresh");
    let mut client = etcd_client(&endpoints).await;
    // Push the old cluster's revision up, so that the new cluster's epochs are smaller.
    for i in 0..30 {
        client.put(format!("/filler/{i}"), "x", None).await.unwrap();
    }
    let sub = subscriber(&nats_server.url(), &endpoints, &prefix).await;
    let mut events = sub.events();
    let a = announcer(
        &nats_server.url(),
        &endpoints,
        &prefix,
        "a",
        Duration::from_secs(3),
    )
    .start()
    .await
    .unwrap();
    wait_event(&mut events, Duration::from_secs(2), "Added(a)", |e| {
        is_added(e, "a")
    })
    .await;
    let old = a.epoch();
    let old_cluster = etcd_server.status().await.unwrap().cluster_id;

    etcd_server.restart_fresh().await;
    assert_ne!(
        etcd_server.status().await.unwrap().cluster_id,
        old_cluster,
        "a new cluster answers"
    );
    eventually(
        Duration::from_secs(10),
        "registered in the new cluster",
        || a.epoch() != old,
    )
    .await;
    let new = a.epoch();
    assert!(
        new < old,
        "the new cluster's revisions are smaller ({new} < {old})"
    );
    let stats = a.stats();
    assert_eq!(
        (stats.lease_losses, stats.registrations),
        (1, 2),
        "the lease unknown to the new cluster is lost once, and registered again ({stats:?})"
    );
    let mut client = etcd_client(&endpoints).await;
    assert_eq!(
        holder(&mut client, &key(&prefix, "a")).await.map(|h| h.0),
        Some(new)
    );
    eventually(
        Duration::from_secs(5),
        "the subscriber notices the new cluster",
        || sub.stats().etcd_cluster_changes >= 1,
    )
    .await;
    eventually(
        TTL + Duration::from_secs(5),
        "the instance is listed with the new, smaller epoch",
        || sub.get("svc", "a").is_some_and(|i| i.epoch() == new),
    )
    .await;
    // And stays listed: tokens of the new epoch keep refreshing it.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(sub.get("svc", "a").map(|i| i.epoch()), Some(new));
    // Late tokens of the old cluster's larger epoch may still arrive after the subscriber
    // forgot the old epochs; they must neither outrank the new registration nor get the
    // instance fenced or expired.
    let removed: Vec<Event> = std::iter::from_fn(|| events.next().now_or_never().flatten())
        .filter(|e| matches!(e, Event::Removed { .. }))
        .collect();
    assert!(
        removed.is_empty(),
        "the instance stays listed through the cluster change: {removed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_cluster_keeps_the_registration_when_its_leader_dies() {
    init_tracing();
    let nats_server = NatsServer::start().await;
    let mut cluster = EtcdCluster::start(3).await;
    let endpoints = cluster.endpoints();
    let prefix = prefix("leader");
    let a = announcer(
        &nats_server.url(),
        &endpoints,
        &prefix,
        "a",
        Duration::from_secs(3),
    )
    .start()
    .await
    .unwrap();
    let epoch = a.epoch();
    eventually(Duration::from_secs(3), "a first keep-alive", || {
        a.stats().keep_alives >= 1
    })
    .await;

    let leader = cluster.wait_for_leader().await;
    cluster.kill(leader);
    let before = a.stats().keep_alives;
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, leader);
    eventually(
        Duration::from_secs(10),
        "keep-alives continue after the election",
        || a.stats().keep_alives >= before + 2,
    )
    .await;
    let stats = a.stats();
    assert_eq!(
        (stats.lease_losses, stats.registrations, a.epoch()),
        (0, 1, epoch),
        "the registration survived the leader's death ({stats:?})"
    );
    let alive: Vec<String> = (0..cluster.len())
        .filter(|&i| i != leader)
        .map(|i| cluster.member(i).endpoint())
        .collect();
    let mut client = etcd_client(&alive).await;
    assert_eq!(
        holder(&mut client, &key(&prefix, "a")).await.map(|h| h.0),
        Some(epoch),
        "the key is still there"
    );
    // Every endpoint, the dead leader's included, as a real configuration would list them.
    let sub = subscriber(&nats_server.url(), &endpoints, &prefix).await;
    assert_eq!(
        sub.get("svc", "a").map(|i| i.epoch()),
        Some(epoch),
        "a new subscriber cold-starts with the registration listed"
    );
    assert!(sub.stats().registrations >= 1, "listed from etcd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_refusing_etcd_fails_start_and_says_which() {
    init_tracing();
    let nats_server = NatsServer::start().await;
    let mut config = etcd(&[format!("http://127.0.0.1:{}", herald_testkit::free_port())]);
    config.connect_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = Announcer::builder("svc", "127.0.0.1:9000")
        .nats(nats(&nats_server.url()))
        .etcd(config)
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::EtcdUnreachable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    let etcd_server = EtcdServer::builder().auth("right-password").start().await;
    let mut config = etcd(&etcd_server.endpoints());
    config.credentials = Some(("root".into(), "wrong-password".into()));
    let err = Announcer::builder("svc", "127.0.0.1:9000")
        .nats(nats(&nats_server.url()))
        .etcd(config)
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::EtcdAuth, "{err}");

    let err = Announcer::builder("svc", "127.0.0.1:9000")
        .nats(nats(&nats_server.url()))
        .etcd(etcd(&etcd_server.endpoints()))
        .lease_ttl(Duration::from_secs(1))
        .validate()
        .unwrap_err();
    assert_eq!(err.field(), Some("lease_ttl"), "{err}");
}
