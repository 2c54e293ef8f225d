//! What `start()` works from: every setting of the builder, validated and with its defaults
//! applied, before anything connects. The builder produces it.

use std::fmt;
use std::sync::Arc;

use std::time::Duration;

use herald_shared::{EtcdConfig, NatsConfig, Subjects, Token};

use crate::connection::Connection;
use crate::session::Session;
use crate::settings::Settings;

/// How the announcer reaches NATS.
#[derive(Debug, Clone)]
pub(crate) enum Nats {
    /// Connect with these settings (the connection, and its scheduler, are the announcer's
    /// own).
    Config(Box<NatsConfig>),
    /// Share the caller's connection and its scheduler.
    Shared(Connection),
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
    pub(crate) connection: Nats,
    pub(crate) subjects: Subjects,
    pub(crate) settings: Settings,
    /// The first token, without `seq` and `sent_at_ms` (stamped when sent).
    pub(crate) token: Token,
    pub(crate) load_fn: Option<LoadFn>,
    /// Registration in etcd, when configured.
    pub(crate) etcd: Option<EtcdPlan>,
}
