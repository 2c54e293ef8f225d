//! One run: one system at one size, on its own fresh servers. The `size` instances come
//! up and stay up; the steady window reads the load; then joins, graceful leaves and crashes
//! are timed against the consumer's view ([`Outcome`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::peers::etcd_only::EtcdOnly;
use crate::peers::herald::Herald;
use crate::peers::load::{Load, LoadSample};
use crate::peers::observer::Observer;
use crate::peers::phases::{Phase, Phases};
use crate::peers::polling::Polling;
use crate::peers::processes;
use crate::peers::quiet::BuildWatch;
use crate::peers::servers::Servers;
use crate::peers::settings::{Kind, Settings};
use crate::peers::system::{SERVICE, System};

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The system.
    pub kind: Kind,
    /// Instances kept up.
    pub size: usize,
    /// Simulated processes they were spread over.
    pub processes: usize,
    /// Of those, how many the consumer listed before the steady window.
    pub listed: usize,
    /// How long they took to start and be listed.
    pub start_up: Duration,
    /// Of those, how many failed to start.
    pub start_failures: usize,
    /// Load over the steady window.
    pub load: Load,
    /// Instance start to listed.
    pub joins: Phase,
    /// Graceful stop to unlisted.
    pub leaves: Phase,
    /// Crash to unlisted.
    pub crashes: Phase,
    /// Removals of instances that were up (neither left nor crashed yet).
    pub false_removals: usize,
    /// Events the consumer's stream dropped.
    pub lagged: u64,
    /// The system's own counters (lease losses and the like).
    pub notes: Vec<(&'static str, u64)>,
    /// Whether a `rustc` or `cargo` process ran during the run (its CPU figures are then
    /// suspect).
    pub overlapped_build: bool,
}

/// Other work using more than this many cores during the steady window makes the run
/// suspect.
pub const OTHER_CPU_LIMIT: f64 = 0.3;

impl Outcome {
    /// Whether other work on the machine overlapped the run: a build at any time, or more than
    /// [`OTHER_CPU_LIMIT`] cores of other processes during the steady window.
    pub fn disturbed(&self) -> bool {
        self.overlapped_build || self.load.other_cpu > OTHER_CPU_LIMIT
    }
}

/// Starts fresh servers and runs `kind` at `size` on them.
pub async fn run(kind: Kind, size: usize, settings: &Settings) -> Outcome {
    let watch = BuildWatch::start();
    let servers = Servers::start().await;
    let timing = settings.timing();
    let processes = processes::count(size, settings.per_process);
    let endpoints = servers.endpoints();
    let outcome = match kind {
        Kind::Herald => {
            let system = Herald::connect(&endpoints, timing, false, processes).await;
            run_system(kind, system, &servers, (size, processes), settings).await
        }
        Kind::HeraldShared => {
            let system = Herald::connect(&endpoints, timing, true, processes).await;
            run_system(kind, system, &servers, (size, processes), settings).await
        }
        Kind::EtcdOnly => {
            let system = EtcdOnly::connect(&endpoints, timing, processes).await;
            run_system(kind, system, &servers, (size, processes), settings).await
        }
        Kind::Polling => {
            let system = Polling::connect(&endpoints, timing, processes).await;
            run_system(kind, system, &servers, (size, processes), settings).await
        }
    };
    drop(servers);
    Outcome {
        overlapped_build: watch.overlapped(),
        ..outcome
    }
}

/// The id of the bench's `k`-th instance.
pub fn instance_id(k: usize) -> String {
    format!("{SERVICE}-{k:05}")
}

/// The whole run of one system on `servers`, `size` instances spread over `processes`.
pub async fn run_system<S: System>(
    kind: Kind,
    system: S,
    servers: &Servers,
    (size, processes): (usize, usize),
    settings: &Settings,
) -> Outcome {
    let system = Arc::new(system);
    let observer = Observer::new();
    let consumer = system.start_consumer(observer.clone()).await;

    let began = Instant::now();
    let started: Vec<_> = futures::stream::iter((0..size).map(instance_id))
        .map(|id| {
            let system = system.clone();
            async move { (id.clone(), system.start_instance(id).await) }
        })
        .buffer_unordered(settings.start_concurrency)
        .collect()
        .await;
    let mut base = Vec::with_capacity(size);
    let mut start_failures = 0;
    for (id, r) in started {
        match r {
            Ok(instance) => base.push((id, instance)),
            Err(e) => {
                start_failures += 1;
                eprintln!("{}: start of {id} failed: {e}", kind.name());
            }
        }
    }
    let up = base.len();
    observer
        .wait_until(began + settings.listing_timeout, |s| s.listed() >= up)
        .await;
    let start_up = began.elapsed();
    let listed = observer.read(|s| s.listed());

    tokio::time::sleep(settings.settle).await;
    let before = LoadSample::take(servers).await;
    tokio::time::sleep(settings.steady).await;
    let after = LoadSample::take(servers).await;
    let load = Load::between(&before, &after);

    let mut phases = Phases {
        system: system.clone(),
        observer: observer.clone(),
        spread: settings.spread,
        timeout: settings.phase_timeout(),
        rng: fastrand::Rng::with_seed(settings.seed ^ size as u64),
    };
    let ids = (size..size + 2 * settings.samples)
        .map(instance_id)
        .collect();
    let (joined, joins) = phases.joins(ids).await;
    let mut joined: Vec<_> = joined.into_iter().map(|(id, _, i)| (id, i)).collect();
    let to_crash = joined.split_off(joined.len().min(settings.samples));
    let (left, leaves) = phases.ends(joined, true).await;
    let (crashed, crashes) = phases.ends(to_crash, false).await;

    // Every removal of an instance before its own end is a false one.
    let ends: HashMap<&str, Instant> = left
        .iter()
        .chain(&crashed)
        .map(|(id, t)| (id.as_str(), *t))
        .collect();
    let false_removals = observer.read(|s| {
        let ended: usize = ends
            .iter()
            .map(|(id, t)| s.removals_before(id, Some(*t)))
            .sum();
        let kept: usize = base.iter().map(|(id, _)| s.removals_before(id, None)).sum();
        ended + kept
    });
    let lagged = observer.read(|s| s.lagged());
    let notes = system.notes();

    consumer.stop().await;
    for (_, instance) in base {
        system.crash(instance);
    }
    drop(phases);
    Outcome {
        kind,
        size,
        processes,
        listed,
        start_up,
        start_failures,
        load,
        joins,
        leaves,
        crashes,
        false_removals,
        lagged,
        notes,
        overlapped_build: false,
    }
}
