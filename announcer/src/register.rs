//! The registration of `start()`: connect to etcd, grant a lease, and claim the instance's key
//! in one transaction, before the first token goes out.

use std::time::Duration;

use herald_shared::Token;

use crate::error::{Duplicate, Error, ErrorKind};
use crate::etcd_calls::{Claim, Etcd};
use crate::plan::{EtcdConnection, EtcdPlan};
use crate::registrar::value_of;

/// A registration written by `start()`.
#[derive(Debug)]
pub(crate) struct Registered {
    pub(crate) etcd: Etcd,
    pub(crate) lease: i64,
    pub(crate) epoch: u64,
    pub(crate) cluster_id: u64,
}

impl Registered {
    /// Revokes the lease of a registration `start()` cannot go on with (best effort).
    pub(crate) async fn abandon(self) {
        if let Err(e) = self.etcd.revoke(self.lease).await {
            tracing::warn!(error = %e, "registration not revoked; it goes when its lease expires");
        }
    }
}

/// Connects, grants a lease of `lease_ttl`, and registers `token` under `key`.
///
/// # Errors
///
/// `EtcdUnreachable` or `EtcdAuth` when etcd cannot be used, `DuplicateInstance` when the key
/// is held (without takeover). The lease granted is revoked on every error.
pub(crate) async fn register(
    plan: EtcdPlan,
    key: String,
    token: &Token,
    lease_ttl: Duration,
) -> Result<Registered, Error> {
    let client = match plan.connection {
        EtcdConnection::Config(config) => config.connect().await?,
        EtcdConnection::Client(client) => *client,
    };
    let etcd = Etcd {
        client,
        key,
        timeout: plan.timeout,
    };
    let lease = etcd.grant(lease_ttl).await?;
    let claim = etcd.claim(value_of(token), lease, plan.takeover).await;
    let held = match claim {
        Ok(Claim::Written { epoch, cluster_id }) => {
            tracing::info!(epoch, lease, key = %etcd.key, "registered");
            return Ok(Registered {
                etcd,
                lease,
                epoch,
                cluster_id,
            });
        }
        Ok(Claim::Held { epoch, .. }) => Error::with_source(
            ErrorKind::DuplicateInstance,
            Duplicate {
                instance: token.instance.clone(),
                key: etcd.key.clone(),
                epoch,
            },
        ),
        Err(e) => e.into(),
    };
    if let Err(e) = etcd.revoke(lease).await {
        tracing::warn!(error = %e, lease, "lease of a failed registration not revoked; it expires");
    }
    Err(held)
}
