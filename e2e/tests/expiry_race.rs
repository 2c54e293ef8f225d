//! Refreshes racing with expiry: with short TTLs and constant refreshes, the listed set
//! always matches the unexpired instances, steady instances are never removed, and the event
//! stream replays to exactly what is listed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_e2e::{RawPublisher, init_tracing, prefix, subscriber, token};
use herald_subscriber::{Event, RemovalCause};
use herald_testkit::NatsServer;

const TTL: Duration = Duration::from_millis(1_000);
const REFRESH: Duration = Duration::from_millis(50);
/// Allowance for delivery and scheduling on a loaded machine: a steady instance is removed
/// only if its producer stalls for almost a whole TTL. The exact deadline rule is the
/// store's unit and paused-time tests'.
const MARGIN: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_racing_expiry_keeps_index_and_view_in_step() {
    init_tracing();
    let nats = NatsServer::start().await;
    let prefix = prefix("race");
    let sub = subscriber(&nats.url(), &prefix).await;
    let publisher = RawPublisher::connect(&nats.url(), &prefix).await;
    let mut events = sub.events();

    // Per instance, kept by the publishing side: when its current run of tokens began (after
    // a silence longer than the TTL) and when it last published.
    let last_sent: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Arc::default();
    let steady: Vec<String> = (0..10).map(|i| format!("steady{i}")).collect();
    let flappers: Vec<String> = (0..10).map(|i| format!("flap{i}")).collect();
    let run_for = Duration::from_secs(6);
    let start = Instant::now();

    let producer = {
        let (publisher, last_sent) = (publisher.clone(), last_sent.clone());
        let (steady, flappers) = (steady.clone(), flappers.clone());
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(42);
            // Each flapper is silent until its own resume time, so it repeatedly expires and
            // returns, and its refreshes land close to its deadline.
            let mut silent_until: HashMap<String, Instant> = HashMap::new();
            let mut seq = 1u64;
            while start.elapsed() < run_for {
                seq += 1;
                let now = Instant::now();
                for id in steady.iter().chain(&flappers) {
                    if silent_until.get(id).is_some_and(|t| now < *t) {
                        continue;
                    }
                    if id.starts_with("flap") && rng.u8(..100) < 4 {
                        let pause = TTL.mul_f64(0.8 + rng.f64() * 1.4);
                        silent_until.insert(id.clone(), now + pause);
                        continue;
                    }
                    publisher.token(&token("svc", id, seq, TTL)).await;
                    let sent = Instant::now();
                    let mut last_sent = last_sent.lock().unwrap();
                    let run = last_sent
                        .get(id)
                        .filter(|(_, last)| sent - *last <= TTL)
                        .map_or(sent, |(run, _)| *run);
                    last_sent.insert(id.clone(), (run, sent));
                }
                tokio::time::sleep(REFRESH).await;
            }
        })
    };

    let mut listed_by_events: HashSet<String> = HashSet::new();
    let mut checks = 0;
    while !producer.is_finished() {
        // Drain events: Added and Removed must alternate per instance.
        while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
            match e {
                Event::Added(i) => {
                    assert!(
                        listed_by_events.insert(i.id().to_owned()),
                        "{} added twice",
                        i.id()
                    )
                }
                Event::Removed { instance, cause } => {
                    assert!(
                        !instance.id().starts_with("steady"),
                        "{} was removed ({cause:?}) though refreshed every {REFRESH:?}",
                        instance.id()
                    );
                    assert_eq!(cause, RemovalCause::Expired);
                    assert!(
                        listed_by_events.remove(instance.id()),
                        "{} removed twice",
                        instance.id()
                    );
                }
                Event::Lagged { missed } => panic!("events lagged by {missed}"),
                _ => {}
            }
        }
        let listed: HashSet<String> = sub.instances("svc").ids().into_iter().collect();
        let now = Instant::now();
        let sent = last_sent.lock().unwrap().clone();
        for (id, (run, at)) in &sent {
            let age = now - *at;
            if age + MARGIN < TTL && now - *run > MARGIN {
                assert!(
                    listed.contains(id),
                    "{id} refreshed {age:?} ago is missing from the view"
                );
            }
            if age > TTL + MARGIN {
                assert!(
                    !listed.contains(id),
                    "{id} silent for {age:?} is still listed"
                );
            }
        }
        checks += 1;
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    assert!(checks > 100, "the checker ran only {checks} times");

    // Quiet period: everything expires; events replay to the (empty) view. A snapshot hides
    // an instance as soon as its deadline passes, the sweep removes it (with its event) up
    // to a sweep period later: read events until they account for every removal.
    let quiet = tokio::time::Instant::now() + TTL + Duration::from_secs(5);
    while !listed_by_events.is_empty() {
        let Ok(Some(e)) = tokio::time::timeout_at(quiet, events.next()).await else {
            break;
        };
        match e {
            Event::Added(i) => assert!(listed_by_events.insert(i.id().to_owned())),
            Event::Removed { instance, .. } => assert!(listed_by_events.remove(instance.id())),
            _ => {}
        }
    }
    let listed: HashSet<String> = sub.instances("svc").ids().into_iter().collect();
    assert!(
        listed.is_empty(),
        "still listed after every TTL passed: {listed:?}"
    );
    assert_eq!(
        listed_by_events, listed,
        "replayed events disagree with the view"
    );
    let stats = sub.stats();
    assert!(
        stats.expirations >= 5,
        "flappers expired {} times",
        stats.expirations
    );
}
