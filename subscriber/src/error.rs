//! The subscriber's error type: a kind to match on, a cause to read.

use std::fmt;

/// What went wrong, in a form to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The builder's settings are invalid; the message names the field.
    InvalidConfig,
    /// NATS could not be reached.
    Connect,
    /// Subscribing or confirming the subscriptions failed.
    Subscribe,
    /// etcd could not be reached, refused the credentials, or failed the listing.
    Etcd,
    /// The wait ended before the condition held.
    TimedOut,
}

/// A subscriber error.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error {
            kind,
            source: Some(source.into()),
        }
    }

    pub(crate) fn timed_out() -> Self {
        Error {
            kind: ErrorKind::TimedOut,
            source: None,
        }
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ErrorKind::InvalidConfig => "invalid subscriber configuration",
            ErrorKind::Connect => "cannot connect to nats",
            ErrorKind::Subscribe => "cannot subscribe",
            ErrorKind::Etcd => "etcd listing failed",
            ErrorKind::TimedOut => "timed out",
        };
        // The cause is `source()`'s to say: printers of the chain (anyhow, tracing) show it.
        f.write_str(what)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

impl From<herald_shared::ConfigError> for Error {
    fn from(e: herald_shared::ConfigError) -> Self {
        use herald_shared::ConfigError;
        match e {
            // The kind says what `Connect` says: the client's error is the next layer.
            ConfigError::Connect(cause) => Error::new(ErrorKind::Connect, cause),
            ConfigError::ConnectTimedOut(_) => Error::new(ErrorKind::Connect, e),
            _ => Error::new(ErrorKind::InvalidConfig, e),
        }
    }
}
