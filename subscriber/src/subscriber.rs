//! The subscriber handle: reads of the view, picks, waits, and streams.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::connections::{Connections, Tracker};
use crate::error::Error;
use crate::event::{Event, EventStream};
use crate::pick::{self, Strategy};
use crate::stats::{Counters, Stats};
use crate::view::{ServiceSnapshot, Snapshot, Views};
use crate::{Instance, SubscriberBuilder};

pub(crate) struct Shared {
    pub(crate) views: Arc<Views>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) zone: Option<String>,
    pub(crate) client: async_nats::Client,
    pub(crate) connections: Arc<Tracker>,
    /// The services followed; empty for every one.
    pub(crate) followed: Arc<[String]>,
}

thread_local! {
    /// Per-thread generator for picks: no lock, no allocation per pick.
    static RNG: RefCell<fastrand::Rng> = RefCell::new(fastrand::Rng::new());
}

/// A live view of announced instances.
///
/// Dropping it stops ingest. Reads (`instances`, `pick`) are lock-free and touch only the
/// service asked for.
pub struct Subscriber {
    shared: Shared,
    task: Option<JoinHandle<()>>,
    etcd_tasks: Vec<JoinHandle<()>>,
    cancel: CancellationToken,
    _stop_on_drop: DropGuard,
}

impl Subscriber {
    /// A builder.
    pub fn builder() -> SubscriberBuilder {
        SubscriberBuilder::default()
    }

    pub(crate) fn new(
        shared: Shared,
        cancel: CancellationToken,
        task: JoinHandle<()>,
        etcd_tasks: Vec<JoinHandle<()>>,
    ) -> Self {
        Subscriber {
            shared,
            task: Some(task),
            etcd_tasks,
            _stop_on_drop: cancel.clone().drop_guard(),
            cancel,
        }
    }

    /// The live instances of `service` (empty when none).
    ///
    /// ```no_run
    /// # fn f(subscriber: &herald_subscriber::Subscriber) {
    /// for instance in subscriber.instances("billing").iter() {
    ///     println!("{} at {} load {}", instance.id(), instance.addr(), instance.load());
    /// }
    /// # }
    /// ```
    pub fn instances(&self, service: &str) -> ServiceSnapshot {
        match self.shared.views.get(service) {
            Some(view) => ServiceSnapshot(view.snapshot.load_full()),
            None => ServiceSnapshot(Arc::new(Snapshot::build(
                Vec::new(),
                self.shared.views.clock.clone(),
            ))),
        }
    }

    /// One live instance by id.
    pub fn get(&self, service: &str, id: &str) -> Option<Instance> {
        self.shared
            .views
            .with_snapshot(service, |snap, _| {
                let now = snap.clock.now_ms();
                snap.instances
                    .iter()
                    .find(|i| i.id() == id && snap.clock.is_live(&i.0, now))
                    .cloned()
            })
            .flatten()
    }

    /// Whether `service` is followed: every service is, unless the builder named some with
    /// [`SubscriberBuilder::service`](crate::SubscriberBuilder::service).
    ///
    /// ```no_run
    /// # fn f(subscriber: &herald_subscriber::Subscriber) {
    /// if !subscriber.follows("billing") {
    ///     eprintln!("billing is not followed: its view stays empty");
    /// }
    /// # }
    /// ```
    pub fn follows(&self, service: &str) -> bool {
        self.shared.followed.is_empty() || self.shared.followed.iter().any(|s| s == service)
    }

    /// Names of the services with at least one live instance.
    pub fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .shared
            .views
            .names()
            .into_iter()
            .filter(|s| !self.instances(s).is_empty())
            .map(|s| s.to_string())
            .collect();
        names.sort();
        names
    }

    /// Picks one available instance of `service`, preferring the subscriber's zone.
    /// Lock-free, allocation-free.
    ///
    /// ```no_run
    /// # fn f(subscriber: &herald_subscriber::Subscriber) {
    /// use herald_subscriber::Strategy;
    /// if let Some(instance) = subscriber.pick("billing", Strategy::PowerOfTwoChoices) {
    ///     println!("calling {}", instance.addr());
    /// }
    /// # }
    /// ```
    pub fn pick(&self, service: &str, strategy: Strategy<'_>) -> Option<Instance> {
        RNG.with(|rng| self.pick_with_rng(service, strategy, &mut rng.borrow_mut()))
    }

    /// [`Subscriber::pick`] with the caller's random generator (seed it for reproducible
    /// tests).
    pub fn pick_with_rng(
        &self,
        service: &str,
        strategy: Strategy<'_>,
        rng: &mut fastrand::Rng,
    ) -> Option<Instance> {
        let zone = self.shared.zone.as_deref();
        self.shared
            .views
            .with_snapshot(service, |snap, view| {
                pick::choose(snap, strategy, zone, rng, &view.round_robin).cloned()
            })
            .flatten()
    }

    /// Picks as [`Subscriber::pick`] does, waiting up to `timeout` while `service` has no
    /// available instance (as a gRPC channel waits for its first address).
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::TimedOut`] when none became available in time.
    pub async fn pick_wait(
        &self,
        service: &str,
        strategy: Strategy<'_>,
        timeout: Duration,
    ) -> Result<Instance, Error> {
        self.shared
            .views
            .wait_for(service, timeout, || self.pick(service, strategy))
            .await
            .ok_or_else(Error::timed_out)
    }

    /// A receiver of `service`'s snapshot, updated whenever an instance joins, leaves, or
    /// changes state or record (load changes are read live from the instances).
    pub fn watch(&self, service: &str) -> watch::Receiver<ServiceSnapshot> {
        self.shared.views.get_or_create(service).tx.subscribe()
    }

    /// `service`'s available instances as a [`tower::discover::Discover`] keyed by instance
    /// id, each turned into a service by `make` (feature `tower`).
    ///
    /// ```no_run
    /// # async fn f(subscriber: &herald_subscriber::Subscriber) {
    /// let (channel, tx) = tonic::transport::Channel::balance_channel::<String>(16);
    /// let mut discover = subscriber.discover("billing", |i| {
    ///     tonic::transport::Endpoint::from_shared(format!("http://{}", i.addr())).unwrap()
    /// });
    /// tokio::spawn(async move {
    ///     use futures::StreamExt;
    ///     use tonic::transport::channel::Change as TonicChange;
    ///     while let Some(Ok(change)) = discover.next().await {
    ///         let change = match change {
    ///             tower::discover::Change::Insert(k, e) => TonicChange::Insert(k, e),
    ///             tower::discover::Change::Remove(k) => TonicChange::Remove(k),
    ///         };
    ///         if tx.send(change).await.is_err() {
    ///             break;
    ///         }
    ///     }
    /// });
    /// # }
    /// ```
    #[cfg(feature = "tower")]
    pub fn discover<S, F>(&self, service: &str, make: F) -> crate::Discover<S, F>
    where
        F: FnMut(&Instance) -> S,
    {
        crate::Discover::new(self.watch(service), make)
    }

    /// Every change from now on, as a stream. A reader that falls behind gets
    /// [`Event::Lagged`]; ingest never waits for it.
    pub fn events(&self) -> EventStream {
        EventStream::new(self.shared.events.subscribe())
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Whether the NATS connection and the etcd watch are up, and since when: a readiness
    /// check. While NATS is down the view is the last one known (nothing expires); while the
    /// etcd watch is down, registrations and deletions wait until it resumes.
    ///
    /// ```no_run
    /// # fn f(subscriber: &herald_subscriber::Subscriber) {
    /// let links = subscriber.connections();
    /// if !links.all_up() {
    ///     eprintln!("degraded: nats up {}, for {:?}", links.nats.is_up(), links.nats.elapsed());
    /// }
    /// # }
    /// ```
    pub fn connections(&self) -> Connections {
        self.shared.connections.snapshot()
    }

    /// The NATS client in use.
    pub fn client(&self) -> &async_nats::Client {
        &self.shared.client
    }

    /// Stops ingest and waits for the task to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        for task in self.etcd_tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("zone", &self.shared.zone)
            .finish_non_exhaustive()
    }
}
