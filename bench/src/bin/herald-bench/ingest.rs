//! Ingest throughput: how many tokens per second one subscriber decodes, validates and
//! applies, and the CPU it spends per token, against a plain async-nats subscription of the
//! same messages.
//!
//! The publisher runs in a separate process (this program, started with its hidden
//! `ingest-publisher` subcommand),
//! so that the CPU time read from `/proc/self/stat` is the subscribing side's alone. It
//! sends pre-encoded tokens of 10,000 instances in turn (`seq` + 1 per instance per round),
//! as fast as the receiver keeps up: it stays at most [`WINDOW`] tokens ahead of the
//! receiver's progress, which the receiver reports every millisecond. The window keeps the
//! backlog below nats-server's 64 MiB per-client limit and below the subscription buffer, so
//! nothing is dropped and the figures are the receiver's sustained rate.
//!
//! Runs, per layout (100 services x 100 instances, then 1 service x 10,000):
//! - raw: a plain subscription to `herald.announce.*` that only counts messages;
//! - raw + decode: the same, plus `codec::accept` (decode and validate) per message;
//! - herald, refresh-only: a `Subscriber` with every instance listed, load constant, so every
//!   token only refreshes its instance;
//! - herald, load changes: the same, but every token carries a new load (an `Updated`
//!   event per token).
//!
//! Every run is repeated (3 rounds by default) and the medians are printed: other work on
//! a small machine moves single rounds.
//!
//! `cargo run --release -p herald-bench -- ingest [--tokens N] [--rounds N]
//! [--only raw|decode|herald] [--layout SxP]`

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use herald_bench::fleet::{Fleet, Layout};
use herald_bench::process::CpuSample;
use herald_bench::stats::median;
use herald_shared::{NatsConfig, NatsEvent, Subjects, codec, round_trip};
use herald_subscriber::Subscriber;
use herald_testkit::NatsServer;

/// Tokens per measured run unless `--tokens` says otherwise.
const DEFAULT_TOKENS: u64 = 1_000_000;
/// Rounds of every run unless `--rounds` says otherwise.
const DEFAULT_ROUNDS: usize = 3;
/// Most tokens the publisher may send ahead of the receiver's reported progress.
const WINDOW: u64 = 50_000;
/// A run ends early (and says so) when the receiver makes no progress for this long.
const STALL: Duration = Duration::from_secs(3);
const CTL: &str = "bench.ctl";
const CREDIT: &str = "bench.credit";
const DONE: &str = "bench.done";

/// What `ingest` takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Tokens per measured run.
    #[arg(long, default_value_t = DEFAULT_TOKENS, value_parser = tokens)]
    tokens: u64,
    /// Rounds of every run; the figures are medians, so that another process's burst on this
    /// small machine moves one round, not the result.
    #[arg(long, default_value_t = DEFAULT_ROUNDS, value_parser = herald_bench::at_least_one)]
    rounds: usize,
    /// One kind of run only, for profiling.
    #[arg(long, value_parser = ["raw", "decode", "herald"])]
    only: Option<String>,
    /// S services of P instances (`SxP`) instead of the two standard layouts.
    #[arg(long, value_parser = layout)]
    layout: Option<Layout>,
}

fn tokens(s: &str) -> Result<u64, String> {
    herald_bench::at_least_one(s).map(|n| n as u64)
}

fn layout(s: &str) -> Result<Layout, String> {
    let (services, per_service) = s.split_once('x').ok_or("expected SxP, e.g. 100x100")?;
    let count = |n: &str| herald_bench::at_least_one(n).map_err(|e| format!("{n}: {e}"));
    Ok(Layout {
        services: count(services)?,
        per_service: count(per_service)?,
    })
}

pub(crate) fn run(args: Args) {
    let layouts = match args.layout {
        Some(l) => vec![l],
        None => Layout::STANDARD.to_vec(),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(measure(args.tokens, args.rounds, args.only, layouts));
}

/// The publishing process, started by [`run`] with its NATS URL.
pub(crate) fn publisher_process(url: String) {
    crate::current_thread().block_on(publisher(url));
}

// ---- publishing process -------------------------------------------------------------------

async fn publisher(url: String) {
    let client = async_nats::connect(url).await.expect("publisher connects");
    let mut ctl = client.subscribe(CTL).await.expect("subscribe");
    let mut credit = client.subscribe(CREDIT).await.expect("subscribe");
    round_trip::confirm_subscriptions(&client, Duration::from_secs(5))
        .await
        .expect("subscriptions active");
    client.publish(DONE, "ready".into()).await.expect("publish");
    client.flush().await.expect("flush");
    let subjects = Subjects::default();
    let mut fleet = None;
    while let Some(msg) = ctl.next().await {
        let cmd = String::from_utf8_lossy(&msg.payload).into_owned();
        let words: Vec<u64> = cmd
            .split(' ')
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect();
        match cmd.split(' ').next() {
            Some("fleet") => {
                let layout = Layout {
                    services: words[0] as usize,
                    per_service: words[1] as usize,
                };
                fleet = Some(Fleet::new(layout, 3_000, &subjects));
            }
            Some("send") => {
                let fleet = fleet.as_mut().expect("a fleet before sending");
                let (id, count, vary_load) = (words[0], words[1], words[2] == 1);
                let took = send(&client, fleet, &mut credit, id, count, vary_load).await;
                client
                    .publish(DONE, format!("{id} {}", took.as_micros()).into())
                    .await
                    .expect("publish");
                client.flush().await.expect("flush");
            }
            _ => break,
        }
    }
}

/// Publishes `count` tokens, at most [`WINDOW`] ahead of the receiver's progress.
async fn send(
    client: &async_nats::Client,
    fleet: &mut Fleet,
    credit: &mut async_nats::Subscriber,
    id: u64,
    count: u64,
    vary_load: bool,
) -> Duration {
    let start = Instant::now();
    let mut acked = 0u64;
    let mut on_credit = |msg: async_nats::Message| {
        let text = String::from_utf8_lossy(&msg.payload);
        let mut words = text.split(' ').map(|w| w.parse::<u64>().unwrap_or(0));
        if words.next() == Some(id) {
            acked = acked.max(words.next().unwrap_or(0));
        }
        acked
    };
    let n = fleet.len() as u64;
    let mut now_ms = herald_shared::unix_millis();
    let mut known = 0;
    for sent in 0..count {
        if sent % 256 == 0 {
            now_ms = herald_shared::unix_millis();
            while let Some(Some(msg)) = credit.next().now_or_never() {
                known = on_credit(msg);
            }
        }
        while sent - known >= WINDOW {
            let msg = credit.next().await.expect("credit subscription open");
            known = on_credit(msg);
        }
        // Each round over the fleet carries a load the instance did not have in the last.
        let load = if vary_load {
            (sent / n % 100) as f32 / 100.0
        } else {
            0.25
        };
        let (subject, payload) = fleet.next_token(load, now_ms);
        client.publish(subject, payload).await.expect("publish");
    }
    client.flush().await.expect("flush");
    start.elapsed()
}

// ---- receiving process --------------------------------------------------------------------

/// What one run measured, between the first and the last progress observation.
#[derive(Debug)]
struct Run {
    name: &'static str,
    tokens: u64,
    wall: Duration,
    /// Cores used by: this process, the publisher, nats-server.
    cores: Vec<f64>,
    /// CPU time of this process.
    cpu: Option<Duration>,
    complete: bool,
    drops: String,
}

impl Run {
    fn rate(&self) -> f64 {
        self.tokens as f64 / self.wall.as_secs_f64()
    }

    fn cpu_ns_per_token(&self) -> f64 {
        self.cpu
            .map_or(f64::NAN, |c| c.as_nanos() as f64 / self.tokens as f64)
    }
}

struct Driver {
    ctl: async_nats::Client,
    done: async_nats::Subscriber,
    pids: Vec<Option<u32>>,
    next_id: u64,
}

impl Driver {
    async fn command(&self, cmd: String) {
        self.ctl.publish(CTL, cmd.into()).await.expect("publish");
        self.ctl.flush().await.expect("flush");
    }

    /// Has the publisher send `count` tokens, reports `progress` as credit every millisecond,
    /// and measures between the first and the last observation of progress.
    async fn drive(&mut self, count: u64, vary_load: bool, progress: impl Fn() -> u64) -> Run {
        self.next_id += 1;
        let id = self.next_id;
        let base = progress();
        self.command(format!("send {id} {count} {}", u8::from(vary_load)))
            .await;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut first: Option<(Instant, u64, CpuSample)> = None;
        let (mut reported, mut last_move) = (u64::MAX, Instant::now());
        let (end, done, complete) = loop {
            tick.tick().await;
            let p = progress().saturating_sub(base);
            if p != reported {
                reported = p;
                last_move = Instant::now();
                self.ctl
                    .publish(CREDIT, format!("{id} {p}").into())
                    .await
                    .expect("publish");
            }
            if first.is_none() && p > 0 {
                first = Some((Instant::now(), p, CpuSample::take(&self.pids)));
            }
            if p >= count {
                break (Instant::now(), p, true);
            }
            if last_move.elapsed() > STALL {
                break (last_move, p, false);
            }
        };
        let end_cpu = CpuSample::take(&self.pids);
        // The publisher's report that it has sent everything.
        let wanted = format!("{id} ");
        let wait = async {
            while let Some(msg) = self.done.next().await {
                if msg.payload.starts_with(wanted.as_bytes()) {
                    break;
                }
            }
        };
        if complete {
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .expect("publisher reports the end of its run");
        }
        let (t0, p0, cpu0) = first.expect("the receiver made progress");
        Run {
            name: "",
            tokens: done - p0,
            wall: end.duration_since(t0),
            cores: end_cpu.cores_since(&cpu0),
            cpu: end_cpu.used_since(&cpu0, 0),
            complete,
            drops: String::new(),
        }
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn receiver_config(url: &str) -> NatsConfig {
    let mut config = NatsConfig::new([url]);
    // Far above the window: the client never drops for a full buffer.
    config.subscription_capacity = 1 << 20;
    config
}

/// A plain subscription to every announce subject that counts messages, and with `decode`
/// also decodes and validates each one first (counting only those accepted).
async fn raw_run(driver: &mut Driver, url: &str, count: u64, decode: bool) -> Run {
    let subjects = Subjects::default();
    let (client, events) = receiver_config(url).connect().await.expect("connects");
    let mut events = events.subscribe();
    let mut sub = client
        .subscribe(subjects.announce_all())
        .await
        .expect("subscribe");
    round_trip::confirm_subscriptions(&client, Duration::from_secs(5))
        .await
        .expect("subscription active");
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let ok = !decode
                || subjects
                    .service_of_announce(msg.subject.as_str())
                    .is_some_and(|s| codec::accept(&msg.payload, s).is_ok());
            if ok {
                counter.fetch_add(1, Relaxed);
            }
        }
    });
    let mut run = driver.drive(count, false, || seen.load(Relaxed)).await;
    task.abort();
    let mut slow = 0;
    while let Ok(e) = events.try_recv() {
        slow += u64::from(matches!(e, NatsEvent::SlowConsumer(_)));
    }
    run.name = if decode {
        "raw + codec::accept"
    } else {
        "raw async-nats"
    };
    run.drops = format!("slow-consumer events {slow}");
    run
}

/// A Herald subscriber of every service: lists the fleet, then runs refresh-only tokens,
/// then tokens that change the load every time.
async fn herald_runs(driver: &mut Driver, url: &str, layout: Layout, count: u64) -> Vec<Run> {
    let sub = Subscriber::builder()
        .nats(receiver_config(url))
        .start()
        .await
        .expect("subscriber starts");
    let warm = driver
        .drive(layout.len() as u64, false, || sub.stats().accepted)
        .await;
    assert!(warm.complete, "every instance is listed");
    let deadline = Instant::now() + Duration::from_secs(5);
    while sub.stats().instances != layout.len() as u64 {
        assert!(Instant::now() < deadline, "every instance is listed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut runs = Vec::new();
    for (vary_load, name) in [
        (false, "herald refresh-only"),
        (true, "herald load changes"),
    ] {
        let before = sub.stats();
        let mut run = driver
            .drive(count, vary_load, || sub.stats().accepted)
            .await;
        let after = sub.stats();
        run.name = name;
        run.drops = format!(
            "slow-consumer events {}, lost {}, rejected {}, duplicates {}, updated {}",
            after.slow_consumer_events - before.slow_consumer_events,
            after.tokens_lost - before.tokens_lost,
            after.rejected_total() - before.rejected_total(),
            after.duplicate_drops - before.duplicate_drops,
            after.updated - before.updated,
        );
        runs.push(run);
    }
    assert_eq!(
        sub.stats().instances,
        layout.len() as u64,
        "no instance may expire during the runs"
    );
    sub.shutdown().await;
    runs
}

/// `codec::accept` alone, in this thread, over the fleet's tokens: the floor of decoding.
fn decode_only(layout: Layout) -> f64 {
    let subjects = Subjects::default();
    let mut fleet = Fleet::new(layout, 3_000, &subjects);
    let msgs: Vec<_> = (0..fleet.len())
        .map(|_| fleet.next_token(0.25, herald_shared::unix_millis()))
        .collect();
    let rounds = 50;
    let start = Instant::now();
    for _ in 0..rounds {
        for (subject, payload) in &msgs {
            let service = subjects.service_of_announce(subject.as_str()).unwrap();
            std::hint::black_box(codec::accept(payload, service).is_ok());
        }
    }
    start.elapsed().as_nanos() as f64 / (rounds * msgs.len()) as f64
}

async fn measure(count: u64, reps: usize, only: Option<String>, layouts: Vec<Layout>) {
    let wants = |kind: &str| only.as_deref().is_none_or(|o| o == kind);
    let nats = NatsServer::start().await;
    let url = nats.url();
    let (ctl, _) = NatsConfig::new([url.as_str()])
        .connect()
        .await
        .expect("connects");
    let mut done = ctl.subscribe(DONE).await.expect("subscribe");
    round_trip::confirm_subscriptions(&ctl, Duration::from_secs(5))
        .await
        .expect("subscription active");
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    cmd.arg("ingest-publisher").arg(&url);
    let publisher = herald_testkit::spawn_guarded(cmd);
    tokio::time::timeout(Duration::from_secs(10), done.next())
        .await
        .expect("publisher ready");
    let mut driver = Driver {
        ctl,
        done,
        pids: vec![None, Some(publisher.pid()), nats.pid()],
        next_id: 0,
    };

    println!(
        "ingest throughput: {count} tokens per run, publisher in its own process at most \
         {WINDOW} tokens ahead, nats-server on loopback; CPU ns = the subscribing process's \
         CPU time per token (async-nats reader included)"
    );
    for layout in layouts {
        driver
            .command(format!("fleet {} {}", layout.services, layout.per_service))
            .await;
        let token_len = Fleet::new(layout, 3_000, &Subjects::default()).token_len();
        // rounds[r] holds round r's runs, in the same order every round.
        let mut rounds: Vec<Vec<Run>> = Vec::new();
        for _ in 0..reps {
            let mut runs = Vec::new();
            if wants("raw") {
                runs.push(raw_run(&mut driver, &url, count, false).await);
            }
            if wants("decode") {
                runs.push(raw_run(&mut driver, &url, count, true).await);
            }
            if wants("herald") {
                runs.extend(herald_runs(&mut driver, &url, layout, count).await);
            }
            rounds.push(runs);
        }
        println!(
            "\n{layout} ({} instances, token {token_len} B), median of {reps} rounds \
             [min-max]; codec::accept alone: {:.0} ns/token",
            layout.len(),
            decode_only(layout)
        );
        let of_raw = if wants("raw") { "of raw" } else { "of 1st" };
        println!(
            "  {:<20} {:>9} {:>19} {:>6} {:>19}   notes (round 1)",
            "run", "tokens/s", of_raw, "CPU ns", "cores sub/pub/srv"
        );
        for i in 0..rounds[0].len() {
            let rates: Vec<f64> = rounds.iter().map(|r| r[i].rate()).collect();
            // Each round's run against the same round's first run (measured moments apart).
            let shares: Vec<f64> = rounds
                .iter()
                .map(|r| 100.0 * r[i].rate() / r[0].rate())
                .collect();
            let cpu: Vec<f64> = rounds.iter().map(|r| r[i].cpu_ns_per_token()).collect();
            let core = |k: usize| median(&rounds.iter().map(|r| r[i].cores[k]).collect::<Vec<_>>());
            let incomplete = rounds.iter().filter(|r| !r[i].complete).count();
            let first = &rounds[0][i];
            println!(
                "  {:<20} {:>9.0} {:>5.0}% [{:>3.0}-{:>3.0}%] {:>6.0} {:>19}   {}{}",
                first.name,
                median(&rates),
                median(&shares),
                min(&shares),
                max(&shares),
                median(&cpu),
                format!("{:.2} / {:.2} / {:.2}", core(0), core(1), core(2)),
                first.drops,
                if incomplete == 0 {
                    String::new()
                } else {
                    format!("; {incomplete} round(s) INCOMPLETE (stalled)")
                },
            );
        }
        for (r, runs) in rounds.iter().enumerate().skip(1) {
            for run in runs
                .iter()
                .filter(|run| !run.drops.starts_with("slow-consumer events 0"))
            {
                println!("  round {}: {}: {}", r + 1, run.name, run.drops);
            }
        }
    }
    driver.command("quit".to_owned()).await;
}
