//! NATS connection settings shared by announcers and subscribers, and the one place a Herald
//! client connects to NATS.
//!
//! Credentials and TLS pass straight through to async-nats. Herald replaces async-nats's
//! reconnect backoff (which grows to 4 s) with a short, jittered one: a discovery client that
//! stays away for seconds after a server restart is a client whose view is stale for seconds,
//! and jitter keeps a crowd of clients from reconnecting in lockstep.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

/// How a client authenticates to NATS.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// User and password.
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// A bearer token.
    Token(String),
    /// A `.creds` file (JWT and nkey seed).
    CredentialsFile(PathBuf),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            NatsAuth::Token(_) => f.write_str("Token(***)"),
            NatsAuth::CredentialsFile(p) => write!(f, "CredentialsFile({})", p.display()),
        }
    }
}

/// TLS settings for NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// Extra root certificates (PEM files) to trust.
    pub root_certificates: Vec<PathBuf>,
    /// Client certificate and key (PEM files) for mutual TLS.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// Refuse to connect without TLS.
    pub required: bool,
}

/// Where and how to reach NATS.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), herald_shared::ConfigError> {
/// use herald_shared::NatsConfig;
///
/// let nats = NatsConfig::new(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]);
/// let (client, _events) = nats.connect().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Server URLs; the client connects to one and fails over to the others. Credentials
    /// written in a URL (`nats://user:password@host:4222`, `nats://token@host:4222`) log in
    /// when [`NatsConfig::auth`] is [`NatsAuth::None`].
    pub urls: Vec<String>,
    /// Credentials.
    pub auth: NatsAuth,
    /// TLS settings.
    pub tls: NatsTls,
    /// Connection name shown by the server's monitoring.
    pub name: Option<String>,
    /// How long the first connection may take before `connect` fails.
    pub connect_timeout: Duration,
    /// Longest pause between reconnect attempts (before jitter).
    pub max_reconnect_delay: Duration,
    /// Messages buffered per subscription before async-nats drops them (slow consumer).
    pub subscription_capacity: usize,
    /// Try the servers in the order of `urls` (first connection and reconnects) instead of
    /// async-nats's random order (default `false`). Lets a client prefer a nearby server and
    /// keep the others for failover.
    pub retain_servers_order: bool,
}

impl NatsConfig {
    /// Settings for these server URLs, with defaults for the rest.
    pub fn new<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        NatsConfig {
            urls: urls.into_iter().map(Into::into).collect(),
            auth: NatsAuth::None,
            tls: NatsTls::default(),
            name: None,
            connect_timeout: Duration::from_secs(5),
            max_reconnect_delay: Duration::from_millis(500),
            subscription_capacity: 65_536,
            retain_servers_order: false,
        }
    }

    /// Checks the settings without connecting.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Field`] naming the first field that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.urls.is_empty() {
            return Err(ConfigError::field(
                "nats.urls",
                "must list at least one server",
            ));
        }
        for url in &self.urls {
            url.parse::<async_nats::ServerAddr>()
                .map_err(|_| ConfigError::field("nats.urls", "each entry must be a NATS URL"))?;
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::field("nats.connect_timeout", "must be > 0"));
        }
        if self.subscription_capacity == 0 {
            return Err(ConfigError::field(
                "nats.subscription_capacity",
                "must be > 0",
            ));
        }
        Ok(())
    }

    /// Connects, returning the client and a receiver of the connection's events.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Field`] for bad settings, [`ConfigError::Connect`] when no server
    /// answered within [`NatsConfig::connect_timeout`].
    pub async fn connect(&self) -> Result<(async_nats::Client, ConnectionEvents), ConfigError> {
        self.validate()?;
        let addrs = self
            .urls
            .iter()
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ConfigError::field("nats.urls", "each entry must be a NATS URL"))?;

        // Credentials written in a URL (`nats://user:password@host`, `nats://token@host`) log
        // in when no other credentials are set; async-nats itself does not read them.
        let from_url =
            addrs
                .iter()
                .find(|a| a.has_user_pass())
                .map(|a| match (a.username(), a.password()) {
                    (Some(user), Some(password)) => NatsAuth::UserPassword {
                        user: user.to_owned(),
                        password: password.to_owned(),
                    },
                    (user, _) => NatsAuth::Token(user.unwrap_or_default().to_owned()),
                });
        let auth = match (&self.auth, &from_url) {
            (NatsAuth::None, Some(from_url)) => from_url,
            (auth, _) => auth,
        };
        let mut opts = match auth {
            NatsAuth::None => async_nats::ConnectOptions::new(),
            NatsAuth::UserPassword { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            NatsAuth::Token(t) => async_nats::ConnectOptions::with_token(t.clone()),
            NatsAuth::CredentialsFile(p) => async_nats::ConnectOptions::with_credentials_file(p)
                .await
                .map_err(|e| ConfigError::Credentials(e.to_string()))?,
        };
        for root in &self.tls.root_certificates {
            opts = opts.add_root_certificates(root.clone());
        }
        if let Some((cert, key)) = &self.tls.client_certificate {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls.required {
            opts = opts.require_tls(true);
        }
        if let Some(name) = &self.name {
            opts = opts.name(name);
        }
        if self.retain_servers_order {
            opts = opts.retain_servers_order();
        }
        let (tx, _) = broadcast::channel(64);
        let events = ConnectionEvents { tx: tx.clone() };
        let max = self.max_reconnect_delay;
        opts = opts
            .connection_timeout(self.connect_timeout)
            .subscription_capacity(self.subscription_capacity)
            .reconnect_delay_callback(move |attempts| reconnect_delay(attempts, max))
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    let mapped = match event {
                        async_nats::Event::Connected => Some(NatsEvent::Connected),
                        async_nats::Event::Disconnected => Some(NatsEvent::Disconnected),
                        async_nats::Event::SlowConsumer(sid) => Some(NatsEvent::SlowConsumer(sid)),
                        // The server refused something this client asked for, which the
                        // caller never sees as an error of its own (publishes are
                        // fire-and-forget). A permissions violation goes to the connection's
                        // owner, which knows what it means (a start that fails, a warning
                        // once); any other server error is logged here.
                        async_nats::Event::ServerError(error) => {
                            let said = error.to_string();
                            let lower = said.to_ascii_lowercase();
                            if lower.contains("permissions violation") {
                                tracing::debug!(%error, "nats server refused a request");
                                let publish = lower.contains("permissions violation for publish");
                                Some(NatsEvent::PermissionViolation { publish, said })
                            } else {
                                tracing::warn!(%error, "nats server error");
                                None
                            }
                        }
                        other => {
                            tracing::debug!(event = %other, "nats event");
                            None
                        }
                    };
                    if let Some(e) = mapped {
                        let _ = tx.send(e);
                    }
                }
            });
        let connect = opts.connect(addrs);
        match tokio::time::timeout(self.connect_timeout + Duration::from_millis(250), connect).await
        {
            Ok(Ok(client)) => Ok((client, events)),
            Ok(Err(e)) => Err(ConfigError::Connect(Arc::new(NatsConnectError(e)))),
            Err(_) => Err(ConfigError::ConnectTimedOut(self.connect_timeout)),
        }
    }
}

/// Delay before connection attempt `attempts` (1-based): none for the first, then 10 ms
/// doubling up to `max`, with
/// +-25 % jitter so that clients of one restarted server spread out.
pub fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    // async-nats asks before its very first attempt too (attempts = 1): no wait for that one,
    // as with its own default, or every start would pay a pointless pause.
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let base_ms = 10u64.saturating_mul(1u64 << attempts.saturating_sub(2).min(16));
    let capped = Duration::from_millis(base_ms).min(max);
    let jitter = 0.75 + fastrand::f64() * 0.5;
    capped.mul_f64(jitter)
}

/// What the connection reported, as far as Herald cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsEvent {
    /// (Re)connected to a server.
    Connected,
    /// Lost the server.
    Disconnected,
    /// async-nats dropped messages of subscription `sid` because its buffer was full.
    SlowConsumer(u64),
    /// The server refused a publish (`publish`) or a subscription of this client (a
    /// permissions violation): the client library never sees it as an error of the call.
    PermissionViolation {
        /// A publish was refused, not a subscription.
        publish: bool,
        /// The server's words, naming the subject.
        said: String,
    },
}

/// Events of a connection made by [`NatsConfig::connect`].
#[derive(Debug, Clone)]
pub struct ConnectionEvents {
    tx: broadcast::Sender<NatsEvent>,
}

impl ConnectionEvents {
    /// A new receiver of the events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NatsEvent> {
        self.tx.subscribe()
    }
}

/// Why a configuration was refused or a connection could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting is outside its bound.
    #[error("invalid `{field}`: {bound}")]
    Field {
        /// The setting, e.g. `interval` or `nats.urls`.
        field: &'static str,
        /// The bound it broke.
        bound: &'static str,
    },
    /// The credentials file could not be read.
    #[error("cannot read nats credentials: {0}")]
    Credentials(String),
    /// The NATS client could not connect (refused, unreachable, authorization, TLS); the
    /// client's error is the source.
    #[error("cannot connect to nats")]
    Connect(#[source] Arc<NatsConnectError>),
    /// No NATS server answered within the connect timeout.
    #[error("no nats server answered within {0:?}")]
    ConnectTimedOut(Duration),
}

/// The NATS client's connect error as one layer of a chain: its kind (`IO error`,
/// `authorization violation`, `TLS error`, ...), with the underlying error as the source.
/// (async-nats's own `Display` repeats its source, so a printed chain would say it twice.)
#[derive(Debug)]
pub struct NatsConnectError(pub async_nats::ConnectError);

impl NatsConnectError {
    /// What kind of connect failure this is.
    pub fn kind(&self) -> async_nats::ConnectErrorKind {
        self.0.kind()
    }
}

impl std::fmt::Display for NatsConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.kind())
    }
}

impl std::error::Error for NatsConnectError {
    /// The underlying error, unless it only says the kind again (the server's
    /// `nats: authorization violation` under the kind `authorization violation`).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let source = std::error::Error::source(&self.0)?;
        let said = source.to_string();
        let kind = self.0.kind().to_string();
        let restated = said
            .trim_start_matches("nats: ")
            .eq_ignore_ascii_case(&kind);
        (!restated).then_some(source)
    }
}

impl ConfigError {
    /// A [`ConfigError::Field`].
    pub fn field(field: &'static str, bound: &'static str) -> Self {
        ConfigError::Field { field, bound }
    }
}

impl From<crate::validate::Invalid> for ConfigError {
    fn from(e: crate::validate::Invalid) -> Self {
        ConfigError::Field {
            field: e.field.as_str(),
            bound: e.bound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_error_says_its_cause_once() {
        use std::error::Error as _;
        let kind = async_nats::ConnectErrorKind::AuthorizationViolation;
        let restated = NatsConnectError(async_nats::ConnectError::with_source(
            kind,
            std::io::Error::other("nats: authorization violation"),
        ));
        assert_eq!(restated.to_string(), "authorization violation");
        assert!(restated.source().is_none(), "the source only said it again");
        let io = NatsConnectError(async_nats::ConnectError::with_source(
            async_nats::ConnectErrorKind::Io,
            std::io::Error::other("connection refused"),
        ));
        assert_eq!(
            io.source().map(|s| s.to_string()).as_deref(),
            Some("connection refused")
        );
    }

    #[test]
    fn reconnect_delay_is_short_capped_and_jittered() {
        let max = Duration::from_millis(500);
        for attempt in 1..40 {
            let d = reconnect_delay(attempt, max);
            assert!(
                d <= max.mul_f64(1.25),
                "attempt {attempt}: {d:?} exceeds cap"
            );
        }
        assert_eq!(
            reconnect_delay(1, max),
            Duration::ZERO,
            "the first attempt does not wait"
        );
        assert!(reconnect_delay(2, max) <= Duration::from_millis(13));
        let samples: std::collections::HashSet<_> =
            (0..20).map(|_| reconnect_delay(30, max)).collect();
        assert!(samples.len() > 1, "delays must be jittered");
    }

    #[test]
    fn validation_names_the_field() {
        let err = NatsConfig::new(Vec::<String>::new())
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `nats.urls`: must list at least one server"
        );
        let err = NatsConfig::new(["not a url at all ::"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("nats.urls"), "{err}");
    }

    /// Two silent listeners stand in for servers: the client connects to one, gets no INFO,
    /// times out and tries the other. Whatever the attempt, the first listed is tried first.
    #[tokio::test]
    async fn retained_order_tries_the_first_listed_server_first() {
        use tokio::net::TcpListener;

        assert!(
            !NatsConfig::new(["nats://127.0.0.1:1"]).retain_servers_order,
            "async-nats's random order stays the default"
        );
        for _ in 0..8 {
            let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let second = TcpListener::bind("127.0.0.1:0").await.unwrap();
            // List the listeners in a random order, so that a client ignoring the order
            // would be caught about half the time per round.
            let (preferred, other) = if fastrand::bool() {
                (first, second)
            } else {
                (second, first)
            };
            let url = |l: &TcpListener| format!("nats://{}", l.local_addr().unwrap());
            let mut config = NatsConfig::new([url(&preferred), url(&other)]);
            config.retain_servers_order = true;
            // Long enough that the first attempt is still pending while the test looks.
            config.connect_timeout = Duration::from_secs(5);
            let connect = tokio::spawn(async move { config.connect().await.map(drop) });
            // Unbiased: were both tried at once, either could be taken first.
            let (which, accepted) = tokio::time::timeout(Duration::from_secs(5), async {
                tokio::select! {
                    accepted = preferred.accept() => ("first listed", accepted),
                    accepted = other.accept() => ("second listed", accepted),
                }
            })
            .await
            .expect("a listed server is tried");
            let _conn = accepted.unwrap();
            assert_eq!(
                which, "first listed",
                "the first listed server is tried first"
            );
            connect.abort();
        }
    }
}
