//! Sampling an announcer's `load_fn`, off the connection's scheduler: each sample runs on
//! tokio's blocking pool, so a slow or blocking load source delays its own announcer's load
//! only, never the tokens of the other announcers on the connection. A sample that is not a
//! valid load (not finite, or negative), or a `load_fn` that panics, is ignored.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::plan::LoadFn;
use crate::scheduler::LoadSetter;

/// Samples `load_fn` every `every` (the first sample one period after the start; none while
/// the previous one runs) until `cancel`.
pub(crate) async fn run(
    load_fn: LoadFn,
    every: Duration,
    setter: LoadSetter,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let source = load_fn.clone();
        let sample = tokio::task::spawn_blocking(move || source.sample());
        let load = tokio::select! {
            () = cancel.cancelled() => return,
            sample = sample => match sample {
                Ok(load) => load,
                Err(e) => {
                    tracing::warn!(error = %e, "load_fn failed; sample ignored");
                    continue;
                }
            },
        };
        if herald_shared::validate::load(load).is_ok() {
            setter.set(load);
        } else {
            tracing::debug!(load, "load_fn returned an invalid load; sample ignored");
        }
    }
}
