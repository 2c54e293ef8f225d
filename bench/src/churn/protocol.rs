//! What the harness and the fleet process say to each other ([`crate::child`] carries it):
//! the fleet's settings ([`FleetArgs`]), an [`Order`] per line on its stdin, an [`Answer`]
//! per line on its stdout.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the harness asks the fleet, one per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Order {
    /// Start an announcer of this id (`start()`).
    Join(String),
    /// Drop its handle: no goodbye, no revoke.
    Crash(String),
    /// `shutdown()`: a goodbye, then the lease revoked.
    Leave(String),
    /// `set_load`.
    Load(String, f32),
}

/// What the fleet answers, one per order, once the order is carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// `start()` returned with this epoch.
    Joined(String, u64),
    /// `start()` failed.
    Failed(String, String),
    /// The handle is dropped and its broadcast task has ended: nothing more goes out.
    Crashed(String),
    /// `shutdown()` returned, with its error if any.
    Left(String, Option<String>),
    /// The load is set.
    Loaded(String),
}

/// Where the fleet's announcers connect, and how they announce: the fleet's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetArgs {
    /// NATS URL.
    pub nats: String,
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// Subject and key prefix.
    pub prefix: String,
    /// Broadcast interval.
    pub interval: Duration,
    /// Token TTL.
    pub ttl: Duration,
    /// Lease TTL.
    pub lease_ttl: Duration,
}
