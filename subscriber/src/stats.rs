//! Counters a user can read: what was accepted, what was dropped and why, what left the view
//! and why, how many tokens were lost, and how long announcements took to become visible.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use herald_shared::Reject;

use crate::event::RemovalCause;
use crate::merge::DropReason;

/// Upper bounds (inclusive, milliseconds) of the announce-to-visible latency buckets; a last
/// bucket takes everything slower.
pub const LATENCY_BUCKETS_MS: [u64; 12] = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 5_000];

/// Live counters, updated with relaxed atomics on the ingest path.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) instances: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) heartbeats: AtomicU64,
    pub(crate) heartbeats_unknown: AtomicU64,
    pub(crate) rejected: [AtomicU64; Reject::COUNT],
    pub(crate) stale_epoch: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) seq_jumps: AtomicU64,
    pub(crate) rebased: AtomicU64,
    pub(crate) refuted_goodbyes: AtomicU64,
    pub(crate) goodbye_unknown: AtomicU64,
    pub(crate) unregistered: AtomicU64,
    pub(crate) identity_mismatch: AtomicU64,
    pub(crate) held_now: AtomicU64,
    pub(crate) held: AtomicU64,
    pub(crate) registrations: AtomicU64,
    pub(crate) etcd_resyncs: AtomicU64,
    pub(crate) etcd_cluster_changes: AtomicU64,
    pub(crate) added: AtomicU64,
    pub(crate) updated: AtomicU64,
    pub(crate) removed: [AtomicU64; 5],
    pub(crate) tokens_lost: AtomicU64,
    pub(crate) two_runs: AtomicU64,
    pub(crate) slow_consumer_events: AtomicU64,
    pub(crate) probes_sent: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) disconnect_advisories: AtomicU64,
    pub(crate) connections_closed: AtomicU64,
    pub(crate) latency: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    /// Running sum of the latencies counted in `latency`, so that a mean (and Prometheus's
    /// `_sum`) can be derived.
    pub(crate) latency_sum_ms: AtomicU64,
    pub(crate) negative_latency: AtomicU64,
}

fn cause_index(c: RemovalCause) -> usize {
    match c {
        RemovalCause::Expired => 0,
        RemovalCause::Goodbye => 1,
        RemovalCause::Deregistered => 2,
        RemovalCause::Fenced => 3,
        RemovalCause::Disconnected => 4,
    }
}

impl Counters {
    pub(crate) fn reject(&self, r: Reject) {
        self.rejected[r.index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn dropped(&self, r: DropReason) {
        match r {
            DropReason::StaleEpoch => &self.stale_epoch,
            DropReason::Duplicate => &self.duplicates,
            DropReason::SeqJump => &self.seq_jumps,
            DropReason::GoodbyeUnknown => &self.goodbye_unknown,
            DropReason::Unregistered => &self.unregistered,
            DropReason::IdentityMismatch => &self.identity_mismatch,
        }
        .fetch_add(1, Relaxed);
    }

    pub(crate) fn removed(&self, c: RemovalCause) {
        self.removed[cause_index(c)].fetch_add(1, Relaxed);
    }

    /// Records announce-to-visible latency from the sender's `sent_at_ms` (clock skew
    /// included: this is informational and never used for expiry).
    pub(crate) fn latency(&self, sent_at_ms: u64, now_ms: u64) {
        if sent_at_ms == 0 {
            return;
        }
        let Some(ms) = now_ms.checked_sub(sent_at_ms) else {
            self.negative_latency.fetch_add(1, Relaxed);
            return;
        };
        let i = LATENCY_BUCKETS_MS.partition_point(|b| *b < ms);
        self.latency[i].fetch_add(1, Relaxed);
        self.latency_sum_ms.fetch_add(ms, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |a: &AtomicU64| a.load(Relaxed);
        Stats {
            instances: get(&self.instances),
            received: get(&self.received),
            accepted: get(&self.accepted),
            heartbeats: get(&self.heartbeats),
            heartbeats_unknown: get(&self.heartbeats_unknown),
            rejected: Reject::all()
                .map(|r| (r, get(&self.rejected[r.index()])))
                .collect(),
            stale_epoch_drops: get(&self.stale_epoch),
            duplicate_drops: get(&self.duplicates),
            seq_jump_drops: get(&self.seq_jumps),
            rebased: get(&self.rebased),
            refuted_goodbyes: get(&self.refuted_goodbyes),
            goodbye_unknown_drops: get(&self.goodbye_unknown),
            unregistered_drops: get(&self.unregistered),
            identity_mismatch_drops: get(&self.identity_mismatch),
            held_now: get(&self.held_now),
            held: get(&self.held),
            registrations: get(&self.registrations),
            etcd_resyncs: get(&self.etcd_resyncs),
            etcd_cluster_changes: get(&self.etcd_cluster_changes),
            added: get(&self.added),
            updated: get(&self.updated),
            expirations: get(&self.removed[0]),
            goodbyes: get(&self.removed[1]),
            deregistrations: get(&self.removed[2]),
            fenced: get(&self.removed[3]),
            disconnections: get(&self.removed[4]),
            tokens_lost: get(&self.tokens_lost),
            two_runs: get(&self.two_runs),
            slow_consumer_events: get(&self.slow_consumer_events),
            probes_sent: get(&self.probes_sent),
            reconnects: get(&self.reconnects),
            disconnect_advisories: get(&self.disconnect_advisories),
            connections_closed: get(&self.connections_closed),
            latency: LatencyHistogram {
                counts: self.latency.iter().map(get).collect(),
                sum_ms: get(&self.latency_sum_ms),
                negative: get(&self.negative_latency),
            },
        }
    }
}

/// A copy of the subscriber's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Instances currently listed.
    pub instances: u64,
    /// Messages received on announce subjects.
    pub received: u64,
    /// Tokens accepted (added, refreshed, updated, or goodbyes carried out), heartbeats
    /// included.
    pub accepted: u64,
    /// Of `accepted`, the heartbeats (compact tokens) that refreshed an instance.
    pub heartbeats: u64,
    /// Heartbeats of an instance not listed under their epoch: dropped, and the service
    /// probed so that its instances answer in full (paced as every probe is).
    pub heartbeats_unknown: u64,
    /// Payloads rejected, per reason.
    pub rejected: Vec<(Reject, u64)>,
    /// Tokens of an older incarnation (lower epoch), dropped.
    pub stale_epoch_drops: u64,
    /// Duplicate or reordered tokens (same epoch, `seq` not newer), dropped.
    pub duplicate_drops: u64,
    /// Tokens whose `seq` ran further ahead of the listed run than their sender could have
    /// sent since its last accepted token ([`herald_shared::pace`]), dropped: forgeries.
    pub seq_jump_drops: u64,
    /// Times a token outside the listed run was accepted because the entry had been quiet for
    /// half its TTL, re-basing its `seq`: after a forged `seq` within the bound (the real
    /// tokens take the entry back), or a restart under the same id without etcd.
    pub rebased: u64,
    /// Goodbyes of registered instances that their registration's deletion did not follow,
    /// shown false by a later token of the instance (forged goodbyes). The instance stays.
    pub refuted_goodbyes: u64,
    /// Goodbyes for instances not listed, dropped.
    pub goodbye_unknown_drops: u64,
    /// Tokens dropped as unregistered (registry mode): epoch 0 while unregistered instances
    /// are not allowed, a registered key's epoch-0 token, or an epoch etcd did not show
    /// within the hold bound.
    pub unregistered_drops: u64,
    /// Tokens whose address, zone, weight, metadata or TTL differ from their registration's
    /// (registry mode), dropped.
    pub identity_mismatch_drops: u64,
    /// Tokens held now while the registration they claim is awaited (registry mode).
    pub held_now: u64,
    /// Tokens ever held (registry mode): each arrived before etcd showed its registration;
    /// each was then applied or dropped.
    pub held: u64,
    /// etcd registrations applied (listing and watch).
    pub registrations: u64,
    /// Full etcd listings: the first of each followed scope at start, then one after a
    /// compaction or a cluster change.
    pub etcd_resyncs: u64,
    /// Times a different etcd cluster answered (epochs and tombstones were forgotten).
    pub etcd_cluster_changes: u64,
    /// Instances added.
    pub added: u64,
    /// Instances updated (load, state, or record).
    pub updated: u64,
    /// Instances removed because their TTL passed.
    pub expirations: u64,
    /// Instances removed by a goodbye.
    pub goodbyes: u64,
    /// Instances removed because their registration was deleted.
    pub deregistrations: u64,
    /// Instances removed because a newer incarnation took over.
    pub fenced: u64,
    /// Instances removed because the connection that carried their latest token closed
    /// (with disconnect advisories).
    pub disconnections: u64,
    /// Tokens lost in transit, counted from `seq` gaps within a run.
    pub tokens_lost: u64,
    /// Times two runs were heard announcing the same instance id at once (tokens far behind
    /// or far ahead of the listed run, while it announces: a second process with the same
    /// id, or forged tokens; counted at most once a minute per instance). Without etcd
    /// nothing refuses the second process: the run listed first keeps its place while it
    /// announces, since a run far ahead may as well be forged.
    pub two_runs: u64,
    /// Times async-nats dropped messages for a full subscription buffer.
    pub slow_consumer_events: u64,
    /// Probes sent.
    pub probes_sent: u64,
    /// Reconnects to NATS seen.
    pub reconnects: u64,
    /// Disconnect advisories received (with
    /// [`disconnect_advisories`](crate::SubscriberBuilder::disconnect_advisories)), whatever
    /// their reason.
    pub disconnect_advisories: u64,
    /// Advisories that said a client's host closed the connection (a crash), which removed
    /// the instances whose latest token came over it (see `disconnections`).
    pub connections_closed: u64,
    /// Announce-to-visible latency (from the sender's clock).
    pub latency: LatencyHistogram,
}

impl Stats {
    /// Payloads rejected for `reason`.
    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejected
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// Payloads rejected for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }
}

/// Counts of announce-to-visible latency per bucket of [`LATENCY_BUCKETS_MS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// One count per bucket, plus a last one for slower tokens.
    pub counts: Vec<u64>,
    /// Sum of every sample, in milliseconds.
    pub sum_ms: u64,
    /// Tokens that seemed to arrive before they were sent (the sender's clock is ahead).
    pub negative: u64,
}

impl LatencyHistogram {
    /// Number of samples.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Upper bound in milliseconds of the bucket holding quantile `q` (0..=1), `None` when
    /// empty or beyond the last bound.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LATENCY_BUCKETS_MS.get(i).copied();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_its_bucket() {
        let c = Counters::default();
        c.latency(1_000, 1_000);
        c.latency(1_000, 1_003);
        c.latency(1_000, 1_003);
        c.latency(1_000, 999);
        c.latency(1_000, 100_000);
        let s = c.snapshot();
        assert_eq!(s.latency.counts[0], 1, "0 ms goes to the first bucket");
        assert_eq!(s.latency.counts[3], 2, "3 ms goes to the <=5 ms bucket");
        assert_eq!(*s.latency.counts.last().unwrap(), 1);
        assert_eq!(s.latency.negative, 1);
        assert_eq!(
            s.latency.sum_ms,
            3 + 3 + 99_000,
            "the sum counts every sample but the negative one"
        );
        assert_eq!(s.latency.quantile_ms(0.5), Some(5));
        assert_eq!(s.latency.quantile_ms(0.01), Some(0));
    }

    #[test]
    fn reject_counts_are_kept_per_reason() {
        let c = Counters::default();
        c.reject(Reject::Oversized);
        c.reject(Reject::Oversized);
        c.reject(Reject::Malformed);
        let s = c.snapshot();
        assert_eq!(s.rejected(Reject::Oversized), 2);
        assert_eq!(s.rejected(Reject::Malformed), 1);
        assert_eq!(s.rejected_total(), 3);
    }
}
