//! Counters of the xDS server a user can read: connected clients, responses and NACKs per
//! resource type, instances left out.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::types::{TYPES, Type};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) clients: AtomicI64,
    pub(crate) streams: AtomicU64,
    pub(crate) responses: [AtomicU64; 3],
    pub(crate) nacks: [AtomicU64; 3],
    pub(crate) not_ip: AtomicU64,
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
