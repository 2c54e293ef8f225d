//! Herald's live demo: a few services announce with shifting load, and a subscriber prints
//! its live table while the demo scales out, crashes one instance (its connection closes: it
//! disappears within a quarter of a second) next to one that hangs (its connection stays
//! open: it disappears after its TTL), and stops another gracefully (it disappears at once).
//!
//! Uses `HERALD_NATS_URL` and `HERALD_ETCD_ENDPOINTS` when set (and
//! `HERALD_NATS_ADVISORIES`, the subject of the server's disconnect advisories, if it has
//! them); otherwise starts a local `nats-server` (with advisories) and `etcd` on free ports and
//! stops them on exit. `HERALD_DEMO_SECONDS`
//! bounds the run (default: until Ctrl-C or SIGTERM, after which the announcers say goodbye,
//! the subscriber stops, then the local servers; a second Ctrl-C quits at once).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_announcer::{Announcer, AnnouncerHandle, Connection};
use herald_shared::{EtcdConfig, NatsConfig};
use herald_subscriber::{Event, Subscriber};
use herald_testkit::{ADVISORY_SUBJECT, EtcdServer, NatsServer};
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
    let (mut local_nats, url, advisories) = match std::env::var("HERALD_NATS_URL") {
        Ok(url) if !url.is_empty() => (
            None,
            url,
            std::env::var("HERALD_NATS_ADVISORIES")
                .ok()
                .filter(|s| !s.is_empty()),
        ),
        _ => {
            let server = NatsServer::builder().advisories().start().await;
            let url = server.url();
            println!("started a local nats-server at {url} (with disconnect advisories)");
            (Some(server), url, Some(ADVISORY_SUBJECT.to_owned()))
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
    let outcome = run(&url, &endpoints, advisories, limit, stop).await;
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
    advisories: Option<String>,
    limit: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let nats = NatsConfig::new(url.split(',').map(str::to_owned));
    let etcd = EtcdConfig::new(endpoints.split(',').map(str::to_owned));
    // Announcers that share this connection outlive any one of them: one that stops sending
    // while it stays open is what a hung process looks like.
    let shared = Connection::new(nats.connect().await?.0);

    let mut builder = Subscriber::builder().nats(nats.clone()).etcd(etcd.clone());
    if let Some(subject) = &advisories {
        builder = builder.disconnect_advisories(subject);
    }
    let subscriber = builder.start().await?;
    let mut events = subscriber.events();
    let log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    // When each silent instance stopped, to show how long its removal took.
    let stopped: Arc<std::sync::Mutex<BTreeMap<String, Instant>>> = Arc::default();
    {
        let log = log.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                let line = match e {
                    Event::Added(i) => format!("+ {}/{} at {}", i.service(), i.id(), i.addr()),
                    Event::Removed { instance, cause } => {
                        let after = stopped
                            .lock()
                            .unwrap()
                            .remove(instance.id())
                            .map_or(String::new(), |at| {
                                format!(", {:.2} s after", at.elapsed().as_secs_f64())
                            });
                        format!(
                            "- {}/{} ({}{after})",
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
    // The instances on the shared connection (the others own theirs).
    let mut on_shared: Vec<String> = Vec::new();
    for (service, n) in [("billing", 2), ("search", 3), ("auth", 1)] {
        for i in 0..n {
            let conn = (service == "search" && i == 1).then_some(&shared);
            let (id, a) = announce(&nats, conn, &etcd, service, i).await?;
            if conn.is_some() {
                on_shared.push(id.clone());
            }
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
                // The scaled-out instance hangs later: it shares the connection.
                let (id, a) = announce(&nats, Some(&shared), &etcd, "search", 3 + step).await?;
                narration = format!("scale-out: {id} joins and is listed at once");
                on_shared.push(id.clone());
                running.insert(id, a);
            }
            8 => {
                let own = |k: &&String| k.starts_with("search") && !on_shared.contains(k);
                let crashed = running.keys().find(own).cloned();
                let hung = on_shared.iter().find(|k| running.contains_key(*k)).cloned();
                let mut said = Vec::new();
                if let Some(id) = crashed {
                    // Its own connection closes with it, as a killed process's does.
                    stopped.lock().unwrap().insert(id.clone(), Instant::now());
                    drop(running.remove(&id));
                    said.push(if advisories.is_some() {
                        format!("{id} crashes: its connection closes, so it goes at once")
                    } else {
                        format!("{id} crashes: it goes after its {TTL:?} TTL (no advisories)")
                    });
                }
                if let Some(id) = hung {
                    stopped.lock().unwrap().insert(id.clone(), Instant::now());
                    drop(running.remove(&id));
                    on_shared.retain(|k| *k != id);
                    said.push(format!(
                        "{id} hangs with its connection open: it goes after its {TTL:?} TTL"
                    ));
                }
                if !said.is_empty() {
                    narration = said.join("; ");
                }
            }
            12 => {
                if let Some(id) = running.keys().find(|k| k.starts_with("billing")).cloned() {
                    running.remove(&id).expect("listed").shutdown().await?;
                    narration = format!("graceful stop: {id} says goodbye and goes at once");
                }
            }
            14 => {
                let (id, a) = announce(&nats, None, &etcd, "billing", 100 + step).await?;
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
                    "cold start: a new subscriber listed {listed} instances the moment start() returned ({:.1} ms)",
                    started.elapsed().as_secs_f64() * 1e3
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

/// Starts an announcer on its own connection, or on `shared`.
async fn announce(
    nats: &NatsConfig,
    shared: Option<&Connection>,
    etcd: &EtcdConfig,
    service: &str,
    n: u32,
) -> anyhow::Result<(String, AnnouncerHandle)> {
    let id = format!("{service}-{n}");
    let builder = Announcer::builder(service, format!("127.0.0.1:{}", 8000 + n));
    let builder = match shared {
        Some(connection) => builder.connection(connection),
        None => builder.nats(nats.clone()),
    };
    let a = builder
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
