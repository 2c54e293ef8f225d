//! Churn soak: announcers join, crash and leave at random against one subscriber with etcd,
//! checked every second against the ground truth (see `herald_bench::churn` for what is
//! checked and how). Prints the report; exits with status 1 when a check failed.
//!
//! `cargo run --release -p herald-bench -- churn [--duration 600s] [--seed N]
//! [--event-capacity N] [--advisories] [--disconnect-grace 200ms] [--rss-growth-mib N]`,
//! and the soak's knobs (`--interval`, `--ttl`, `--min-live`, `--max-live`, ...: see
//! `herald-bench help churn`).
//!
//! `--advisories` starts nats-server with the accounts that deliver disconnect advisories and
//! the subscriber reading them (default grace); `--disconnect-grace` sets another grace and
//! implies `--advisories`. A crash must then be removed as `disconnected`.
//!
//! The announcers run in this program started with the hidden `churn-fleet` subcommand: it
//! reads orders on stdin and answers each on stdout when it is carried out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use herald_announcer::{Announcer, AnnouncerHandle};
use herald_bench::child;
use herald_bench::churn::{self, Answer, FleetArgs, Order, SERVICE, Settings};
use herald_shared::{EtcdConfig, NatsConfig};
use herald_subscriber::DEFAULT_DISCONNECT_GRACE;
use tokio::sync::mpsc;

/// What `churn` takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    settings: Settings,
    /// Start nats-server with the accounts that deliver disconnect advisories, and the
    /// subscriber reading them with its default grace: a crash must then be removed as
    /// `disconnected`.
    #[arg(long)]
    advisories: bool,
    /// RSS growth (last sample - first) tolerated before the run counts as failed.
    #[arg(long, default_value_t = 16)]
    rss_growth_mib: u64,
}

pub(crate) fn run(args: Args) {
    let mut settings = args.settings;
    if settings.min_live > settings.max_live {
        clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!(
                "--min-live ({}) is above --max-live ({})\n",
                settings.min_live, settings.max_live
            ),
        )
        .exit();
    }
    settings.fleet_program = std::env::current_exe().expect("own path");
    if args.advisories && settings.disconnect_grace.is_none() {
        settings.disconnect_grace = Some(DEFAULT_DISCONNECT_GRACE);
    }
    let seed = settings.seed;
    println!(
        "churn: {:?} of churn with seed {seed} (rerun with --seed {seed} for the same \
         decisions)",
        settings.duration
    );
    let report = crate::runtime().block_on(churn::run(settings));
    println!("{report}");
    let problems = report.problems(args.rss_growth_mib * 1024 * 1024);
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

/// The announcers' process, its settings as JSON.
pub(crate) fn fleet_process(settings: &str) {
    let fleet: FleetArgs = child::settings(settings).unwrap_or_else(|e| {
        eprintln!("churn-fleet: {e}");
        std::process::exit(2);
    });
    crate::runtime().block_on(serve_fleet(fleet));
}

/// The announcers' process: one announcer per joined id, each with its own NATS and etcd
/// connections, as separate processes would have. Orders are carried out concurrently; each
/// answer goes out once its order is done. Closing stdin ends the process (the announcers
/// left are dropped, as in a crash).
async fn serve_fleet(args: FleetArgs) {
    let mut orders = child::orders::<Order>();
    let (answer_tx, mut answers) = mpsc::unbounded_channel::<Answer>();
    let writer = std::thread::spawn(move || {
        while let Some(a) = answers.blocking_recv() {
            child::report(&a);
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
