//! The builder's settings checked and turned into the [`Plan`] that `start()` works from.

use std::time::Duration;

use herald_shared::{Subjects, Token};

use super::AnnouncerBuilder;
use crate::error::Error;
use crate::plan::{EtcdConnection, EtcdPlan, Nats, Plan};
use crate::settings::check_token;

/// Deadline of each etcd call on a shared client, whose own settings are unknown.
const SHARED_CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

impl AnnouncerBuilder {
    /// Validates the settings into what `start()` needs, with the first token.
    ///
    /// # Errors
    ///
    /// A `Config` error naming the first setting out of its bound.
    pub(crate) fn plan(&self) -> Result<Plan, Error> {
        let b = self;
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
            Some(Nats::Config(config)) => {
                config.validate()?;
                Nats::Config(config.clone())
            }
            Some(Nats::Shared(connection)) => Nats::Shared(connection.clone()),
            None => return Err(Error::config("nats", "set .nats(..) or .connection(..)")),
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
