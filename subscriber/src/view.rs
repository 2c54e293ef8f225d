//! What readers see: one immutable snapshot per service, swapped atomically.
//!
//! The store (one task) rebuilds a service's snapshot only when its membership or an
//! instance's state changes, then publishes it through an `ArcSwap` (for `instances` and
//! `pick`: lock-free, no walk of other services) and a `watch` channel (for `watch` and
//! `pick_wait`). The registry of services is itself an `ArcSwap`'d map that changes only when
//! a service is seen for the first time.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Instance;
use crate::instance::Entry;

/// The subscriber's clock: deadlines are milliseconds since `origin`. While `preserving`
/// (our own NATS link is down) nothing counts as expired.
///
/// It reads tokio's clock, the same as the sweep timer's: in production that is the system's
/// monotonic clock, and in a test with paused time the store's deadlines, the sweep and the
/// test's own sleeps all follow one virtual timeline.
#[derive(Debug)]
pub(crate) struct Clock {
    origin: Instant,
    pub(crate) preserving: AtomicBool,
    /// Tests and benchmarks drive time by hand: `now_ms` is this, not the time since `origin`.
    #[cfg(any(test, feature = "internals"))]
    manual: Option<std::sync::atomic::AtomicU64>,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            origin: Instant::now(),
            preserving: AtomicBool::new(false),
            #[cfg(any(test, feature = "internals"))]
            manual: None,
        }
    }

    /// A clock that stands still at 0 until [`Clock::advance`] moves it.
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn manual() -> Self {
        Clock {
            manual: Some(std::sync::atomic::AtomicU64::new(0)),
            ..Clock::new()
        }
    }

    /// Moves a manual clock forward.
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn advance(&self, ms: u64) {
        self.manual
            .as_ref()
            .expect("only a manual clock is advanced")
            .fetch_add(ms, Relaxed);
    }

    pub(crate) fn now_ms(&self) -> u64 {
        #[cfg(any(test, feature = "internals"))]
        if let Some(ms) = &self.manual {
            return ms.load(Relaxed);
        }
        Instant::now()
            .saturating_duration_since(self.origin)
            .as_millis() as u64
    }

    pub(crate) fn is_live(&self, e: &Entry, now_ms: u64) -> bool {
        crate::merge::live_at(
            e.deadline.load(Relaxed),
            now_ms,
            self.preserving.load(Relaxed),
        )
    }
}

/// The live instances of one service at one moment.
///
/// Cheap to clone. Iteration skips instances whose TTL has passed but that the store has not
/// swept yet, so a snapshot never lists an expired instance.
#[derive(Clone)]
pub struct ServiceSnapshot(pub(crate) Arc<Snapshot>);

/// The instances of one zone (`None`: no zone announced) in a snapshot.
pub(crate) type ZoneRange = (Option<Arc<str>>, Range<usize>);

#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) instances: Box<[Instance]>,
    /// Contiguous ranges of `instances` per zone (`instances` is sorted by zone, then id).
    pub(crate) zones: Box<[ZoneRange]>,
    /// `cum_weight[i]` is the sum of the weights of `instances[..i]`.
    pub(crate) cum_weight: Box<[u64]>,
    pub(crate) clock: Arc<Clock>,
}

impl Snapshot {
    pub(crate) fn build(mut instances: Vec<Instance>, clock: Arc<Clock>) -> Snapshot {
        instances.sort_by(|a, b| (a.zone(), a.id()).cmp(&(b.zone(), b.id())));
        Snapshot::from_sorted(instances, clock)
    }

    /// A snapshot of instances already sorted by zone, then id.
    pub(crate) fn from_sorted(instances: Vec<Instance>, clock: Arc<Clock>) -> Snapshot {
        debug_assert!(
            instances
                .windows(2)
                .all(|w| (w[0].zone(), w[0].id()) < (w[1].zone(), w[1].id())),
            "snapshot instances must be sorted by zone, then id, without duplicates"
        );
        let mut zones: Vec<ZoneRange> = Vec::new();
        for (i, inst) in instances.iter().enumerate() {
            match zones.last_mut() {
                Some((z, r)) if z.as_deref() == inst.zone() => r.end = i + 1,
                _ => zones.push((inst.0.zone.clone(), i..i + 1)),
            }
        }
        let mut cum_weight = Vec::with_capacity(instances.len() + 1);
        let mut sum = 0u64;
        cum_weight.push(0);
        for inst in &instances {
            sum += u64::from(inst.weight());
            cum_weight.push(sum);
        }
        Snapshot {
            instances: instances.into_boxed_slice(),
            zones: zones.into_boxed_slice(),
            cum_weight: cum_weight.into_boxed_slice(),
            clock,
        }
    }

    pub(crate) fn zone_range(&self, zone: &str) -> Option<Range<usize>> {
        self.zones
            .iter()
            .find(|(z, _)| z.as_deref() == Some(zone))
            .map(|(_, r)| r.clone())
    }
}

impl ServiceSnapshot {
    /// The live instances, sorted by zone and id.
    pub fn iter(&self) -> impl Iterator<Item = &Instance> {
        let now = self.0.clock.now_ms();
        self.0
            .instances
            .iter()
            .filter(move |i| self.0.clock.is_live(&i.0, now))
    }

    /// Number of live instances.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether no instance is live.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The live instance with this id.
    pub fn get(&self, id: &str) -> Option<&Instance> {
        self.iter().find(|i| i.id() == id)
    }

    /// The live instances as a vector.
    pub fn to_vec(&self) -> Vec<Instance> {
        self.iter().cloned().collect()
    }

    /// Ids of the live instances.
    pub fn ids(&self) -> Vec<String> {
        self.iter().map(|i| i.id().to_owned()).collect()
    }
}

impl std::fmt::Debug for ServiceSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Everything readers share about one service.
#[derive(Debug)]
pub(crate) struct ServiceView {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) tx: watch::Sender<ServiceSnapshot>,
    pub(crate) round_robin: AtomicUsize,
}

impl ServiceView {
    fn new(clock: Arc<Clock>) -> Self {
        let empty = Arc::new(Snapshot::build(Vec::new(), clock));
        ServiceView {
            snapshot: ArcSwap::new(empty.clone()),
            tx: watch::Sender::new(ServiceSnapshot(empty)),
            round_robin: AtomicUsize::new(0),
        }
    }

    pub(crate) fn publish(&self, snapshot: Arc<Snapshot>) {
        self.snapshot.store(snapshot.clone());
        self.tx.send_replace(ServiceSnapshot(snapshot));
    }
}

/// The registry of per-service views.
#[derive(Debug)]
pub(crate) struct Views {
    services: ArcSwap<HashMap<Arc<str>, Arc<ServiceView>>>,
    pub(crate) clock: Arc<Clock>,
}

impl Views {
    pub(crate) fn new(clock: Arc<Clock>) -> Self {
        Views {
            services: ArcSwap::from_pointee(HashMap::new()),
            clock,
        }
    }

    /// The view of `service`, if it was ever seen or asked for. Lock-free.
    pub(crate) fn get(&self, service: &str) -> Option<Arc<ServiceView>> {
        self.services.load().get(service).cloned()
    }

    /// Reads `service`'s current snapshot without cloning the view. Lock-free.
    pub(crate) fn with_snapshot<R>(
        &self,
        service: &str,
        f: impl FnOnce(&Snapshot, &ServiceView) -> R,
    ) -> Option<R> {
        let services = self.services.load();
        let view = services.get(service)?;
        let snap = view.snapshot.load();
        Some(f(&snap, view))
    }

    /// The view of `service`, created when missing. Rare: copies the registry.
    pub(crate) fn get_or_create(&self, service: &str) -> Arc<ServiceView> {
        if let Some(v) = self.get(service) {
            return v;
        }
        let mut created = None;
        self.services.rcu(|current| {
            let mut next = HashMap::clone(current);
            let view = next
                .entry(Arc::from(service))
                .or_insert_with(|| Arc::new(ServiceView::new(self.clock.clone())))
                .clone();
            created = Some(view);
            next
        });
        created.expect("rcu ran at least once")
    }

    /// Names of the services seen so far.
    pub(crate) fn names(&self) -> Vec<Arc<str>> {
        self.services.load().keys().cloned().collect()
    }

    /// Waits up to `timeout` for `found` to give something, asking it again each time
    /// `service`'s snapshot changes; `None` when the time ran out.
    pub(crate) async fn wait_for<T>(
        &self,
        service: &str,
        timeout: Duration,
        mut found: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        if let Some(t) = found() {
            return Some(t);
        }
        // Subscribed before asking again: a change between the two wakes the loop.
        let mut rx = self.get_or_create(service).tx.subscribe();
        let wait = async {
            loop {
                if let Some(t) = found() {
                    return Some(t);
                }
                rx.changed().await.ok()?;
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// A waiter parked on a service wakes on the snapshot change itself, not on a timer.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_when_the_snapshot_changes_and_times_out_at_its_deadline() {
        let views = Arc::new(Views::new(Arc::new(Clock::new())));
        let ready = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (views, ready) = (views.clone(), ready.clone());
            tokio::spawn(async move {
                let found = views
                    .wait_for("svc", Duration::from_secs(10), || {
                        ready.load(Relaxed).then_some("found")
                    })
                    .await;
                (found, Instant::now())
            })
        };
        let view = views.get_or_create("svc");
        while view.tx.receiver_count() == 0 {
            tokio::task::yield_now().await;
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        ready.store(true, Relaxed);
        let changed = Instant::now();
        view.publish(Arc::new(Snapshot::build(Vec::new(), views.clock.clone())));
        let (found, woke) = waiter.await.unwrap();
        assert_eq!(found, Some("found"));
        assert_eq!(woke, changed, "woken by the change, with no time passing");

        let started = Instant::now();
        let none = views
            .wait_for("svc", Duration::from_secs(10), || None::<()>)
            .await;
        assert_eq!(none, None);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(10),
            "gives up at its timeout"
        );
    }

    /// The clock reads tokio's time: a test that pauses it drives every deadline.
    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_paused_time() {
        let clock = Clock::new();
        let start = clock.now_ms();
        tokio::time::advance(Duration::from_millis(199)).await;
        assert_eq!(clock.now_ms() - start, 199);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(clock.now_ms() - start, 200);
    }
}
