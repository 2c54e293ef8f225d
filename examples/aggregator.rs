//! A metrics aggregator: follows every service through the event stream and prints a
//! per-service load summary (instances, mean and max load) once a second.
//!
//! Connects to `HERALD_NATS_URL` (and `HERALD_ETCD_ENDPOINTS` when set); with no NATS URL it
//! starts a local nats-server and a few synthetic announcers so that there is something to
//! aggregate. `HERALD_DEMO_SECONDS` bounds the run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_announcer::Announcer;
use herald_shared::{EtcdConfig, NatsConfig};
use herald_subscriber::{Event, Subscriber};

#[derive(Default)]
struct Summary {
    loads: BTreeMap<String, f32>,
    joined: u64,
    left: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let limit = std::env::var("HERALD_DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let (_local, url) = match std::env::var("HERALD_NATS_URL") {
        Ok(url) if !url.is_empty() => (None, url),
        _ => {
            let server = herald_testkit::NatsServer::start().await;
            let url = server.url();
            (Some(server), url)
        }
    };
    let nats = NatsConfig::new(url.split(',').map(str::to_owned));
    let mut _synthetic = Vec::new();
    if _local.is_some() {
        for (service, n) in [("orders", 3), ("search", 2)] {
            for i in 0..n {
                let a = Announcer::builder(service, format!("127.0.0.1:{}", 9100 + i))
                    .nats(nats.clone())
                    .instance(format!("{service}-{i}"))
                    .interval(Duration::from_millis(300))
                    .load_fn(move || {
                        let t = (herald_shared::unix_millis() % 1_000_000) as f32 / 1000.0;
                        ((t + i as f32).sin() * 0.4 + 0.5).clamp(0.0, 1.0)
                    })
                    .start()
                    .await?;
                _synthetic.push(a);
            }
        }
    }
    let mut builder = Subscriber::builder().nats(nats);
    if let Ok(endpoints) = std::env::var("HERALD_ETCD_ENDPOINTS")
        && !endpoints.is_empty()
    {
        builder = builder.etcd(EtcdConfig::new(endpoints.split(',').map(str::to_owned)));
    }
    let subscriber = builder.start().await?;
    let mut events = subscriber.events();
    let mut per_service: BTreeMap<String, Summary> = BTreeMap::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                if limit.is_some_and(|l| started.elapsed() >= l) {
                    break;
                }
                print_summary(&per_service);
            }
            e = events.next() => match e {
                Some(Event::Added(i)) | Some(Event::Updated(i)) => {
                    let s = per_service.entry(i.service().to_owned()).or_default();
                    if s.loads.insert(i.id().to_owned(), i.load()).is_none() {
                        s.joined += 1;
                    }
                }
                Some(Event::Removed { instance, .. }) => {
                    let s = per_service.entry(instance.service().to_owned()).or_default();
                    if s.loads.remove(instance.id()).is_some() {
                        s.left += 1;
                    }
                }
                Some(Event::Lagged { .. }) => {
                    // Fell behind: rebuild from the current view.
                    for (service, s) in per_service.iter_mut() {
                        s.loads = subscriber.instances(service).iter().map(|i| (i.id().to_owned(), i.load())).collect();
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
    }
    print_summary(&per_service);
    subscriber.shutdown().await;
    Ok(())
}

fn print_summary(per_service: &BTreeMap<String, Summary>) {
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>7} {:>5}",
        "service", "instances", "mean", "max", "joined", "left"
    );
    for (service, s) in per_service {
        let n = s.loads.len();
        let sum: f32 = s.loads.values().sum();
        let max = s.loads.values().copied().fold(0.0, f32::max);
        let mean = if n > 0 { sum / n as f32 } else { 0.0 };
        println!(
            "{service:<12} {n:>9} {mean:>9.3} {max:>9.3} {:>7} {:>5}",
            s.joined, s.left
        );
    }
    println!();
}
