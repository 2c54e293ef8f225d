//! Where the announcer connects: NATS (its own connection or a shared [`Connection`]), and etcd (its
//! own client, a shared one, or a [`Session`]), with the registration's lease and takeover.

use std::time::Duration;

use herald_shared::{EtcdConfig, NatsConfig};

use super::AnnouncerBuilder;
use crate::connection::Connection;
use crate::plan::{EtcdConnection, Nats};
use crate::session::Session;

impl AnnouncerBuilder {
    /// Connects to NATS with these settings; the connection belongs to the announcer and
    /// closes with it. This or [`AnnouncerBuilder::connection`] is required.
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
        self.connection = Some(Nats::Config(Box::new(config)));
        self
    }

    /// Shares an existing connection (several announcers of one process, or an application's
    /// own client), and with it one scheduler that sends the tokens of every announcer on it.
    /// The announcer never closes it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use herald_announcer::{Announcer, Connection};
    ///
    /// let nats = Connection::new(async_nats::connect("nats://127.0.0.1:4222").await?);
    /// let announcer = Announcer::builder("billing", "10.0.0.7:8080")
    ///     .connection(&nats)
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn connection(mut self, connection: &Connection) -> Self {
        self.connection = Some(Nats::Shared(connection.clone()));
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
    /// # async fn run(session: herald_announcer::Session, nats: herald_announcer::Connection) {
    /// use herald_announcer::Announcer;
    ///
    /// let builder = Announcer::builder("shard", "10.0.0.7:9000")
    ///     .connection(&nats)
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
    /// tokens, and its announcer stops (its [`stopped`](crate::AnnouncerHandle::stopped) resolves to
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
}
