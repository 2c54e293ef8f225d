//! A crash seen as a closed connection (DESIGN.md): with a server that publishes disconnect
//! advisories and a subscriber that follows them, a killed announcer process is removed as
//! `disconnected` long before its TTL; a hung one (SIGSTOP, socket open) still waits for its
//! TTL; a graceful stop is still a goodbye; one process that carried many announcers on one
//! connection takes all of them, and only them. Without advisories in the server, the
//! subscriber says so.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herald_e2e::{etcd, init_tracing, is_added, is_removed, nats, prefix, wait_event};
use herald_subscriber::{Event, EventStream, RemovalCause, Subscriber};
use herald_testkit::{ADVISORY_SUBJECT, ChildGuard, EtcdServer, NatsServer, spawn_guarded};

const INTERVAL: Duration = Duration::from_millis(300);
/// Long next to the grace (200 ms), so that "well inside one TTL" means something.
const TTL: Duration = Duration::from_secs(3);

async fn subscriber(nats_url: &str, prefix: &str, etcd_endpoints: Option<&[String]>) -> Subscriber {
    let mut b = Subscriber::builder()
        .nats(nats(nats_url))
        .prefix(prefix)
        .disconnect_advisories(ADVISORY_SUBJECT);
    if let Some(endpoints) = etcd_endpoints {
        b = b.etcd(etcd(endpoints));
    }
    b.start().await.expect("subscriber starts")
}

/// Starts `announce_child` (or `register_child` with etcd) and waits for its `ready` line.
async fn child(args: Vec<String>, registered: bool) -> ChildGuard {
    child_ready(args, registered).await.0
}

/// Starts a `register_child` and returns it with the epoch its `ready` line names.
async fn registered_child(args: Vec<String>) -> (ChildGuard, u64) {
    let (child, line) = child_ready(args, true).await;
    let epoch = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("ready line without an epoch: {line:?}"));
    (child, epoch)
}

/// Starts a child and waits for its `ready` line, which it returns.
async fn child_ready(args: Vec<String>, registered: bool) -> (ChildGuard, String) {
    let bin = if registered {
        herald_testkit::bin_exe("register_child", env!("CARGO_BIN_EXE_register_child"))
    } else {
        herald_testkit::bin_exe("announce_child", env!("CARGO_BIN_EXE_announce_child"))
    };
    let mut cmd = Command::new(bin);
    cmd.args(args).stdout(Stdio::piped());
    let mut child = spawn_guarded(cmd);
    let stdout = child.child_mut().stdout.take().expect("piped stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("reader task")
    .expect("child stdout");
    assert!(line.starts_with("ready"), "child printed {line:?}");
    (child, line)
}

fn announce_args(url: &str, prefix: &str, id: &str, count: usize) -> Vec<String> {
    vec![
        url.to_owned(),
        prefix.to_owned(),
        "svc".into(),
        id.to_owned(),
        INTERVAL.as_millis().to_string(),
        TTL.as_millis().to_string(),
        count.to_string(),
    ]
}

async fn added(events: &mut EventStream, id: &str) {
    wait_event(
        events,
        Duration::from_secs(5),
        &format!("Added({id})"),
        |e| is_added(e, id),
    )
    .await;
}

/// Waits for the removal of `id` and returns it with how long after `since` it came;
/// panics on any other removal.
async fn removal(events: &mut EventStream, id: &str, since: Instant) -> (RemovalCause, Duration) {
    let e = wait_event(
        events,
        TTL + Duration::from_secs(3),
        &format!("Removed({id})"),
        |e| matches!(e, Event::Removed { .. }),
    )
    .await;
    match e {
        Event::Removed { instance, cause } if instance.id() == id => (cause, since.elapsed()),
        other => panic!("expected the removal of {id}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_is_removed_when_its_connection_closes() {
    init_tracing();
    let nats_server = NatsServer::builder().advisories().start().await;
    let etcd_server = EtcdServer::start().await;
    let endpoints = etcd_server.endpoints();
    let prefix = prefix("killed");
    let sub = subscriber(&nats_server.url(), &prefix, Some(&endpoints)).await;
    let mut events = sub.events();
    let mut c = child(
        vec![
            nats_server.url(),
            endpoints.join(","),
            prefix.clone(),
            "svc".into(),
            "k".into(),
            INTERVAL.as_millis().to_string(),
            TTL.as_millis().to_string(),
            "30".into(),
        ],
        true,
    )
    .await;
    added(&mut events, "k").await;
    // A full token went out over the child's connection: the subscriber knows it.
    herald_e2e::eventually(Duration::from_secs(5), "a token after the first", || {
        sub.get("svc", "k").is_some_and(|i| i.is_confirmed())
    })
    .await;

    let killed = Instant::now();
    c.kill();
    let (cause, after) = removal(&mut events, "k", killed).await;
    assert_eq!(cause, RemovalCause::Disconnected);
    assert!(
        after < TTL / 2,
        "a killed process goes when its connection closes, well inside its TTL ({TTL:?}): \
         took {after:?}"
    );
    let stats = sub.stats();
    assert_eq!(
        (stats.disconnections, stats.expirations),
        (1, 0),
        "{stats:?}"
    );
    assert!(stats.connections_closed >= 1, "{stats:?}");
    eprintln!("killed: removed {after:?} after kill -9 (TTL {TTL:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_process_waits_for_its_ttl_and_a_graceful_stop_is_a_goodbye() {
    init_tracing();
    let server = NatsServer::builder().advisories().start().await;
    let prefix = prefix("hung");
    let sub = subscriber(&server.url(), &prefix, None).await;
    let mut events = sub.events();
    let mut hung = child(announce_args(&server.url(), &prefix, "h", 1), false).await;
    added(&mut events, "h").await;
    let mut polite = child(announce_args(&server.url(), &prefix, "p", 1), false).await;
    added(&mut events, "p").await;

    let stopped = Instant::now();
    hung.signal(rustix::process::Signal::STOP.as_raw())
        .expect("SIGSTOP");
    let (cause, after) = removal(&mut events, "h", stopped).await;
    hung.kill();
    assert_eq!(
        cause,
        RemovalCause::Expired,
        "a hung process keeps its connection open: only its TTL finds it"
    );
    assert!(
        after >= TTL - INTERVAL * 2,
        "a hung process is removed by its TTL ({TTL:?}), not sooner: took {after:?}"
    );

    let asked = Instant::now();
    polite
        .signal(rustix::process::Signal::TERM.as_raw())
        .expect("SIGTERM");
    let (cause, _) = removal(&mut events, "p", asked).await;
    assert_eq!(cause, RemovalCause::Goodbye);
    polite.wait_exit(Duration::from_secs(5)).await;
    // Its closed connection comes after the goodbye and removes nothing more.
    herald_e2e::eventually(Duration::from_secs(5), "both advisories read", || {
        sub.stats().connections_closed >= 2
    })
    .await;
    let stats = sub.stats();
    assert_eq!(
        (stats.disconnections, stats.expirations, stats.goodbyes),
        (0, 1, 1),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_of_many_announcers_takes_all_of_them_and_only_them() {
    init_tracing();
    let server = NatsServer::builder().advisories().start().await;
    let prefix = prefix("fleet");
    let sub = subscriber(&server.url(), &prefix, None).await;
    let mut events = sub.events();
    let mut fleet = child(announce_args(&server.url(), &prefix, "f", 20), false).await;
    let _other = child(announce_args(&server.url(), &prefix, "solo", 1), false).await;
    herald_e2e::eventually(Duration::from_secs(5), "21 instances listed", || {
        sub.instances("svc").len() == 21
    })
    .await;

    let killed = Instant::now();
    fleet.kill();
    let mut gone = Vec::new();
    while gone.len() < 20 {
        let e = wait_event(&mut events, TTL, "the fleet's removals", |e| {
            matches!(e, Event::Removed { .. })
        })
        .await;
        if let Event::Removed { instance, cause } = e {
            assert_eq!(cause, RemovalCause::Disconnected, "{}", instance.id());
            gone.push(instance.id().to_owned());
        }
    }
    let after = killed.elapsed();
    gone.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    want.sort();
    assert_eq!(gone, want, "every announcer of the killed connection, once");
    assert!(after < TTL / 2, "all gone in {after:?}");
    assert_eq!(sub.instances("svc").ids(), ["solo"]);
    assert!(
        !std::iter::from_fn(
            || futures::FutureExt::now_or_never(futures::StreamExt::next(&mut events)).flatten()
        )
        .any(|e| is_removed(&e, "solo", RemovalCause::Disconnected)),
        "the other process's instance stays"
    );
    eprintln!("fleet: 20 announcers on one connection removed {after:?} after kill -9");
}

/// The next advisory on `sub` for a connection named `name`, as JSON text.
async fn advisory_for(sub: &mut async_nats::Subscriber, name: &str) -> String {
    let wait = async {
        loop {
            let msg = futures::StreamExt::next(sub)
                .await
                .expect("advisories open");
            let text = String::from_utf8_lossy(&msg.payload).into_owned();
            if text.contains(&format!("\"name\":\"{name}\"")) {
                return text;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("no advisory for {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_with_unread_data_in_its_socket_is_removed_too() {
    init_tracing();
    let server = NatsServer::builder().advisories().start().await;
    let prefix = prefix("unread");
    let sub = subscriber(&server.url(), &prefix, None).await;
    let mut events = sub.events();
    let raw = async_nats::connect(server.url()).await.expect("connect");
    let mut advisories = raw.subscribe(ADVISORY_SUBJECT).await.expect("subscribe");
    raw.flush().await.expect("flush");
    let mut c = child(announce_args(&server.url(), &prefix, "u", 1), false).await;
    added(&mut events, "u").await;

    // Stopped, it reads nothing: probes (which it subscribes to) pile up in its socket.
    c.signal(rustix::process::Signal::STOP.as_raw())
        .expect("SIGSTOP");
    let probe = herald_shared::Subjects::new(&prefix).unwrap().probe("svc");
    let filler = bytes::Bytes::from(vec![b'x'; 16 * 1024]);
    for _ in 0..256 {
        raw.publish(probe.clone(), filler.clone())
            .await
            .expect("publish");
    }
    raw.flush().await.expect("flush");
    let killed = Instant::now();
    c.kill();
    let (cause, after) = removal(&mut events, "u", killed).await;
    let advisory = advisory_for(&mut advisories, "herald svc/u").await;
    assert!(
        advisory.contains("\"reason\":\"Read Error\"")
            || advisory.contains("\"reason\":\"Write Error\"")
            || advisory.contains("\"reason\":\"Client Closed\""),
        "{advisory}"
    );
    assert_eq!(cause, RemovalCause::Disconnected, "advisory: {advisory}");
    assert!(after < TTL / 2, "took {after:?}");
    eprintln!(
        "unread: removed {after:?} after kill -9; the server said {}",
        advisory
            .split("\"reason\":")
            .nth(1)
            .unwrap_or("?")
            .trim_end_matches('}')
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_keeps_its_instances() {
    init_tracing();
    let server = NatsServer::builder().advisories().start().await;
    let prefix = prefix("reconnect");
    let sub = subscriber(&server.url(), &prefix, None).await;
    let mut events = sub.events();
    let client = async_nats::ConnectOptions::new()
        .name("reconnecting")
        .connect(server.url())
        .await
        .expect("connect");
    let announcer = herald_announcer::Announcer::builder("svc", "127.0.0.1:9000")
        .connection(&herald_announcer::Connection::new(client.clone()))
        .prefix(&prefix)
        .instance("r")
        .interval(INTERVAL)
        .ttl(TTL)
        .start()
        .await
        .expect("announcer starts");
    added(&mut events, "r").await;
    let seq_before = sub.get("svc", "r").expect("listed").seq();

    client.force_reconnect().await.expect("reconnect");
    herald_e2e::eventually(
        Duration::from_secs(5),
        "the old connection's advisory",
        || sub.stats().connections_closed >= 1,
    )
    .await;
    herald_e2e::eventually(
        Duration::from_secs(5),
        "a token over the new connection",
        || {
            announcer.stats().reconnects >= 1
                && sub.get("svc", "r").is_some_and(|i| i.seq() > seq_before)
        },
    )
    .await;
    // Past the grace, with room to spare: nothing was removed.
    tokio::time::sleep(herald_subscriber::DEFAULT_DISCONNECT_GRACE * 3).await;
    assert!(sub.get("svc", "r").is_some());
    let stats = sub.stats();
    assert_eq!(
        (stats.disconnections, stats.added),
        (0, 1),
        "a reconnect is not a crash: {stats:?}"
    );
}

fn register_args(nats_url: &str, etcd: &[String], prefix: &str, id: &str) -> Vec<String> {
    vec![
        nats_url.to_owned(),
        etcd.join(","),
        prefix.to_owned(),
        "svc".into(),
        id.to_owned(),
        INTERVAL.as_millis().to_string(),
        TTL.as_millis().to_string(),
        // The whole default lease: a refusal would last this long.
        "30".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_same_id_takes_over_from_its_killed_predecessor() {
    init_tracing();
    let nats_server = NatsServer::builder().advisories().start().await;
    let etcd_server = EtcdServer::start().await;
    let endpoints = etcd_server.endpoints();
    let prefix = prefix("restart");
    let sub = subscriber(&nats_server.url(), &prefix, Some(&endpoints)).await;
    let mut events = sub.events();
    let args = register_args(&nats_server.url(), &endpoints, &prefix, "d0");
    let (mut first, first_epoch) = registered_child(args.clone()).await;
    added(&mut events, "d0").await;

    // As a supervisor does: kill -9, then start again at once with the same id. The dead
    // predecessor's lease holds the key for 30 s more.
    first.kill();
    let restarted = Instant::now();
    let (_second, second_epoch) = registered_child(args).await;
    let took = restarted.elapsed();
    assert!(
        second_epoch > first_epoch,
        "the restart registers on a higher epoch: {first_epoch} then {second_epoch}"
    );
    assert!(
        took >= TTL - INTERVAL && took < TTL + Duration::from_secs(5),
        "registered after its silent predecessor's TTL ({TTL:?}), long before its lease \
         (30 s): took {took:?}"
    );
    herald_e2e::eventually(Duration::from_secs(5), "the new incarnation listed", || {
        sub.get("svc", "d0")
            .is_some_and(|i| i.epoch() == second_epoch)
    })
    .await;
    eprintln!("restart: registered {took:?} after kill -9 (token TTL {TTL:?}, lease 30 s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_id_of_a_live_holder_is_refused_at_once() {
    init_tracing();
    let nats_server = NatsServer::builder().advisories().start().await;
    let etcd_server = EtcdServer::start().await;
    let endpoints = etcd_server.endpoints();
    let prefix = prefix("live-holder");
    let args = register_args(&nats_server.url(), &endpoints, &prefix, "d1");
    let (_first, first_epoch) = registered_child(args).await;

    let asked = Instant::now();
    let err = herald_announcer::Announcer::builder("svc", "127.0.0.1:9001")
        .nats(nats(&nats_server.url()))
        .etcd(etcd(&endpoints))
        .prefix(&prefix)
        .instance("d1")
        .interval(INTERVAL)
        .ttl(TTL)
        .start()
        .await
        .expect_err("a live holder keeps its id");
    let took = asked.elapsed();
    assert_eq!(err.kind(), herald_announcer::ErrorKind::DuplicateInstance);
    assert_eq!(err.holder_epoch(), Some(first_epoch));
    assert!(
        took < TTL,
        "a live holder answers the probe at once: refused in {took:?}, not after its TTL"
    );
}
