//! The ingest task: the one owner of the store.
//!
//! This module holds its loop: it reads tokens from the NATS subscriptions in batches and
//! sweeps expired instances on a short timer; sweeping comes before tokens in its `select!`,
//! so a flood of tokens cannot delay expiry. Each other input has a module of its own: etcd's
//! reports (`etcd`) and the round trip its deletions wait for (`deletes`), the subscriber's
//! own link (`link`), disconnect advisories (`advisory`) and probes (`probes`, paced by
//! `crate::probe_pacing`).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use herald_shared::{NatsEvent, Subjects};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::advisories::Check;
use crate::connections::Tracker;
use crate::etcd_sync::EtcdUpdate;
use crate::probe_pacing::ProbePacing;
use crate::stats::Counters;
use crate::store::Store;

mod advisory;
mod deletes;
mod etcd;
mod link;
mod probes;
#[cfg(feature = "internals")]
mod slow;
mod subscriptions;

pub(crate) use deletes::Deletes;
use deletes::{Barrier, passed};
#[cfg(feature = "internals")]
pub(crate) use slow::SlowIngest;
pub(crate) use subscriptions::Subscriptions;

/// Tokens applied before the task publishes snapshots and events and yields.
const BATCH: usize = 256;

pub(crate) struct Ingest {
    pub(crate) store: Store,
    pub(crate) subs: Subscriptions,
    pub(crate) client: async_nats::Client,
    pub(crate) nats_events: Option<broadcast::Receiver<NatsEvent>>,
    pub(crate) etcd: Option<tokio::sync::mpsc::Receiver<EtcdUpdate>>,
    /// `start()`, waiting for the first etcd listing, until every scope's is applied.
    pub(crate) first_listing: Option<FirstListing>,
    /// etcd deletions waiting for the next barrier (see [`Deletes`]).
    pub(crate) deletes: Deletes,
    pub(crate) subjects: Subjects,
    pub(crate) probe_subjects: Vec<String>,
    pub(crate) counters: Arc<Counters>,
    /// Where the connection's state is published for readiness checks.
    pub(crate) connections: Arc<Tracker>,
    pub(crate) sweep_every: Duration,
    /// A test hook (feature `internals`), absent from production builds.
    #[cfg(feature = "internals")]
    pub(crate) ingest_delay: Option<SlowIngest>,
    pub(crate) probe_pacing: ProbePacing,
    pub(crate) probe_wanted: bool,
    /// A permissions violation on the connection was warned of (once per subscriber).
    pub(crate) refusal_warned: bool,
    /// Services to probe on their own (heartbeats of instances they do not list), when no
    /// probe of everything is due.
    pub(crate) services_to_probe: Vec<Arc<str>>,
    pub(crate) connects: u64,
    /// The subscription to disconnect advisories, when the subscriber follows them.
    pub(crate) advisories: Option<async_nats::Subscriber>,
    /// The start-up check that advisories arrive, until it passes or gives up.
    pub(crate) advisory_check: Option<Check>,
}

impl Ingest {
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.sweep_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut barrier: Option<Barrier> = None;
        loop {
            if barrier.is_none() {
                barrier = self.begin_barrier();
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = passed(&mut barrier) => {
                    barrier = None;
                    self.apply_covered_deletes();
                }
                _ = tick.tick() => self.on_tick().await,
                event = recv_event(&mut self.nats_events) => self.on_nats_event(event),
                msg = recv_advisory(&mut self.advisories) => {
                    self.on_advisory(msg);
                    self.store.flush();
                }
                update = recv_etcd(&mut self.etcd) => {
                    // Tokens already received go first: a graceful stop sends its goodbye
                    // before revoking its lease, and should read as a goodbye, not as a
                    // deregistration, even when both are waiting.
                    self.drain_ready_tokens();
                    self.on_etcd(update).await;
                }
                msg = self.subs.next() => match msg {
                    Some(msg) => self.on_messages(msg).await,
                    None => {
                        tracing::warn!("announce subscriptions closed; ingest stops");
                        break;
                    }
                },
            }
        }
        tracing::debug!("ingest task stopped");
    }

    async fn on_messages(&mut self, first: async_nats::Message) {
        self.ingest_one(&first);
        self.drain_ready_tokens();
        self.store.flush();
        #[cfg(feature = "internals")]
        if let Some(slow) = &mut self.ingest_delay {
            slow.pay().await;
        }
    }

    /// Applies the tokens already waiting, up to one batch, without waiting for more.
    fn drain_ready_tokens(&mut self) {
        for _ in 1..BATCH {
            match self.subs.next().now_or_never() {
                Some(Some(msg)) => self.ingest_one(&msg),
                _ => break,
            }
        }
    }

    fn ingest_one(&mut self, msg: &async_nats::Message) {
        #[cfg(feature = "internals")]
        if let Some(slow) = &mut self.ingest_delay {
            slow.owe();
        }
        match self.subjects.service_of_announce(msg.subject.as_str()) {
            Some(service) => self.store.ingest(service, &msg.payload),
            None => {
                self.counters.received.fetch_add(1, Relaxed);
                self.counters.reject(herald_shared::Reject::SubjectMismatch);
            }
        }
    }

    async fn on_tick(&mut self) {
        self.watch_connection();
        self.give_up_advisory_check();
        self.store.sweep();
        self.store.flush();
        for service in self.store.take_probe_requests() {
            if !self.services_to_probe.contains(&service) {
                self.services_to_probe.push(service);
            }
        }
        let want = self.probe_wanted || !self.services_to_probe.is_empty();
        if want && self.probe_pacing.may_probe(Instant::now()) {
            if self.probe_wanted {
                // Every announcer answers: the services asked for too.
                self.services_to_probe.clear();
                self.probe().await;
            } else {
                self.probe_services().await;
            }
        }
    }

    fn on_nats_event(&mut self, event: Option<NatsEvent>) {
        match event {
            Some(NatsEvent::SlowConsumer(sid)) => {
                self.counters.slow_consumer_events.fetch_add(1, Relaxed);
                tracing::warn!(
                    sid,
                    "tokens dropped: subscription buffer full (slow consumer); probing to recover"
                );
                // No etcd listing: lost tokens hide nothing of etcd's (its watch loses no
                // change and waits for ingest), and the probe brings the tokens back.
                self.probe_pacing.overflowed(Instant::now());
                self.probe_wanted = true;
            }
            Some(NatsEvent::PermissionViolation { said, .. }) => {
                // Once: a refused subscription shows as no tokens, a refused probe as no
                // answers, and both would otherwise repeat.
                if !self.refusal_warned {
                    self.refusal_warned = true;
                    tracing::warn!(
                        server = %said,
                        "the NATS server refuses a request of this subscriber (a permissions \
                         violation): what it refuses is missing from the view"
                    );
                }
            }
            Some(NatsEvent::Disconnected | NatsEvent::Connected) => {
                // The tick's connection watch handles both, whoever built the client.
            }
            None => self.nats_events = None,
        }
    }
}

/// `start()` waiting for the first etcd listing of every scope (see
/// [`crate::etcd_sync::follow`]): tokens are taken in meanwhile, and the pages applied as
/// they come.
pub(crate) struct FirstListing {
    pub(crate) scopes_left: usize,
    pub(crate) done: tokio::sync::oneshot::Sender<Result<(), etcd_client::Error>>,
}

async fn recv_etcd(rx: &mut Option<tokio::sync::mpsc::Receiver<EtcdUpdate>>) -> Option<EtcdUpdate> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_advisory(sub: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match sub {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    }
}

async fn recv_event(rx: &mut Option<broadcast::Receiver<NatsEvent>>) -> Option<NatsEvent> {
    match rx {
        Some(rx) => loop {
            match rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        },
        None => std::future::pending().await,
    }
}
