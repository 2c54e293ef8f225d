//! [`AnnouncerHandle`]: the running announcer, as its owner sees it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use herald_shared::Token;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::DropGuard;

use crate::error::{Error, ErrorKind};
use crate::stats::{Counters, Stats};
use crate::task::Command;

/// A running announcer.
///
/// The handle owns the broadcast task through a cancellation drop guard: dropping it without
/// [`shutdown`](AnnouncerHandle::shutdown) stops the task *without* a leaving token, as a
/// crash would (subscribers drop the instance when its TTL runs out).
#[derive(Debug)]
pub struct AnnouncerHandle {
    /// Declared first, so that a dropped handle cancels the task before its channels close.
    pub(crate) stop: DropGuard,
    pub(crate) service: String,
    pub(crate) instance: String,
    pub(crate) client: async_nats::Client,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) load: watch::Sender<f32>,
    pub(crate) last_token: watch::Receiver<Token>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) goodbye: oneshot::Sender<Instant>,
    pub(crate) task: JoinHandle<Result<(), Error>>,
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
        self.load.send_replace(load);
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
        self.request(Command::Drain).await
    }

    /// Replaces the metadata and publishes at once, returning once the token is flushed.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] naming `meta` when the map breaks a bound (the previous metadata
    /// stays); otherwise as [`drain`](AnnouncerHandle::drain).
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
        self.request(|reply| Command::SetMeta(meta, reply)).await
    }

    /// Stops announcing: sends a `leaving` token (subscribers drop the instance at once),
    /// flushes it, and waits for the broadcast task to end, all within `shutdown_timeout`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TimedOut`] when the goodbye was not flushed before the deadline (the
    /// instance then expires by TTL), `Publish` when it could not be sent, `Stopped` when
    /// the task had failed.
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
            goodbye,
            stop,
            task,
            shutdown_timeout,
            ..
        } = self;
        let deadline = Instant::now() + shutdown_timeout;
        // The deadline first, then the cancellation: the task reads it once it sees the
        // cancellation, and its absence is what tells a drop from a shutdown.
        let _ = goodbye.send(deadline);
        stop.disarm().cancel();
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(Error::with_source(ErrorKind::Stopped, join)),
            Err(_) => Err(Error::new(ErrorKind::TimedOut)),
        }
    }

    async fn request(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), Error>>) -> Command,
    ) -> Result<(), Error> {
        let stopped = || Error::new(ErrorKind::Stopped);
        let (reply, published) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| stopped())?;
        published.await.map_err(|_| stopped())??;
        // The publish was queued on the connection before this flush: when the flush
        // completes, the token has reached the socket.
        self.client
            .flush()
            .await
            .map_err(|e| Error::with_source(ErrorKind::Publish, e))
    }
}
