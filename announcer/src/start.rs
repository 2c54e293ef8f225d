//! `start()` after validation: connect, subscribe to probes and confirm them on the server,
//! register when etcd is configured (the first claim, then the record handed to the
//! session's registry), publish and flush the first token, then hand the broadcasting over to
//! the connection's scheduler. A failure after the registration has the record undo it.

use std::sync::Arc;
use std::time::Duration;

use herald_shared::{NatsEvent, round_trip, unix_micros};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use crate::error::{Error, ErrorKind};
use crate::handle::AnnouncerHandle;
use crate::messages::Standing;
use crate::pacer::Pacer;
use crate::plan::{Nats, Plan};
use crate::predecessor::Predecessor;
use crate::registrar::{self, Setup};
use crate::schedule::{Schedule, Why};
use crate::scheduler::Scheduler;
use crate::session::registration::Links;
use crate::session::registration::registry::RecordHandle;
use crate::stats::Counters;
use crate::task::{Broadcaster, Fullness, LoadCell};

/// Bound of the probe subscriptions' round trip and of the first token's flush.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an undone registration waits past its deadline for its record to report.
const ABANDON_SLACK: Duration = Duration::from_millis(100);

/// Starts the announcer; when `stop` completes first, the start stops, and what it
/// registered is removed before it returns `Stopped`.
pub(crate) async fn start(
    plan: Plan,
    stop: impl Future<Output = ()>,
) -> Result<AnnouncerHandle, Error> {
    let span = tracing::debug_span!(
        "announcer",
        service = %plan.token.service,
        instance = %plan.token.instance,
    );
    let abort = CancellationToken::new();
    let starting = start_in(plan, span.clone(), abort.clone()).instrument(span);
    tokio::pin!(starting);
    tokio::select! {
        biased;
        started = &mut starting => return started,
        () = stop => {}
    }
    abort.cancel();
    starting.await
}

/// Whether the server let the first token through: the server answers a publish it refuses
/// with an error before the PONG of a round trip that follows it, and the connection reports
/// that error as an event moments later.
///
/// # Errors
///
/// `Publish` naming the subject when the server refused it.
async fn publish_permitted(
    client: &async_nats::Client,
    events: &mut tokio::sync::broadcast::Receiver<NatsEvent>,
    subject: &str,
) -> Result<(), Error> {
    round_trip::server_handled(client, START_TIMEOUT)
        .await
        .map_err(|e| Error::with_source(ErrorKind::Publish, e))?;
    let refused = tokio::time::timeout(REFUSAL_WITHIN, async {
        loop {
            match events.recv().await {
                Ok(NatsEvent::PermissionViolation { publish: true, .. }) => return true,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    if refused {
        return Err(Error::with_source(
            ErrorKind::Publish,
            format!(
                "the NATS server refused the first token: this user may not publish to `{subject}` (a permissions violation)"
            ),
        ));
    }
    Ok(())
}

/// Counts the refusals the server reports on the announcer's own connection, until `cancel`,
/// and warns of the first: a permission lost after the start is one line, not one per token.
async fn count_refusals(
    mut events: tokio::sync::broadcast::Receiver<NatsEvent>,
    counters: Arc<crate::stats::Counters>,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(NatsEvent::PermissionViolation { said, .. }) => {
                let before = counters
                    .permission_violations
                    .load(std::sync::atomic::Ordering::Relaxed);
                crate::stats::Counters::bump(&counters.permission_violations);
                if before == 0 {
                    tracing::warn!(
                        server = %said,
                        "the NATS server refuses this announcer's requests (a permission was \
                         taken away): subscribers see it as silent; counted in \
                         permission_violations"
                    );
                }
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// How long after the round trip the connection's report of a refused publish may come.
const REFUSAL_WITHIN: Duration = Duration::from_millis(20);

/// `step`, unless the start is stopped first.
async fn unless_stopped<T>(
    abort: &CancellationToken,
    step: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::select! {
        biased;
        () = abort.cancelled() => Err(Error::start_stopped()),
        done = step => done,
    }
}

async fn start_in(
    plan: Plan,
    span: tracing::Span,
    abort: CancellationToken,
) -> Result<AnnouncerHandle, Error> {
    let Plan {
        connection,
        subjects,
        settings,
        mut token,
        load_fn,
        etcd,
    } = plan;
    // Reconnects are noticed through the connection counter (see `reconnects`) for both kinds
    // of connection; an own connection's events tell whether the server refused the first
    // token (a publish permission missing).
    // The scheduler belongs to the connection: the announcer's own, or the shared
    // `Connection`'s.
    let (client, scheduler, mut events) = match connection {
        Nats::Config(mut config) => {
            // Named after the instance, so that the server's monitoring and its disconnect
            // advisories say whose connection it is.
            if config.name.is_none() {
                config.name = Some(format!("herald {}/{}", token.service, token.instance));
            }
            let (client, events) =
                unless_stopped(&abort, async { Ok(config.connect().await?) }).await?;
            let scheduler = Scheduler::spawn(&client);
            (client, scheduler, Some(events.subscribe()))
        }
        Nats::Shared(connection) => (connection.client().clone(), connection.scheduler(), None),
    };
    let key = scheduler.next_key();
    let link_seen = scheduler.link();
    // Every token names the connection that carries it, the registration's value too.
    token.conn = link_seen.conn.as_deref().map(str::to_owned);

    let subscribe_error =
        |e: async_nats::SubscribeError| Error::with_source(ErrorKind::Subscribe, e);
    // Shared with every announcer on this connection (one subscription per subject); a
    // subscription made here is confirmed on the server before the first token goes out.
    let (probes, subscribed) = unless_stopped(&abort, async {
        scheduler
            .probe_feeds()
            .join(
                &client,
                subjects.probe(&token.service),
                subjects.probe_all(),
            )
            .await
            .map_err(subscribe_error)
    })
    .await?;
    if subscribed {
        unless_stopped(&abort, async {
            round_trip::confirm_subscriptions(&client, START_TIMEOUT)
                .await
                .map_err(|e| Error::with_source(ErrorKind::Subscribe, e))
        })
        .await?;
    }

    let (standing_tx, standing) = watch::channel(Standing::announcing(0));
    let broadcast_done = CancellationToken::new();
    let load_cell = Arc::new(LoadCell::new(token.load));
    let (last_token, last_token_rx) = watch::channel(token.clone());
    let counters = Arc::new(Counters::default());
    let cancel = CancellationToken::new();
    // Whatever is spawned stops if `start()` fails or is dropped; the handle keeps it.
    let stop = cancel.clone().drop_guard();
    let (service, instance) = (token.service.clone(), token.instance.clone());

    // Registered before the first token, so that every token carries the epoch (the
    // registration writes it to `standing`). Without etcd every token carries epoch 0
    // (unregistered).
    let (registration, _standing_owner, abandon_within) = match etcd {
        Some(plan) => {
            let abandon_within = plan.timeout;
            let predecessor = (!plan.takeover).then(|| Predecessor {
                client: client.clone(),
                announce: subjects.announce(&token.service),
                probe: subjects.probe(&token.service),
                service: token.service.clone(),
                instance: token.instance.clone(),
            });
            let setup = Setup {
                key: subjects.key(&token.service, &token.instance),
                plan,
                lease_ttl: settings.lease_ttl,
                predecessor,
                watch_prefix: subjects.services_prefix().into(),
            };
            let links = Links {
                standing: standing_tx,
                last_token: last_token_rx.clone(),
                counters: counters.clone(),
                broadcast_done: broadcast_done.clone(),
                nudge: scheduler.nudge(key),
                span: span.clone(),
            };
            // Boxed: connecting and the first claim are large futures that live only while
            // they run.
            // The first claim runs in a task of its own while `start()` waits for it, and
            // that task ends with the claim: starts that one task drives together (a
            // `buffer_unordered` of them) then claim on every worker thread, and their claims
            // reach the session's batches together. (Inline, 50,000 starts took 3.0 s instead
            // of 2.5.) From then on the registration is a record in the session's registry.
            let aborted = abort.clone();
            let registering = tokio::spawn(
                async move { registrar::register(setup, links, &aborted).await }
                    .instrument(span.clone()),
            );
            let record = registering
                .await
                .map_err(|e| Error::with_source(ErrorKind::Stopped, e))??;
            (Some(record), None, abandon_within)
        }
        None => (None, Some(standing_tx), Duration::ZERO),
    };

    // Without etcd nothing refuses a second process with this id: listen for one (see
    // `namesake`), subscribed before the first token goes out.
    let namesake_tokens = match &registration {
        None => client.subscribe(subjects.announce(&service)).await.ok(),
        Some(_) => None,
    };

    let now = Instant::now();
    let mut broadcaster = Broadcaster {
        subject: subjects.announce(&token.service).into(),
        load: token.load,
        fullness: Fullness::new(settings.full_token_every),
        schedule: Schedule::new(settings.timing, now, token.load, fastrand::Rng::new()),
        pacer: Pacer::new(now),
        token,
        next_seq: unix_micros(),
        probes,
        load_cell: load_cell.clone(),
        standing: standing.clone(),
        link_seen,
        counters: counters.clone(),
        last_token,
        span: span.clone(),
        done: Some(broadcast_done.clone().drop_guard()),
        staged: None,
    };

    let announce_subject = broadcaster.subject.clone();
    let first = async {
        broadcaster.publish(&client, Why::Start).await?;
        match tokio::time::timeout(START_TIMEOUT, client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::with_source(ErrorKind::Publish, e)),
            Err(_) => Err(Error::new(ErrorKind::TimedOut)),
        }
    };
    let first = async {
        first.await?;
        if let Some(events) = &mut events {
            publish_permitted(&client, events, &announce_subject).await?;
        }
        // A stop asked for from here on is the caller's to carry out on the handle: the
        // first token is out, so subscribers list the instance, and a graceful stop (drain,
        // goodbye) is what they should see, not a deregistration.
        Ok(())
    };
    if let Err(e) = first.await {
        drop(broadcaster);
        if let Some(registration) = registration {
            abandon(registration, stop, abandon_within).await;
        }
        return Err(e);
    }
    tracing::info!(
        addr = %broadcaster.token.addr,
        seq = broadcaster.token.seq,
        interval_ms = settings.timing.interval.as_millis() as u64,
        ttl_ms = broadcaster.token.ttl_ms,
        "announcer started"
    );

    if let Some(tokens) = namesake_tokens {
        let check = crate::namesake::Check {
            tokens,
            interval: settings.timing.interval,
            service: service.clone(),
            instance: instance.clone(),
            first_seq: broadcaster.token.seq,
            counters: counters.clone(),
        };
        // Ends by itself after two intervals (30 s at most), or when the announcer stops.
        tokio::spawn(check.run(cancel.clone()).instrument(span.clone()));
    }
    if let Some(events) = events {
        // Refusals after the start: counted, for the announcer's stats to show.
        let counting = count_refusals(events, counters.clone(), cancel.clone());
        tokio::spawn(counting.instrument(span.clone()));
    }
    if let Some(load_fn) = load_fn {
        let setter = scheduler.load_setter(key, load_cell.clone());
        let every = settings.load_sample_interval;
        let sampling = crate::load_sampler::run(load_fn, every, setter, cancel.clone());
        tokio::spawn(sampling.instrument(span.clone()));
    }
    let member = scheduler.join(key, broadcaster, load_cell);
    Ok(AnnouncerHandle {
        stop,
        service,
        instance,
        client,
        member,
        last_token: last_token_rx,
        counters,
        shutdown_timeout: settings.shutdown_timeout,
        standing,
        _standing_owner,
        broadcast_done,
        registration,
        meta_versions: Default::default(),
    })
}

/// Undoes a registration `start()` cannot go on with: its record revokes its own lease, or
/// deletes the key from a session's, as at shutdown (best effort, within `within`).
async fn abandon(registration: RecordHandle, stop: DropGuard, within: Duration) {
    let left = registration.leave(Instant::now() + within);
    drop(stop);
    if tokio::time::timeout(within + ABANDON_SLACK, left)
        .await
        .is_err()
    {
        tracing::warn!("registration not undone in time; it goes when its lease expires");
    }
}
