//! An announcer's life as its subscribers see it: join, load changes, graceful stop, and
//! crashes (an aborted task, and a process killed with SIGKILL).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_announcer::Announcer;
use herald_e2e::{init_tracing, is_added, is_removed, nats, prefix, subscriber, wait_event};
use herald_subscriber::{Event, RemovalCause, Strategy};
use herald_testkit::{NatsServer, spawn_guarded};

const INTERVAL: Duration = Duration::from_millis(200);
const TTL: Duration = Duration::from_millis(600);
/// Expiry must happen within TTL + this after the last token: the sweep (20 ms) plus what a
/// loaded machine adds. The exact rule is the store's paused-time tests'.
const LATE_BOUND: Duration = Duration::from_secs(2);

fn announcer(url: &str, prefix: &str, id: &str) -> herald_announcer::AnnouncerBuilder {
    Announcer::builder("svc", "127.0.0.1:7000")
        .nats(nats(url))
        .prefix(prefix)
        .instance(id)
        .interval(INTERVAL)
        .ttl(TTL)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_is_seen_at_once_and_listed() {
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("join");
    let sub = subscriber(&server.url(), &prefix).await;
    let mut events = sub.events();
    let _a = announcer(&server.url(), &prefix, "a")
        .meta("version", "1.2")
        .zone("z1")
        .start()
        .await
        .unwrap();
    let e = wait_event(&mut events, Duration::from_secs(5), "Added(a)", |e| {
        is_added(e, "a")
    })
    .await;
    let Event::Added(i) = e else { unreachable!() };
    assert_eq!(
        (i.addr(), i.zone(), i.meta_get("version")),
        ("127.0.0.1:7000", Some("z1"), Some("1.2"))
    );
    assert_eq!(sub.instances("svc").ids(), vec!["a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_removes_at_once() {
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("goodbye");
    let sub = subscriber(&server.url(), &prefix).await;
    let mut events = sub.events();
    let a = announcer(&server.url(), &prefix, "a")
        .ttl(Duration::from_secs(10))
        .start()
        .await
        .unwrap();
    wait_event(&mut events, Duration::from_secs(2), "Added(a)", |e| {
        is_added(e, "a")
    })
    .await;
    let stopping = Instant::now();
    a.shutdown().await.unwrap();
    wait_event(
        &mut events,
        Duration::from_secs(6),
        "Removed(a, goodbye)",
        |e| is_removed(e, "a", RemovalCause::Goodbye),
    )
    .await;
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "a goodbye removes at once, not at the end of the TTL (10 s): took {took:?}"
    );
    assert!(sub.instances("svc").is_empty());
}

/// Waits for the expiry of `id` and checks it against the last token's arrival, observed on
/// a raw subscription of the same subject.
async fn assert_expires_on_time(
    url: &str,
    prefix: &str,
    id: &str,
    sub: &herald_subscriber::Subscriber,
    crash: impl AsyncFnOnce(),
) {
    let observer = async_nats::connect(url).await.unwrap();
    let mut raw = observer
        .subscribe(format!("{prefix}.announce.svc"))
        .await
        .unwrap();
    herald_shared::round_trip::confirm_subscriptions(&observer, Duration::from_secs(5))
        .await
        .unwrap();
    let mut events = sub.events();
    // Let a few tokens flow so the observer has a recent one.
    raw.next().await.unwrap();
    crash().await;
    // Drain what was in flight: the last token is the one before silence.
    let mut last = Instant::now();
    while let Ok(Some(_)) = tokio::time::timeout(INTERVAL * 2, raw.next()).await {
        last = Instant::now();
    }
    let e = wait_event(
        &mut events,
        TTL + LATE_BOUND + Duration::from_secs(1),
        "Removed(expired)",
        |e| is_removed(e, id, RemovalCause::Expired),
    )
    .await;
    let removed = Instant::now();
    let after = removed - last;
    drop(e);
    // The observer may receive the last token later than the subscriber did, by up to
    // what a busy machine delays one of them: an interval of slack still tells an expiry
    // by TTL from an early removal.
    assert!(
        after + INTERVAL >= TTL,
        "removed {after:?} after the last token, before the {TTL:?} TTL"
    );
    assert!(
        after <= TTL + LATE_BOUND,
        "removed {after:?} after the last token, later than TTL + {LATE_BOUND:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_announcer_task_expires_after_its_ttl() {
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("abort");
    let sub = subscriber(&server.url(), &prefix).await;
    let mut events = sub.events();
    let (url, p) = (server.url(), prefix.clone());
    let owner = tokio::spawn(async move {
        let _a = announcer(&url, &p, "a").start().await.unwrap();
        std::future::pending::<()>().await;
    });
    wait_event(&mut events, Duration::from_secs(2), "Added(a)", |e| {
        is_added(e, "a")
    })
    .await;
    assert_expires_on_time(&server.url(), &prefix, "a", &sub, async || owner.abort()).await;
    assert_eq!(sub.stats().goodbyes, 0, "a crash sends no goodbye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_announcer_process_expires_after_its_ttl() {
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("sigkill");
    let sub = subscriber(&server.url(), &prefix).await;
    let mut events = sub.events();
    let mut cmd = Command::new(herald_testkit::bin_exe(
        "announce_child",
        env!("CARGO_BIN_EXE_announce_child"),
    ));
    cmd.args([
        server.url(),
        prefix.clone(),
        "svc".into(),
        "child".into(),
        INTERVAL.as_millis().to_string(),
        TTL.as_millis().to_string(),
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
    assert_eq!(line.trim(), "ready");
    wait_event(&mut events, Duration::from_secs(2), "Added(child)", |e| {
        is_added(e, "child")
    })
    .await;
    assert_expires_on_time(&server.url(), &prefix, "child", &sub, async || {
        child.kill();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_changes_reach_subscribers_within_one_interval() {
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("load");
    let sub = subscriber(&server.url(), &prefix).await;
    let mut events = sub.events();
    let a = announcer(&server.url(), &prefix, "a")
        .interval(Duration::from_secs(1))
        .ttl(Duration::from_secs(3))
        .load(0.1)
        .start()
        .await
        .unwrap();
    wait_event(&mut events, Duration::from_secs(2), "Added(a)", |e| {
        is_added(e, "a")
    })
    .await;
    a.set_load(0.8).unwrap();
    wait_event(
        &mut events,
        Duration::from_secs(5),
        "Updated(a, load 0.8)",
        |e| matches!(e, Event::Updated(i) if i.id() == "a" && i.load() == 0.8),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_of_two_choices_prefers_the_less_loaded() {
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("p2c");
    let sub = subscriber(&server.url(), &prefix).await;
    let _busy = announcer(&server.url(), &prefix, "busy")
        .load(0.9)
        .start()
        .await
        .unwrap();
    let _idle = announcer(&server.url(), &prefix, "idle")
        .load(0.1)
        .start()
        .await
        .unwrap();
    sub.pick_wait("svc", Strategy::Random, Duration::from_secs(2))
        .await
        .unwrap();
    herald_e2e::eventually(Duration::from_secs(2), "both listed", || {
        sub.instances("svc").len() == 2
    })
    .await;
    let mut rng = fastrand::Rng::with_seed(2026);
    let picks = 20_000;
    let idle = (0..picks)
        .filter(|_| {
            sub.pick_with_rng("svc", Strategy::PowerOfTwoChoices, &mut rng)
                .unwrap()
                .id()
                == "idle"
        })
        .count();
    // Two distinct instances are compared: with two, the busier is never picked.
    assert_eq!(idle, picks, "every pick goes to the idle instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscriber_fills_from_its_start_probe() {
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("probe");
    // A long interval: without the probe the subscriber would wait up to 20 s.
    let mut running = Vec::new();
    for id in ["a", "b", "c"] {
        let a = announcer(&server.url(), &prefix, id)
            .interval(Duration::from_secs(20))
            .ttl(Duration::from_secs(60))
            .start()
            .await
            .unwrap();
        running.push(a);
    }
    let sub = subscriber(&server.url(), &prefix).await;
    // Well before the next periodic token (20 s): only the probe can have filled it.
    herald_e2e::eventually(Duration::from_secs(10), "all three listed", || {
        sub.instances("svc").len() == 3
    })
    .await;
    assert!(sub.stats().probes_sent >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_instances_stay_listed_but_are_not_picked() {
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("drain");
    let sub = subscriber(&server.url(), &prefix).await;
    let mut watch = sub.watch("svc");
    let a = announcer(&server.url(), &prefix, "a")
        .start()
        .await
        .unwrap();
    let _b = announcer(&server.url(), &prefix, "b")
        .start()
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(2),
        watch.wait_for(|snap| snap.len() == 2),
    )
    .await
    .expect("watch sees both instances")
    .unwrap();
    a.drain().await.unwrap();
    let snap = tokio::time::timeout(
        Duration::from_secs(2),
        watch.wait_for(|snap| {
            snap.get("a")
                .is_some_and(|i| i.state() == herald_shared::State::Draining)
        }),
    )
    .await
    .expect("watch sees the drain")
    .unwrap()
    .clone();
    assert_eq!(snap.len(), 2, "a draining instance stays listed");
    for strategy in [
        Strategy::RoundRobin,
        Strategy::Random,
        Strategy::PowerOfTwoChoices,
        Strategy::LeastLoad,
    ] {
        for _ in 0..50 {
            assert_eq!(
                sub.pick("svc", strategy).unwrap().id(),
                "b",
                "{strategy:?} picked a draining instance"
            );
        }
    }
    a.shutdown().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(2),
        watch.wait_for(|snap| snap.ids() == ["b"]),
    )
    .await
    .expect("watch sees the goodbye")
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_after_a_drain_is_draining_at_once_and_a_goodbye_after_the_drain() {
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("drainstop");
    let sub = subscriber(&server.url(), &prefix).await;
    let mut events = sub.events();
    let a = announcer(&server.url(), &prefix, "a")
        .start()
        .await
        .unwrap();
    let _b = announcer(&server.url(), &prefix, "b")
        .start()
        .await
        .unwrap();
    for id in ["a", "b"] {
        wait_event(&mut events, Duration::from_secs(5), "Added", |e| {
            is_added(e, id)
        })
        .await;
    }
    let drain = Duration::from_millis(500);
    let asked = Instant::now();
    let stopping = tokio::spawn(a.shutdown_after(drain));
    let e = wait_event(
        &mut events,
        Duration::from_secs(5),
        "a draining",
        |e| matches!(e, Event::Updated(i) | Event::Removed { instance: i, .. } if i.id() == "a"),
    )
    .await;
    assert!(
        matches!(&e, Event::Updated(i) if i.state() == herald_shared::State::Draining),
        "the first news of the stop is the drain, not the removal: {e:?}"
    );
    // While it drains it is listed but never picked.
    assert_eq!(
        sub.instances("svc").len(),
        2,
        "a draining instance stays listed"
    );
    for _ in 0..100 {
        assert_eq!(
            sub.pick("svc", Strategy::PowerOfTwoChoices).unwrap().id(),
            "b"
        );
    }
    wait_event(
        &mut events,
        Duration::from_secs(5),
        "Removed(a, goodbye)",
        |e| is_removed(e, "a", RemovalCause::Goodbye),
    )
    .await;
    assert!(
        asked.elapsed() >= drain,
        "the goodbye waits for the drain: removed after {:?}",
        asked.elapsed()
    );
    stopping.await.unwrap().expect("a clean stop");
}
