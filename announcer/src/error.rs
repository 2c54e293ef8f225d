//! The announcer's one error type: a [`ErrorKind`] to match on, the cause in `source()`.

use std::fmt;

use herald_shared::{ConfigError, EtcdError};

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, coarsely; match on this, read the error's `source()` for
/// the detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A setting or a value broke its bound; nothing was connected or published.
    /// [`Error::field`] names the setting.
    Config,
    /// No NATS server answered.
    Connect,
    /// The probe subscriptions could not be made or confirmed on the server.
    Subscribe,
    /// A token could not be published or flushed.
    Publish,
    /// A deadline passed (the first token's flush, or the goodbye of `shutdown`).
    TimedOut,
    /// The broadcast task is no longer running.
    Stopped,
    /// No etcd endpoint answered (at start, or when `shutdown` revoked the lease).
    EtcdUnreachable,
    /// etcd refused the credentials.
    EtcdAuth,
    /// The instance id is already registered in etcd by another live incarnation;
    /// [`Error::holder_epoch`] gives that incarnation's epoch.
    DuplicateInstance,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "invalid configuration",
            ErrorKind::Connect => "cannot connect to nats",
            ErrorKind::Subscribe => "cannot subscribe to probes",
            ErrorKind::Publish => "cannot publish token",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::Stopped => "announcer stopped",
            ErrorKind::EtcdUnreachable => "cannot reach etcd",
            ErrorKind::EtcdAuth => "etcd refused the credentials",
            ErrorKind::DuplicateInstance => "instance id already registered",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An announcer error.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use herald_announcer::{Announcer, ErrorKind};
/// use herald_shared::NatsConfig;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let err = Announcer::builder("billing", "10.0.0.7:8080")
///     .nats(NatsConfig::new(["nats://127.0.0.1:1"]))
///     .interval(Duration::ZERO)
///     .start()
///     .await
///     .unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Config);
/// assert_eq!(err.field(), Some("interval"));
/// # }
/// ```
pub struct Error {
    kind: ErrorKind,
    /// What this layer adds to the kind: the setting that broke its bound, or the holder of
    /// the id. Not a cause: `Display` says it, `source()` does not repeat it.
    detail: Option<Detail>,
    source: Option<Source>,
}

/// This layer's own facts about an error.
#[derive(Debug)]
enum Detail {
    Field {
        field: &'static str,
        bound: &'static str,
    },
    Holder(Duplicate),
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detail::Field { field, bound } => write!(f, "`{field}`: {bound}"),
            Detail::Holder(holder) => holder.fmt(f),
        }
    }
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Error {
            kind,
            detail: None,
            source: None,
        }
    }

    pub(crate) fn with_source(kind: ErrorKind, source: impl Into<Source>) -> Self {
        Error {
            kind,
            detail: None,
            source: Some(source.into()),
        }
    }

    /// A [`ErrorKind::Config`] error naming `field` and the `bound` it broke.
    /// `Stopped`: the start was stopped (by `start_until`'s future) before it finished.
    pub(crate) fn start_stopped() -> Self {
        Error::with_source(ErrorKind::Stopped, "the start was stopped")
    }

    pub(crate) fn config(field: &'static str, bound: &'static str) -> Self {
        Error {
            kind: ErrorKind::Config,
            detail: Some(Detail::Field { field, bound }),
            source: None,
        }
    }

    /// A [`ErrorKind::DuplicateInstance`] error naming the holder.
    pub(crate) fn duplicate(holder: Duplicate) -> Self {
        Error {
            kind: ErrorKind::DuplicateInstance,
            detail: Some(Detail::Holder(holder)),
            source: None,
        }
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// For a [`ErrorKind::DuplicateInstance`] error, the epoch of the registration that holds
    /// the id (the existing key's `mod_revision`).
    pub fn holder_epoch(&self) -> Option<u64> {
        match &self.detail {
            Some(Detail::Holder(holder)) => Some(holder.epoch),
            _ => None,
        }
    }

    /// For a [`ErrorKind::Config`] error, the setting that broke its bound (`interval`,
    /// `ttl`, `service`, `nats.urls`, ...).
    pub fn field(&self) -> Option<&'static str> {
        match &self.detail {
            Some(Detail::Field { field, .. }) => Some(field),
            _ => None,
        }
    }

    /// For a [`ErrorKind::Config`] error, the bound the setting broke, as a short phrase
    /// (`must be > 0`), for callers that name the setting in their own words (a CLI flag).
    ///
    /// ```
    /// use herald_announcer::Announcer;
    /// use herald_shared::NatsConfig;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let err = Announcer::builder("billing", "10.0.0.7:8080")
    ///     .nats(NatsConfig::new(["nats://127.0.0.1:1"]))
    ///     .weight(0)
    ///     .start()
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(err.field(), Some("weight"));
    /// assert!(err.bound().unwrap().starts_with("must be >= 1"));
    /// # }
    /// ```
    pub fn bound(&self) -> Option<&'static str> {
        match &self.detail {
            Some(Detail::Field { bound, .. }) => Some(bound),
            _ => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Field { field, bound } => Error::config(field, bound),
            // The kind says what `Connect` says: the client's error is the next layer.
            ConfigError::Connect(cause) => Error::with_source(ErrorKind::Connect, cause),
            _ => Error::with_source(ErrorKind::Connect, e),
        }
    }
}

impl From<EtcdError> for Error {
    fn from(e: EtcdError) -> Self {
        match e {
            // The message is `etcd.field: bound`; both halves are static.
            EtcdError::Config(message) => match message.split_once(": ") {
                Some((field, bound)) => Error::config(field, bound),
                None => Error::with_source(ErrorKind::Config, e),
            },
            EtcdError::Tls(_) => Error::with_source(ErrorKind::Config, e),
            // The kind says what the etcd error says: its cause is the next layer.
            EtcdError::Auth(cause) => Error::with_source(ErrorKind::EtcdAuth, cause),
            EtcdError::Unreachable(cause) => Error::with_source(ErrorKind::EtcdUnreachable, cause),
            _ => Error::with_source(ErrorKind::EtcdUnreachable, e),
        }
    }
}

/// Words that say where a failure happened, with the failure as their source.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) what: &'static str,
    pub(crate) cause: Source,
}

impl Context {
    pub(crate) fn new(what: &'static str, cause: impl Into<Source>) -> Self {
        Context {
            what,
            cause: cause.into(),
        }
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }
}

impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.cause)
    }
}

/// The cause of a [`ErrorKind::DuplicateInstance`] error: who holds the id.
#[derive(Debug)]
pub(crate) struct Duplicate {
    pub(crate) instance: String,
    pub(crate) key: String,
    pub(crate) epoch: u64,
}

impl fmt::Display for Duplicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is held by the live registration of epoch {} (key {})",
            self.instance, self.epoch, self.key
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{}: {detail}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("detail", &self.detail)
            .field("source", &self.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests;
