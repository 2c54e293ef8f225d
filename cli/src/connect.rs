//! Turns the global options into NATS and etcd settings, and builds subscribers from them.

use anyhow::bail;
use herald_shared::{ConfigError, EtcdConfig, EtcdError, EtcdTls, NatsAuth, NatsConfig, NatsTls};
use herald_subscriber::Subscriber;

use crate::args::Global;

impl Global {
    pub(crate) fn nats_config(&self) -> anyhow::Result<NatsConfig> {
        let urls = given(&self.nats);
        if urls.is_empty() {
            bail!("no NATS server given: pass --nats URL or set HERALD_NATS_URL");
        }
        let mut config = NatsConfig::new(urls);
        config.connect_timeout = self.connect_timeout;
        config.name = Some("herald-cli".into());
        config.auth = match (&self.nats_creds, &self.nats_user, &self.nats_token) {
            (Some(path), _, _) => NatsAuth::CredentialsFile(path.clone()),
            (None, Some(user), _) => NatsAuth::UserPassword {
                user: user.clone(),
                password: self.nats_password.clone().unwrap_or_default(),
            },
            (None, None, Some(token)) => NatsAuth::Token(token.clone()),
            (None, None, None) => NatsAuth::None,
        };
        if self.nats_tls_ca.is_some() || self.nats_tls_cert.is_some() {
            config.tls = NatsTls {
                root_certificates: self.nats_tls_ca.iter().cloned().collect(),
                client_certificate: self.nats_tls_cert.clone().zip(self.nats_tls_key.clone()),
                required: true,
            };
        }
        Ok(config)
    }

    pub(crate) fn etcd_config(&self) -> Option<EtcdConfig> {
        let endpoints = given(&self.etcd);
        if endpoints.is_empty() {
            return None;
        }
        let mut config = EtcdConfig::new(endpoints);
        config.connect_timeout = self.connect_timeout;
        config.credentials = self.etcd_user.clone().zip(self.etcd_password.clone());
        if self.etcd_tls_ca.is_some() || self.etcd_tls_cert.is_some() {
            config.tls = Some(EtcdTls {
                ca_certificate: self.etcd_tls_ca.clone(),
                client_certificate: self.etcd_tls_cert.clone().zip(self.etcd_tls_key.clone()),
                domain: None,
            });
        }
        Some(config)
    }

    /// A subscriber of `service` (or everything), with etcd when configured.
    pub(crate) async fn subscriber(
        &self,
        services: &[String],
        zone: Option<&str>,
    ) -> anyhow::Result<Subscriber> {
        let mut builder = Subscriber::builder()
            .nats(self.nats_config()?)
            .prefix(&self.prefix);
        for s in services {
            builder = builder.service(s);
        }
        if let Some(z) = zone {
            builder = builder.zone(z);
        }
        if let Some(subject) = &self.nats_advisories {
            builder = builder
                .disconnect_advisories(subject)
                .disconnect_grace(self.disconnect_grace);
        }
        if let Some(etcd) = self.etcd_config() {
            builder = builder
                .etcd(etcd)
                .allow_unregistered(self.allow_unregistered);
        }
        builder
            .start()
            .await
            .map_err(|e| match login_needed(&e, self.etcd_user.as_deref()) {
                Some(message) => anyhow::anyhow!("cannot start the subscriber: {message}"),
                None => subscriber_error(e),
            })
    }
}

/// The values of a list flag, without empty ones: `HERALD_ETCD_ENDPOINTS=` (or `--etcd ""`)
/// means no etcd, as an unset variable does, and `HERALD_NATS_URL=` means no NATS server.
fn given(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// When etcd wants credentials and none were given, the flags that give them, as the
/// whole message; else `None`.
pub(crate) fn login_needed(
    e: &(dyn std::error::Error + 'static),
    user: Option<&str>,
) -> Option<String> {
    if user.is_some() {
        return None;
    }
    let mut cause = Some(e);
    while let Some(c) = cause {
        if matches!(c.downcast_ref::<EtcdError>(), Some(EtcdError::Auth(_))) {
            return Some(
                "etcd asks for a user and a password: pass --etcd-user and --etcd-password \
                 (or set HERALD_ETCD_USER and HERALD_ETCD_PASSWORD)"
                    .to_owned(),
            );
        }
        cause = c.source();
    }
    None
}

/// `start()`'s errors; a setting is named by its flag.
fn subscriber_error(e: herald_subscriber::Error) -> anyhow::Error {
    use std::error::Error as _;
    if e.kind() == herald_subscriber::ErrorKind::InvalidConfig {
        let cause = e.source();
        if let Some(ConfigError::Field { field, bound }) = cause.and_then(|c| c.downcast_ref()) {
            return crate::exit::bad_value(&crate::args::flag_of(field), bound);
        }
        if let Some(EtcdError::Config(message)) = cause.and_then(|c| c.downcast_ref())
            && let Some((field, bound)) = message.split_once(": ")
        {
            return crate::exit::bad_value(&crate::args::flag_of(field), bound);
        }
    }
    anyhow::Error::new(e).context("cannot start the subscriber")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_login_without_a_user_names_the_flags() {
        let refused = EtcdError::Auth(std::sync::Arc::new(herald_shared::etcd::EtcdCause::Other(
            "etcdserver: user name is empty",
        )));
        let message = login_needed(&refused, None).expect("a user is needed");
        assert!(message.contains("--etcd-user") && message.contains("--etcd-password"));
        assert_eq!(
            login_needed(&refused, Some("app")),
            None,
            "given, but refused"
        );
        let down = EtcdError::unreachable("no answer");
        assert_eq!(login_needed(&down, None), None);
    }
}
