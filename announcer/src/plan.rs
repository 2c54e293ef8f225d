//! What `start()` works from: every setting of the builder, validated and with its defaults
//! applied, before anything connects.

use std::fmt;
use std::sync::Arc;

use std::time::Duration;

use herald_shared::{EtcdConfig, NatsConfig, Subjects, Token};

use crate::builder::AnnouncerBuilder;
use crate::error::Error;
use crate::session::Session;
use crate::settings::{Settings, check_token};

/// How the announcer reaches NATS.
#[derive(Debug, Clone)]
pub(crate) enum Connection {
    /// Connect with these settings (the connection is the announcer's own).
    Config(NatsConfig),
    /// Share the caller's connection.
    Client(async_nats::Client),
}

/// How the announcer reaches etcd.
#[derive(Clone)]
pub(crate) enum EtcdConnection {
    /// Connect with these settings (the client is the announcer's own).
    Config(EtcdConfig),
    /// Share the caller's client.
    Client(Box<etcd_client::Client>),
    /// Register under a session's shared lease, through its client.
    Session(Session),
}

impl fmt::Debug for EtcdConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdConnection::Config(config) => f.debug_tuple("Config").field(config).finish(),
            // etcd-client's client has no Debug of its own.
            EtcdConnection::Client(_) => f.write_str("Client"),
            EtcdConnection::Session(session) => f.debug_tuple("Session").field(session).finish(),
        }
    }
}

/// Registration in etcd, validated.
#[derive(Debug)]
pub(crate) struct EtcdPlan {
    pub(crate) connection: EtcdConnection,
    pub(crate) takeover: bool,
    /// Deadline of each call (the config's request timeout; 5 s for a shared client).
    pub(crate) timeout: Duration,
}

/// Deadline of each etcd call on a shared client, whose own settings are unknown.
const SHARED_CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A load source sampled by the broadcast task.
#[derive(Clone)]
pub(crate) struct LoadFn(pub(crate) Arc<dyn Fn() -> f32 + Send + Sync>);

impl LoadFn {
    pub(crate) fn sample(&self) -> f32 {
        (self.0)()
    }
}

impl fmt::Debug for LoadFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoadFn")
    }
}

/// Everything `start()` needs, validated.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) connection: Connection,
    pub(crate) subjects: Subjects,
    pub(crate) settings: Settings,
    /// The first token, without `seq` and `sent_at_ms` (stamped when sent).
    pub(crate) token: Token,
    pub(crate) load_fn: Option<LoadFn>,
    /// Registration in etcd, when configured.
    pub(crate) etcd: Option<EtcdPlan>,
}

impl Plan {
    /// Validates the builder's settings and builds the first token.
    ///
    /// # Errors
    ///
    /// A `Config` error naming the first setting out of its bound.
    pub(crate) fn new(b: &AnnouncerBuilder) -> Result<Plan, Error> {
        let subjects = Subjects::new(&b.prefix)
            .map_err(|_| Error::config("prefix", "must match [A-Za-z0-9_-]{1,64}"))?;
        let settings = b.requested.resolve()?;
        let mut token = Token::new(
            b.service.clone(),
            b.instance
                .clone()
                .unwrap_or_else(crate::instance_id::generate),
            b.addr.clone(),
        );
        token.load = b.load;
        token.weight = b.weight;
        token.zone = b.zone.clone();
        token.meta = b.meta.clone();
        token.ttl_ms = settings.ttl_ms();
        check_token(&token)?;
        let connection = match &b.connection {
            Some(Connection::Config(config)) => {
                config.validate()?;
                Connection::Config(config.clone())
            }
            Some(Connection::Client(client)) => Connection::Client(client.clone()),
            None => return Err(Error::config("nats", "set .nats(..) or .client(..)")),
        };
        let etcd = match &b.etcd {
            Some(EtcdConnection::Config(config)) => {
                config.validate()?;
                Some(EtcdPlan {
                    connection: EtcdConnection::Config(config.clone()),
                    takeover: b.takeover,
                    timeout: config.request_timeout,
                })
            }
            Some(EtcdConnection::Client(client)) => Some(EtcdPlan {
                connection: EtcdConnection::Client(client.clone()),
                takeover: b.takeover,
                timeout: SHARED_CLIENT_TIMEOUT,
            }),
            Some(EtcdConnection::Session(session)) => {
                if b.lease_ttl_set {
                    return Err(Error::config(
                        "lease_ttl",
                        "announcers on a session share its lease: set the TTL on the session",
                    ));
                }
                Some(EtcdPlan {
                    connection: EtcdConnection::Session(session.clone()),
                    takeover: b.takeover,
                    timeout: session.etcd().timeout,
                })
            }
            None => None,
        };
        Ok(Plan {
            connection,
            subjects,
            settings,
            token,
            load_fn: b.load_fn.clone(),
            etcd,
        })
    }
}
