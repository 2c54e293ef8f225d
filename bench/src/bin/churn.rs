//! Churn soak: announcers join, crash and leave at random against one subscriber with etcd,
//! checked every second against the ground truth (see `herald_bench::churn` for what is
//! checked and how). Prints the report; exits with status 1 when a check failed.
//!
//! `cargo run --release -p herald-bench --bin churn [-- --duration 600s] [--seed N]
//! [--event-capacity N] [--advisories] [--disconnect-grace 200ms] [--rss-growth-mib N]`
//!
//! `--advisories` starts nats-server with the accounts that deliver disconnect advisories and
//! the subscriber reading them (default grace); `--disconnect-grace` sets another grace and
//! implies `--advisories`. A crash must then be removed as `disconnected`.
//!
//! Started with `--fleet`, this program is the announcers' process instead: it reads
//! orders on stdin and answers each on stdout when it is carried out.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_announcer::{Announcer, AnnouncerHandle};
use herald_bench::churn::{self, Answer, FleetArgs, Order, SERVICE, Settings};
use herald_shared::{EtcdConfig, NatsConfig};
use herald_subscriber::DEFAULT_DISCONNECT_GRACE;
use tokio::sync::mpsc;

/// Counts live heap bytes, reported next to the RSS (the fleet process counts too, unread).
#[global_allocator]
static ALLOC: herald_bench::alloc::Counting = herald_bench::alloc::Counting;

/// Churn time unless `--duration` says otherwise.
const DEFAULT_DURATION: Duration = Duration::from_secs(600);
/// RSS growth (last sample - first) tolerated before the run counts as failed.
const DEFAULT_RSS_GROWTH_MIB: u64 = 16;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--fleet") {
        let fleet = FleetArgs::from_args(&args[1..])
            .expect("usage: churn --fleet NATS ETCD[,ETCD] PREFIX INTERVAL_MS TTL_MS LEASE_MS");
        runtime().block_on(serve_fleet(fleet));
        return;
    }
    let mut duration = DEFAULT_DURATION;
    let mut seed = None;
    let mut rss_growth_mib = DEFAULT_RSS_GROWTH_MIB;
    let mut event_capacity = None;
    let mut disconnect_grace = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--duration" => {
                let v = value();
                duration = parse_duration(v).unwrap_or_else(|| usage(&format!("bad duration {v}")));
            }
            "--seed" => seed = Some(value().parse().unwrap_or_else(|_| usage("bad seed"))),
            "--event-capacity" => {
                event_capacity = Some(
                    value()
                        .parse()
                        .unwrap_or_else(|_| usage("bad event capacity")),
                );
            }
            "--advisories" => disconnect_grace = Some(DEFAULT_DISCONNECT_GRACE),
            "--disconnect-grace" => {
                let v = value();
                disconnect_grace =
                    Some(parse_duration(v).unwrap_or_else(|| usage(&format!("bad grace {v}"))));
            }
            "--rss-growth-mib" => {
                rss_growth_mib = value().parse().unwrap_or_else(|_| usage("bad MiB count"));
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let seed = seed.unwrap_or_else(|| fastrand::u64(..1_000_000));
    let program = std::env::current_exe().expect("own path");
    let mut settings = Settings::new(program, duration, seed);
    if let Some(capacity) = event_capacity {
        settings.event_capacity = capacity;
    }
    settings.disconnect_grace = disconnect_grace;
    println!(
        "churn: {duration:?} of churn with seed {seed} (rerun with --seed {seed} for the same \
         decisions)"
    );
    let report = runtime().block_on(churn::run(settings));
    println!("{report}");
    let problems = report.problems(rss_growth_mib * 1024 * 1024);
    if problems.is_empty() {
        println!("all checks passed");
    } else {
        println!("FAILED:");
        for p in &problems {
            println!("  {p}");
        }
        std::process::exit(1);
    }
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: churn [--duration 600s|10m|30s|500ms] [--seed N] [--event-capacity N] \
         [--advisories] [--disconnect-grace 200ms] [--rss-growth-mib N]"
    );
    std::process::exit(2);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `600s`, `10m`, `1h`, `500ms`, or a bare number of seconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

/// The announcers' process: one announcer per joined id, each with its own NATS and etcd
/// connections, as separate processes would have. Orders are carried out concurrently; each
/// answer goes out once its order is done. Closing stdin ends the process (the announcers
/// left are dropped, as in a crash).
async fn serve_fleet(args: FleetArgs) {
    let (order_tx, mut orders) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match Order::parse(&line) {
                Some(o) => {
                    if order_tx.send(o).is_err() {
                        break;
                    }
                }
                None => eprintln!("churn fleet: unreadable order {line:?}"),
            }
        }
    });
    let (answer_tx, mut answers) = mpsc::unbounded_channel::<Answer>();
    let writer = std::thread::spawn(move || {
        let mut out = std::io::stdout().lock();
        while let Some(a) = answers.blocking_recv() {
            if writeln!(out, "{a}").and_then(|()| out.flush()).is_err() {
                break;
            }
        }
    });
    let handles: Arc<Mutex<HashMap<String, AnnouncerHandle>>> = Arc::default();
    let args = Arc::new(args);
    while let Some(order) = orders.recv().await {
        let answer = answer_tx.clone();
        let handles = handles.clone();
        match order {
            Order::Join(id) => {
                let args = args.clone();
                tokio::spawn(async move {
                    let started = Announcer::builder(SERVICE, "127.0.0.1:7000")
                        .nats(NatsConfig::new([args.nats.clone()]))
                        .etcd(EtcdConfig::new(args.etcd.iter().cloned()))
                        .prefix(&args.prefix)
                        .instance(&id)
                        .interval(args.interval)
                        .ttl(args.ttl)
                        .lease_ttl(args.lease_ttl)
                        .start()
                        .await;
                    let reply = match started {
                        Ok(h) => {
                            let epoch = h.epoch();
                            handles.lock().unwrap().insert(id.clone(), h);
                            Answer::Joined(id, epoch)
                        }
                        Err(e) => Answer::Failed(id, e.to_string()),
                    };
                    let _ = answer.send(reply);
                });
            }
            Order::Crash(id) => {
                let handle = handles.lock().unwrap().remove(&id);
                tokio::spawn(async move {
                    if let Some(h) = handle {
                        let stopped = h.stopped();
                        drop(h);
                        stopped.await;
                    }
                    let _ = answer.send(Answer::Crashed(id));
                });
            }
            Order::Leave(id) => {
                let handle = handles.lock().unwrap().remove(&id);
                tokio::spawn(async move {
                    let error = match handle {
                        Some(h) => h.shutdown().await.err().map(|e| e.to_string()),
                        None => Some("no such announcer".to_owned()),
                    };
                    let _ = answer.send(Answer::Left(id, error));
                });
            }
            Order::Load(id, load) => {
                if let Some(h) = handles.lock().unwrap().get(&id) {
                    let _ = h.set_load(load);
                }
                let _ = answer.send(Answer::Loaded(id));
            }
        }
    }
    handles.lock().unwrap().clear();
    drop(answer_tx);
    let _ = writer.join();
}
