//! The pause before trying again a call that got no answer: exponential, capped, jittered,
//! the same for announcers and subscribers.
//!
//! A thin wrapper over `backon`'s exponential backoff, so that every retry loop of Herald
//! grows, caps and spreads its pauses the same way, and so that the retry loops own their
//! timing (they wait inside `select!` next to other work, which a `Retryable` cannot).

use std::fmt;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Steps after which the step no longer grows: `2^40` times any first pause is past any cap.
const STEPS_MAX: u32 = 40;

/// Pauses between tries: each step doubles from `first` up to `max`, and each pause is drawn
/// between half the step and the whole step (half fixed, half random), so a crowd of clients
/// that failed at the same moment spreads out, and no pause exceeds `max`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use herald_shared::backoff::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
/// let first = backoff.next_pause();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// for _ in 0..10 {
///     assert!(backoff.next_pause() <= Duration::from_secs(1));
/// }
/// // The call answered: start from the first step again.
/// backoff.reset();
/// assert!(backoff.next_pause() <= Duration::from_millis(100));
/// ```
pub struct Backoff {
    builder: ExponentialBuilder,
    steps: ExponentialBackoff,
    /// backon computes steps in `f32`: the cap is applied again exactly.
    max: Duration,
    /// Pauses drawn since the last reset (saturating), so that a clone resumes at the same
    /// step.
    taken: u32,
}

impl Backoff {
    /// Pauses that start at `first` and double up to `max` (`first` is lowered to `max` when
    /// it is larger).
    pub fn new(first: Duration, max: Duration) -> Backoff {
        let first = first.min(max);
        // backon adds a random part of up to one step to each step: steps of half the
        // pause give pauses between half the step and the whole step.
        let builder = ExponentialBuilder::new()
            .with_min_delay(first / 2)
            .with_max_delay(max / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Backoff {
            builder,
            steps: builder.build(),
            max,
            taken: 0,
        }
    }

    /// The next pause: between half and all of the current step; the step then doubles, up
    /// to `max`.
    pub fn next_pause(&mut self) -> Duration {
        self.taken = (self.taken + 1).min(STEPS_MAX);
        // Without a limit on tries or on the total, backon never ends the sequence.
        self.steps.next().unwrap_or(self.max).min(self.max)
    }

    /// Starts again from the first step (after a call that succeeded).
    pub fn reset(&mut self) {
        self.steps = self.builder.build();
        self.taken = 0;
    }
}

impl Clone for Backoff {
    fn clone(&self) -> Self {
        let mut steps = self.builder.build();
        for _ in 0..self.taken {
            steps.next();
        }
        Backoff {
            builder: self.builder,
            steps,
            max: self.max,
            taken: self.taken,
        }
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff")
            .field("builder", &self.builder)
            .field("max", &self.max)
            .field("taken", &self.taken)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);
    /// backon's steps are computed in `f32`.
    const SLACK: Duration = Duration::from_micros(1);

    #[test]
    fn pauses_stay_within_half_the_step_and_the_step() {
        for _ in 0..200 {
            let mut b = Backoff::new(FIRST, MAX);
            let mut step = FIRST;
            for _ in 0..12 {
                let pause = b.next_pause();
                assert!(
                    pause + SLACK >= step / 2 && pause <= step + SLACK,
                    "pause {pause:?} must lie within half the step and the step {step:?}"
                );
                step = (step * 2).min(MAX);
            }
        }
    }

    #[test]
    fn pauses_grow_then_stop_at_max() {
        let mut b = Backoff::new(FIRST, MAX);
        let pauses: Vec<Duration> = (0..20).map(|_| b.next_pause()).collect();
        assert!(
            pauses[4] > pauses[0],
            "the fifth pause must be longer than the first: {pauses:?}"
        );
        assert!(
            pauses.iter().all(|p| *p <= MAX),
            "no pause may exceed max: {pauses:?}"
        );
        assert!(
            pauses[10..].iter().all(|p| *p + SLACK >= MAX / 2),
            "pauses at the cap stay between max/2 and max: {pauses:?}"
        );
    }

    #[test]
    fn pauses_are_spread() {
        let mut b = Backoff::new(FIRST, MAX);
        let at_cap: Vec<Duration> = (0..30).map(|_| b.next_pause()).skip(10).collect();
        assert!(
            at_cap.iter().any(|p| *p != at_cap[0]),
            "jitter must spread pauses even at the cap: {at_cap:?}"
        );
    }

    #[test]
    fn reset_starts_from_the_first_step() {
        let mut b = Backoff::new(FIRST, MAX);
        for _ in 0..10 {
            b.next_pause();
        }
        b.reset();
        assert!(
            b.next_pause() <= FIRST + SLACK,
            "after reset the pause must be within the first step"
        );
    }

    #[test]
    fn a_clone_resumes_at_the_same_step() {
        let mut b = Backoff::new(FIRST, MAX);
        for _ in 0..10 {
            b.next_pause();
        }
        let mut c = b.clone();
        assert!(
            c.next_pause() + SLACK >= MAX / 2,
            "a clone must keep the step it was cloned at"
        );
    }

    #[test]
    fn a_first_pause_above_max_is_capped() {
        let mut b = Backoff::new(Duration::from_secs(5), MAX);
        assert!(b.next_pause() <= MAX, "the first pause must not exceed max");
    }
}
