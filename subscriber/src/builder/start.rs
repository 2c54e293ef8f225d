//! Starting a subscriber, phase by phase: connect and subscribe to NATS, build the store,
//! follow etcd, spawn ingest, and wait for the first etcd listing.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use herald_shared::{NatsConfig, NatsEvent, Subjects, round_trip};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Etcd, Nats, SubscriberBuilder};
use crate::advisories::Check;
use crate::connections::Tracker;
use crate::error::{Error, ErrorKind};
use crate::etcd_sync::EtcdUpdate;
use crate::ingest::{FirstListing, Ingest, Subscriptions};
use crate::merge::Mode;
use crate::probe_pacing::ProbePacing;
use crate::stats::Counters;
use crate::store::Store;
use crate::subscriber::{Shared, Subscriber};
use crate::view::{Clock, Views};

/// The NATS side, connected and subscribed.
struct Bus {
    client: async_nats::Client,
    /// The connection's events, when the subscriber built the client itself.
    events: Option<broadcast::Receiver<NatsEvent>>,
    announce: Vec<async_nats::Subscriber>,
    advisories: Option<async_nats::Subscriber>,
    advisory_check: Option<Check>,
}

/// The etcd side, following every scope.
struct Follow {
    updates: mpsc::Receiver<EtcdUpdate>,
    tasks: Vec<JoinHandle<()>>,
    first_listing: FirstListing,
    listed: oneshot::Receiver<Result<(), etcd_client::Error>>,
}

impl SubscriberBuilder {
    /// Subscribes (and confirms the subscriptions with a round trip), starts ingest, and
    /// sends a probe, so that every live announcer answers within one round trip.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] naming the field, before any connection is made;
    /// [`ErrorKind::Connect`] or [`ErrorKind::Subscribe`] when NATS fails.
    pub async fn start(mut self) -> Result<Subscriber, Error> {
        let subjects = self.validate()?;
        let bus = self.subscribe(&subjects).await?;
        let clock = Arc::new(Clock::new());
        let views = Arc::new(Views::new(clock));
        let counters = Arc::new(Counters::default());
        let (events, _) = broadcast::channel(self.event_capacity);
        let mode = Mode {
            registry: self.etcd.is_some(),
            allow_unregistered: self.allow_unregistered || self.etcd.is_none(),
        };
        let mut store = Store::new(mode, views.clone(), counters.clone(), events.clone());
        if self.advisories.is_some() {
            store.follow_connections(self.disconnect_grace);
        }
        let connections = Arc::new(Tracker::new(self.etcd.is_some()));
        let cancel = CancellationToken::new();
        let follow = match self.etcd.take() {
            Some(etcd) => {
                store.begin_first_listing();
                Some(
                    self.follow_etcd(etcd, &subjects, &connections, &cancel)
                        .await?,
                )
            }
            None => None,
        };
        let (updates, etcd_tasks, first_listing, listed) = match follow {
            Some(f) => (
                Some(f.updates),
                f.tasks,
                Some(f.first_listing),
                Some(f.listed),
            ),
            None => (None, Vec::new(), None, None),
        };
        let probe_subjects = if self.services.is_empty() {
            vec![subjects.probe_all()]
        } else {
            self.services.iter().map(|s| subjects.probe(s)).collect()
        };
        let mut ingest = Ingest {
            store,
            etcd: updates,
            first_listing,
            deletes: Default::default(),
            subs: Subscriptions::new(bus.announce),
            client: bus.client.clone(),
            nats_events: bus.events,
            subjects,
            probe_subjects,
            counters: counters.clone(),
            connections: connections.clone(),
            sweep_every: self.sweep_interval,
            #[cfg(feature = "internals")]
            ingest_delay: self.ingest_delay.map(crate::ingest::SlowIngest::new),
            probe_pacing: ProbePacing::new(tokio::time::Instant::now()),
            probe_wanted: false,
            refusal_warned: false,
            services_to_probe: Vec::new(),
            connects: bus.client.statistics().connects.load(Relaxed),
            advisories: bus.advisories,
            advisory_check: bus.advisory_check,
        };
        if listed.is_none() {
            // Without etcd, nothing to wait for: every announcer is asked to answer now.
            // With etcd, ingest asks once the listing is applied.
            ingest.probe().await;
        }
        let span = tracing::debug_span!("subscriber", services = ?self.services);
        let task = tokio::spawn(ingest.run(cancel.clone()).instrument(span));
        if let Some(listed) = listed
            && let Err(e) = first_listing_applied(listed).await
        {
            cancel.cancel();
            let _ = task.await;
            for t in etcd_tasks {
                let _ = t.await;
            }
            return Err(e);
        }
        let _ = bus.client.flush().await;
        tracing::info!(services = ?self.services, "subscriber started");
        Ok(Subscriber::new(
            Shared {
                views,
                counters,
                events,
                zone: self.zone,
                client: bus.client,
                connections,
                followed: self.services.into(),
            },
            cancel,
            task,
            etcd_tasks,
        ))
    }

    /// Connects to NATS (unless given a client), subscribes to the announce subjects and the
    /// advisories, confirms the subscriptions with a round trip, and begins the check that
    /// advisories arrive.
    async fn subscribe(&mut self, subjects: &Subjects) -> Result<Bus, Error> {
        let (client, events, own_config): (_, _, Option<NatsConfig>) = match self.nats.take() {
            Some(Nats::Config(c)) => {
                let (client, events) = c.connect().await?;
                (client, Some(events.subscribe()), Some(c))
            }
            Some(Nats::Client(c)) => (c, None, None),
            None => unreachable!("validated before"),
        };
        let subscribe_error = |e| Error::new(ErrorKind::Subscribe, e);
        let announce_subjects: Vec<String> = if self.services.is_empty() {
            vec![subjects.announce_all()]
        } else {
            self.services.iter().map(|s| subjects.announce(s)).collect()
        };
        let mut announce = Vec::with_capacity(announce_subjects.len());
        for subject in announce_subjects {
            announce.push(client.subscribe(subject).await.map_err(subscribe_error)?);
        }
        let advisories = match &self.advisories {
            Some(subject) => Some(
                client
                    .subscribe(subject.clone())
                    .await
                    .map_err(subscribe_error)?,
            ),
            None => None,
        };
        round_trip::confirm_subscriptions(&client, self.confirm_timeout)
            .await
            .map_err(|e| Error::new(ErrorKind::Subscribe, e))?;
        let advisory_check = match (&self.advisories, &own_config) {
            (Some(subject), Some(config)) => match Check::start(config, subject).await {
                Ok(check) => Some(check),
                Err(e) => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "cannot open a test connection to check that disconnect advisories arrive"
                    );
                    None
                }
            },
            _ => None,
        };
        Ok(Bus {
            client,
            events,
            announce,
            advisories,
            advisory_check,
        })
    }

    /// Connects to etcd (unless given a client) and spawns one task per scope that lists it
    /// page by page, then watches from the revision after the listing.
    ///
    /// NATS is subscribed already. Ingest applies the pages as they come and keeps taking
    /// tokens in between, so the subscription's buffer does not fill while etcd is read. The
    /// merge rules make the order of tokens and registrations safe either way (a token ahead
    /// of its registration is held).
    async fn follow_etcd(
        &self,
        etcd: Etcd,
        subjects: &Subjects,
        connections: &Arc<Tracker>,
        cancel: &CancellationToken,
    ) -> Result<Follow, Error> {
        let client = match etcd {
            Etcd::Config(c) => c
                .connect()
                .await
                .map_err(|e| Error::new(ErrorKind::Etcd, e))?,
            Etcd::Client(c) => *c,
        };
        // The filter applies to etcd as to NATS: one scope per followed service.
        let scopes: Vec<Option<String>> = if self.services.is_empty() {
            vec![None]
        } else {
            self.services.iter().cloned().map(Some).collect()
        };
        let (tx, updates) = mpsc::channel(1024);
        let (done, listed) = oneshot::channel();
        let first_listing = FirstListing {
            scopes_left: scopes.len(),
            done,
        };
        let tasks = scopes
            .into_iter()
            .map(|scope| {
                let span =
                    tracing::debug_span!("etcd_watch", scope = scope.as_deref().unwrap_or("*"));
                let follow = crate::etcd_sync::follow(
                    client.clone(),
                    subjects.clone(),
                    scope,
                    tx.clone(),
                    connections.clone(),
                    cancel.clone(),
                );
                tokio::spawn(follow.instrument(span))
            })
            .collect();
        Ok(Follow {
            updates,
            tasks,
            first_listing,
            listed,
        })
    }
}

/// Waits until ingest applied the first listing of every scope.
async fn first_listing_applied(
    listed: oneshot::Receiver<Result<(), etcd_client::Error>>,
) -> Result<(), Error> {
    match listed.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::new(
            ErrorKind::Etcd,
            herald_shared::etcd::classify(e),
        )),
        Err(_) => Err(Error::new(
            ErrorKind::Etcd,
            std::io::Error::other("ingest stopped before the etcd listing was applied"),
        )),
    }
}
