//! [`Observer`]: what a consumer saw and when, by instance id, stamped with `Instant` on
//! arrival. Every system's consumer reports into one; the phases of a run wait on it and
//! read their latencies from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

/// The consumer's view over time. Cheap to clone; all clones share the record.
#[derive(Debug, Clone)]
pub struct Observer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<Seen>,
    /// Bumped on every change, so that waiters wake on events instead of polling.
    version: watch::Sender<u64>,
}

/// Everything seen so far.
#[derive(Debug, Default)]
pub struct Seen {
    records: HashMap<String, Record>,
    listed: usize,
    lagged: u64,
    counters: Vec<(&'static str, u64)>,
}

#[derive(Debug, Default)]
struct Record {
    added: Vec<Instant>,
    removed: Vec<(Instant, &'static str)>,
    listed: bool,
}

impl Seen {
    /// Instances listed now.
    pub fn listed(&self) -> usize {
        self.listed
    }

    /// Whether `id` is listed now.
    pub fn is_listed(&self, id: &str) -> bool {
        self.records.get(id).is_some_and(|r| r.listed)
    }

    /// When `id` was first added at or after `since`.
    pub fn added_since(&self, id: &str, since: Instant) -> Option<Instant> {
        let r = self.records.get(id)?;
        r.added.iter().copied().find(|t| *t >= since)
    }

    /// When and why `id` was first removed at or after `since`.
    pub fn removed_since(&self, id: &str, since: Instant) -> Option<(Instant, &'static str)> {
        let r = self.records.get(id)?;
        r.removed.iter().copied().find(|(t, _)| *t >= since)
    }

    /// Removals of `id` before `until` (`None`: ever): removals of an instance that was up.
    pub fn removals_before(&self, id: &str, until: Option<Instant>) -> usize {
        self.records.get(id).map_or(0, |r| {
            r.removed
                .iter()
                .filter(|(t, _)| until.is_none_or(|u| *t < u))
                .count()
        })
    }

    /// Events the consumer's stream dropped (Herald's `Lagged`); the figures are then
    /// incomplete.
    pub fn lagged(&self) -> u64 {
        self.lagged
    }

    /// The consumer's own counters, as it left them when it stopped (empty before, and for a
    /// consumer that keeps none).
    pub fn counters(&self) -> &[(&'static str, u64)] {
        &self.counters
    }
}

impl Default for Observer {
    fn default() -> Self {
        Observer::new()
    }
}

impl Observer {
    /// An empty record.
    pub fn new() -> Observer {
        Observer {
            inner: Arc::new(Inner {
                state: Mutex::new(Seen::default()),
                version: watch::channel(0).0,
            }),
        }
    }

    fn change(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.inner.state.lock().expect("observer lock"));
        self.inner.version.send_modify(|v| *v += 1);
    }

    /// The consumer lists `id` from now on (ignored while it is listed already).
    pub fn added(&self, id: &str) {
        let now = Instant::now();
        self.change(|s| {
            let r = s.records.entry(id.to_owned()).or_default();
            if !r.listed {
                r.listed = true;
                r.added.push(now);
                s.listed += 1;
            }
        });
    }

    /// The consumer dropped `id` now, for `cause` (ignored unless it is listed).
    pub fn removed(&self, id: &str, cause: &'static str) {
        let now = Instant::now();
        self.change(|s| {
            if let Some(r) = s.records.get_mut(id).filter(|r| r.listed) {
                r.listed = false;
                r.removed.push((now, cause));
                s.listed -= 1;
            }
        });
    }

    /// The consumer's event stream dropped `missed` events.
    pub fn lagged(&self, missed: u64) {
        self.change(|s| s.lagged += missed);
    }

    /// The consumer's own counters when it stopped (see [`Seen::counters`]).
    pub fn counters(&self, counters: Vec<(&'static str, u64)>) {
        self.change(|s| s.counters = counters);
    }

    /// Reads the record.
    pub fn read<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.inner.state.lock().expect("observer lock"))
    }

    /// Waits until `done` holds for the record, re-checking on every change; `false` when
    /// `deadline` came first.
    pub async fn wait_until(&self, deadline: Instant, done: impl Fn(&Seen) -> bool) -> bool {
        let mut version = self.inner.version.subscribe();
        loop {
            version.mark_unchanged();
            if self.read(&done) {
                return true;
            }
            let changed = tokio::time::timeout_at(deadline.into(), version.changed()).await;
            if changed.is_err() {
                return self.read(&done);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn records_and_wakes_waiters() {
        let o = Observer::new();
        let t0 = Instant::now();
        let waiter = {
            let o = o.clone();
            tokio::spawn(async move {
                o.wait_until(t0 + Duration::from_secs(5), |s| {
                    s.removed_since("a", t0).is_some()
                })
                .await
            })
        };
        o.added("a");
        o.added("a");
        assert_eq!(
            o.read(Seen::listed),
            1,
            "a second Added of a listed id is ignored"
        );
        o.removed("a", "expired");
        assert!(waiter.await.unwrap(), "the waiter wakes on the removal");
        assert_eq!(o.read(|s| s.removals_before("a", None)), 1);
        assert!(o.read(|s| s.added_since("a", t0)).is_some());
        let late = Instant::now() + Duration::from_secs(1);
        assert!(o.read(|s| s.added_since("a", late)).is_none());
    }
}
