//! The announcer's side of [`herald_shared::pace`]: a token bucket that keeps its `seq` within
//! the advance subscribers accept. Periodic tokens, early tokens and probe answers stay under
//! the pace by themselves (each resets the others' timers, and none comes sooner than 10 ms
//! after the last token); only a burst of state or metadata changes can reach the bucket's
//! bottom, and then waits for it to refill.

use herald_shared::pace::{SEND_BURST, TOKEN_GAP};
use tokio::time::Instant;

/// Tokens the announcer may still send at once, and since when the bucket refills.
#[derive(Debug)]
pub(crate) struct Pacer {
    credit: u32,
    since: Instant,
}

impl Pacer {
    pub(crate) fn new(now: Instant) -> Self {
        Pacer {
            credit: SEND_BURST,
            since: now,
        }
    }

    /// When the next token may go: `now`, or once the bucket holds a token again.
    pub(crate) fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.credit > 0 {
            now
        } else {
            self.since + TOKEN_GAP
        }
    }

    /// Takes one token out of the bucket.
    pub(crate) fn spend(&mut self, now: Instant) {
        self.refill(now);
        self.credit = self.credit.saturating_sub(1);
    }

    fn refill(&mut self, now: Instant) {
        let steps = now.saturating_duration_since(self.since).as_nanos() / TOKEN_GAP.as_nanos();
        if steps == 0 {
            return;
        }
        let credit = u128::from(self.credit) + steps;
        if credit >= u128::from(SEND_BURST) {
            self.credit = SEND_BURST;
            self.since = now;
        } else {
            self.credit = credit as u32;
            self.since += TOKEN_GAP * steps as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herald_shared::pace::max_seq_advance;

    use super::*;

    /// Sends as fast as the pacer lets, for `total` tokens, and returns when each went.
    fn flood(total: usize) -> Vec<Instant> {
        let start = Instant::now();
        let mut pacer = Pacer::new(start);
        let mut now = start;
        let mut sent = Vec::new();
        for _ in 0..total {
            now = pacer.ready_at(now);
            pacer.spend(now);
            sent.push(now);
        }
        sent
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_the_pace_holds() {
        let sent = flood(200);
        let start = sent[0];
        let burst = sent.iter().filter(|t| **t == start).count();
        assert_eq!(burst, SEND_BURST as usize, "the burst goes at once");
        for pair in sent[burst..].windows(2) {
            assert_eq!(
                pair[1] - pair[0],
                TOKEN_GAP,
                "past the burst, one token per gap"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_window_advances_seq_further_than_subscribers_accept() {
        let sent = flood(300);
        for (i, a) in sent.iter().enumerate() {
            for (j, b) in sent.iter().enumerate().skip(i + 1) {
                let elapsed = (*b - *a).as_millis() as u64;
                assert!(
                    (j - i) as u64 <= max_seq_advance(elapsed),
                    "tokens {i} and {j} are {elapsed} ms apart: seq advanced {} (bound {})",
                    j - i,
                    max_seq_advance(elapsed)
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_spell_refills_the_burst_and_no_more() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start);
        for _ in 0..SEND_BURST {
            pacer.spend(start);
        }
        assert!(pacer.ready_at(start) > start, "the bucket is empty");
        let later = start + Duration::from_secs(60);
        for _ in 0..SEND_BURST {
            assert_eq!(
                pacer.ready_at(later),
                later,
                "a minute refills the whole burst"
            );
            pacer.spend(later);
        }
        assert_eq!(
            pacer.ready_at(later),
            later + TOKEN_GAP,
            "but never more than the burst"
        );
    }
}
