//! Overload: tokens arriving faster than the subscriber applies them are dropped by
//! async-nats; the subscriber reports it and is exact again within one interval. A consumer
//! of `events()` that stalls never blocks ingest.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_e2e::{RawPublisher, eventually, init_tracing, nats, prefix, token};
use herald_subscriber::{Event, Subscriber};
use herald_testkit::NatsServer;

const INTERVAL: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_buffer_is_reported_and_repaired_within_one_interval() {
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("slow");
    let mut config = nats(&server.url());
    config.subscription_capacity = 1024;
    let sub = Subscriber::builder()
        .nats(config)
        .prefix(&prefix)
        .ingest_delay_for_tests(Duration::from_micros(50))
        .start()
        .await
        .unwrap();
    let publisher = RawPublisher::connect(&server.url(), &prefix).await;
    let ids: Vec<String> = (0..20).map(|i| format!("i{i}")).collect();
    let mut seq: HashMap<String, u64> = ids.iter().map(|id| (id.clone(), 1)).collect();
    let mut truth: HashMap<String, f32> = HashMap::new();

    async fn round(
        p: &RawPublisher,
        ids: &[String],
        seq: &mut HashMap<String, u64>,
        truth: &mut HashMap<String, f32>,
        load: impl Fn(usize) -> f32,
    ) {
        for (n, id) in ids.iter().enumerate() {
            let s = seq.get_mut(id).unwrap();
            *s += 1;
            let mut t = token("svc", id, *s, INTERVAL * 3);
            t.load = load(n);
            truth.insert(id.clone(), t.load);
            p.token(&t).await;
        }
        p.flush().await;
    }

    round(&publisher, &ids, &mut seq, &mut truth, |n| n as f32).await;
    eventually(Duration::from_secs(5), "all 20 listed", || {
        sub.instances("svc").len() == 20
    })
    .await;

    // 100k tokens as fast as the publisher can send them.
    for k in 0..5_000 {
        round(&publisher, &ids, &mut seq, &mut truth, |n| {
            (k * 20 + n) as f32
        })
        .await;
    }
    let burst_end = Instant::now();
    eventually(Duration::from_secs(5), "the slow-consumer report", || {
        sub.stats().slow_consumer_events > 0
    })
    .await;

    // The announcers' next periodic round (one interval later) makes the view exact again.
    tokio::time::sleep(INTERVAL.saturating_sub(burst_end.elapsed())).await;
    round(&publisher, &ids, &mut seq, &mut truth, |n| {
        1000.0 + n as f32
    })
    .await;
    // Exact again from that round on: its tokens are newer than anything lost.
    eventually(
        Duration::from_secs(5),
        "the view matching the last loads sent",
        || {
            ids.iter()
                .all(|id| sub.get("svc", id).is_some_and(|i| i.load() == truth[id]))
        },
    )
    .await;
    let stats = sub.stats();
    assert!(
        stats.tokens_lost > 0,
        "drops must show up as lost tokens: {stats:?}"
    );
    assert!(
        stats.received < 100_000,
        "the burst must really have overflowed: {stats:?}"
    );
    assert_eq!(stats.expirations, 0, "overload must not expire anyone");
    assert_eq!(sub.instances("svc").len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_event_reader_never_blocks_ingest() {
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("lag");
    let sub = Subscriber::builder()
        .nats(nats(&server.url()))
        .prefix(&prefix)
        .event_capacity(16)
        .start()
        .await
        .unwrap();
    let publisher = RawPublisher::connect(&server.url(), &prefix).await;
    let mut stalled = sub.events();
    for s in 1..=2_000u64 {
        let mut t = token("svc", "a", s, Duration::from_secs(30));
        t.load = s as f32;
        publisher.token(&t).await;
    }
    eventually(
        Duration::from_secs(5),
        "ingest reaching the last token",
        || sub.get("svc", "a").is_some_and(|i| i.load() == 2_000.0),
    )
    .await;
    match stalled.next().await {
        Some(Event::Lagged { missed }) => assert!(missed > 1_000, "missed {missed}"),
        other => panic!("a reader that stalled must be told it lagged, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_thin_out_while_the_subscription_keeps_overflowing() {
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("flood_probes");
    let mut config = nats(&server.url());
    config.subscription_capacity = 256;
    let sub = Subscriber::builder()
        .nats(config)
        .prefix(&prefix)
        .ingest_delay_for_tests(Duration::from_micros(200))
        .start()
        .await
        .unwrap();
    // Every probe the subscriber sends, seen on the wire.
    let watcher = async_nats::connect(server.url()).await.unwrap();
    let mut probes = watcher
        .subscribe(herald_shared::Subjects::new(&prefix).unwrap().probe_all())
        .await
        .unwrap();
    herald_shared::round_trip::confirm_subscriptions(&watcher, Duration::from_secs(5))
        .await
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counting = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while probes.next().await.is_some() {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let publisher = RawPublisher::connect(&server.url(), &prefix).await;

    // Four seconds of tokens well beyond what the subscriber takes in (about 5k/s here).
    let flood = Duration::from_secs(4);
    let started = Instant::now();
    let mut seq = 1u64;
    while started.elapsed() < flood {
        for i in 0..200 {
            publisher
                .token(&token(
                    "svc",
                    &format!("i{i}"),
                    seq,
                    Duration::from_secs(30),
                ))
                .await;
        }
        seq += 1;
        publisher.flush().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let overflows = sub.stats().slow_consumer_events;
    // Every probe sent since the watcher subscribed reaches it (the one of `start()` came
    // before): wait until what was seen matches the count.
    eventually(
        Duration::from_secs(5),
        "every probe sent seen on the wire",
        || seen.load(std::sync::atomic::Ordering::Relaxed) + 1 == sub.stats().probes_sent,
    )
    .await;
    counting.abort();
    let sent = seen.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{overflows} slow-consumer reports, {sent} probes during a {flood:?} flood");
    assert!(
        overflows >= 3,
        "the flood must keep overflowing the subscription: {overflows} reports"
    );
    // Paced at a fixed 100 ms, a probe would follow the reports every 100 ms (up to 40 in
    // 4 s); doubling gaps (100, 200, 400, 800, 1600 ms) allow 5 after the one of `start()`,
    // and a few more while the backlog drains. The exact pacing is `probe_pacing`'s tests'.
    assert!(
        sent <= 8,
        "probes must thin out under a sustained overflow: {sent} probes for {overflows} reports"
    );
}
