//! Announcers on a shared [`Session`]: one lease and one watch stream for all of them, kept
//! alive by the session; each announcer still registers, leaves, is fenced or deregistered on
//! its own; a lost lease re-registers all of them under the new one; closing the session
//! removes every registration at once.

use std::time::{Duration, Instant};

use herald_announcer::{Announcer, AnnouncerHandle, Connection, ErrorKind, Session, Stopped};
use herald_e2e::{
    etcd, etcd_client, eventually, init_tracing, is_removed, nats, prefix, subscriber_with_etcd,
    wait_event,
};
use herald_shared::Subjects;
use herald_subscriber::RemovalCause;
use herald_testkit::{EtcdServer, NatsServer};

const INTERVAL: Duration = Duration::from_millis(200);
const TTL: Duration = Duration::from_millis(1_000);
const SESSION_TTL: Duration = Duration::from_secs(3);
const FLEET: usize = 12;

struct Setup {
    nats: NatsServer,
    etcd: EtcdServer,
    prefix: String,
    session: Session,
    client: Connection,
    announcers: Vec<AnnouncerHandle>,
}

fn id(i: usize) -> String {
    format!("svc-{i}")
}

fn key(prefix: &str, i: usize) -> String {
    Subjects::new(prefix).unwrap().key("svc", &id(i))
}

/// `FLEET` announcers of `svc` on one NATS connection and one session.
async fn setup(test: &str) -> Setup {
    init_tracing();
    let nats = NatsServer::start().await;
    let etcd_server = EtcdServer::start().await;
    let prefix = prefix(test);
    let session = Session::connect(etcd(&etcd_server.endpoints()), SESSION_TTL)
        .await
        .expect("session starts");
    let client = Connection::new(async_nats::connect(nats.url()).await.unwrap());
    let mut announcers = Vec::new();
    for i in 0..FLEET {
        announcers.push(start(&client, &session, &prefix, i).await);
    }
    Setup {
        nats,
        etcd: etcd_server,
        prefix,
        session,
        client,
        announcers,
    }
}

async fn start(client: &Connection, session: &Session, prefix: &str, i: usize) -> AnnouncerHandle {
    Announcer::builder("svc", format!("127.0.0.1:{}", 9000 + i))
        .connection(client)
        .session(session)
        .prefix(prefix)
        .instance(id(i))
        .interval(INTERVAL)
        .ttl(TTL)
        .start()
        .await
        .expect("announcer on the session starts")
}

/// The key's `(mod_revision, lease)`, or `None`.
async fn holder(client: &mut etcd_client::Client, key: &str) -> Option<(u64, i64)> {
    let resp = client.get(key, None).await.expect("etcd get");
    resp.kvs()
        .first()
        .map(|kv| (kv.mod_revision() as u64, kv.lease()))
}

/// etcd's own count of its watchers (`etcd_debugging_mvcc_watcher_total`).
async fn etcd_watchers(server: &EtcdServer) -> u64 {
    let url = server.metrics_url();
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let metrics = herald_testkit::http::get(port, "/metrics")
        .await
        .expect("etcd metrics");
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("etcd reports its watchers") as u64
}

async fn leases(client: &mut etcd_client::Client) -> Vec<i64> {
    let resp = client.leases().await.expect("etcd leases");
    resp.leases().iter().map(|l| l.id()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcers_on_a_session_share_one_lease_one_keep_alive_and_one_watch_stream() {
    let s = setup("session_share").await;
    let mut etcd_c = etcd_client(&s.etcd.endpoints()).await;
    let lease = s.session.lease().expect("the session holds a lease");
    assert_eq!(
        leases(&mut etcd_c).await,
        vec![lease],
        "one lease in etcd for all announcers"
    );
    for i in 0..FLEET {
        let (epoch, key_lease) = holder(&mut etcd_c, &key(&s.prefix, i))
            .await
            .expect("every announcer is registered");
        assert_eq!(
            key_lease, lease,
            "key {i} is attached to the session's lease"
        );
        assert_eq!(
            s.announcers[i].epoch(),
            epoch,
            "tokens carry the key's revision"
        );
    }
    eventually(
        Duration::from_secs(5),
        "one key watch per announcer",
        || s.session.stats().key_watches == FLEET as u64,
    )
    .await;
    assert_eq!(s.session.stats().watch_streams, 1, "on one watch stream");
    assert_eq!(
        s.session.stats().etcd_watchers,
        1,
        "one watch of the prefix for every key"
    );
    assert_eq!(
        etcd_watchers(&s.etcd).await,
        1,
        "etcd holds one watcher for the session, not one per key"
    );

    // The session keeps the lease alive (every third of its TTL), not the announcers.
    let before = s.session.stats().keep_alives;
    eventually(Duration::from_secs(5), "two session keep-alives", || {
        s.session.stats().keep_alives >= before + 2
    })
    .await;
    for a in &s.announcers {
        assert_eq!(
            a.stats().keep_alives,
            0,
            "announcers on a session keep nothing alive"
        );
    }
    // Past the lease's TTL, everything is still registered under the same lease.
    tokio::time::sleep(SESSION_TTL).await;
    assert_eq!(leases(&mut etcd_c).await, vec![lease], "the lease is alive");
    for i in 0..FLEET {
        assert_eq!(
            holder(&mut etcd_c, &key(&s.prefix, i)).await.map(|h| h.1),
            Some(lease),
            "key {i} outlived the lease TTL"
        );
    }
    assert_eq!(s.session.stats().lease_losses, 0);
    drop(s.nats);
}

/// Registrations are records in the session's registry and tokens are turns on the
/// connection's scheduler: more announcers on a `Connection` and a `Session` add no task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcers_on_a_connection_and_a_session_add_no_task() {
    let s = setup("no_task").await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();
    let mut more = Vec::new();
    for i in FLEET..FLEET + 50 {
        more.push(start(&s.client, &s.session, &s.prefix, i).await);
    }
    eventually(
        Duration::from_secs(5),
        "every new key followed through the session",
        || s.session.stats().key_watches == FLEET as u64 + 50,
    )
    .await;
    let after = tasks();
    assert!(
        after <= before + 2,
        "50 more announcers took {} more tasks ({before} -> {after})",
        after.saturating_sub(before)
    );
    for a in more {
        a.shutdown().await.expect("graceful shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_removes_only_its_own_key_and_a_dropped_one_goes_after_its_ttl() {
    let mut s = setup("session_leave").await;
    let mut etcd_c = etcd_client(&s.etcd.endpoints()).await;
    let sub = subscriber_with_etcd(&s.nats.url(), &s.etcd.endpoints(), &s.prefix).await;
    let mut events = sub.events();
    eventually(Duration::from_secs(5), "the fleet listed", || {
        sub.instances("svc").len() == FLEET
    })
    .await;
    let lease = s.session.lease().unwrap();

    let leaving = s.announcers.remove(0);
    leaving
        .shutdown()
        .await
        .expect("graceful stop on a session");
    wait_event(&mut events, Duration::from_secs(3), "goodbye", |e| {
        is_removed(e, &id(0), RemovalCause::Goodbye)
    })
    .await;
    assert_eq!(
        holder(&mut etcd_c, &key(&s.prefix, 0)).await,
        None,
        "its key is deleted"
    );
    assert_eq!(
        leases(&mut etcd_c).await,
        vec![lease],
        "the shared lease lives on"
    );

    let crashed = s.announcers.remove(0);
    let dropped_at = Instant::now();
    drop(crashed);
    wait_event(
        &mut events,
        Duration::from_secs(3),
        "expiry of the dropped one",
        |e| is_removed(e, &id(1), RemovalCause::Expired),
    )
    .await;
    let k = key(&s.prefix, 1);
    let mut gone = None;
    while gone.is_none() && dropped_at.elapsed() < TTL * 2 + Duration::from_secs(3) {
        if holder(&mut etcd_c, &k).await.is_none() {
            gone = Some(dropped_at.elapsed());
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let gone = gone.expect("the dropped announcer's key is deleted");
    assert!(
        gone >= TTL * 2,
        "the key outlives two token TTLs, so subscribers see a crash first ({gone:?})"
    );
    for i in 2..FLEET {
        assert!(
            holder(&mut etcd_c, &key(&s.prefix, i)).await.is_some(),
            "key {i} stays"
        );
    }
    assert_eq!(sub.instances("svc").len(), FLEET - 2);
    assert_eq!(leases(&mut etcd_c).await, vec![lease]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_lease_re_registers_every_announcer_under_the_new_one() {
    let s = setup("session_lost").await;
    let mut etcd_c = etcd_client(&s.etcd.endpoints()).await;
    let sub = subscriber_with_etcd(&s.nats.url(), &s.etcd.endpoints(), &s.prefix).await;
    eventually(Duration::from_secs(5), "the fleet listed", || {
        sub.instances("svc").len() == FLEET
    })
    .await;
    let old_lease = s.session.lease().unwrap();
    let old_epochs: Vec<u64> = s.announcers.iter().map(|a| a.epoch()).collect();

    etcd_c.lease_revoke(old_lease).await.expect("revoke");
    eventually(Duration::from_secs(5), "a new session lease", || {
        s.session.lease().is_some_and(|l| l != old_lease)
    })
    .await;
    let new_lease = s.session.lease().unwrap();
    eventually(
        Duration::from_secs(5),
        "every announcer registered again",
        || {
            s.announcers
                .iter()
                .zip(&old_epochs)
                .all(|(a, old)| a.epoch() > *old)
        },
    )
    .await;
    assert_eq!(s.session.stats().lease_losses, 1, "one loss, one new grant");
    assert_eq!(
        leases(&mut etcd_c).await,
        vec![new_lease],
        "still one lease"
    );
    for (i, a) in s.announcers.iter().enumerate() {
        let (epoch, lease) = holder(&mut etcd_c, &key(&s.prefix, i)).await.unwrap();
        assert_eq!(lease, new_lease, "key {i} is on the new lease");
        assert_eq!(a.epoch(), epoch);
        assert!(a.stats().lease_losses >= 1);
    }
    // Subscribers end with every instance listed on its new epoch.
    eventually(
        Duration::from_secs(5),
        "the fleet listed on the new epochs",
        || {
            let list = sub.instances("svc");
            list.len() == FLEET
                && s.announcers.iter().all(|a| {
                    list.get(a.instance())
                        .is_some_and(|i| i.epoch() == a.epoch())
                })
        },
    )
    .await;
    assert!(
        s.announcers
            .iter()
            .all(|a| a.stopped().now_or_never().is_none()),
        "nobody stopped"
    );
}

trait NowOrNever: Future + Sized {
    fn now_or_never(self) -> Option<Self::Output> {
        futures::FutureExt::now_or_never(self)
    }
}
impl<F: Future> NowOrNever for F {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_and_deregistration_end_one_announcer_and_spare_the_shared_lease() {
    let s = setup("session_fence").await;
    let mut etcd_c = etcd_client(&s.etcd.endpoints()).await;
    let lease = s.session.lease().unwrap();
    eventually(Duration::from_secs(5), "key watches open", || {
        s.session.stats().key_watches == FLEET as u64
    })
    .await;

    // Another incarnation of svc-0 takes the id over, with a lease of its own.
    let usurper = Announcer::builder("svc", "127.0.0.1:9999")
        .nats(nats(&s.nats.url()))
        .etcd(etcd(&s.etcd.endpoints()))
        .prefix(&s.prefix)
        .instance(id(0))
        .interval(INTERVAL)
        .ttl(TTL)
        .takeover(true)
        .start()
        .await
        .expect("takeover");
    let reason = tokio::time::timeout(Duration::from_secs(3), s.announcers[0].stopped())
        .await
        .expect("the fenced announcer stops");
    assert_eq!(
        reason,
        Stopped::Fenced {
            by_epoch: usurper.epoch()
        }
    );

    // An operator deletes svc-1's registration.
    etcd_c.delete(key(&s.prefix, 1), None).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(3), s.announcers[1].stopped())
        .await
        .expect("the deregistered announcer stops");
    assert_eq!(reason, Stopped::Deregistered);

    let alive = leases(&mut etcd_c).await;
    assert!(
        alive.contains(&lease),
        "the session's lease was not revoked: {alive:?}"
    );
    assert_eq!(
        holder(&mut etcd_c, &key(&s.prefix, 0)).await.map(|h| h.0),
        Some(usurper.epoch()),
        "the usurper's key is untouched"
    );
    for i in 2..FLEET {
        assert_eq!(
            holder(&mut etcd_c, &key(&s.prefix, i)).await.map(|h| h.1),
            Some(lease),
            "key {i} stays on the session"
        );
        assert!(s.announcers[i].stopped().now_or_never().is_none());
    }
    usurper.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_watch_stream_resumes_after_an_etcd_restart() {
    let mut s = setup("session_restart").await;
    eventually(Duration::from_secs(5), "key watches open", || {
        s.session.stats().key_watches == FLEET as u64
    })
    .await;
    s.etcd.restart().await;
    eventually(Duration::from_secs(10), "the watch stream reopened", || {
        let st = s.session.stats();
        st.watch_streams >= 2 && st.key_watches == FLEET as u64
    })
    .await;
    // The resumed watches still see what happens to each key.
    let mut etcd_c = etcd_client(&s.etcd.endpoints()).await;
    etcd_c.delete(key(&s.prefix, 3), None).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(3), s.announcers[3].stopped())
        .await
        .expect("the deregistration is seen after the restart");
    assert_eq!(reason, Stopped::Deregistered);
    assert!(s.announcers[4].stopped().now_or_never().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_session_removes_every_registration_and_stops_its_announcers() {
    let s = setup("session_close").await;
    let mut etcd_c = etcd_client(&s.etcd.endpoints()).await;
    let sub = subscriber_with_etcd(&s.nats.url(), &s.etcd.endpoints(), &s.prefix).await;
    eventually(Duration::from_secs(5), "the fleet listed", || {
        sub.instances("svc").len() == FLEET
    })
    .await;
    s.session.close().await.expect("session closed");
    assert!(leases(&mut etcd_c).await.is_empty(), "the lease is revoked");
    for (i, a) in s.announcers.iter().enumerate() {
        let reason = tokio::time::timeout(Duration::from_secs(3), a.stopped())
            .await
            .expect("every announcer stops");
        assert_eq!(reason, Stopped::SessionClosed, "announcer {i}");
        assert_eq!(holder(&mut etcd_c, &key(&s.prefix, i)).await, None);
    }
    eventually(Duration::from_secs(3), "every instance removed", || {
        sub.instances("svc").is_empty()
    })
    .await;
    let late = Announcer::builder("svc", "127.0.0.1:9100")
        .connection(&s.client)
        .session(&s.session)
        .prefix(&s.prefix)
        .start()
        .await
        .expect_err("no registration on a closed session");
    assert_eq!(late.kind(), ErrorKind::Stopped);
    assert!(s.session.close().await.is_err(), "closing twice says so");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_and_its_announcers_check_their_settings() {
    init_tracing();
    let err = Session::connect(
        etcd(&["http://127.0.0.1:1".to_owned()]),
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(err.field(), Some("lease_ttl"));

    let etcd_server = EtcdServer::start().await;
    let nats_server = NatsServer::start().await;
    let session = Session::connect(etcd(&etcd_server.endpoints()), SESSION_TTL)
        .await
        .unwrap();
    let err = Announcer::builder("svc", "127.0.0.1:9000")
        .nats(nats(&nats_server.url()))
        .session(&session)
        .lease_ttl(Duration::from_secs(10))
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(err.field(), Some("lease_ttl"), "{err}");

    // A duplicate on the same session is refused like any other.
    let client = Connection::new(async_nats::connect(nats_server.url()).await.unwrap());
    let first = start(&client, &session, "dup", 0).await;
    let err = Announcer::builder("svc", "127.0.0.1:9001")
        .connection(&client)
        .session(&session)
        .prefix("dup")
        .instance(id(0))
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateInstance);
    let sub = subscriber_with_etcd(&nats_server.url(), &etcd_server.endpoints(), "dup").await;
    eventually(Duration::from_secs(3), "the first one listed", || {
        sub.instances("svc")
            .get(&id(0))
            .is_some_and(|i| i.addr() == "127.0.0.1:9000")
    })
    .await;
    let mut etcd_c = etcd_client(&etcd_server.endpoints()).await;
    assert_eq!(
        holder(&mut etcd_c, &key("dup", 0)).await.map(|h| h.0),
        Some(first.epoch()),
        "the refused one wrote nothing"
    );
    first.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcers_starting_and_stopping_together_share_transactions() {
    init_tracing();
    const MANY: usize = 200;
    let nats_server = NatsServer::start().await;
    let etcd_server = EtcdServer::start().await;
    let prefix = prefix("batched");
    let session = Session::connect(etcd(&etcd_server.endpoints()), SESSION_TTL)
        .await
        .expect("session starts");
    let client = Connection::new(async_nats::connect(nats_server.url()).await.unwrap());
    let mut etcd_c = etcd_client(&etcd_server.endpoints()).await;

    // Every start at once.
    let starts = (0..MANY).map(|i| start(&client, &session, &prefix, i));
    let announcers = futures::future::join_all(starts).await;
    let lease = session.lease().unwrap();
    for (i, a) in announcers.iter().enumerate() {
        assert_eq!(
            holder(&mut etcd_c, &key(&prefix, i)).await,
            Some((a.epoch(), lease)),
            "key {i}: written under the session's lease, its revision the epoch"
        );
    }
    let started = session.stats();
    assert_eq!(started.batched_calls, MANY as u64);
    assert!(
        started.batches < MANY as u64 / 4,
        "{} claims went in {} transactions",
        started.batched_calls,
        started.batches
    );

    // An id another announcer on the session has is refused without a claim.
    let err = Announcer::builder("svc", "127.0.0.1:8999")
        .connection(&client)
        .session(&session)
        .prefix(&prefix)
        .instance(id(7))
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateInstance, "{err}");
    assert_eq!(
        session.stats().batched_calls,
        MANY as u64,
        "no claim was sent"
    );

    // Every stop at once: the deletions share transactions too.
    let stops = announcers.into_iter().map(|a| a.shutdown());
    for stopped in futures::future::join_all(stops).await {
        stopped.expect("shutdown");
    }
    let stopped = session.stats();
    assert_eq!(stopped.batched_calls - started.batched_calls, MANY as u64);
    assert!(
        stopped.batches - started.batches < MANY as u64 / 4,
        "{} deletions went in {} transactions",
        stopped.batched_calls - started.batched_calls,
        stopped.batches - started.batches
    );
    let left = etcd_c
        .get(
            format!("/{prefix}/"),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(left.count(), 0, "every key deleted");
    assert_eq!(session.stats().etcd_watchers, 0, "no watcher left on etcd");
    session.close().await.unwrap();
}
