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
    /// Of `tokens_sent`, the compact ones: heartbeats (see `full_token_every`).
    pub heartbeats_sent: u64,
    /// Tokens sent to answer probes (one per coalesced burst).
    pub probe_answers: u64,
    /// Tokens sent early because the load moved by more than the delta.
    pub early_tokens: u64,
    /// Tokens that could not be encoded or handed to NATS.
    pub publish_errors: u64,
    /// NATS reconnects seen, each followed by a republish.
    pub reconnects: u64,
    /// Registrations written in etcd: the one of `start()`, and each after a lost lease.
    pub registrations: u64,
    /// Lease keep-alives etcd answered with the lease alive.
    pub keep_alives: u64,
    /// Keep-alives that got no answer (etcd unreachable, stream broken, timed out).
    pub keep_alive_failures: u64,
    /// Leases found gone (expired, revoked, or unknown to the cluster that answers), each
    /// followed by a new registration.
    pub lease_losses: u64,
    /// Times another process was heard announcing this instance id (checked once at start,
    /// without etcd; see the warning it logs).
    pub namesakes_heard: u64,
    /// Registrations of `start()` that took the key over from a holder that sent no token
    /// within its TTL when probed (a crashed predecessor whose lease had not expired yet).
    pub silent_holders_replaced: u64,
    /// Refusals the NATS server reported on the announcer's own connection since `start()`
    /// (a permission the user lacks, such as publishing the tokens): the announcer warns of
    /// the first only, so a count above zero is the announcer's error state. Not counted on a
    /// shared [`Connection`](crate::Connection), whose events belong to whoever built it.
    pub permission_violations: u64,
}

/// The live counters, shared by the broadcast task (writer) and the handle (reader).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) tokens_sent: AtomicU64,
    pub(crate) heartbeats_sent: AtomicU64,
    pub(crate) probe_answers: AtomicU64,
    pub(crate) early_tokens: AtomicU64,
    pub(crate) publish_errors: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) registrations: AtomicU64,
    pub(crate) keep_alives: AtomicU64,
    pub(crate) keep_alive_failures: AtomicU64,
    pub(crate) lease_losses: AtomicU64,
    pub(crate) namesakes_heard: AtomicU64,
    pub(crate) silent_holders_replaced: AtomicU64,
    pub(crate) permission_violations: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            tokens_sent: self.tokens_sent.load(Ordering::Relaxed),
            heartbeats_sent: self.heartbeats_sent.load(Ordering::Relaxed),
            probe_answers: self.probe_answers.load(Ordering::Relaxed),
            early_tokens: self.early_tokens.load(Ordering::Relaxed),
            publish_errors: self.publish_errors.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            registrations: self.registrations.load(Ordering::Relaxed),
            keep_alives: self.keep_alives.load(Ordering::Relaxed),
            keep_alive_failures: self.keep_alive_failures.load(Ordering::Relaxed),
            lease_losses: self.lease_losses.load(Ordering::Relaxed),
            namesakes_heard: self.namesakes_heard.load(Ordering::Relaxed),
            silent_holders_replaced: self.silent_holders_replaced.load(Ordering::Relaxed),
            permission_violations: self.permission_violations.load(Ordering::Relaxed),
        }
    }
}
