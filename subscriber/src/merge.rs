//! The merge rules of DESIGN.md, written once.
//!
//! Every source (NATS tokens now, etcd sync later) asks [`merge`] what a token means for
//! what is already known about its instance; the store then carries the verdict out. The
//! function is pure so that the rules can be tested exhaustively without a network.

use herald_shared::{State, TokenRef};

/// What the subscriber knows of one instance key: the live entry's or a tombstone's
/// `(epoch, seq)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Known {
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
}

/// Why a well-formed token was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its epoch is lower than the known one: an older incarnation.
    StaleEpoch,
    /// Same epoch, `seq` not newer: a duplicate or a reordered token.
    Duplicate,
    /// A `leaving` token for an instance that is not listed (already gone or never seen).
    GoodbyeUnknown,
    /// An unregistered (epoch 0) token while the subscriber requires registration.
    Unregistered,
}

/// What to do with a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Accept: add the instance or update it.
    Upsert,
    /// Accept a graceful goodbye: remove the live instance now.
    Goodbye,
    /// Ignore the token, counting the reason.
    Drop(DropReason),
}

/// The verdict for token `t` given the live entry (`live`) or, when there is none, the
/// tombstone of a recent removal (`tombstone`).
pub(crate) fn merge(live: Option<Known>, tombstone: Option<Known>, t: &TokenRef<'_>) -> Verdict {
    if let Some(known) = live.or(tombstone) {
        if t.epoch < known.epoch {
            return Verdict::Drop(DropReason::StaleEpoch);
        }
        if t.epoch == known.epoch && t.seq <= known.seq {
            return Verdict::Drop(DropReason::Duplicate);
        }
    }
    match (t.state, live) {
        (State::Leaving, Some(_)) => Verdict::Goodbye,
        (State::Leaving, None) => Verdict::Drop(DropReason::GoodbyeUnknown),
        _ => Verdict::Upsert,
    }
}

/// Tokens lost between two accepted `seq` values of one run; a jump larger than
/// [`NEW_RUN_JUMP`] is a new run, not loss.
pub(crate) fn lost_between(previous: u64, next: u64) -> u64 {
    match next.checked_sub(previous) {
        Some(d) if (2..=NEW_RUN_JUMP + 1).contains(&d) => d - 1,
        _ => 0,
    }
}

/// A `seq` jump above this is taken as a restart of the instance rather than lost tokens.
pub(crate) const NEW_RUN_JUMP: u64 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use herald_shared::Token;

    fn token(epoch: u64, seq: u64, state: State) -> Token {
        let mut t = Token::new("s", "i", "h:1");
        t.epoch = epoch;
        t.seq = seq;
        t.state = state;
        t
    }

    fn verdict(live: Option<(u64, u64)>, tomb: Option<(u64, u64)>, t: Token) -> Verdict {
        let k = |(epoch, seq)| Known { epoch, seq };
        merge(live.map(k), tomb.map(k), &t.as_ref())
    }

    #[test]
    fn unknown_instances_are_added() {
        assert_eq!(verdict(None, None, token(0, 5, State::Up)), Verdict::Upsert);
        assert_eq!(
            verdict(None, None, token(0, 5, State::Draining)),
            Verdict::Upsert
        );
    }

    #[test]
    fn lower_epoch_is_stale_whatever_its_seq() {
        assert_eq!(
            verdict(Some((7, 10)), None, token(6, 99, State::Up)),
            Verdict::Drop(DropReason::StaleEpoch)
        );
        assert_eq!(
            verdict(Some((7, 10)), None, token(6, 99, State::Leaving)),
            Verdict::Drop(DropReason::StaleEpoch),
            "an old incarnation's goodbye must not remove the new one"
        );
    }

    #[test]
    fn same_epoch_needs_a_newer_seq() {
        assert_eq!(
            verdict(Some((7, 10)), None, token(7, 10, State::Up)),
            Verdict::Drop(DropReason::Duplicate)
        );
        assert_eq!(
            verdict(Some((7, 10)), None, token(7, 9, State::Up)),
            Verdict::Drop(DropReason::Duplicate)
        );
        assert_eq!(
            verdict(Some((7, 10)), None, token(7, 11, State::Up)),
            Verdict::Upsert
        );
    }

    #[test]
    fn higher_epoch_wins_even_with_a_lower_seq() {
        assert_eq!(
            verdict(Some((7, 10)), None, token(8, 1, State::Up)),
            Verdict::Upsert
        );
    }

    #[test]
    fn goodbye_removes_only_a_live_instance() {
        assert_eq!(
            verdict(Some((0, 10)), None, token(0, 11, State::Leaving)),
            Verdict::Goodbye
        );
        assert_eq!(
            verdict(None, None, token(0, 11, State::Leaving)),
            Verdict::Drop(DropReason::GoodbyeUnknown)
        );
    }

    #[test]
    fn tombstones_stop_late_tokens_of_a_departed_run() {
        assert_eq!(
            verdict(None, Some((0, 20)), token(0, 19, State::Up)),
            Verdict::Drop(DropReason::Duplicate),
            "a token sent before the goodbye must not resurrect the instance"
        );
        assert_eq!(
            verdict(None, Some((0, 20)), token(0, 5_000_000, State::Up)),
            Verdict::Upsert,
            "a restarted run has a larger seq and comes back"
        );
    }

    #[test]
    fn loss_is_counted_from_gaps_within_a_run() {
        assert_eq!(lost_between(10, 11), 0);
        assert_eq!(lost_between(10, 14), 3);
        assert_eq!(lost_between(10, 10 + NEW_RUN_JUMP + 1), NEW_RUN_JUMP);
        assert_eq!(
            lost_between(10, 10 + NEW_RUN_JUMP + 2),
            0,
            "a new run is not loss"
        );
        assert_eq!(lost_between(10, 9), 0);
    }
}
