//! [`Announcer::builder`] and its settings. Nothing here touches the network: `start()`
//! validates everything first (into a `Plan`), then connects and publishes.
//!
//! - `connections`: NATS and etcd (own, shared, or a session), lease TTL, takeover;
//! - `identity`: what tokens say about the instance (prefix, id, zone, weight, meta, load);
//! - `timing`: interval, TTL, load sampling, early tokens, shutdown deadline;
//! - `plan`: the settings checked and turned into the `Plan`.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::handle::AnnouncerHandle;
use crate::plan::{EtcdConnection, LoadFn, Nats};
use crate::settings::Requested;

mod connections;
mod identity;
mod plan;
mod timing;

/// The entry point: [`Announcer::builder`] configures an announcer, whose `start()` returns
/// the [`AnnouncerHandle`] of the running instance.
#[derive(Debug)]
pub enum Announcer {}

impl Announcer {
    /// Starts configuring the announcer of one instance of `service`, serving at `addr`
    /// (`host:port`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), herald_announcer::Error> {
    /// use herald_announcer::Announcer;
    /// use herald_shared::NatsConfig;
    ///
    /// let announcer = Announcer::builder("billing", "10.0.0.7:8080")
    ///     .nats(NatsConfig::new(["nats://127.0.0.1:4222"]))
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(service: impl Into<String>, addr: impl Into<String>) -> AnnouncerBuilder {
        AnnouncerBuilder {
            service: service.into(),
            addr: addr.into(),
            connection: None,
            prefix: herald_shared::subject::DEFAULT_PREFIX.to_owned(),
            instance: None,
            zone: None,
            weight: herald_shared::token::DEFAULT_WEIGHT,
            meta: BTreeMap::new(),
            load: 0.0,
            load_fn: None,
            requested: Requested::default(),
            etcd: None,
            takeover: false,
            lease_ttl_set: false,
        }
    }
}

/// Configures an announcer; the chain ends with [`AnnouncerBuilder::start`].
#[must_use = "a builder does nothing until `.start().await`"]
#[derive(Debug, Clone)]
pub struct AnnouncerBuilder {
    service: String,
    addr: String,
    connection: Option<Nats>,
    prefix: String,
    instance: Option<String>,
    zone: Option<String>,
    weight: u32,
    meta: BTreeMap<String, String>,
    load: f32,
    load_fn: Option<LoadFn>,
    requested: Requested,
    etcd: Option<EtcdConnection>,
    takeover: bool,
    /// Whether `lease_ttl` was set (a conflict with a session's lease).
    lease_ttl_set: bool,
}

impl AnnouncerBuilder {
    /// Checks every setting without connecting: what `start()` checks first.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::Config`](crate::ErrorKind::Config) error naming the first setting
    /// out of its bound.
    ///
    /// # Examples
    ///
    /// ```
    /// use herald_announcer::Announcer;
    /// use herald_shared::NatsConfig;
    ///
    /// let err = Announcer::builder("billing", "10.0.0.7")
    ///     .nats(NatsConfig::new(["nats://127.0.0.1:4222"]))
    ///     .validate()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), Some("addr"));
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        self.plan().map(drop)
    }

    /// Validates everything, then connects (or takes the shared client), subscribes to the
    /// probe subjects and confirms them on the server, registers in etcd when configured
    /// (a lease, and one create-if-absent transaction on the instance's key), publishes the
    /// first token and waits until it is flushed, and hands the broadcasting to the
    /// connection's scheduler (and the registration to its session).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) before anything is connected or
    /// published; then `Connect`, `Subscribe`; with etcd, `EtcdUnreachable`, `EtcdAuth` or
    /// `DuplicateInstance` (naming the instance and the holder's epoch); then `Publish` or
    /// `TimedOut` (the first token not flushed within 5 s). A registration already written is
    /// revoked when a later step fails.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), herald_announcer::Error> {
    /// use std::time::Duration;
    /// use herald_announcer::Announcer;
    /// use herald_shared::NatsConfig;
    ///
    /// let announcer = Announcer::builder("billing", "10.0.0.7:8080")
    ///     .nats(NatsConfig::new(["nats://127.0.0.1:4222"]))
    ///     .interval(Duration::from_secs(1))
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(self) -> Result<AnnouncerHandle, Error> {
        let plan = self.plan()?;
        crate::start::start(plan, std::future::pending()).await
    }

    /// As [`start`](AnnouncerBuilder::start), until `stop` completes: then the start stops,
    /// and what it registered in etcd is removed before it returns. A signal handler's
    /// future is the usual `stop`, so that a process told to stop while it starts leaves
    /// nothing registered (dropping a `start()` future leaves the registration to its
    /// lease instead).
    ///
    /// # Errors
    ///
    /// As [`start`](AnnouncerBuilder::start); [`ErrorKind::Stopped`](crate::ErrorKind::Stopped)
    /// when `stop` came first.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), herald_announcer::Error> {
    /// use herald_announcer::Announcer;
    /// use herald_shared::NatsConfig;
    ///
    /// let announcer = Announcer::builder("billing", "10.0.0.7:8080")
    ///     .nats(NatsConfig::new(["nats://127.0.0.1:4222"]))
    ///     .start_until(async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_until(
        self,
        stop: impl Future<Output = ()>,
    ) -> Result<AnnouncerHandle, Error> {
        let plan = self.plan()?;
        crate::start::start(plan, stop).await
    }
}
