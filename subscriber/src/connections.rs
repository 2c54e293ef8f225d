//! The state of the subscriber's own links: NATS, and the etcd watch when etcd is the
//! authority. The ingest task reports the NATS state on every tick, each etcd watch task its
//! own watch; readers get a copy with [`Subscriber::connections`](crate::Subscriber::connections).

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

pub use herald_shared::CONNECTION_LOG;

/// Whether one link is up, and since when.
///
/// ```
/// use herald_subscriber::ConnectionState;
///
/// let state = ConnectionState::new(false);
/// assert!(!state.is_up());
/// assert!(state.elapsed() < std::time::Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionState {
    up: bool,
    /// Wall clock of the last change, for people and logs.
    since: SystemTime,
    /// Monotonic clock of the last change, for durations (immune to clock steps).
    since_instant: Instant,
}

impl ConnectionState {
    /// A link that went up (or down) now.
    pub fn new(up: bool) -> Self {
        ConnectionState {
            up,
            since: SystemTime::now(),
            since_instant: Instant::now(),
        }
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// When the link last went up or down (wall clock).
    pub fn since(&self) -> SystemTime {
        self.since
    }

    /// How long the link has been in its current state (monotonic clock).
    pub fn elapsed(&self) -> Duration {
        self.since_instant.elapsed()
    }
}

/// The subscriber's links at one moment.
///
/// ```no_run
/// # fn f(subscriber: &herald_subscriber::Subscriber) {
/// let links = subscriber.connections();
/// if !links.nats.is_up() {
///     println!("nats down for {:?}: serving the last known view", links.nats.elapsed());
/// }
/// if links.etcd.is_some_and(|etcd| !etcd.is_up()) {
///     println!("etcd watch lost: deletions wait until it resumes");
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Connections {
    /// The NATS connection. While it is down nothing expires (self-preservation).
    pub nats: ConnectionState,
    /// The etcd watch (every followed scope's); `None` without etcd. While it is down the
    /// NATS path still works, but registrations and deletions wait until it resumes.
    pub etcd: Option<ConnectionState>,
}

impl Connections {
    /// Whether every link is up.
    pub fn all_up(&self) -> bool {
        self.nats.is_up() && self.etcd.is_none_or(|e| e.is_up())
    }
}

/// What a state change reports to the caller that made it (who logs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// The link went down after being up this long.
    Lost,
    /// The link is back after being down this long.
    Back(Duration),
}

/// The shared record of both links. A mutex, not atomics: changes are rare and a reader
/// wants the state and its time together.
#[derive(Debug)]
pub(crate) struct Tracker {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    nats: ConnectionState,
    etcd: Option<EtcdState>,
}

/// etcd is up while every scope's watch is: one scope without its watch misses deletions.
#[derive(Debug)]
struct EtcdState {
    state: ConnectionState,
    watches_down: usize,
}

impl Tracker {
    /// Both links up now (the subscriber has just connected, listed and started watching).
    pub(crate) fn new(with_etcd: bool) -> Self {
        Tracker {
            inner: Mutex::new(Inner {
                nats: ConnectionState::new(true),
                etcd: with_etcd.then(|| EtcdState {
                    state: ConnectionState::new(true),
                    watches_down: 0,
                }),
            }),
        }
    }

    pub(crate) fn snapshot(&self) -> Connections {
        let inner = self.lock();
        Connections {
            nats: inner.nats,
            etcd: inner.etcd.as_ref().map(|e| e.state),
        }
    }

    /// Records the NATS state seen now; `Some` when it changed.
    pub(crate) fn nats(&self, up: bool) -> Option<Change> {
        let mut inner = self.lock();
        if inner.nats.up == up {
            return None;
        }
        let was = std::mem::replace(&mut inner.nats, ConnectionState::new(up));
        Some(change(up, &was))
    }

    /// Records that one scope's watch went down (`up == false`) or came back; the caller
    /// reports each of its own transitions once. `Some` when etcd as a whole changed.
    pub(crate) fn etcd_watch(&self, up: bool) -> Option<Change> {
        let mut inner = self.lock();
        let etcd = inner.etcd.as_mut()?;
        let was_up = etcd.watches_down == 0;
        if up {
            etcd.watches_down = etcd.watches_down.saturating_sub(1);
        } else {
            etcd.watches_down += 1;
        }
        let is_up = etcd.watches_down == 0;
        if was_up == is_up {
            return None;
        }
        let was = std::mem::replace(&mut etcd.state, ConnectionState::new(is_up));
        Some(change(is_up, &was))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The critical sections cannot panic halfway; a poisoned lock still holds a whole state.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn change(up: bool, was: &ConnectionState) -> Change {
    if up {
        Change::Back(was.elapsed())
    } else {
        Change::Lost
    }
}

/// Seconds with one decimal, as the logs print durations ("after 12.1 s").
pub(crate) fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_reports_each_change_once() {
        let t = Tracker::new(false);
        assert!(t.snapshot().all_up());
        assert_eq!(t.nats(true), None, "no change while up");
        assert_eq!(t.nats(false), Some(Change::Lost));
        assert_eq!(t.nats(false), None, "one report per loss");
        assert!(!t.snapshot().all_up());
        assert!(matches!(t.nats(true), Some(Change::Back(_))));
        assert!(t.snapshot().nats.is_up());
        assert_eq!(t.snapshot().etcd, None, "no etcd configured");
    }

    #[test]
    fn etcd_is_down_while_any_scope_watch_is() {
        let t = Tracker::new(true);
        assert_eq!(t.etcd_watch(false), Some(Change::Lost));
        assert_eq!(
            t.etcd_watch(false),
            None,
            "a second scope lost changes nothing"
        );
        assert_eq!(t.etcd_watch(true), None, "one scope still down");
        assert!(!t.snapshot().etcd.unwrap().is_up());
        assert!(matches!(t.etcd_watch(true), Some(Change::Back(_))));
        assert!(t.snapshot().all_up());
    }

    #[test]
    fn without_etcd_watch_reports_are_ignored() {
        let t = Tracker::new(false);
        assert_eq!(t.etcd_watch(false), None);
        assert!(t.snapshot().all_up());
    }

    #[test]
    fn durations_print_with_one_decimal() {
        assert_eq!(seconds(Duration::from_millis(12_140)), "12.1 s");
    }
}
