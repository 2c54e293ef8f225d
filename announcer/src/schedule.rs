//! When the next token goes out: the timing rules of the broadcast task, as a state machine
//! over instants, with no I/O, so that they are tested on a paused clock.
//!
//! - periodic: `interval` +-10 % after the last token of any kind, so the gap a subscriber
//!   sees never exceeds 1.1 x `interval` while the announcer runs;
//! - probe answers: at once, but at most one per [`PROBE_GAP`]: a probe that arrives sooner
//!   after the last token is answered at `last + PROBE_GAP`, and every probe until then rides
//!   on that one answer;
//! - early tokens: when the load moved more than `load_delta` from the load last sent, at once
//!   if the last token is at least `min_early_gap` old, else at `last + min_early_gap`
//!   (rate-limited, not dropped).
//!
//! Any token resets all three: it carries the current load and answers pending probes.

use std::time::Duration;

use tokio::time::Instant;

/// Smallest spacing of probe answers: a burst of probes within it gets one token.
pub(crate) const PROBE_GAP: Duration = Duration::from_millis(100);

/// Why a token goes out; the broadcast task counts and logs by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The first token, from `start()`.
    Start,
    /// The interval elapsed.
    Periodic,
    /// A probe asked.
    Probe,
    /// The load moved by more than the delta.
    Early,
    /// NATS reconnected.
    Reconnect,
    /// `drain()` or `resume()` was called.
    State,
    /// `set_meta()` was called.
    Meta,
    /// The registration epoch changed.
    Epoch,
    /// `shutdown()`: the goodbye.
    Leaving,
}

impl Why {
    /// Whether the token tells of a change (what subscribers hold must be replaced), so that
    /// it goes in full, and so does the periodic token after it in case this one is lost.
    pub(crate) fn is_change(self) -> bool {
        matches!(
            self,
            Why::Start | Why::Reconnect | Why::State | Why::Meta | Why::Epoch | Why::Leaving
        )
    }

    /// Whether the token may go as a heartbeat: it only refreshes freshness and load.
    pub(crate) fn may_be_compact(self) -> bool {
        matches!(self, Why::Periodic | Why::Early)
    }
}

/// The settings the schedule follows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) interval: Duration,
    pub(crate) min_early_gap: Duration,
    pub(crate) load_delta: f32,
}

/// `interval` scaled into `[0.9, 1.1] x interval` by `unit` in `[0, 1]`.
pub(crate) fn jittered(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(0.9 + 0.2 * unit.clamp(0.0, 1.0))
}

/// The pending deadlines of one announcer.
#[derive(Debug)]
pub(crate) struct Schedule {
    timing: Timing,
    rng: fastrand::Rng,
    last_publish: Instant,
    last_sent_load: f32,
    next_periodic: Instant,
    probe_due: Option<Instant>,
    early_due: Option<Instant>,
}

impl Schedule {
    /// A schedule whose first token went out at `now` carrying `load`.
    pub(crate) fn new(timing: Timing, now: Instant, load: f32, rng: fastrand::Rng) -> Self {
        let mut schedule = Schedule {
            timing,
            rng,
            last_publish: now,
            last_sent_load: load,
            next_periodic: now,
            probe_due: None,
            early_due: None,
        };
        schedule.published(now, load);
        schedule
    }

    /// Records a token sent at `now` carrying `load`, whatever its reason.
    pub(crate) fn published(&mut self, now: Instant, load: f32) {
        self.last_publish = now;
        self.last_sent_load = load;
        self.next_periodic = now + jittered(self.timing.interval, self.rng.f64());
        self.probe_due = None;
        self.early_due = None;
    }

    /// Records a probe received at `now`.
    pub(crate) fn probe(&mut self, now: Instant) {
        if self.probe_due.is_none() {
            self.probe_due = Some(now.max(self.last_publish + PROBE_GAP));
        }
    }

    /// Records the current load, set or sampled at `now`.
    pub(crate) fn load(&mut self, now: Instant, load: f32) {
        if (load - self.last_sent_load).abs() > self.timing.load_delta {
            if self.early_due.is_none() {
                self.early_due = Some(now.max(self.last_publish + self.timing.min_early_gap));
            }
        } else {
            // Back within the delta of what subscribers last heard: nothing to tell early.
            self.early_due = None;
        }
    }

    /// The reason for a token due at `now`, if one is. A token that goes out while a probe
    /// waits for its gap answers the probe, so it is the answer (sent in full), whatever made
    /// it due.
    pub(crate) fn due(&self, now: Instant) -> Option<Why> {
        let is_due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if self.probe_due.is_some()
            && (is_due(self.probe_due) || is_due(self.early_due) || self.next_periodic <= now)
        {
            Some(Why::Probe)
        } else if is_due(self.early_due) {
            Some(Why::Early)
        } else if self.next_periodic <= now {
            Some(Why::Periodic)
        } else {
            None
        }
    }

    /// The next instant at which a token may be due.
    pub(crate) fn next_wake(&self) -> Instant {
        [self.probe_due, self.early_due]
            .into_iter()
            .flatten()
            .fold(self.next_periodic, Instant::min)
    }
}

#[cfg(test)]
mod tests;
