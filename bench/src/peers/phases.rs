//! The measured phases of a run: joins, graceful leaves and crashes, each action at a
//! random offset within the spread, each timed from the action to the consumer's view.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::peers::observer::Observer;
use crate::peers::system::System;
use crate::stats::Summary;

/// The figures of one phase.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Action to consumer's view, over the changes seen; `None` when none was.
    pub latency: Option<Summary>,
    /// Actions whose change the consumer had not seen when the phase gave up waiting.
    pub missed: usize,
    /// Actions that failed (an instance that did not start).
    pub failed: usize,
    /// The causes the consumer gave for the removals of this phase.
    pub causes: BTreeMap<&'static str, usize>,
}

/// Runs `act` for each item at a random offset within `spread` (from `rng`), concurrently;
/// returns what each call returned.
async fn spread_out<T, R, F, Fut>(
    items: Vec<T>,
    spread: Duration,
    rng: &mut fastrand::Rng,
    act: F,
) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let begin = tokio::time::Instant::now();
    let tasks: Vec<_> = items
        .into_iter()
        .map(|item| {
            let at = begin + spread.mul_f64(rng.f64());
            let fut = act(item);
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("action task"));
    }
    out
}

/// Runs the phases of one system: its instances act, its consumer reports to `observer`.
#[derive(Debug)]
pub struct Phases<S> {
    /// The system under test.
    pub system: Arc<S>,
    /// Its consumer's record.
    pub observer: Observer,
    /// The span the actions of a phase are spread over.
    pub spread: Duration,
    /// How long to wait after the last action for the consumer to see every change.
    pub timeout: Duration,
    /// The offsets' generator.
    pub rng: fastrand::Rng,
}

impl<S: System> Phases<S> {
    /// Starts instances `ids`, spread out; returns the started ones and the join phase's figures.
    pub async fn joins(
        &mut self,
        ids: Vec<String>,
    ) -> (Vec<(String, Instant, S::Instance)>, Phase) {
        let (observer, timeout) = (&self.observer, self.timeout);
        let results = spread_out(ids, self.spread, &mut self.rng, |id| {
            let system = self.system.clone();
            async move {
                // The clock starts before the system's own start call, as the caller sees it.
                let t0 = Instant::now();
                let started = system.start_instance(id.clone()).await;
                (id, t0, started)
            }
        })
        .await;
        let mut phase = Phase::default();
        let mut started = Vec::new();
        for (id, t0, r) in results {
            match r {
                Ok(instance) => started.push((id, t0, instance)),
                Err(e) => {
                    eprintln!("join of {id} failed: {e}");
                    phase.failed += 1;
                }
            }
        }
        let deadline = Instant::now() + timeout;
        observer
            .wait_until(deadline, |s| {
                started
                    .iter()
                    .all(|(id, t0, _)| s.added_since(id, *t0).is_some())
            })
            .await;
        let mut delays = Vec::new();
        observer.read(|s| {
            for (id, t0, _) in &started {
                match s.added_since(id, *t0) {
                    Some(at) => delays.push(at - *t0),
                    None => phase.missed += 1,
                }
            }
        });
        phase.latency = (!delays.is_empty()).then(|| Summary::of(&mut delays));
        (started, phase)
    }

    /// Stops `instances` (gracefully with `graceful`, else as crashes), spread out; returns
    /// when each was stopped, and the phase's figures.
    pub async fn ends(
        &mut self,
        instances: Vec<(String, S::Instance)>,
        graceful: bool,
    ) -> (Vec<(String, Instant)>, Phase) {
        let (observer, timeout) = (&self.observer, self.timeout);
        let ended = spread_out(instances, self.spread, &mut self.rng, |(id, instance)| {
            let system = self.system.clone();
            async move {
                let t0 = Instant::now();
                if graceful {
                    system.leave(instance).await;
                } else {
                    system.crash(instance);
                }
                (id, t0)
            }
        })
        .await;
        let deadline = Instant::now() + timeout;
        observer
            .wait_until(deadline, |s| {
                ended
                    .iter()
                    .all(|(id, t0)| s.removed_since(id, *t0).is_some())
            })
            .await;
        let mut phase = Phase::default();
        let mut delays = Vec::new();
        observer.read(|s| {
            for (id, t0) in &ended {
                match s.removed_since(id, *t0) {
                    Some((at, cause)) => {
                        delays.push(at - *t0);
                        *phase.causes.entry(cause).or_default() += 1;
                    }
                    None => phase.missed += 1,
                }
            }
        });
        phase.latency = (!delays.is_empty()).then(|| Summary::of(&mut delays));
        (ended, phase)
    }
}
