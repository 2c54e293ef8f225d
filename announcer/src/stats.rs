//! Counters of what an announcer did, readable at any time through
//! [`AnnouncerHandle::stats`](crate::AnnouncerHandle::stats).

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of an announcer's counters, all since `start()`.
///
/// Each counter is read on its own: a snapshot taken while a token goes out may count it in
/// one field and not yet in another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Tokens handed to NATS, whatever the reason (the first, periodic, early, probe answers,
    /// reconnect, drain, metadata, leaving).
    pub tokens_sent: u64,
    /// Tokens sent to answer probes (one per coalesced burst).
    pub probe_answers: u64,
    /// Tokens sent early because the load moved by more than the delta.
    pub early_tokens: u64,
    /// Tokens that could not be encoded or handed to NATS.
    pub publish_errors: u64,
    /// NATS reconnects seen, each followed by a republish.
    pub reconnects: u64,
}

/// The live counters, shared by the broadcast task (writer) and the handle (reader).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) tokens_sent: AtomicU64,
    pub(crate) probe_answers: AtomicU64,
    pub(crate) early_tokens: AtomicU64,
    pub(crate) publish_errors: AtomicU64,
    pub(crate) reconnects: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            tokens_sent: self.tokens_sent.load(Ordering::Relaxed),
            probe_answers: self.probe_answers.load(Ordering::Relaxed),
            early_tokens: self.early_tokens.load(Ordering::Relaxed),
            publish_errors: self.publish_errors.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }
}
