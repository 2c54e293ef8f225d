//! Counters of the xDS server a user can read: connected clients, responses and NACKs per
//! resource type, instances left out.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::types::{TYPES, Type};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) clients: AtomicI64,
    pub(crate) streams: AtomicU64,
    pub(crate) responses: [AtomicU64; 3],
    pub(crate) nacks: [AtomicU64; 3],
    pub(crate) not_ip: AtomicU64,
    pub(crate) not_followed: AtomicU64,
    pub(crate) push: PushCounters,
}

/// Upper bounds (inclusive, microseconds) of the push-latency buckets; a last bucket takes
/// everything slower.
pub const PUSH_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// How long from a change of the view being told to the hub to the response that carries it
/// leaving for a client that held the previous content.
#[derive(Debug, Default)]
pub(crate) struct PushCounters {
    counts: [AtomicU64; PUSH_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl PushCounters {
    pub(crate) fn record(&self, d: Duration) {
        let us = d.as_micros() as u64;
        let i = PUSH_BUCKETS_US.partition_point(|b| *b < us);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }
}

/// Push latencies per bucket of [`PUSH_BUCKETS_US`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushLatency {
    /// One count per bucket, plus a last one for slower pushes.
    pub counts: Vec<u64>,
    /// Sum of every sample, in microseconds.
    pub sum_us: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> XdsStats {
        let per_type =
            |a: &[AtomicU64; 3]| TYPES.map(|t| (t, a[t as usize].load(Relaxed))).to_vec();
        XdsStats {
            clients: self.clients.load(Relaxed).max(0) as u64,
            streams: self.streams.load(Relaxed),
            responses: per_type(&self.responses),
            nacks: per_type(&self.nacks),
            not_ip: self.not_ip.load(Relaxed),
            not_followed: self.not_followed.load(Relaxed),
            push: PushLatency {
                counts: self.push.counts.iter().map(|a| a.load(Relaxed)).collect(),
                sum_us: self.push.sum_us.load(Relaxed),
            },
        }
    }
}

/// A copy of the xDS server's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct XdsStats {
    /// ADS streams open now.
    pub clients: u64,
    /// ADS streams ever opened.
    pub streams: u64,
    /// Responses sent, per resource type.
    pub responses: Vec<(Type, u64)>,
    /// Responses a client refused (NACKs), per resource type.
    pub nacks: Vec<(Type, u64)>,
    /// Times an instance was left out of an assignment because its address is not an IP
    /// literal and port.
    pub not_ip: u64,
    /// Assignments asked for a service the subscriber does not follow (answered empty).
    pub not_followed: u64,
    /// From a change of the view to the response that carries it, per client it reached.
    pub push: PushLatency,
}

impl XdsStats {
    /// Responses of type `t`.
    pub fn responses_of(&self, t: Type) -> u64 {
        self.responses
            .iter()
            .find(|(x, _)| *x == t)
            .map_or(0, |(_, n)| *n)
    }

    /// NACKs of type `t`.
    pub fn nacks_of(&self, t: Type) -> u64 {
        self.nacks
            .iter()
            .find(|(x, _)| *x == t)
            .map_or(0, |(_, n)| *n)
    }
}
