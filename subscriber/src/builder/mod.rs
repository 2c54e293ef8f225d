//! The subscriber's settings and their checks; `start` starts one from them.

use std::time::Duration;

use herald_shared::{EtcdConfig, NatsConfig, Subjects, validate};

use crate::error::{Error, ErrorKind};

mod start;

/// Where the subscriber gets its NATS connection.
#[derive(Debug)]
enum Nats {
    Config(NatsConfig),
    Client(async_nats::Client),
}

/// Where the subscriber gets its etcd connection.
enum Etcd {
    Config(Box<EtcdConfig>),
    Client(Box<etcd_client::Client>),
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Etcd::Config(c) => c.fmt(f),
            Etcd::Client(_) => f.write_str("Client"),
        }
    }
}

/// Settings of a [`Subscriber`](crate::Subscriber); `start()` checks them, subscribes, and returns it.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), herald_subscriber::Error> {
/// use herald_shared::NatsConfig;
/// use herald_subscriber::{Strategy, Subscriber};
///
/// let subscriber = Subscriber::builder()
///     .nats(NatsConfig::new(["nats://127.0.0.1:4222"]))
///     .service("billing")
///     .zone("eu-1")
///     .start()
///     .await?;
/// let billing = subscriber.pick("billing", Strategy::PowerOfTwoChoices);
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `start()` is awaited"]
pub struct SubscriberBuilder {
    nats: Option<Nats>,
    etcd: Option<Etcd>,
    allow_unregistered: bool,
    prefix: String,
    services: Vec<String>,
    zone: Option<String>,
    event_capacity: usize,
    sweep_interval: Duration,
    confirm_timeout: Duration,
    #[cfg(feature = "internals")]
    ingest_delay: Option<Duration>,
    advisories: Option<String>,
    disconnect_grace: Duration,
}

/// How long a closed connection's instances wait for a token over another connection before
/// they are removed: a client that reconnects republishes at once.
pub const DEFAULT_DISCONNECT_GRACE: Duration = Duration::from_millis(200);

/// Longest grace: past a few seconds the TTL decides anyway.
const MAX_DISCONNECT_GRACE: Duration = Duration::from_secs(10);

impl Default for SubscriberBuilder {
    fn default() -> Self {
        SubscriberBuilder {
            nats: None,
            etcd: None,
            allow_unregistered: false,
            prefix: herald_shared::subject::DEFAULT_PREFIX.to_owned(),
            services: Vec::new(),
            zone: None,
            event_capacity: 4096,
            sweep_interval: Duration::from_millis(20),
            confirm_timeout: Duration::from_secs(5),
            #[cfg(feature = "internals")]
            ingest_delay: None,
            advisories: None,
            disconnect_grace: DEFAULT_DISCONNECT_GRACE,
        }
    }
}

impl SubscriberBuilder {
    /// Connect with these NATS settings (the subscriber owns the connection).
    pub fn nats(mut self, config: NatsConfig) -> Self {
        self.nats = Some(Nats::Config(config));
        self
    }

    /// Use an existing NATS client (shared with the application). Slow-consumer reports
    /// reach the subscriber only on connections it made itself; on a shared client, loss is
    /// still counted from `seq` gaps.
    pub fn client(mut self, client: async_nats::Client) -> Self {
        self.nats = Some(Nats::Client(client));
        self
    }

    /// Use etcd as the authority (registry mode): `start()` lists the registrations of the
    /// followed services (one consistent revision, paged) before it returns, then watches
    /// from the next revision. A token then applies only with its registration's epoch and
    /// identity (address, zone, weight, metadata, TTL); see
    /// [`SubscriberBuilder::allow_unregistered`].
    pub fn etcd(mut self, config: EtcdConfig) -> Self {
        self.etcd = Some(Etcd::Config(Box::new(config)));
        self
    }

    /// Use an existing etcd client as the authority (see [`SubscriberBuilder::etcd`]).
    pub fn etcd_client(mut self, client: etcd_client::Client) -> Self {
        self.etcd = Some(Etcd::Client(Box::new(client)));
        self
    }

    /// With etcd, also list instances that announce without a registration (epoch 0), under
    /// the bus rules (default: dropped and counted as unregistered). Their address is then
    /// only as trustworthy as the NATS publish permissions. Needs etcd.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), herald_subscriber::Error> {
    /// use herald_shared::{EtcdConfig, NatsConfig};
    /// use herald_subscriber::Subscriber;
    ///
    /// let subscriber = Subscriber::builder()
    ///     .nats(NatsConfig::new(["nats://127.0.0.1:4222"]))
    ///     .etcd(EtcdConfig::new(["http://127.0.0.1:2379"]))
    ///     .allow_unregistered(true)
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn allow_unregistered(mut self, allowed: bool) -> Self {
        self.allow_unregistered = allowed;
        self
    }

    /// Subject and key prefix (default `herald`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Follow this service only (repeat for several). Without any, every service is followed.
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.services.push(service.into());
        self
    }

    /// Prefer instances of this zone in picks, falling back to others when it has none.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Events buffered per `events()` stream before a slow reader is told it lagged
    /// (default 4096).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// How often expired instances are swept (default 20 ms, at most 100 ms): the bound on
    /// how late after its deadline an instance is removed.
    pub fn sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval = every;
        self
    }

    /// Follow NATS disconnect advisories on `subject`, where the application account
    /// receives the `$SYS.ACCOUNT.{account}.DISCONNECT` stream it imports (the README shows
    /// the server configuration). When an announcer's process dies, its host closes its
    /// connection and the server says so within milliseconds: every instance whose latest
    /// token came over that connection is removed (cause
    /// [`Disconnected`](crate::RemovalCause::Disconnected)) after the
    /// [grace](SubscriberBuilder::disconnect_grace), unless a token of it comes over another
    /// connection meanwhile. Connections that end for other reasons (server shutdown, lame
    /// duck, a stale connection of a hung process) change nothing: the TTL decides.
    ///
    /// At start the subscriber opens and closes a test connection (with its own NATS
    /// settings) and warns if its advisory does not arrive within 5 s.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), herald_subscriber::Error> {
    /// use herald_shared::NatsConfig;
    /// use herald_subscriber::Subscriber;
    ///
    /// let subscriber = Subscriber::builder()
    ///     .nats(NatsConfig::new(["nats://127.0.0.1:4222"]))
    ///     .disconnect_advisories("herald.sys.disconnect")
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn disconnect_advisories(mut self, subject: impl Into<String>) -> Self {
        self.advisories = Some(subject.into());
        self
    }

    /// How long a closed connection's instances wait for a token over another connection
    /// before they are removed (default 200 ms, at most 10 s); see
    /// [`disconnect_advisories`](SubscriberBuilder::disconnect_advisories).
    pub fn disconnect_grace(mut self, grace: Duration) -> Self {
        self.disconnect_grace = grace;
        self
    }

    /// Slows ingest down by `delay` per token, to exercise overload in tests (feature
    /// `internals`; production builds have no such hook).
    #[doc(hidden)]
    #[cfg(feature = "internals")]
    pub fn ingest_delay_for_tests(mut self, delay: Duration) -> Self {
        self.ingest_delay = Some(delay);
        self
    }

    fn validate(&self) -> Result<Subjects, Error> {
        let invalid = |field: &'static str, bound: &'static str| {
            Error::new(
                ErrorKind::InvalidConfig,
                herald_shared::ConfigError::field(field, bound),
            )
        };
        let subjects = Subjects::new(&self.prefix)
            .map_err(|_| invalid("prefix", "must match [A-Za-z0-9_-]{1,64}"))?;
        for s in &self.services {
            validate::service_name(s)
                .map_err(|_| invalid("service", "must match [A-Za-z0-9_-]{1,64}"))?;
        }
        if let Some(z) = &self.zone {
            validate::zone(z).map_err(|_| invalid("zone", "must match [A-Za-z0-9_.-]{1,64}"))?;
        }
        if self.event_capacity == 0 {
            return Err(invalid("event_capacity", "must be > 0"));
        }
        if self.sweep_interval.is_zero() || self.sweep_interval > Duration::from_millis(100) {
            return Err(invalid("sweep_interval", "must be within (0, 100 ms]"));
        }
        if let Some(subject) = &self.advisories
            && !subject_ok(subject)
        {
            return Err(invalid(
                "disconnect_advisories",
                "must be a NATS subject: dot-separated tokens, no spaces or wildcards",
            ));
        }
        if self.disconnect_grace > MAX_DISCONNECT_GRACE {
            return Err(invalid("disconnect_grace", "must be at most 10 s"));
        }
        if let Some(Etcd::Config(c)) = &self.etcd {
            c.validate()
                .map_err(|e| Error::new(ErrorKind::InvalidConfig, e))?;
        }
        match &self.nats {
            None => Err(invalid("nats", "a NATS config or client is required")),
            Some(Nats::Config(c)) => c.validate().map(|()| subjects).map_err(Error::from),
            Some(Nats::Client(_)) => Ok(subjects),
        }
    }
}

/// Whether `s` is a subject one can subscribe to without wildcards.
fn subject_ok(s: &str) -> bool {
    s.len() <= 255
        && s.split('.').all(|t| {
            !t.is_empty()
                && t != "*"
                && t != ">"
                && !t
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Subscriber;

    async fn error_of(b: SubscriberBuilder) -> String {
        let err = b.start().await.expect_err("invalid settings must fail");
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        let cause = std::error::Error::source(&err).expect("the cause names the field");
        format!("{err}: {cause}")
    }

    // An unreachable URL: validation must fail before any connection attempt.
    fn nats() -> NatsConfig {
        NatsConfig::new(["nats://127.0.0.1:1"])
    }

    #[tokio::test]
    async fn invalid_settings_fail_before_connecting_and_name_the_field() {
        let e = error_of(Subscriber::builder().nats(nats()).prefix("a.b")).await;
        assert!(e.contains("`prefix`"), "{e}");
        let e = error_of(Subscriber::builder().nats(nats()).service("bad service")).await;
        assert!(e.contains("`service`"), "{e}");
        let e = error_of(Subscriber::builder().nats(nats()).zone("")).await;
        assert!(e.contains("`zone`"), "{e}");
        let e = error_of(
            Subscriber::builder()
                .nats(nats())
                .sweep_interval(Duration::from_secs(1)),
        )
        .await;
        assert!(e.contains("`sweep_interval`"), "{e}");
        let e = error_of(Subscriber::builder().nats(nats()).event_capacity(0)).await;
        assert!(e.contains("`event_capacity`"), "{e}");
        let e = error_of(Subscriber::builder()).await;
        assert!(e.contains("`nats`"), "{e}");
        let e = error_of(Subscriber::builder().nats(NatsConfig::new(Vec::<String>::new()))).await;
        assert!(e.contains("`nats.urls`"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_with_a_connect_error() {
        let mut config = nats();
        config.connect_timeout = Duration::from_millis(300);
        let err = Subscriber::builder()
            .nats(config)
            .start()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    }
}
