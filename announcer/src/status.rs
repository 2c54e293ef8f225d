//! Why an announcer stopped on its own ([`Stopped`]), as its handle reports it.

use std::fmt;

/// Why an announcer stopped on its own, as [`AnnouncerHandle::stopped`] reports it.
///
/// [`AnnouncerHandle::stopped`]: crate::AnnouncerHandle::stopped
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stopped {
    /// Another incarnation registered the same instance id with a higher epoch (a takeover):
    /// the key is theirs now. No leaving token was sent, nothing of theirs was touched; the
    /// announcer revoked its own lease.
    Fenced {
        /// The epoch of the registration that replaced this one.
        by_epoch: u64,
    },
    /// An operator deleted the registration while its lease was alive: the instance is no
    /// longer wanted. The announcer revoked its lease and does not register again.
    Deregistered,
    /// The handle was shut down or dropped.
    Closed,
    /// The [`Session`](crate::Session) the announcer registered on was closed: its lease was
    /// revoked with every registration on it.
    SessionClosed,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stopped::Fenced { by_epoch } => {
                write!(f, "fenced by the registration of epoch {by_epoch}")
            }
            Stopped::Deregistered => f.write_str("deregistered"),
            Stopped::Closed => f.write_str("closed"),
            Stopped::SessionClosed => f.write_str("session closed"),
        }
    }
}
