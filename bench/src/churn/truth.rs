//! The ground truth about one instance ([`Incarnation`]): when it was started, how its life
//! ended ([`Kind`], [`Ending`]), when it last spoke, and what the event stream said of it;
//! and the kinds of violation the event stream can show ([`Violation`]).

use std::time::Instant;

use herald_subscriber::RemovalCause;

/// How an instance's life ended, or is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Crash,
    Leave,
}

#[derive(Debug)]
pub(super) struct Ending {
    pub(super) kind: Kind,
    /// When the order went out (the `shutdown()` call, or the start of the crash).
    pub(super) ordered: Instant,
    /// When the fleet confirmed it: from then on nothing is sent any more.
    pub(super) done: Option<Instant>,
}

/// One instance (ids are never reused): the truth about it, and what the events said.
#[derive(Debug)]
pub(super) struct Incarnation {
    pub(super) join_sent: Instant,
    pub(super) joined: Option<Instant>,
    pub(super) failed: bool,
    pub(super) end: Option<Ending>,
    /// Last `up`/`draining` token seen by the observer.
    pub(super) last_token: Option<Instant>,
    pub(super) tokens_after_death: u64,
    /// Listed according to the event stream.
    pub(super) listed: bool,
    pub(super) added: Option<Instant>,
    pub(super) removed: Option<(Instant, RemovalCause)>,
    /// (epoch, seq) of the last event.
    pub(super) version: (u64, u64),
    /// Its last removal was an expiry after its own silence outlasted its TTL: it may come
    /// back when its tokens do.
    pub(super) starved: bool,
}

impl Incarnation {
    pub(super) fn alive(&self) -> bool {
        self.joined.is_some() && self.end.is_none()
    }

    /// Since when it is certainly dead: the confirmed end, or the failed start.
    pub(super) fn dead_since(&self) -> Option<Instant> {
        if self.failed {
            return Some(self.join_sent);
        }
        self.end.as_ref().and_then(|e| e.done)
    }
}

/// Kinds of violation found in the event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Violation {
    /// `Added` while already listed.
    DuplicateAdded,
    /// `Added` again after a `Removed` (ids are never reused).
    Readded,
    /// `Removed` while not listed.
    RemovedUnlisted,
    /// `Updated` while not listed.
    UpdatedUnlisted,
    /// (epoch, seq) went back.
    OutOfOrder,
    /// An event for an id nobody started.
    Unknown,
    /// The stream lagged: events were lost.
    Lagged,
    /// A crash removed by another cause than [`Settings::crash_cause`](super::settings::Settings::crash_cause), or any fencing.
    WrongCause,
    /// A joined instance never added.
    MissingAdded,
    /// A dead instance never removed.
    MissingRemoved,
}
