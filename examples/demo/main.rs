//! Herald's live demo: a few services announce with shifting load, and a subscriber prints
//! its live table while the demo scales out, crashes one instance (it disappears after its
//! TTL) and stops another gracefully (it disappears at once).
//!
//! Uses `HERALD_NATS_URL` and `HERALD_ETCD_ENDPOINTS` when set; otherwise starts a local
//! `nats-server` and `etcd` on free ports and stops them on exit. `HERALD_DEMO_SECONDS`
//! bounds the run (default: until Ctrl-C or SIGTERM, after which the announcers say goodbye,
//! the subscriber stops, then the local servers; a second Ctrl-C quits at once).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_announcer::{Announcer, AnnouncerHandle};
use herald_shared::{EtcdConfig, NatsConfig};
use herald_subscriber::{Event, Subscriber};
use herald_testkit::{EtcdServer, NatsServer};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

mod view;

const INTERVAL: Duration = Duration::from_millis(500);
const TTL: Duration = Duration::from_millis(1500);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let limit = std::env::var("HERALD_DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    // Handlers first, so a Ctrl-C during start-up also ends in a clean shutdown.
    let stop = stop_on_signal()?;

    // The local servers run in process groups of their own (the test kit starts them so): a
    // terminal's Ctrl-C reaches only this process, which stops them after its own shutdown.
    let (mut local_nats, url) = match std::env::var("HERALD_NATS_URL") {
        Ok(url) if !url.is_empty() => (None, url),
        _ => {
            let server = NatsServer::start().await;
            let url = server.url();
            println!("started a local nats-server at {url}");
            (Some(server), url)
        }
    };
    let (mut local_etcd, endpoints) = match std::env::var("HERALD_ETCD_ENDPOINTS") {
        Ok(e) if !e.is_empty() => (None, e),
        _ => {
            let server = EtcdServer::start().await;
            let endpoint = server.endpoint();
            println!("started a local etcd at {endpoint}");
            (Some(server), endpoint)
        }
    };
    let outcome = run(&url, &endpoints, limit, stop).await;
    if let Some(nats) = &mut local_nats {
        nats.stop().await;
    }
    if let Some(etcd) = &mut local_etcd {
        etcd.stop().await;
    }
    outcome?;
    println!("demo stopped: announcers said goodbye and local servers are down. Bye!");
    Ok(())
}

/// Turns the first SIGINT or SIGTERM into `true` on the returned channel; a second one ends
/// the process at once (the test kit's parent-death signal still takes the servers down).
fn stop_on_signal() -> std::io::Result<watch::Receiver<bool>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        for round in 0..2 {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            if round == 0 {
                println!("\nstopping; Ctrl-C again to quit at once");
                let _ = tx.send(true);
            }
        }
        std::process::exit(130);
    });
    Ok(rx)
}

/// The demo itself: announcers and a subscriber until `limit` passes or `stop` turns true,
/// then announcers and subscriber shut down.
async fn run(
    url: &str,
    endpoints: &str,
    limit: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let nats = NatsConfig::new(url.split(',').map(str::to_owned));
    let etcd = EtcdConfig::new(endpoints.split(',').map(str::to_owned));

    let subscriber = Subscriber::builder()
        .nats(nats.clone())
        .etcd(etcd.clone())
        .start()
        .await?;
    let mut events = subscriber.events();
    let log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    {
        let log = log.clone();
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                let line = match e {
                    Event::Added(i) => format!("+ {}/{} at {}", i.service(), i.id(), i.addr()),
                    Event::Removed { instance, cause } => {
                        format!(
                            "- {}/{} ({})",
                            instance.service(),
                            instance.id(),
                            cause.as_str()
                        )
                    }
                    _ => continue,
                };
                let mut log = log.lock().unwrap();
                log.push(line);
                let excess = log.len().saturating_sub(6);
                log.drain(..excess);
            }
        });
    }

    let mut running: BTreeMap<String, AnnouncerHandle> = BTreeMap::new();
    for (service, n) in [("billing", 2), ("search", 3), ("auth", 1)] {
        for i in 0..n {
            let (id, a) = announce(&nats, &etcd, service, i).await?;
            running.insert(id, a);
        }
    }

    let started = Instant::now();
    let mut step = 0u32;
    let mut narration = String::from("six instances of three services announce themselves");
    while !*stop.borrow() && limit.is_none_or(|l| started.elapsed() < l) {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        step += 1;
        for (n, a) in running.values().enumerate() {
            let wave = ((step as f32 + n as f32 * 1.7) / 3.0).sin() * 0.4 + 0.5;
            a.set_load(wave.clamp(0.0, 1.0))?;
        }
        match step % 15 {
            4 => {
                let (id, a) = announce(&nats, &etcd, "search", 3 + step).await?;
                narration = format!("scale-out: {id} joins and is listed at once");
                running.insert(id, a);
            }
            8 => {
                if let Some(id) = running.keys().find(|k| k.starts_with("search")).cloned() {
                    drop(running.remove(&id));
                    narration =
                        format!("crash: {id} stops silently; it goes after its {TTL:?} TTL");
                }
            }
            12 => {
                if let Some(id) = running.keys().find(|k| k.starts_with("billing")).cloned() {
                    running.remove(&id).expect("listed").shutdown().await?;
                    narration = format!("graceful stop: {id} says goodbye and goes at once");
                }
            }
            14 => {
                let (id, a) = announce(&nats, &etcd, "billing", 100 + step).await?;
                narration = format!("{id} replaces the stopped billing instance");
                running.insert(id, a);
            }
            10 => {
                // A consumer starting now lists everything before any broadcast reaches it:
                // the etcd snapshot is applied before start() returns.
                let started = Instant::now();
                let fresh = Subscriber::builder()
                    .nats(nats.clone())
                    .etcd(etcd.clone())
                    .start()
                    .await?;
                let listed: usize = fresh
                    .services()
                    .iter()
                    .map(|s| fresh.instances(s).len())
                    .sum();
                narration = format!(
                    "cold start: a new subscriber listed {listed} instances the moment start() returned ({:?})",
                    started.elapsed()
                );
                fresh.shutdown().await;
            }
            _ => {}
        }
        view::render(&subscriber, &narration, &log.lock().unwrap());
    }

    for (_, a) in running {
        a.shutdown().await?;
    }
    subscriber.shutdown().await;
    Ok(())
}

async fn announce(
    nats: &NatsConfig,
    etcd: &EtcdConfig,
    service: &str,
    n: u32,
) -> anyhow::Result<(String, AnnouncerHandle)> {
    let id = format!("{service}-{n}");
    let a = Announcer::builder(service, format!("127.0.0.1:{}", 8000 + n))
        .nats(nats.clone())
        .etcd(etcd.clone())
        .instance(id.clone())
        .interval(INTERVAL)
        .ttl(TTL)
        .zone(if n.is_multiple_of(2) {
            "zone-a"
        } else {
            "zone-b"
        })
        .load(fastrand::f32() * 0.5)
        .start()
        .await?;
    Ok((id, a))
}
