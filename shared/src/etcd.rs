//! etcd connection settings shared by announcers and subscribers, and the one place a Herald
//! client connects to etcd.
//!
//! Connecting checks the cluster for real (a status request under the connect timeout), so
//! that an unreachable cluster or a wrong password fails `start()` quickly with an error that
//! says which, instead of hanging on the first registration or list.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod error;

pub use error::{EtcdCause, EtcdError, classify, is_auth, is_lease_not_found, is_too_large};

/// TLS settings for etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA certificate (PEM) that signed the servers' certificates.
    pub ca_certificate: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// Server name to verify (defaults to the endpoint's host).
    pub domain: Option<String>,
}

/// Where and how to reach etcd.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), herald_shared::EtcdError> {
/// use herald_shared::EtcdConfig;
///
/// let etcd = EtcdConfig::new(["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
/// let client = etcd.connect().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client endpoints of the cluster's members.
    pub endpoints: Vec<String>,
    /// User and password, when auth is enabled.
    pub credentials: Option<(String, String)>,
    /// TLS settings (endpoints then use `https://`).
    pub tls: Option<EtcdTls>,
    /// How long connecting (and the first status check) may take.
    pub connect_timeout: Duration,
    /// Deadline of each request.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl EtcdConfig {
    /// Settings for these endpoints, with defaults for the rest.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            credentials: None,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// Checks the settings without connecting.
    ///
    /// # Errors
    ///
    /// [`EtcdError::Config`] naming the field.
    pub fn validate(&self) -> Result<(), EtcdError> {
        if self.endpoints.is_empty() {
            return Err(EtcdError::Config(
                "etcd.endpoints: must list at least one endpoint",
            ));
        }
        if self.endpoints.iter().any(|e| e.trim().is_empty()) {
            return Err(EtcdError::Config("etcd.endpoints: an endpoint is empty"));
        }
        if self.connect_timeout.is_zero() {
            return Err(EtcdError::Config("etcd.connect_timeout: must be > 0"));
        }
        if self.request_timeout.is_zero() {
            return Err(EtcdError::Config("etcd.request_timeout: must be > 0"));
        }
        Ok(())
    }

    fn options(&self) -> Result<etcd_client::ConnectOptions, EtcdError> {
        let mut opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            // A member cut off from its quorum must not answer reads and watches as if all
            // were well: require a leader.
            .with_require_leader(true);
        if let Some((user, password)) = &self.credentials {
            opts = opts.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            let mut t = etcd_client::TlsOptions::new();
            if let Some(ca) = &tls.ca_certificate {
                let pem = read_file(ca)?;
                t = t.ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = &tls.client_certificate {
                let (c, k) = (read_file(cert)?, read_file(key)?);
                t = t.identity(etcd_client::Identity::from_pem(c, k));
            }
            if let Some(domain) = &tls.domain {
                t = t.domain_name(domain.clone());
            }
            opts = opts.with_tls(t);
        }
        Ok(opts)
    }

    /// Connects and checks that the cluster answers (and that the credentials are right).
    ///
    /// # Errors
    ///
    /// [`EtcdError::Unreachable`] when no endpoint answered within the connect timeout,
    /// [`EtcdError::Auth`] when the credentials were refused, [`EtcdError::Config`] or
    /// [`EtcdError::Tls`] for bad settings.
    pub async fn connect(&self) -> Result<etcd_client::Client, EtcdError> {
        self.validate()?;
        let opts = self.options()?;
        let last_error = std::sync::Mutex::new(None::<Arc<EtcdCause>>);
        let attempt = async {
            let mut client = etcd_client::Client::connect(&self.endpoints, Some(opts))
                .await
                .map_err(classify)?;
            // Authentication happens in connect; a status call proves the cluster answers.
            // One call reaches one member, which may be the dead one of a degraded cluster:
            // try again (the channel balances over the endpoints) until the deadline. When
            // the connections are refused again and again (twice per endpoint, so each had
            // its turn), nothing listens there: that is said at once, not at the deadline.
            let mut refused = 0;
            loop {
                match client.status().await.map_err(classify) {
                    Ok(_) => return Ok(client),
                    Err(e @ EtcdError::Auth(_)) => return Err(e),
                    Err(e) if is_refused(&e) && refused + 1 >= 2 * self.endpoints.len() => {
                        return Err(e);
                    }
                    Err(e) => {
                        refused = if is_refused(&e) { refused + 1 } else { 0 };
                        tracing::debug!(
                            error = &e as &dyn std::error::Error,
                            "etcd member did not answer; trying again"
                        );
                        if let (Ok(mut last), EtcdError::Unreachable(cause)) =
                            (last_error.lock(), e)
                        {
                            *last = Some(cause);
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => {
                let last = last_error.lock().ok().and_then(|mut l| l.take());
                Err(EtcdError::Unreachable(Arc::new(EtcdCause::NoAnswer {
                    within: self.connect_timeout,
                    last,
                })))
            }
        }
    }
}

/// Whether `e` is a refused connection (nothing listens at the endpoint).
fn is_refused(e: &EtcdError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

fn read_file(path: &Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|error| {
        EtcdError::Tls(Arc::new(EtcdCause::File {
            path: path.to_owned(),
            error,
        }))
    })
}
