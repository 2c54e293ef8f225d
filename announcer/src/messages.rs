//! The messages exchanged between the announcer's parts, in one leaf module that every side
//! imports: the metadata `set_meta` stages ([`StagedMeta`]), the registration's standing that
//! the scheduler and the handle read ([`Standing`]), and what a session and its announcers
//! tell each other ([`SessionLease`], [`SessionRequest`]).

use std::collections::BTreeMap;

use tokio::sync::oneshot;

use crate::error::Error;
use crate::status::Stopped;

/// Metadata set through `set_meta`, numbered in the order of the calls. It goes out in tokens
/// only once the registration holds it (a subscriber with etcd drops a token whose identity
/// differs from the registration's), so both sides keep the highest number they were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StagedMeta {
    pub(crate) version: u64,
    pub(crate) meta: BTreeMap<String, String>,
}

/// The registration's view, shared through a watch channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Standing {
    /// The epoch tokens carry (0: not registered).
    pub(crate) epoch: u64,
    /// etcd ended this incarnation: no token may go out any more, not even a goodbye.
    pub(crate) halted: bool,
    /// Set once the announcer has stopped for this reason: the broadcast task has ended and
    /// the registration revoked its lease (or gave up trying).
    pub(crate) stopped: Option<Stopped>,
    /// The [`StagedMeta::version`] the registration holds (0: the metadata the announcer
    /// started with): tokens may carry that metadata from this epoch on.
    pub(crate) meta_version: u64,
}

impl Standing {
    /// Registered (or not, with epoch 0) and announcing.
    pub(crate) fn announcing(epoch: u64) -> Self {
        Standing {
            epoch,
            halted: false,
            stopped: None,
            meta_version: 0,
        }
    }
}

/// The session's lease as its announcers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionLease {
    /// This lease is alive: register under it.
    Live(i64),
    /// The lease was found gone; a new one is being granted.
    Renewing,
    /// `Session::close` revoked the lease: no registration may be written any more.
    Closed,
}

/// What the session's task is asked to do.
#[derive(Debug)]
pub(crate) enum SessionRequest {
    /// An announcer found this lease gone: check it now rather than at the next keep-alive.
    Lost(i64),
    /// Revoke the lease and stop.
    Close(oneshot::Sender<Result<(), Error>>),
}
