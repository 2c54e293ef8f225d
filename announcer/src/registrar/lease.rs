//! The lease: keep-alives on the task's own timer, its loss, and registering again.

use tokio::time::Instant;

use super::{Registrar, value_of};
use crate::etcd_calls::{CallError, Claim};
use crate::stats::Counters;
use crate::status::Stopped;

impl Registrar {
    /// One keep-alive: a request on the open stream and its answer, or a new stream (whose
    /// opening renews the lease).
    pub(super) async fn keep_alive(&mut self) {
        let Some(lease) = self.lease else { return };
        let answer = tokio::time::timeout(self.etcd.timeout, async {
            match &mut self.keeper {
                Some((keeper, stream)) => {
                    keeper.keep_alive().await.map_err(|e| e.to_string())?;
                    match stream.message().await {
                        Ok(Some(resp)) => Ok(resp.ttl()),
                        Ok(None) => Err("keep-alive stream closed".to_owned()),
                        Err(e) => Err(e.to_string()),
                    }
                }
                None => match self.etcd.keep_alive(lease).await {
                    Ok(opened) => {
                        self.keeper = Some(opened);
                        Ok(1)
                    }
                    Err(CallError::LeaseGone) => Ok(0),
                    Err(e) => Err(e.to_string()),
                },
            }
        })
        .await
        .unwrap_or_else(|_| Err("no keep-alive answer in time".to_owned()));
        match answer {
            Ok(ttl) if ttl > 0 => {
                Counters::bump(&self.counters.keep_alives);
                if self.failing > 0 {
                    tracing::info!(failures = self.failing, "lease keep-alives resumed");
                }
                self.failing = 0;
                self.keep_alive_at = Instant::now() + self.period;
            }
            Ok(_) => self.lease_lost("etcd says the lease is gone"),
            Err(error) => {
                Counters::bump(&self.counters.keep_alive_failures);
                // One warning per outage; the retries that follow are routine.
                if self.failing == 0 {
                    tracing::warn!(%error, "lease keep-alive failed; still broadcasting, retrying");
                } else {
                    tracing::debug!(%error, failures = self.failing, "lease keep-alive failed again");
                }
                self.failing += 1;
                self.keeper = None;
                self.keep_alive_at = Instant::now() + self.next_backoff();
            }
        }
    }

    pub(super) fn lease_lost(&mut self, why: &str) {
        Counters::bump(&self.counters.lease_losses);
        tracing::warn!(
            epoch = self.epoch,
            why,
            "lease lost; still broadcasting, registering again"
        );
        self.lease = None;
        self.keeper = None;
        self.watch = None;
        self.check_delete = false;
        self.check_key = false;
        self.retry_at = Some(Instant::now());
        self.keep_alive_at = Instant::now() + self.period;
    }

    /// Registers again after a lost lease: a new lease and the create-if-absent transaction.
    /// Returns whether nothing is left to retry.
    pub(super) async fn register(&mut self) -> bool {
        let lease = match self.spare {
            Some(lease) => lease,
            None => match self.etcd.grant(self.lease_ttl).await {
                Ok(lease) => lease,
                Err(e) => {
                    tracing::debug!(error = %e, "lease not granted; retrying");
                    return false;
                }
            },
        };
        self.spare = Some(lease);
        let value = value_of(&self.last_token.borrow());
        match self.etcd.claim(value, lease, false).await {
            Ok(Claim::Written { epoch, cluster_id }) => self.registered(lease, epoch, cluster_id),
            Ok(Claim::Held {
                epoch,
                lease: held,
                cluster_id,
            }) if held == lease => {
                // Our earlier attempt landed; its answer was lost.
                self.registered(lease, epoch, cluster_id);
            }
            Ok(Claim::Held { epoch, .. }) => {
                tracing::warn!(
                    holder_epoch = epoch,
                    "the instance id was registered by another incarnation while the lease was lost"
                );
                self.ending = Some(Stopped::Fenced { by_epoch: epoch });
            }
            Err(CallError::LeaseGone) => {
                self.spare = None;
                return false;
            }
            Err(e) => {
                tracing::debug!(error = %e, "registration not written; retrying");
                return false;
            }
        }
        true
    }

    pub(super) fn registered(&mut self, lease: i64, epoch: u64, cluster_id: u64) {
        Counters::bump(&self.counters.registrations);
        tracing::info!(epoch, lease, "registered again");
        self.spare = None;
        self.lease = Some(lease);
        self.epoch = epoch;
        self.cluster_id = cluster_id;
        self.seen = epoch as i64;
        self.rewrite_due = false;
        self.keep_alive_at = Instant::now() + self.period;
        self.standing.send_modify(|s| s.epoch = epoch);
    }
}
