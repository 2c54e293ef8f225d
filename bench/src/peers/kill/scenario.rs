//! One kill cell, start to finish, on its own fresh servers: consumers up, hosts up and every
//! instance listed at every consumer, a steady window for the load, then the kills, each
//! timed from the SIGKILL to each consumer's `Removed` ([`KillOutcome`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use herald_testkit::NatsServer;

use crate::peers::kill::cell::{Cell, Detector, KillSettings};
use crate::peers::kill::host::{HostArgs, HostSystem};
use crate::peers::kill::hosts::Hosts;
use crate::peers::load::{Load, LoadSample};
use crate::peers::observer::{Observer, Seen};
use crate::peers::quiet::BuildWatch;
use crate::peers::scenario::{OTHER_CPU_LIMIT, instance_id};
use crate::peers::servers::{Endpoints, Servers};
use crate::peers::{herald, polling};
use crate::process::CpuSample;
use crate::stats::Summary;

/// The figures of one cell.
#[derive(Debug, Clone)]
pub struct KillOutcome {
    /// The cell.
    pub cell: Cell,
    /// Its row label.
    pub label: String,
    /// Instances kept up (the killed ones apart).
    pub size: usize,
    /// Host processes, the killed ones included.
    pub hosts: usize,
    /// Instances every consumer listed before the steady window, by consumer.
    pub listed: Vec<usize>,
    /// Hosts spawned to every instance listed at every consumer.
    pub start_up: Duration,
    /// Why the hosts did not all start, if they did not.
    pub start_error: Option<String>,
    /// Load over the steady window (`harness_cpu` is the consumers' process).
    pub load: Load,
    /// The hosts' CPU over the steady window, in cores.
    pub hosts_cpu: f64,
    /// Kill to removed at every consumer (the slowest consumer of each kill).
    pub every: Option<Summary>,
    /// Kill to removed, consumer by consumer.
    pub each: Vec<Option<Summary>>,
    /// Kills hosts received, whose instance some consumer had not removed when the phase
    /// gave up waiting.
    pub missed: usize,
    /// The causes the consumers gave for the killed instances' removals.
    pub causes: BTreeMap<&'static str, usize>,
    /// Removals, at any consumer, of an instance whose host was not killed, or before it was.
    pub false_removals: usize,
    /// Events the consumers' streams dropped.
    pub lagged: u64,
    /// Each consumer's own counters when it stopped.
    pub counters: Vec<Vec<(&'static str, u64)>>,
    /// Whether a build ran during the cell.
    pub overlapped_build: bool,
}

impl KillOutcome {
    /// Whether other work on the machine overlapped the cell: a build at any time, or other
    /// processes using more than [`OTHER_CPU_LIMIT`] cores in the steady window.
    pub fn disturbed(&self) -> bool {
        self.overlapped_build || self.load.other_cpu > OTHER_CPU_LIMIT
    }
}

/// The hosts of a cell: the `size` instances kept up in hosts of `per_process`, then one
/// host per instance to kill (the last `samples`).
fn plan(cell: &Cell, s: &KillSettings, endpoints: &Endpoints) -> Vec<HostArgs> {
    let system = match cell.detector {
        Detector::Polling => HostSystem::Polling,
        Detector::Herald | Detector::HeraldAdvisories => HostSystem::Herald,
    };
    let host = |first, count| HostArgs {
        system,
        endpoints: endpoints.clone(),
        target: cell.target,
        herald_lease: s.herald_lease,
        first,
        count,
    };
    let per = s.per_process.max(1);
    let mut plan: Vec<HostArgs> = (0..s.size)
        .step_by(per)
        .map(|first| host(first, per.min(s.size - first)))
        .collect();
    plan.extend((s.size..s.size + s.samples).map(|first| host(first, 1)));
    plan
}

/// Runs `cell` on fresh servers (with advisories, whichever the system).
pub async fn run(cell: &Cell, s: &KillSettings) -> KillOutcome {
    let watch = BuildWatch::start();
    let servers = Servers::start_with(NatsServer::builder().advisories()).await;
    let endpoints = servers.endpoints();
    let timing = cell.timing(s.herald_lease);
    let observers: Vec<Observer> = (0..s.consumers.max(1)).map(|_| Observer::new()).collect();
    let mut consumers = Vec::new();
    for o in &observers {
        let o = o.clone();
        consumers.push(match cell.detector {
            Detector::HeraldAdvisories => herald::consumer(&endpoints, Some(s.grace), o).await,
            Detector::Herald => herald::consumer(&endpoints, None, o).await,
            Detector::Polling => polling::consumer(&endpoints, timing, o).await,
        });
    }

    let plan = plan(cell, s, &endpoints);
    let began = Instant::now();
    let deadline = began + s.listing_timeout;
    let mut hosts = Hosts::spawn(&s.host_program, &plan);
    let start_error = hosts.wait_ready(deadline).await.err();
    let total = s.size + s.samples;
    for o in &observers {
        o.wait_until(deadline, |seen| seen.listed() >= total).await;
    }
    let start_up = began.elapsed();
    let listed = observers.iter().map(|o| o.read(Seen::listed)).collect();

    tokio::time::sleep(s.settle).await;
    let pids = hosts.pids();
    let (before, hosts_before) = (LoadSample::take(&servers).await, CpuSample::take(&pids));
    tokio::time::sleep(s.steady).await;
    let (after, hosts_after) = (LoadSample::take(&servers).await, CpuSample::take(&pids));
    let mut load = Load::between(&before, &after);
    let hosts_cpu: f64 = hosts_after
        .cores_since(&hosts_before)
        .into_iter()
        .filter(|c| c.is_finite())
        .sum();
    load.other_cpu = (load.other_cpu - hosts_cpu).max(0.0);

    let killed = kill_all(&mut hosts, &plan, s).await;
    let deadline = Instant::now() + s.phase_timeout(cell);
    for o in &observers {
        o.wait_until(deadline, |seen| {
            killed
                .iter()
                .all(|(id, t0)| seen.removed_since(id, *t0).is_some())
        })
        .await;
    }

    let mut every = Vec::new();
    let mut each = vec![Vec::new(); observers.len()];
    let mut missed = 0;
    let mut causes = BTreeMap::new();
    for (id, t0) in &killed {
        let mut slowest = Some(Duration::ZERO);
        for (c, o) in observers.iter().enumerate() {
            match o.read(|seen| seen.removed_since(id, *t0)) {
                Some((at, cause)) => {
                    each[c].push(at - *t0);
                    *causes.entry(cause).or_default() += 1;
                    slowest = slowest.map(|w| w.max(at - *t0));
                }
                None => slowest = None,
            }
        }
        match slowest {
            Some(w) => every.push(w),
            None => missed += 1,
        }
    }
    let false_removals = observers
        .iter()
        .map(|o| {
            o.read(|seen| {
                let kept: usize = (0..s.size)
                    .map(|k| seen.removals_before(&instance_id(k), None))
                    .sum();
                let early: usize = killed
                    .iter()
                    .map(|(id, t0)| seen.removals_before(id, Some(*t0)))
                    .sum();
                kept + early
            })
        })
        .sum();
    let lagged = observers.iter().map(|o| o.read(Seen::lagged)).sum();
    for c in consumers {
        c.stop().await;
    }
    let counters = observers
        .iter()
        .map(|o| o.read(|seen| seen.counters().to_vec()))
        .collect();
    let summary = |v: &mut Vec<Duration>| (!v.is_empty()).then(|| Summary::of(v));
    let outcome = KillOutcome {
        cell: *cell,
        label: cell.label(s.grace),
        size: s.size,
        hosts: hosts.len(),
        listed,
        start_up,
        start_error,
        load,
        hosts_cpu,
        every: summary(&mut every),
        each: each.iter_mut().map(summary).collect(),
        missed,
        causes,
        false_removals,
        lagged,
        counters,
        overlapped_build: false,
    };
    drop(hosts);
    drop(servers);
    KillOutcome {
        overlapped_build: watch.overlapped(),
        ..outcome
    }
}

/// Kills the last `samples` hosts of `plan` (one instance each) at random offsets over the
/// spread; returns each killed instance and the moment of its kill.
async fn kill_all(
    hosts: &mut Hosts,
    plan: &[HostArgs],
    s: &KillSettings,
) -> Vec<(String, Instant)> {
    let mut rng = fastrand::Rng::with_seed(s.seed ^ s.size as u64);
    let mut offsets: Vec<Duration> = (0..s.samples)
        .map(|_| s.spread.mul_f64(rng.f64()))
        .collect();
    offsets.sort_unstable();
    let begin = tokio::time::Instant::now();
    let first_victim = plan.len() - s.samples;
    let mut killed = Vec::with_capacity(s.samples);
    for (k, offset) in offsets.into_iter().enumerate() {
        tokio::time::sleep_until(begin + offset).await;
        let host = first_victim + k;
        let at = hosts.kill(host);
        killed.push((instance_id(plan[host].first), at));
    }
    killed
}
