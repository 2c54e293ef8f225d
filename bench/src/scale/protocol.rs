//! What a scale host and its parent say to each other ([`crate::child`] carries it): the
//! host's settings ([`HostArgs`]), the parent's orders ([`HostOrder`]; closing the host's
//! stdin stops it) and the host's reports ([`ReportLine`]).

use serde::{Deserialize, Serialize};

use crate::scale::plan::Case;

/// What a host needs to know: where the servers are, which host of the case it is, and the
/// case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostArgs {
    /// NATS URL.
    pub nats: String,
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// Index of this host (0-based): it runs fleet instances `host * per_host ..`.
    pub host: usize,
    /// The case.
    pub case: Case,
}

impl HostArgs {
    /// Checks what the parent sent: the host is one of the case's.
    ///
    /// # Errors
    ///
    /// When `host` is not below the case's number of hosts.
    pub fn check(&self) -> Result<(), String> {
        if self.host >= self.case.hosts {
            return Err(format!(
                "host {} is not below {}",
                self.host, self.case.hosts
            ));
        }
        Ok(())
    }

    /// The fleet instances this host runs.
    pub fn instances(&self) -> std::ops::Range<usize> {
        let first = self.host * self.case.per_host;
        first..first + self.case.per_host
    }
}

/// What the parent asks a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostOrder {
    /// Report the counters now.
    Stats,
}

/// The host's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStats {
    /// Tokens its announcers handed to NATS, summed.
    pub tokens: u64,
    /// Keep-alives etcd answered: the session's, or the announcers' summed.
    pub keep_alives: u64,
    /// Key watches open on the session's shared stream (0 without a session).
    pub key_watches: u64,
    /// Times the session's watch stream was opened (0 without a session).
    pub watch_streams: u64,
    /// Tokens that could not be published, summed.
    pub publish_errors: u64,
    /// Leases lost (the session's, or the announcers' summed).
    pub lease_losses: u64,
}

/// One line of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportLine {
    /// Every announcer started.
    Ready {
        /// Announcers started.
        started: usize,
        /// Time from the first start to the last, milliseconds.
        millis: u64,
        /// The process's RSS before any announcer started, bytes.
        base_rss: u64,
    },
    /// The answer to [`HostOrder::Stats`].
    Stats(HostStats),
    /// Every announcer shut down and the session closed.
    Stopped {
        /// Time the shutdown took, milliseconds.
        millis: u64,
        /// Announcers whose shutdown (or the session's close) reported an error.
        errors: usize,
    },
    /// The host cannot go on.
    Failed(String),
}
