//! `start()` after validation: connect, subscribe to probes and confirm them on the server,
//! register in etcd when configured, publish and flush the first token, then spawn the
//! broadcast task and the registration task.

use std::sync::Arc;
use std::time::Duration;

use herald_shared::{round_trip, unix_micros};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{Error, ErrorKind};
use crate::handle::{AnnouncerHandle, Registration};
use crate::plan::{Connection, Plan};
use crate::probes::ProbeFeed;
use crate::register::register;
use crate::registrar::{Links, Registrar};
use crate::schedule::{Schedule, Why};
use crate::stats::Counters;
use crate::status::Standing;
use crate::task::Broadcaster;

/// Bound of the probe subscriptions' round trip and of the first token's flush.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Queue of handle requests (drain, metadata); callers wait for their reply anyway.
const COMMAND_QUEUE: usize = 8;

pub(crate) async fn start(plan: Plan) -> Result<AnnouncerHandle, Error> {
    let span = tracing::debug_span!(
        "announcer",
        service = %plan.token.service,
        instance = %plan.token.instance,
    );
    start_in(plan, span.clone()).instrument(span).await
}

async fn start_in(plan: Plan, span: tracing::Span) -> Result<AnnouncerHandle, Error> {
    let Plan {
        connection,
        subjects,
        settings,
        token,
        load_fn,
        etcd,
    } = plan;
    let client = match connection {
        // Reconnects are noticed through the connection counter (see `reconnects`)
        // for both kinds of connection, so the event receiver is not needed.
        Connection::Config(config) => config.connect().await?.0,
        Connection::Client(client) => client,
    };
    let reconnects = crate::reconnects::poller(&client);
    let connects_seen = *reconnects.connects().borrow();

    let subscribe_error =
        |e: async_nats::SubscribeError| Error::with_source(ErrorKind::Subscribe, e);
    // Shared with every announcer on this connection (one subscription per subject).
    let probes = ProbeFeed::new(
        &client,
        subjects.probe(&token.service),
        subjects.probe_all(),
    )
    .await
    .map_err(subscribe_error)?;
    round_trip::confirm_subscriptions(&client, START_TIMEOUT)
        .await
        .map_err(|e| Error::with_source(ErrorKind::Subscribe, e))?;

    // Registered before the first token, so that every token carries the epoch. Without
    // etcd every token carries epoch 0 (unregistered).
    let registered = match etcd {
        Some(plan) => {
            let key = subjects.key(&token.service, &token.instance);
            Some(register(plan, key, &token, settings.lease_ttl).await?)
        }
        None => None,
    };
    let epoch = registered.as_ref().map_or(0, |r| r.epoch);
    let (standing_tx, standing) = watch::channel(Standing::announcing(epoch));
    let broadcast_done = CancellationToken::new();

    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (load_tx, load_rx) = watch::channel(token.load);
    let (last_token, last_token_rx) = watch::channel(token.clone());
    let (goodbye_tx, goodbye) = oneshot::channel();
    let counters = Arc::new(Counters::default());
    let cancel = CancellationToken::new();
    let (service, instance) = (token.service.clone(), token.instance.clone());
    let mut broadcaster = Broadcaster {
        client: client.clone(),
        subject: subjects.announce(&token.service).into(),
        load: token.load,
        schedule: Schedule::new(
            settings.timing,
            Instant::now(),
            token.load,
            fastrand::Rng::new(),
        ),
        token,
        next_seq: unix_micros(),
        probes,
        commands,
        load_rx,
        load_fn,
        load_sample_interval: settings.load_sample_interval,
        standing: standing.clone(),
        connects_seen,
        reconnects,
        counters: counters.clone(),
        last_token,
        cancel: cancel.clone(),
        goodbye,
        _done: broadcast_done.clone().drop_guard(),
    };

    let first = async {
        broadcaster.publish(Why::Start).await?;
        match tokio::time::timeout(START_TIMEOUT, client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::with_source(ErrorKind::Publish, e)),
            Err(_) => Err(Error::new(ErrorKind::TimedOut)),
        }
    };
    if let Err(e) = first.await {
        if let Some(registered) = registered {
            registered.abandon().await;
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

    let task = tokio::spawn(broadcaster.run().instrument(span.clone()));
    let (registration, _standing_owner) = match registered {
        Some(registered) => {
            Counters::bump(&counters.registrations);
            let (rewrite_tx, rewrites) = mpsc::channel(COMMAND_QUEUE);
            let (farewell_tx, farewell) = oneshot::channel();
            let links = Links {
                standing: standing_tx,
                last_token: last_token_rx.clone(),
                rewrites,
                counters: counters.clone(),
                cancel: cancel.clone(),
                farewell,
                broadcast_done: broadcast_done.clone(),
            };
            // On a session, the lease is the session's: its TTL bounds the calls.
            let lease_ttl = registered
                .session
                .as_ref()
                .map_or(settings.lease_ttl, |s| s.ttl());
            let registrar = Registrar::new(registered, lease_ttl, links);
            let task = tokio::spawn(registrar.run().instrument(span));
            let registration = Registration {
                rewrite: rewrite_tx,
                farewell: farewell_tx,
                task,
            };
            (Some(registration), None)
        }
        None => (None, Some(standing_tx)),
    };
    Ok(AnnouncerHandle {
        stop: cancel.drop_guard(),
        service,
        instance,
        client,
        commands: commands_tx,
        load: load_tx,
        last_token: last_token_rx,
        counters,
        shutdown_timeout: settings.shutdown_timeout,
        goodbye: goodbye_tx,
        task,
        standing,
        _standing_owner,
        broadcast_done,
        registration,
    })
}
