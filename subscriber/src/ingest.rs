//! The ingest task: the one owner of the store.
//!
//! It reads tokens from the NATS subscriptions in batches, sweeps expired instances on a
//! short timer, watches its own connection (self-preservation while it is down, a fresh TTL
//! and a probe once it is back), reacts to slow-consumer reports (probes paced by
//! `probe_pacing`), and, when asked to, to disconnect advisories (`advisories`). Sweeping
//! comes before
//! tokens in its `select!`, so a flood of tokens cannot delay expiry.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{FutureExt, Stream, StreamExt, stream::SelectAll};
use herald_shared::{NatsEvent, Subjects};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::advisories::{Check, Disconnect};
use crate::connections::{CONNECTION_LOG, Change, Tracker, seconds};
use crate::etcd_sync::EtcdUpdate;
use crate::probe_pacing::ProbePacing;
use crate::stats::Counters;
use crate::store::Store;

/// Tokens applied before the task publishes snapshots and events and yields.
const BATCH: usize = 256;

/// The longest a batch of deletions waits for its round trip (a NATS server that does not
/// answer): then it is applied anyway, and a goodbye still on its way reads as a
/// deregistration.
const DELETE_BARRIER_TIMEOUT: Duration = Duration::from_secs(1);

/// Most tokens read after a barrier before its deletions apply: every message the server
/// wrote before the echo is in the subscription's buffer by then, and the buffer holds no
/// more than this.
const DRAIN_BEFORE_DELETES: usize = 65_536;

/// An etcd deletion: service, instance, revision.
type Delete = (String, String, u64);

/// etcd deletions and the barrier they wait for.
///
/// An announcer that stops gracefully sends its goodbye and revokes its lease only once the
/// NATS server has routed the goodbye, so the server wrote that goodbye to this subscriber's
/// socket before the deletion existed. One round trip on this subscriber's own connection,
/// begun after the deletion arrived, ends after every such goodbye has been read: the
/// deletion then applies, and the stop reads as a goodbye rather than a deregistration. One
/// round trip covers every deletion that arrived before it began.
#[derive(Default)]
pub(crate) struct Deletes {
    /// Arrived since the barrier in flight began: they wait for the next one.
    waiting: Vec<Delete>,
    /// Covered by the barrier in flight.
    covered: Vec<Delete>,
}

/// A round trip in flight.
type Barrier = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

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

    /// Begins the round trip that the deletions waiting need, if any wait.
    fn begin_barrier(&mut self) -> Option<Barrier> {
        if self.deletes.waiting.is_empty() {
            return None;
        }
        let mut waiting = std::mem::take(&mut self.deletes.waiting);
        self.deletes.covered.append(&mut waiting);
        // Disconnected, no goodbye can be on its way: nothing to wait for.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Some(Box::pin(std::future::ready(())));
        }
        let client = self.client.clone();
        Some(Box::pin(async move {
            if let Err(e) =
                herald_shared::round_trip::server_handled(&client, DELETE_BARRIER_TIMEOUT).await
            {
                tracing::debug!(error = %e, "deletions applied without their round trip");
            }
        }))
    }

    /// The barrier passed: the goodbyes sent before the covered deletions are in the
    /// subscription's buffer. They are read first, then the deletions apply.
    fn apply_covered_deletes(&mut self) {
        for _ in 0..DRAIN_BEFORE_DELETES {
            match self.subs.next().now_or_never() {
                Some(Some(msg)) => self.ingest_one(&msg),
                _ => break,
            }
        }
        for (service, instance, revision) in std::mem::take(&mut self.deletes.covered) {
            self.store.deregister(&service, &instance, revision);
        }
        self.store.flush();
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

    /// Probes the services heartbeats asked for, each on its own subject.
    async fn probe_services(&mut self) {
        self.probe_pacing.probed(Instant::now());
        while let Some(service) = self.services_to_probe.pop() {
            let subject = self.subjects.probe(&service);
            if let Err(e) = self.client.publish(subject, bytes::Bytes::new()).await {
                tracing::warn!(error = %e, %service, "probe not sent");
                self.services_to_probe.push(service);
                return;
            }
            self.counters.probes_sent.fetch_add(1, Relaxed);
            tracing::debug!(%service, "probe sent for a heartbeat of an unknown instance");
        }
    }

    /// Self-preservation: while our own link is down nothing expires; once it is back every
    /// instance gets one fresh TTL and a probe asks everyone to answer now.
    ///
    /// One warning when the link is lost and one info line when it is back (with how long it
    /// was down), whatever the number of ticks in between.
    fn watch_connection(&mut self) {
        let clock = &self.store_clock();
        let connected = self.client.connection_state() == async_nats::connection::State::Connected;
        let connects = self.client.statistics().connects.load(Relaxed);
        let preserving = clock.preserving.load(Relaxed);
        let change = self.connections.nats(connected);
        if !connected {
            if !preserving {
                clock.preserving.store(true, Relaxed);
            }
            if change == Some(Change::Lost) {
                tracing::warn!(
                    target: CONNECTION_LOG,
                    "nats connection lost: holding every instance until it is back"
                );
            }
            return;
        }
        if preserving || connects != self.connects {
            // Fresh deadlines first, then lift preservation, so no reader sees a gap.
            self.store.refresh_all_deadlines();
            clock.preserving.store(false, Relaxed);
            self.counters
                .reconnects
                .fetch_add(connects.saturating_sub(self.connects).max(1), Relaxed);
            self.connects = connects;
            self.probe_wanted = true;
            match change {
                Some(Change::Back(down)) => tracing::info!(
                    target: CONNECTION_LOG,
                    down_ms = down.as_millis() as u64,
                    "nats reconnected after {}: fresh TTL for every instance, probing",
                    seconds(down)
                ),
                // Lost and back between two ticks: never seen down.
                _ => tracing::info!(
                    target: CONNECTION_LOG,
                    "nats reconnected after a brief disconnect: fresh TTL for every instance, probing"
                ),
            }
        }
    }

    /// A disconnect advisory: a connection closed by its client's host takes its instances
    /// with it (after the grace); any other ending leaves them to their TTL.
    fn on_advisory(&mut self, msg: Option<async_nats::Message>) {
        let Some(msg) = msg else {
            tracing::warn!(
                "disconnect advisory subscription closed; crashes are found by TTL only"
            );
            self.advisories = None;
            return;
        };
        let Some(d) = Disconnect::parse(&msg.payload) else {
            tracing::debug!(subject = %msg.subject, "not a disconnect advisory; ignored");
            return;
        };
        self.counters.disconnect_advisories.fetch_add(1, Relaxed);
        if self
            .advisory_check
            .as_ref()
            .is_some_and(|c| c.conn == d.conn)
        {
            let check = self.advisory_check.take().expect("checked above");
            tracing::info!(
                target: CONNECTION_LOG,
                subject = check.subject,
                "disconnect advisories arrive: a killed process is removed when its connection closes"
            );
        }
        let name = d.name.as_deref().unwrap_or("-");
        if d.closed_by_host() {
            self.counters.connections_closed.fetch_add(1, Relaxed);
            if self.store.connection_closed(&d.conn) {
                tracing::debug!(
                    conn = d.conn,
                    name,
                    reason = d.reason,
                    "connection closed by its host: its instances go unless they reconnect within the grace"
                );
            }
        } else {
            self.store.connection_ended(&d.conn);
            tracing::debug!(
                conn = d.conn,
                name,
                reason = d.reason,
                "connection ended; its instances keep their TTL"
            );
        }
    }

    fn give_up_advisory_check(&mut self) {
        if self
            .advisory_check
            .as_ref()
            .is_some_and(|c| Instant::now() >= c.give_up)
        {
            let check = self.advisory_check.take().expect("checked above");
            tracing::warn!(
                target: CONNECTION_LOG,
                subject = check.subject,
                "no disconnect advisory arrived for a test connection within {}: crashes are found by TTL only. Does the account import $SYS.ACCOUNT.<account>.DISCONNECT to this subject, and may this user subscribe to it?",
                seconds(crate::advisories::CHECK_WITHIN)
            );
        }
    }

    fn store_clock(&self) -> Arc<crate::view::Clock> {
        self.store.clock()
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
            Some(NatsEvent::Disconnected | NatsEvent::Connected) => {
                // The tick's connection watch handles both, whoever built the client.
            }
            None => self.nats_events = None,
        }
    }

    /// Applies what etcd reported, through the same store and merge rules as tokens.
    async fn on_etcd(&mut self, update: Option<EtcdUpdate>) {
        match update {
            Some(EtcdUpdate::Put(reg)) => self.store.register(&reg),
            // A graceful stop's goodbye and its lease's revoke travel different paths: the
            // deletion waits for the round trip that proves the goodbye read (`Deletes`).
            // Revisions keep this safe against any registration applied meanwhile.
            Some(EtcdUpdate::Delete {
                service,
                instance,
                revision,
            }) => self.deletes.waiting.push((service, instance, revision)),
            Some(EtcdUpdate::Resync {
                listing,
                new_cluster,
            }) => {
                if new_cluster {
                    self.store.forget_epochs(listing.scope.as_deref());
                }
                self.store.reconcile(&listing);
                self.probe_wanted = true;
            }
            Some(EtcdUpdate::Page(page)) => {
                // A page holds thousands of registrations: tokens waiting meanwhile are
                // taken in between, so that the subscription's buffer never waits for it.
                // Yielding renews the task's budget, without which tokio would report the
                // subscription empty for the rest of the page.
                for part in page.chunks(BATCH) {
                    self.store.register_page(part);
                    tokio::task::yield_now().await;
                    self.drain_ready_tokens();
                }
            }
            Some(EtcdUpdate::Listed) => {
                self.store.first_listing_read();
                self.scope_listed().await;
            }
            Some(EtcdUpdate::ListingFailed(e)) => {
                if let Some(first) = self.first_listing.take() {
                    let _ = first.done.send(Err(e));
                }
            }
            None => self.etcd = None,
        }
        self.store.flush();
    }

    /// A scope's first listing is applied; after the last, every announcer is asked to
    /// answer and `start()` returns.
    async fn scope_listed(&mut self) {
        let Some(first) = &mut self.first_listing else {
            return;
        };
        first.scopes_left = first.scopes_left.saturating_sub(1);
        if first.scopes_left > 0 {
            return;
        }
        let first = self.first_listing.take().expect("checked above");
        self.store.end_first_listing();
        self.store.flush();
        self.probe().await;
        let _ = first.done.send(Ok(()));
    }

    pub(crate) async fn probe(&mut self) {
        self.probe_wanted = false;
        self.probe_pacing.probed(Instant::now());
        for subject in &self.probe_subjects {
            if let Err(e) = self
                .client
                .publish(subject.clone(), bytes::Bytes::new())
                .await
            {
                tracing::warn!(error = %e, subject, "probe not sent");
                self.probe_wanted = true;
                return;
            }
            self.counters.probes_sent.fetch_add(1, Relaxed);
        }
        tracing::debug!("probe sent");
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

/// Resolves when the barrier in flight passed; never without one.
async fn passed(barrier: &mut Option<Barrier>) {
    match barrier {
        Some(b) => b.await,
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

/// The announce subscriptions: one (every service, or a single one) read directly, or several
/// merged. Most subscribers have one, and reading it without the merge saves a few percent
/// of ingest CPU.
pub(crate) enum Subscriptions {
    One(async_nats::Subscriber),
    Many(SelectAll<async_nats::Subscriber>),
}

impl Subscriptions {
    pub(crate) fn new(mut subs: Vec<async_nats::Subscriber>) -> Self {
        if subs.len() == 1 {
            Subscriptions::One(subs.remove(0))
        } else {
            Subscriptions::Many(subs.into_iter().collect())
        }
    }
}

impl Stream for Subscriptions {
    type Item = async_nats::Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Subscriptions::One(s) => s.poll_next_unpin(cx),
            Subscriptions::Many(m) => m.poll_next_unpin(cx),
        }
    }
}

/// A test hook (feature `internals`) that slows ingest down by a fixed time per token, to
/// exercise overload. The
/// time is owed per token and paid in sleeps of at least a millisecond (the timer's
/// granularity) after each batch, so that no runtime worker is ever blocked.
#[cfg(feature = "internals")]
#[derive(Debug)]
pub(crate) struct SlowIngest {
    per_token: Duration,
    owed: Duration,
}

#[cfg(feature = "internals")]
impl SlowIngest {
    pub(crate) fn new(per_token: Duration) -> Self {
        SlowIngest {
            per_token,
            owed: Duration::ZERO,
        }
    }

    fn owe(&mut self) {
        self.owed += self.per_token;
    }

    async fn pay(&mut self) {
        if self.owed >= Duration::from_millis(1) {
            tokio::time::sleep(std::mem::take(&mut self.owed)).await;
        }
    }
}
