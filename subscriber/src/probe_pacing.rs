//! When the ingest task may probe: at most once per [`PROBE_GAP`] normally, and, while the
//! subscription keeps overflowing, at a gap that doubles after each probe up to
//! [`OVERLOAD_GAP_MAX`].
//!
//! A probe asks every announcer to answer at once. After a reconnect or a re-listing that is
//! what repairs the view fastest; but when the cause is a slow consumer (tokens arriving faster
//! than the subscriber takes them in), every answer lands in the buffer that just overflowed.
//! With tens of thousands of instances one probe's answers fill the whole buffer, the next
//! overflow asks for the next probe, and an overload can feed itself. So while overflows keep
//! coming, probes thin out; once none has come for [`CALM`], the normal gap is back. Dropped
//! tokens are repaired anyway by each announcer's next periodic token, well within its TTL.

use std::time::Duration;

use tokio::time::Instant;

/// Least time between two probes: one answer serves every subscriber, so a burst of
/// reasons to probe needs only one.
pub(crate) const PROBE_GAP: Duration = Duration::from_millis(100);
/// The largest gap between probes while the subscription keeps overflowing.
pub(crate) const OVERLOAD_GAP_MAX: Duration = Duration::from_secs(5);
/// How long without an overflow before probes are paced normally again.
pub(crate) const CALM: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub(crate) struct ProbePacing {
    last_probe: Instant,
    /// The gap to wait after the last probe while overloaded.
    overload_gap: Duration,
    last_overflow: Option<Instant>,
}

impl ProbePacing {
    /// Pacing that counts a probe as sent at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        ProbePacing {
            last_probe: now,
            overload_gap: PROBE_GAP,
            last_overflow: None,
        }
    }

    fn overloaded(&self, now: Instant) -> bool {
        self.last_overflow
            .is_some_and(|at| now.saturating_duration_since(at) < CALM)
    }

    /// The subscription overflowed (a slow-consumer report) at `now`.
    pub(crate) fn overflowed(&mut self, now: Instant) {
        self.last_overflow = Some(now);
    }

    /// Whether a wanted probe may go out at `now`.
    pub(crate) fn may_probe(&self, now: Instant) -> bool {
        let gap = if self.overloaded(now) {
            self.overload_gap
        } else {
            PROBE_GAP
        };
        now.saturating_duration_since(self.last_probe) >= gap
    }

    /// A probe went out at `now`.
    pub(crate) fn probed(&mut self, now: Instant) {
        self.last_probe = now;
        self.overload_gap = if self.overloaded(now) {
            (self.overload_gap * 2).min(OVERLOAD_GAP_MAX)
        } else {
            PROBE_GAP
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probes sent over `span` when one is wanted all the time, checking every 20 ms.
    fn probes_over(
        p: &mut ProbePacing,
        start: Instant,
        span: Duration,
        overflowing: bool,
    ) -> usize {
        let mut sent = 0;
        let mut t = start;
        while t < start + span {
            if overflowing {
                p.overflowed(t);
            }
            if p.may_probe(t) {
                p.probed(t);
                sent += 1;
            }
            t += Duration::from_millis(20);
        }
        sent
    }

    #[test]
    fn without_overflow_probes_are_paced_at_the_normal_gap() {
        let t0 = Instant::now();
        let mut p = ProbePacing::new(t0);
        assert!(!p.may_probe(t0 + Duration::from_millis(99)));
        assert!(p.may_probe(t0 + PROBE_GAP));
        // The one counted at t0, then 100, 200, ..., 900 ms.
        assert_eq!(probes_over(&mut p, t0, Duration::from_secs(1), false), 9);
    }

    #[test]
    fn sustained_overflow_doubles_the_gap_up_to_the_cap() {
        let t0 = Instant::now();
        let mut p = ProbePacing::new(t0);
        // 100, 200, 400, 800, 1600, 3200 ms gaps: 6 probes in 10 s instead of 100.
        let sent = probes_over(&mut p, t0, Duration::from_secs(10), true);
        assert_eq!(sent, 6, "probes thin out while overflows keep coming");
        // Capped: at most one per 5 s afterwards.
        let later = t0 + Duration::from_secs(10);
        let sent = probes_over(&mut p, later, Duration::from_secs(20), true);
        assert!(
            (4..=5).contains(&sent),
            "{sent} probes in 20 s at the 5 s cap"
        );
    }

    #[test]
    fn calm_restores_the_normal_gap() {
        let t0 = Instant::now();
        let mut p = ProbePacing::new(t0);
        probes_over(&mut p, t0, Duration::from_secs(10), true);
        let calm = t0 + Duration::from_secs(10) + CALM;
        assert!(p.may_probe(calm), "a probe may go once calm");
        p.probed(calm);
        assert!(
            p.may_probe(calm + PROBE_GAP),
            "and the one after at the normal gap"
        );
    }
}
