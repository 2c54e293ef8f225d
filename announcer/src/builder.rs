//! [`Announcer::builder`] and its settings. Nothing here touches the network: `start()`
//! validates everything first (into a `Plan`), then connects and publishes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use herald_shared::{EtcdConfig, NatsConfig};

use crate::error::Error;
use crate::handle::AnnouncerHandle;
use crate::plan::{Connection, EtcdConnection, LoadFn, Plan};
use crate::session::Session;
use crate::settings::Requested;

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
    pub(crate) service: String,
    pub(crate) addr: String,
    pub(crate) connection: Option<Connection>,
    pub(crate) prefix: String,
    pub(crate) instance: Option<String>,
    pub(crate) zone: Option<String>,
    pub(crate) weight: u32,
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) load: f32,
    pub(crate) load_fn: Option<LoadFn>,
    pub(crate) requested: Requested,
    pub(crate) etcd: Option<EtcdConnection>,
    pub(crate) takeover: bool,
    /// Whether `lease_ttl` was set (a conflict with a session's lease).
    pub(crate) lease_ttl_set: bool,
}

impl AnnouncerBuilder {
    /// Connects to NATS with these settings; the connection belongs to the announcer and
    /// closes with it. This or [`AnnouncerBuilder::client`] is required.
    ///
    /// # Examples
    ///
    /// ```
    /// use herald_announcer::Announcer;
    /// use herald_shared::NatsConfig;
    ///
    /// let builder = Announcer::builder("billing", "10.0.0.7:8080")
    ///     .nats(NatsConfig::new(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]));
    /// ```
    pub fn nats(mut self, config: NatsConfig) -> Self {
        self.connection = Some(Connection::Config(config));
        self
    }

    /// Shares an existing connection (several announcers of one process, or an application's
    /// own client). The announcer never closes it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use herald_announcer::Announcer;
    ///
    /// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    /// let announcer = Announcer::builder("billing", "10.0.0.7:8080")
    ///     .client(client.clone())
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn client(mut self, client: async_nats::Client) -> Self {
        self.connection = Some(Connection::Client(client));
        self
    }

    /// The subject prefix (default `herald`), one subject token `[A-Za-z0-9_-]{1,64}`.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .prefix("staging");
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The instance id, `[A-Za-z0-9_.:-]{1,128}`, unique within the service. Defaults to
    /// `{host}-{16 random hex digits}`, new at every start.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .instance("billing-1");
    /// ```
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// The broadcast interval (default 1 s, within 50 ms ..= 20 min); each token goes out
    /// `interval` +-10 % after the previous one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .interval(Duration::from_millis(500));
    /// ```
    pub fn interval(mut self, interval: Duration) -> Self {
        self.requested.interval = interval;
        self
    }

    /// How long subscribers keep the instance without a newer token (default 3 x interval;
    /// within 100 ms ..= 1 h and greater than the interval). Twice the interval or more
    /// survives one lost token.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .interval(Duration::from_secs(1))
    ///     .ttl(Duration::from_secs(5));
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.requested.ttl = Some(ttl);
        self
    }

    /// The zone or rack, `[A-Za-z0-9_.-]{1,64}`, for zone-preferring picks.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .zone("eu-1");
    /// ```
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// The weight for weighted picks (default 100, at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .weight(200);
    /// ```
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Adds a metadata entry (at most 32 entries, keys 1..=64 bytes, values up to 256 bytes,
    /// and the whole token within 4 KiB).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .meta("version", "1.4.2")
    ///     .meta("protocol", "grpc");
    /// ```
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }

    /// The initial load (default 0), finite and `>= 0`.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .load(0.3);
    /// ```
    pub fn load(mut self, load: f32) -> Self {
        self.load = load;
        self
    }

    /// A load source, sampled by the broadcast task every
    /// [`load_sample_interval`](AnnouncerBuilder::load_sample_interval). It runs on the
    /// task, so it must be quick and must not block; samples that are not finite and `>= 0`
    /// are ignored.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// let in_flight = Arc::new(AtomicU32::new(0));
    /// let gauge = in_flight.clone();
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .load_fn(move || gauge.load(Ordering::Relaxed) as f32)
    ///     .load_delta(5.0);
    /// ```
    pub fn load_fn(mut self, load_fn: impl Fn() -> f32 + Send + Sync + 'static) -> Self {
        self.load_fn = Some(LoadFn(Arc::new(load_fn)));
        self
    }

    /// How often `load_fn` is sampled (default interval / 4, at least 25 ms).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .load_fn(|| 0.5)
    ///     .load_sample_interval(Duration::from_millis(100));
    /// ```
    pub fn load_sample_interval(mut self, every: Duration) -> Self {
        self.requested.load_sample_interval = Some(every);
        self
    }

    /// The load change that sends a token early (default 0.1, for a load expressed as
    /// utilisation): when `|load - last sent load| > delta`.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .load_delta(0.05);
    /// ```
    pub fn load_delta(mut self, delta: f32) -> Self {
        self.requested.load_delta = delta;
        self
    }

    /// The smallest spacing of early tokens (default 100 ms, capped by the interval; within
    /// 10 ms ..= interval). A change that comes sooner is sent at the end of the gap.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .min_early_gap(Duration::from_millis(250));
    /// ```
    pub fn min_early_gap(mut self, gap: Duration) -> Self {
        self.requested.min_early_gap = Some(gap);
        self
    }

    /// How long [`AnnouncerHandle::shutdown`] may take to send its goodbye (default 2 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .shutdown_timeout(Duration::from_millis(500));
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.requested.shutdown_timeout = timeout;
        self
    }

    /// Registers the instance in etcd, connecting with these settings (the client is the
    /// announcer's own). `start()` then fails fast when etcd is unreachable or refuses the
    /// credentials, and fails with
    /// [`ErrorKind::DuplicateInstance`](crate::ErrorKind::DuplicateInstance) when another
    /// live incarnation holds the instance id (see [`takeover`](AnnouncerBuilder::takeover)).
    /// Every token carries the registration's epoch.
    ///
    /// # Examples
    ///
    /// ```
    /// use herald_announcer::Announcer;
    /// use herald_shared::{EtcdConfig, NatsConfig};
    ///
    /// let builder = Announcer::builder("billing", "10.0.0.7:8080")
    ///     .nats(NatsConfig::new(["nats://10.0.0.1:4222"]))
    ///     .etcd(EtcdConfig::new(["http://10.0.0.1:2379", "http://10.0.0.2:2379"]))
    ///     .instance("billing-1");
    /// ```
    pub fn etcd(mut self, config: EtcdConfig) -> Self {
        self.etcd = Some(EtcdConnection::Config(config));
        self
    }

    /// Registers the instance in etcd through an existing client (several announcers of one
    /// process, or an application's own client); as [`etcd`](AnnouncerBuilder::etcd)
    /// otherwise. Each call is bounded by 5 s.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use herald_announcer::Announcer;
    /// use herald_shared::{EtcdConfig, NatsConfig};
    ///
    /// let etcd = EtcdConfig::new(["http://127.0.0.1:2379"]).connect().await?;
    /// let announcer = Announcer::builder("billing", "10.0.0.7:8080")
    ///     .nats(NatsConfig::new(["nats://127.0.0.1:4222"]))
    ///     .etcd_client(etcd.clone())
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn etcd_client(mut self, client: etcd_client::Client) -> Self {
        self.etcd = Some(EtcdConnection::Client(Box::new(client)));
        self
    }

    /// Registers the instance in etcd under a [`Session`]'s shared lease, through its client:
    /// the session keeps one lease alive for all its announcers, and carries their key watches
    /// on one stream, so etcd's load does not grow with the number of instances a process
    /// announces. Everything else is as with [`etcd`](AnnouncerBuilder::etcd), except that
    /// [`shutdown`](crate::AnnouncerHandle::shutdown) deletes the key rather than revoking
    /// the lease, and a dropped handle deletes it two token TTLs later. Replaces an
    /// earlier `etcd` or `etcd_client`; conflicts with [`lease_ttl`](AnnouncerBuilder::lease_ttl).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(session: herald_announcer::Session, nats: async_nats::Client) {
    /// use herald_announcer::Announcer;
    ///
    /// let builder = Announcer::builder("shard", "10.0.0.7:9000")
    ///     .client(nats)
    ///     .session(&session);
    /// # }
    /// ```
    pub fn session(mut self, session: &Session) -> Self {
        self.etcd = Some(EtcdConnection::Session(session.clone()));
        self
    }

    /// The TTL of the etcd lease that holds the registration (default 30 s, within
    /// 2 s ..= 1 h, rounded up to whole seconds). The announcer renews it every third of the
    /// TTL; when an outage outlasts it, etcd deletes the key and the announcer registers again
    /// (with a new epoch) as soon as etcd answers, broadcasting all the while. Liveness
    /// travels on NATS, so a long lease costs no detection speed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .lease_ttl(Duration::from_secs(10));
    /// ```
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.requested.lease_ttl = ttl;
        self.lease_ttl_set = true;
        self
    }

    /// Whether `start()` may replace a live registration of the same instance id (default
    /// `false`: it fails with
    /// [`ErrorKind::DuplicateInstance`](crate::ErrorKind::DuplicateInstance)). The new
    /// registration gets a higher epoch; the old incarnation is fenced: subscribers drop its
    /// tokens, and its announcer stops (its [`stopped`](AnnouncerHandle::stopped) resolves to
    /// [`Stopped::Fenced`](crate::Stopped::Fenced)).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .instance("billing-1")
    ///     .takeover(true);
    /// ```
    pub fn takeover(mut self, takeover: bool) -> Self {
        self.takeover = takeover;
        self
    }

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
        Plan::new(self).map(drop)
    }

    /// Validates everything, then connects (or takes the shared client), subscribes to the
    /// probe subjects and confirms them on the server, registers in etcd when configured
    /// (a lease, and one create-if-absent transaction on the instance's key), publishes the
    /// first token and waits until it is flushed, and starts the broadcast task (and the
    /// registration task).
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
        let plan = Plan::new(&self)?;
        crate::start::start(plan).await
    }
}
