//! [`AnnouncerHandle`]: the running announcer, as its owner sees it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use herald_shared::{State, Token, round_trip};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::{Error, ErrorKind};
use crate::messages::{StagedMeta, Standing};
use crate::scheduler::Member;
use crate::session::registration::registry::RecordHandle;
use crate::stats::{Counters, Stats};
use crate::status::Stopped;
use crate::task::{Goodbye, MetaRequest};

/// How long `shutdown()` waits past its deadline for the registration to report: its record
/// bounds its revoke by the deadline itself.
const REPORT_SLACK: Duration = Duration::from_millis(100);

/// A running announcer.
///
/// The handle holds the announcer's place on its connection's scheduler (which sends its
/// tokens) and, with etcd, its registration: dropping it without
/// [`shutdown`](AnnouncerHandle::shutdown) stops both *without* a leaving token and without revoking the lease, as a crash would
/// (subscribers drop the instance when its TTL runs out; etcd deletes the key when the lease
/// expires).
///
/// With etcd, the announcer may also stop on its own, when etcd's authority ends its
/// incarnation (another incarnation took the id over, or an operator deleted the key):
/// [`stopped`](AnnouncerHandle::stopped) resolves then, with the reason.
#[derive(Debug)]
pub struct AnnouncerHandle {
    /// Declared first, so that a dropped handle stops the broadcasting before its registration
    /// hears of the drop.
    pub(crate) stop: DropGuard,
    pub(crate) service: String,
    pub(crate) instance: String,
    pub(crate) client: async_nats::Client,
    /// The announcer's place on its connection's scheduler, which sends its tokens.
    pub(crate) member: Member,
    pub(crate) last_token: watch::Receiver<Token>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) standing: watch::Receiver<Standing>,
    /// Keeps the standing channel open while no registration owns its sender (no
    /// etcd), so that `stopped()` stays pending until the handle goes.
    pub(crate) _standing_owner: Option<watch::Sender<Standing>>,
    /// Cancelled when the announcer's tokens have ended (its goodbye flushed, if any).
    pub(crate) broadcast_done: CancellationToken,
    /// The registration its session keeps, with etcd.
    pub(crate) registration: Option<RecordHandle>,
    /// Numbers `set_meta()` calls, so that calls that cross keep the newest metadata.
    pub(crate) meta_versions: AtomicU64,
}

impl AnnouncerHandle {
    /// The service this instance announces.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// This instance's id (generated when the builder was not given one).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(announcer: herald_announcer::AnnouncerHandle) {
    /// println!("announcing {} as {}", announcer.service(), announcer.instance());
    /// # }
    /// ```
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The last token handed to NATS: what subscribers have heard most recently.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(announcer: herald_announcer::AnnouncerHandle) {
    /// let token = announcer.token();
    /// println!("seq {} state {} load {}", token.seq, token.state, token.load);
    /// # }
    /// ```
    pub fn token(&self) -> Token {
        self.last_token.borrow().clone()
    }

    /// The epoch of the current registration in etcd (the revision that wrote it), which
    /// every token carries; `0` without etcd. It changes when the announcer registers again
    /// after losing its lease, and when `set_meta` rewrites the registration.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(announcer: herald_announcer::AnnouncerHandle) {
    /// println!("registered at epoch {}", announcer.epoch());
    /// # }
    /// ```
    pub fn epoch(&self) -> u64 {
        self.standing.borrow().epoch
    }

    /// Resolves when the announcer has stopped, with the reason: [`Stopped::Fenced`] when
    /// another incarnation took the instance id over in etcd, [`Stopped::Deregistered`] when
    /// an operator deleted the registration, [`Stopped::Closed`] once the handle was shut
    /// down or dropped. By then no token goes out any more and, when etcd stopped it, its
    /// own lease is revoked (the key belongs to the new holder, or to nobody). The future
    /// does not borrow the handle: spawn it, or `select!` on it next to the application's
    /// work.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(announcer: herald_announcer::AnnouncerHandle) {
    /// use herald_announcer::Stopped;
    ///
    /// match announcer.stopped().await {
    ///     Stopped::Fenced { by_epoch } => eprintln!("replaced by epoch {by_epoch}; exiting"),
    ///     Stopped::Deregistered => eprintln!("deregistered by an operator; exiting"),
    ///     other => eprintln!("stopped: {other}"),
    /// }
    /// # }
    /// ```
    pub fn stopped(&self) -> impl Future<Output = Stopped> + Send + 'static {
        let mut standing = self.standing.clone();
        let broadcast_done = self.broadcast_done.clone();
        async move {
            let reason = standing
                .wait_for(|s| s.stopped.is_some())
                .await
                .map(|s| s.stopped)
                .ok()
                .flatten();
            match reason {
                Some(reason) => reason,
                None => {
                    broadcast_done.cancelled().await;
                    Stopped::Closed
                }
            }
        }
    }

    /// The announcer's counters.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(announcer: herald_announcer::AnnouncerHandle) {
    /// let stats = announcer.stats();
    /// println!("{} tokens, {} probe answers", stats.tokens_sent, stats.probe_answers);
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Sets the current load. The next token carries it; when it differs from the last sent
    /// load by more than `load_delta`, a token goes out early (at once, or at the end of
    /// `min_early_gap` after the previous token).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] naming `load` when `load` is not finite and `>= 0`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(announcer: herald_announcer::AnnouncerHandle) -> Result<(), herald_announcer::Error> {
    /// announcer.set_load(0.7)?;
    /// # Ok(()) }
    /// ```
    pub fn set_load(&self, load: f32) -> Result<(), Error> {
        herald_shared::validate::load(load).map_err(herald_shared::ConfigError::from)?;
        self.member.set_load(load);
        Ok(())
    }

    /// Marks the instance `draining` (still listed, no longer picked) and publishes at once,
    /// returning once the token is flushed to the server. Later tokens stay `draining`.
    ///
    /// # Errors
    ///
    /// `Publish` when the token could not be sent or flushed, `Stopped` when the broadcast
    /// task is gone.
    ///
    /// # Cancellation safety
    ///
    /// Once the request reached the task the instance is draining, whether or not this future
    /// is awaited to the end. While NATS is disconnected the flush waits for the reconnect;
    /// wrap the call in a timeout to bound it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(announcer: herald_announcer::AnnouncerHandle) -> Result<(), herald_announcer::Error> {
    /// announcer.drain().await?;
    /// // ... let in-flight requests finish ...
    /// announcer.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn drain(&self) -> Result<(), Error> {
        self.published(self.member.set_state(State::Draining)).await
    }

    /// Undoes [`drain`](AnnouncerHandle::drain): announces `up` at once, so consumers pick the
    /// instance again (for example when a health check passes again).
    ///
    /// # Errors
    ///
    /// As [`drain`](AnnouncerHandle::drain).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(announcer: herald_announcer::AnnouncerHandle) -> Result<(), herald_announcer::Error> {
    /// announcer.drain().await?;
    /// // ... the dependency came back ...
    /// announcer.resume().await?;
    /// # Ok(()) }
    /// ```
    pub async fn resume(&self) -> Result<(), Error> {
        self.published(self.member.set_state(State::Up)).await
    }

    /// Replaces the metadata and publishes it, returning once the token is flushed. With
    /// etcd, the registration is rewritten first (under the same lease; its new revision
    /// becomes the epoch), and the token goes out with the new epoch: subscribers with etcd
    /// never see metadata the registration does not hold.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] naming `meta` when the map breaks a bound (the previous metadata
    /// stays); `EtcdUnreachable` when etcd could not be written (tokens keep the previous
    /// metadata; the registration is rewritten, and the new metadata goes out, as soon as etcd
    /// answers); otherwise as [`drain`](AnnouncerHandle::drain).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(announcer: herald_announcer::AnnouncerHandle) -> Result<(), herald_announcer::Error> {
    /// announcer.set_meta([("version", "1.4.3")]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_meta<I, K, V>(&self, meta: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let meta: BTreeMap<String, String> = meta
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let Some(registration) = &self.registration else {
            return self
                .published(self.member.set_meta(MetaRequest::Publish(meta)))
                .await;
        };
        // The registration first, then the token: a subscriber with etcd drops a token whose
        // identity is not the registration's.
        let meta = StagedMeta {
            version: self.meta_versions.fetch_add(1, Relaxed) + 1,
            meta,
        };
        self.member
            .set_meta(MetaRequest::Stage(meta.clone()))
            .await?;
        registration.rewrite(meta).await?;
        self.published(self.member.set_meta(MetaRequest::Written))
            .await
    }

    /// Stops announcing: sends a `leaving` token (subscribers drop the instance at once),
    /// flushes it, then, with etcd, waits until the server has routed it (one round trip, so
    /// that subscribers see a goodbye before the deregistration), revokes the lease (the key
    /// disappears at once), and waits for the tasks to end, all within `shutdown_timeout`. After the announcer stopped on
    /// its own (see [`stopped`](AnnouncerHandle::stopped)) there is nothing left to do.
    ///
    /// With etcd, a goodbye that could not be broadcast (NATS down) is logged as a warning
    /// and is not an error when the registration was deleted: subscribers with etcd remove
    /// the instance at once through their watch.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TimedOut`] when the goodbye was not flushed (without etcd) or the lease
    /// not revoked before the deadline (the instance then expires by TTL, the key by lease
    /// expiry), `Publish` when the goodbye could not be sent (without etcd),
    /// `EtcdUnreachable` when the revoke failed, `Stopped` when a task had failed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(announcer: herald_announcer::AnnouncerHandle) -> Result<(), herald_announcer::Error> {
    /// announcer.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(self) -> Result<(), Error> {
        let AnnouncerHandle {
            stop,
            member,
            client,
            shutdown_timeout,
            registration,
            ..
        } = self;
        let deadline = Instant::now() + shutdown_timeout;
        // The registration is told to leave before the broadcasting stops; it deletes the
        // key (or revokes its own lease) once the goodbye below is flushed.
        let left = registration.map(|r| r.leave(deadline));
        stop.disarm().cancel();
        let goodbye = goodbye(member, &client, deadline, left.is_some()).await;
        let revoke = match left {
            Some(left) => reported(tokio::time::timeout_at(deadline + REPORT_SLACK, left).await),
            None => return goodbye,
        };
        match (goodbye, revoke) {
            // The registration is gone: subscribers remove the instance at once through
            // etcd, so the stop is graceful even though NATS did not carry the goodbye.
            (Err(e), Ok(())) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "goodbye not broadcast; the registration is deleted, so subscribers with etcd remove the instance at once, others after its TTL"
                );
                Ok(())
            }
            (goodbye, revoke) => goodbye.and(revoke),
        }
    }

    /// Leaves without failing a call: announces `draining` at once, so that consumers stop
    /// picking the instance while the calls they already made go on; waits `drain`, long
    /// enough for every subscriber and xDS client to have seen it and for those calls to
    /// finish; then [`shutdown`](AnnouncerHandle::shutdown)s (goodbye, deregistration). Stop
    /// serving only after it returns. A zero `drain` is `shutdown`. The wait ends early when
    /// the announcer stops on its own (see [`stopped`](AnnouncerHandle::stopped)).
    ///
    /// A drain that cannot be announced (NATS down) is logged; the wait and the shutdown
    /// still happen, so that a stop never waits longer than `drain` plus the shutdown
    /// timeout.
    ///
    /// # Errors
    ///
    /// As [`shutdown`](AnnouncerHandle::shutdown).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(announcer: herald_announcer::AnnouncerHandle) -> Result<(), herald_announcer::Error> {
    /// use std::time::Duration;
    ///
    /// // On SIGTERM: out of every consumer's picks first, then gone, then stop serving.
    /// announcer.shutdown_after(Duration::from_millis(500)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown_after(self, drain: Duration) -> Result<(), Error> {
        if !drain.is_zero() {
            let until = Instant::now() + drain;
            match tokio::time::timeout_at(until, self.drain()).await {
                Ok(Ok(())) => tracing::info!(?drain, "draining before leaving"),
                Ok(Err(e)) => tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "drain not announced; leaving after the drain period anyway"
                ),
                Err(_) => tracing::warn!(
                    ?drain,
                    "drain not flushed within the drain period; leaving now"
                ),
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                _ = self.stopped() => {}
            }
        }
        self.shutdown().await
    }

    /// Flushes the token a request published: when the flush completes, the token has
    /// reached the socket.
    async fn published(
        &self,
        request: impl Future<Output = Result<(), Error>>,
    ) -> Result<(), Error> {
        request.await?;
        self.client
            .flush()
            .await
            .map_err(|e| Error::with_source(ErrorKind::Publish, e))
    }
}

/// The leaving token, sent and flushed before `deadline`; nothing to send after etcd halted
/// the announcer. The guard it comes with is dropped once it is flushed, which lets the
/// registration revoke; with a registration to remove, only once the server has also
/// handed the token to its subscribers, so that they see a goodbye rather than a
/// deregistration (the registration waits half of the time left, no longer).
async fn goodbye(
    member: Member,
    client: &async_nats::Client,
    deadline: Instant,
    registered: bool,
) -> Result<(), Error> {
    let routed_within = deadline.saturating_duration_since(Instant::now()) / 2;
    let sent_and_flushed = async {
        let Some(Goodbye { sent, done }) = member.leave().await else {
            return Ok(false);
        };
        sent?;
        client
            .flush()
            .await
            .map_err(|e| Error::with_source(ErrorKind::Publish, e))?;
        if registered {
            if let Err(e) = round_trip::server_handled(client, routed_within).await {
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    "leaving token flushed but not confirmed by the server; deregistering anyway"
                );
            }
        }
        drop(done);
        Ok(true)
    };
    match tokio::time::timeout_at(deadline, sent_and_flushed).await {
        Ok(Ok(true)) => {
            tracing::info!("shut down; leaving token sent");
            Ok(())
        }
        Ok(Ok(false)) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "shut down; leaving token not sent"
            );
            Err(e)
        }
        Err(_) => {
            tracing::warn!("shut down; leaving token not flushed before the deadline");
            Err(Error::new(ErrorKind::TimedOut))
        }
    }
}

/// The registration's report of its leaving, awaited under a deadline.
fn reported(
    r: Result<Result<Result<(), Error>, oneshot::error::RecvError>, tokio::time::error::Elapsed>,
) -> Result<(), Error> {
    match r {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(Error::with_source(
            ErrorKind::Stopped,
            "the session's registry ended",
        )),
        Err(_) => Err(Error::new(ErrorKind::TimedOut)),
    }
}
