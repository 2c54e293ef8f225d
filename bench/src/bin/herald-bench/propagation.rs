//! Propagation latency against one local `nats-server`, every timestamp taken with
//! `Instant` in this process:
//!
//! - raw NATS: publish on one connection, receive on another (one message in flight);
//! - Herald join: publish the token of a new instance, until the subscriber's `Added`;
//! - Herald goodbye: publish its `leaving` token, until `Removed { cause: Goodbye }`;
//!   both with an empty cache and with 10,000 instances cached;
//! - a real announcer: `Announcer::builder(..).start()` until `Added`, and `shutdown()`
//!   until `Removed`.
//!
//! Raw samples are taken in the same loop as Herald's (one raw message, one join, one
//! goodbye, in turn), so that both see the same machine state.
//!
//! `cargo run --release -p herald-bench -- propagation`

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use herald_announcer::Announcer;
use herald_bench::fleet::{self, Fleet, Layout};
use herald_bench::stats::{Summary, ms};
use herald_shared::{EtcdConfig, NatsConfig, Subjects, codec, round_trip};
use herald_subscriber::{Event, EventStream, RemovalCause, Subscriber};
use herald_testkit::{EtcdServer, NatsServer};

/// Measured samples per figure.
const SAMPLES: usize = 5_000;
/// Samples run first and thrown away (connections, caches and allocators warm up).
const WARMUP: usize = 300;
/// Announcer starts measured (each opens its own NATS connection).
const ANNOUNCER_SAMPLES: usize = 300;
/// Samples of each reaction of a running announcer and subscriber.
const REACTION_SAMPLES: usize = 200;
/// nats-server restarts measured.
const RESTART_SAMPLES: usize = 20;
/// Longest wait for one event before the benchmark gives up.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn run() {
    crate::runtime().block_on(measure());
}

async fn measure() {
    let nats = NatsServer::start().await;
    let config = NatsConfig::new([nats.url()]);
    println!(
        "propagation latency: nats-server on loopback, {SAMPLES} samples each, one in flight \
         ({WARMUP} warm-up samples dropped); raw samples interleaved with Herald's\n"
    );
    let mut raw = RawPing::new(&config).await;

    let mut ratios = Vec::new();
    for background in [
        None,
        Some(Layout {
            services: 100,
            per_service: 100,
        }),
        Some(Layout {
            services: 10,
            per_service: 1_000,
        }),
    ] {
        let label = match background {
            None => "empty cache".to_owned(),
            Some(l) => format!("{} cached, service of {}", l.len(), l.per_service),
        };
        let (ping, join, bye) = join_and_goodbye(&config, &mut raw, background).await;
        println!("{label}:");
        println!("  {:<28} {ping}", "raw NATS publish -> receive");
        println!("  {:<28} {join}", "herald join -> Added");
        println!("  {:<28} {bye}", "herald goodbye -> Removed");
        ratios.push((label, ping, join, bye));
    }

    let etcd = EtcdServer::start().await;
    for etcd in [None, Some(EtcdConfig::new(etcd.endpoints()))] {
        let label = if etcd.is_some() {
            "with etcd (registry mode: the token must match its registration)"
        } else {
            "NATS only"
        };
        let ann = announcer_latency(&config, etcd).await;
        println!(
            "real announcer, {label} ({ANNOUNCER_SAMPLES} samples, subscriber of its service only):"
        );
        println!("  {:<28} {}", "NatsConfig::connect()", ann.connect);
        println!("  {:<28} {}", "start() -> Added", ann.start_to_added);
        println!(
            "  {:<28} {}",
            "start() -> confirmed", ann.start_to_confirmed
        );
        println!("  {:<28} {}", "start() returns", ann.start_returned);
        println!(
            "  {:<28} {}",
            "returned -> confirmed", ann.returned_to_confirmed
        );
        println!(
            "  {:<28} {}",
            "shutdown() -> Removed", ann.shutdown_to_removed
        );
        println!(
            "  first token ahead of its registration (held): {} of {}",
            ann.held, ANNOUNCER_SAMPLES
        );
    }

    let (deleted, watched) = deregistration(&config, EtcdConfig::new(etcd.endpoints())).await;
    println!("an operator's delete of a registration ({REACTION_SAMPLES} samples):");
    println!("  {:<28} {deleted}", "etcd delete -> Removed");
    println!("  {:<28} {watched}", "etcd delete -> etcd watch");

    let (goodbyes, causes) = graceful_stops(&config, EtcdConfig::new(etcd.endpoints())).await;
    println!(
        "graceful stops with etcd, beside a CPU burner: {goodbyes} of {GRACEFUL_STOPS} removed as goodbye (all causes: {causes:?})"
    );

    let restart = nats_restart().await;
    println!(
        "a nats-server restart, {RESTART_SAMPLES} samples, 5 announcers (interval 30 s) and a \
         subscriber on it:"
    );
    println!("  {:<28} {restart}", "server back -> all fresh");

    let reactions = reactions(&config).await;
    println!(
        "a running announcer and subscriber ({REACTION_SAMPLES} samples each, interval 30 s: \
         no periodic token in between):"
    );
    println!("  {:<28} {}", "probe -> answer token", reactions.probe);
    println!("  {:<28} {}", "set_load() -> Updated", reactions.load);
    println!("  {:<28} {}", "set_meta() -> Updated", reactions.meta);
    println!(
        "  {:<28} {}",
        "token -> pick_wait() returns", reactions.pick_wait
    );

    println!("\nHerald p99 / raw p99 of the same run (target <= 2.0):");
    for (label, ping, join, bye) in &ratios {
        for (what, s) in [("join", join), ("goodbye", bye)] {
            let ratio = s.p99.as_secs_f64() / ping.p99.as_secs_f64();
            println!(
                "  {what:<8} {label:<32} {} / {} ms = {ratio:.2}  {}",
                ms(s.p99),
                ms(ping.p99),
                if ratio <= 2.0 { "met" } else { "MISSED" }
            );
        }
    }
}

/// Raw NATS: one publishing and one receiving connection, one message in flight.
struct RawPing {
    publisher: async_nats::Client,
    sub: async_nats::Subscriber,
    payload: Bytes,
    _receiver: async_nats::Client,
}

impl RawPing {
    async fn new(config: &NatsConfig) -> RawPing {
        let (publisher, _) = config.connect().await.expect("publisher connects");
        let (receiver, _) = config.connect().await.expect("receiver connects");
        let sub = receiver
            .subscribe("bench.latency")
            .await
            .expect("subscribe");
        round_trip::confirm_subscriptions(&receiver, Duration::from_secs(5))
            .await
            .expect("subscription active");
        // A payload the size of a token, so that both paths move the same bytes.
        let payload = Bytes::from(codec::encode(&fleet::typical_token(0, 0, 3_000)).unwrap());
        RawPing {
            publisher,
            sub,
            payload,
            _receiver: receiver,
        }
    }

    async fn once(&mut self) -> Duration {
        let t0 = Instant::now();
        self.publisher
            .publish("bench.latency", self.payload.clone())
            .await
            .expect("publish");
        tokio::time::timeout(EVENT_TIMEOUT, self.sub.next())
            .await
            .expect("message arrives in time")
            .expect("subscription open");
        t0.elapsed()
    }
}

/// Waits for the first event that `wanted` accepts.
async fn wait_for(events: &mut EventStream, mut wanted: impl FnMut(&Event) -> bool) {
    let found = async {
        while let Some(e) = events.next().await {
            if let Event::Lagged { missed } = e {
                panic!("event stream lagged by {missed}: figures would be wrong");
            }
            if wanted(&e) {
                return;
            }
        }
        panic!("event stream ended");
    };
    tokio::time::timeout(EVENT_TIMEOUT, found)
        .await
        .expect("event arrives in time");
}

/// Join and goodbye latencies of new instances of `service-00`, with `background`
/// instances cached first (the joined service holds `per_service` of them).
async fn join_and_goodbye(
    config: &NatsConfig,
    raw: &mut RawPing,
    background: Option<Layout>,
) -> (Summary, Summary, Summary) {
    let subjects = Subjects::default();
    let (publisher, _) = config.connect().await.expect("publisher connects");
    let subscriber = Subscriber::builder()
        .nats(config.clone())
        .start()
        .await
        .expect("subscriber starts");
    if let Some(layout) = background {
        // The longest TTL allowed: the background stays listed without refreshes.
        let mut fleet = Fleet::new(layout, 3_600_000, &subjects);
        for _ in 0..fleet.len() {
            let (subject, payload) = fleet.next_token(0.25, herald_shared::unix_millis());
            publisher.publish(subject, payload).await.expect("publish");
        }
        publisher.flush().await.expect("flush");
        let deadline = Instant::now() + Duration::from_secs(10);
        while subscriber.stats().instances < layout.len() as u64 {
            assert!(Instant::now() < deadline, "background instances listed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut events = subscriber.events();
    let subject = subjects.announce(&fleet::service_name(0));
    let (mut pings, mut joins, mut byes) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..WARMUP + SAMPLES {
        let ping = raw.once().await;
        let token = fleet::typical_token(0, 10_000 + k, 3_000);
        let join = Bytes::from(codec::encode(&token).unwrap());
        let bye = Bytes::from(codec::encode(&fleet::goodbye(&token)).unwrap());
        let id = token.instance.as_str();

        let t0 = Instant::now();
        publisher
            .publish(subject.clone(), join)
            .await
            .expect("publish");
        wait_for(
            &mut events,
            |e| matches!(e, Event::Added(i) if i.id() == id),
        )
        .await;
        let joined = t0.elapsed();

        let t1 = Instant::now();
        publisher
            .publish(subject.clone(), bye)
            .await
            .expect("publish");
        wait_for(&mut events, |e| {
            matches!(e, Event::Removed { instance, cause: RemovalCause::Goodbye } if instance.id() == id)
        })
        .await;
        let gone = t1.elapsed();
        if k >= WARMUP {
            pings.push(ping);
            joins.push(joined);
            byes.push(gone);
        }
    }
    let stats = subscriber.stats();
    assert_eq!(stats.slow_consumer_events, 0, "no token may be dropped");
    subscriber.shutdown().await;
    (
        Summary::of(&mut pings),
        Summary::of(&mut joins),
        Summary::of(&mut byes),
    )
}

struct AnnouncerLatency {
    connect: Summary,
    start_to_added: Summary,
    start_to_confirmed: Summary,
    /// From `start()` returning (its first token was just published) until the subscriber
    /// lists the instance as confirmed: the token's own way to the view.
    returned_to_confirmed: Summary,
    held: u64,
    start_returned: Summary,
    shutdown_to_removed: Summary,
}

async fn announcer_latency(config: &NatsConfig, etcd: Option<EtcdConfig>) -> AnnouncerLatency {
    let mut builder = Subscriber::builder()
        .nats(config.clone())
        .service("announced");
    if let Some(etcd) = &etcd {
        builder = builder.etcd(etcd.clone());
    }
    let subscriber = builder.start().await.expect("subscriber starts");
    let mut events = subscriber.events();
    let (mut added, mut returned, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut confirmed, mut token_to_view, mut held) = (Vec::new(), Vec::new(), 0);
    let mut connects = Vec::new();
    for k in 0..ANNOUNCER_SAMPLES + ANNOUNCER_SAMPLES / 10 {
        // What a fresh NATS connection alone costs, for comparison with start().
        let t = Instant::now();
        let (client, _) = config.connect().await.expect("connects");
        let connected = t.elapsed();
        drop(client);

        let id = format!("announced-{k:05}");
        let t0 = Instant::now();
        let held_before = subscriber.stats().held;
        let start = async {
            let mut builder = Announcer::builder("announced", "10.9.9.9:8080")
                .nats(config.clone())
                .instance(id.clone())
                .zone("eu-1a")
                .meta("version", "1.2.3");
            if let Some(etcd) = &etcd {
                builder = builder.etcd(etcd.clone());
            }
            let handle = builder.start().await.expect("announcer starts");
            (handle, t0.elapsed())
        };
        let seen = async {
            wait_for(
                &mut events,
                |e| matches!(e, Event::Added(i) if i.id() == id),
            )
            .await;
            let added = t0.elapsed();
            if subscriber
                .get("announced", &id)
                .is_some_and(|i| !i.is_confirmed())
            {
                wait_for(
                    &mut events,
                    |e| matches!(e, Event::Updated(i) if i.id() == id && i.is_confirmed()),
                )
                .await;
            }
            (added, t0.elapsed())
        };
        let ((handle, started), (seen, seen_confirmed)) = tokio::join!(start, seen);
        let held_now = subscriber.stats().held - held_before;

        let t1 = Instant::now();
        let stop = async {
            handle.shutdown().await.expect("announcer stops");
        };
        let gone = async {
            wait_for(&mut events, |e| {
                matches!(e, Event::Removed { instance, cause: RemovalCause::Goodbye } if instance.id() == id)
            })
            .await;
            t1.elapsed()
        };
        let ((), gone) = tokio::join!(stop, gone);
        if k >= ANNOUNCER_SAMPLES / 10 {
            connects.push(connected);
            added.push(seen);
            confirmed.push(seen_confirmed);
            token_to_view.push(seen_confirmed.saturating_sub(started));
            held += held_now;
            returned.push(started);
            removed.push(gone);
        }
    }
    subscriber.shutdown().await;
    AnnouncerLatency {
        connect: Summary::of(&mut connects),
        start_to_added: Summary::of(&mut added),
        start_to_confirmed: Summary::of(&mut confirmed),
        returned_to_confirmed: Summary::of(&mut token_to_view),
        held,
        start_returned: Summary::of(&mut returned),
        shutdown_to_removed: Summary::of(&mut removed),
    }
}

/// How fast a running announcer and subscriber react.
struct Reactions {
    probe: Summary,
    load: Summary,
    meta: Summary,
    pick_wait: Summary,
}

/// A probe to the announcer's answer on the wire; `set_load` and `set_meta` to the
/// subscriber's `Updated`; a new instance's first token to a parked `pick_wait` returning.
async fn reactions(config: &NatsConfig) -> Reactions {
    const SERVICE: &str = "reacting";
    // Past the announcer's 100 ms gap between a token and the next probe answer or early
    // token, so that each sample is answered at once.
    const GAP: Duration = Duration::from_millis(120);
    let subjects = Subjects::default();
    let subscriber = std::sync::Arc::new(
        Subscriber::builder()
            .nats(config.clone())
            .start()
            .await
            .expect("subscriber starts"),
    );
    let mut events = subscriber.events();
    let (observer, _) = config.connect().await.expect("observer connects");
    let mut tokens = observer
        .subscribe(subjects.announce(SERVICE))
        .await
        .expect("subscribe");
    round_trip::confirm_subscriptions(&observer, Duration::from_secs(5))
        .await
        .expect("subscription active");
    let announcer = Announcer::builder(SERVICE, "10.9.9.9:8080")
        .nats(config.clone())
        .instance("r1")
        .interval(Duration::from_secs(30))
        .start()
        .await
        .expect("announcer starts");
    wait_for(&mut events, |e| matches!(e, Event::Added(_))).await;
    tokens.next().await.expect("the first token");

    let (mut probe, mut load, mut meta, mut pick_wait) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in 0..REACTION_SAMPLES {
        tokio::time::sleep(GAP).await;
        let t0 = Instant::now();
        observer
            .publish(subjects.probe(SERVICE), Bytes::new())
            .await
            .expect("probe");
        tokio::time::timeout(EVENT_TIMEOUT, tokens.next())
            .await
            .expect("answer in time");
        probe.push(t0.elapsed());

        tokio::time::sleep(GAP).await;
        let value = if k % 2 == 0 { 0.9 } else { 0.1 };
        let t0 = Instant::now();
        announcer.set_load(value).expect("valid load");
        wait_for(
            &mut events,
            |e| matches!(e, Event::Updated(i) if i.load() == value),
        )
        .await;
        load.push(t0.elapsed());
        tokens.next().await.expect("the early token");

        tokio::time::sleep(GAP).await;
        let version = k.to_string();
        let t0 = Instant::now();
        announcer
            .set_meta([("version", version.as_str())])
            .await
            .expect("valid metadata");
        wait_for(
            &mut events,
            |e| matches!(e, Event::Updated(i) if i.meta_get("version") == Some(version.as_str())),
        )
        .await;
        meta.push(t0.elapsed());
        tokens.next().await.expect("the metadata token");

        // A waiter parked on a service nobody announced yet, woken by its first token.
        let service = format!("late-{k:04}");
        let waiter = {
            let (subscriber, service) = (subscriber.clone(), service.clone());
            tokio::spawn(async move {
                subscriber
                    .pick_wait(&service, herald_subscriber::Strategy::Random, EVENT_TIMEOUT)
                    .await
                    .expect("an instance appears");
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut token = fleet::typical_token(0, k, 60_000);
        token.service = service.clone();
        let payload = Bytes::from(codec::encode(&token).unwrap());
        let t0 = Instant::now();
        observer
            .publish(subjects.announce(&service), payload)
            .await
            .expect("publish");
        let woke = waiter.await.expect("waiter");
        pick_wait.push(woke.saturating_duration_since(t0));
    }
    announcer.shutdown().await.expect("announcer stops");
    Reactions {
        probe: Summary::of(&mut probe),
        load: Summary::of(&mut load),
        meta: Summary::of(&mut meta),
        pick_wait: Summary::of(&mut pick_wait),
    }
}

/// An etcd delete of a live instance's key until the subscriber's `Removed { cause:
/// Deregistered }`: the watch's way, while the instance's token TTL is far off; and, in the
/// same samples, until a plain etcd watch of the key sees the delete.
async fn deregistration(config: &NatsConfig, etcd: EtcdConfig) -> (Summary, Summary) {
    const SERVICE: &str = "deleted";
    let subscriber = Subscriber::builder()
        .nats(config.clone())
        .etcd(etcd.clone())
        .service(SERVICE)
        .start()
        .await
        .expect("subscriber starts");
    let mut events = subscriber.events();
    let mut client = etcd.connect().await.expect("etcd connects");
    let subjects = Subjects::default();
    let (mut removed, mut watched) = (Vec::new(), Vec::new());
    for k in 0..REACTION_SAMPLES {
        let id = format!("deleted-{k:04}");
        let _announcer = Announcer::builder(SERVICE, "10.9.9.9:8080")
            .nats(config.clone())
            .etcd(etcd.clone())
            .instance(id.clone())
            .interval(Duration::from_secs(30))
            .start()
            .await
            .expect("announcer starts");
        wait_for(&mut events, |e| {
            matches!(e, Event::Updated(i) | Event::Added(i) if i.id() == id && i.is_confirmed())
        })
        .await;
        let key = subjects.key(SERVICE, &id);
        let mut watch = client.watch(key.clone(), None).await.expect("watch");
        let t0 = Instant::now();
        client.delete(key, None).await.expect("delete");
        let seen_by_etcd_watch = async {
            while let Some(r) = watch.message().await.expect("watch answers") {
                if r.events()
                    .iter()
                    .any(|e| e.event_type() == etcd_client::EventType::Delete)
                {
                    return t0.elapsed();
                }
            }
            panic!("the watch ended")
        };
        let seen_by_subscriber = async {
            wait_for(&mut events, |e| {
                matches!(e, Event::Removed { instance, cause: RemovalCause::Deregistered }
                    if instance.id() == id)
            })
            .await;
            t0.elapsed()
        };
        let (w, r) = tokio::join!(seen_by_etcd_watch, seen_by_subscriber);
        watched.push(w);
        removed.push(r);
    }
    subscriber.shutdown().await;
    (Summary::of(&mut removed), Summary::of(&mut watched))
}

/// Graceful stops measured for their removal cause.
const GRACEFUL_STOPS: usize = 1_000;

/// [`GRACEFUL_STOPS`] registered announcers started and shut down one after another beside a
/// CPU burner: how many the subscriber removes as `goodbye` (the leaving token read before
/// the registration's deletion), and every cause seen.
async fn graceful_stops(
    config: &NatsConfig,
    etcd: EtcdConfig,
) -> (usize, std::collections::BTreeMap<&'static str, usize>) {
    const SERVICE: &str = "stopping";
    let subscriber = Subscriber::builder()
        .nats(config.clone())
        .etcd(etcd.clone())
        .service(SERVICE)
        .start()
        .await
        .expect("subscriber starts");
    let mut events = subscriber.events();
    let _burner = herald_bench::process::Burners::start(1);
    let mut causes = std::collections::BTreeMap::new();
    for k in 0..GRACEFUL_STOPS {
        let id = format!("stopping-{k:04}");
        let announcer = Announcer::builder(SERVICE, "10.9.9.9:8080")
            .nats(config.clone())
            .etcd(etcd.clone())
            .instance(id.clone())
            .interval(Duration::from_secs(30))
            .start()
            .await
            .expect("announcer starts");
        wait_for(&mut events, |e| {
            matches!(e, Event::Updated(i) | Event::Added(i) if i.id() == id && i.is_confirmed())
        })
        .await;
        announcer.shutdown().await.expect("a graceful stop");
        let mut cause = None;
        wait_for(&mut events, |e| match e {
            Event::Removed { instance, cause: c } if instance.id() == id => {
                cause = Some(c.as_str());
                true
            }
            _ => false,
        })
        .await;
        *causes.entry(cause.expect("a cause")).or_insert(0) += 1;
    }
    subscriber.shutdown().await;
    (causes.get("goodbye").copied().unwrap_or(0), causes)
}

/// A nats-server restart: from the server greeting clients again until the subscriber holds
/// a token of every announcer sent after it (the announcers reconnect and republish at once;
/// their next periodic token is 30 s away).
async fn nats_restart() -> Summary {
    let mut nats = NatsServer::start().await;
    let config = NatsConfig::new([nats.url()]);
    let subscriber = Subscriber::builder()
        .nats(config.clone())
        .service("restarted")
        .start()
        .await
        .expect("subscriber starts");
    let ids: Vec<String> = (0..5).map(|i| format!("restarted-{i}")).collect();
    let mut announcers = Vec::new();
    for id in &ids {
        let announcer = Announcer::builder("restarted", "10.9.9.9:8080")
            .nats(config.clone())
            .instance(id.clone())
            .interval(Duration::from_secs(30))
            .start()
            .await
            .expect("announcer starts");
        announcers.push(announcer);
    }
    let seqs = |subscriber: &Subscriber| -> Vec<u64> {
        ids.iter()
            .map(|id| subscriber.get("restarted", id).map_or(0, |i| i.seq()))
            .collect()
    };
    let listed = Instant::now() + EVENT_TIMEOUT;
    while seqs(&subscriber).contains(&0) {
        assert!(Instant::now() < listed, "every announcer listed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut fresh = Vec::new();
    for _ in 0..RESTART_SAMPLES {
        let before = seqs(&subscriber);
        nats.restart().await;
        let t0 = Instant::now();
        while seqs(&subscriber)
            .iter()
            .zip(&before)
            .any(|(now, then)| now <= then)
        {
            assert!(
                t0.elapsed() < EVENT_TIMEOUT * 2,
                "every announcer republished"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        fresh.push(t0.elapsed());
    }
    drop(announcers);
    subscriber.shutdown().await;
    Summary::of(&mut fresh)
}
