//! The lease: keep-alives on the task's own timer, its loss, and registering again.

use herald_shared::CONNECTION_LOG;
use tokio::time::Instant;

use super::Registrar;
use crate::etcd_calls::{CallError, Claim, Renewal};
use crate::messages::SessionLease;
use crate::stats::Counters;
use crate::status::Stopped;

impl Registrar {
    /// One keep-alive of the announcer's own lease.
    pub(super) async fn keep_alive(&mut self) {
        let Some(lease) = self.lease else { return };
        match self.keeper.renew(&self.etcd, lease).await {
            Renewal::Alive => {
                Counters::bump(&self.counters.keep_alives);
                if self.failing > 0 {
                    tracing::info!(
                        target: CONNECTION_LOG,
                        failures = self.failing,
                        "etcd lease keep-alives resumed"
                    );
                }
                self.failing = 0;
                self.keep_alive_at = Instant::now() + self.period;
            }
            Renewal::Gone => self.lease_lost("etcd says the lease is gone"),
            Renewal::Failed(error) => {
                Counters::bump(&self.counters.keep_alive_failures);
                // One warning per outage; the retries that follow are routine.
                if self.failing == 0 {
                    tracing::warn!(
                        target: CONNECTION_LOG,
                        error = &error as &dyn std::error::Error,
                        "etcd lease keep-alive failed; still broadcasting, retrying"
                    );
                } else {
                    tracing::debug!(
                        error = &error as &dyn std::error::Error,
                        failures = self.failing,
                        "lease keep-alive failed again"
                    );
                }
                self.failing += 1;
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
        self.keeper.close();
        self.watch = None;
        self.check_delete = false;
        self.check_key = false;
        self.retry_at = Some(Instant::now());
        self.keep_alive_at = Instant::now() + self.period;
    }

    /// The session's lease changed: a replaced lease took this registration with it; a closed
    /// session ends the announcer.
    pub(super) fn on_session_lease(&mut self, lease: SessionLease) {
        match lease {
            SessionLease::Live(id) if self.lease == Some(id) => {}
            SessionLease::Live(_) | SessionLease::Renewing => {
                if self.lease.is_some() {
                    self.lease_lost("the session's lease is gone");
                } else {
                    // Registering already: try the new lease now.
                    self.retry_at = Some(Instant::now());
                }
            }
            SessionLease::Closed => {
                self.lease = None;
                self.ending = Some(Stopped::SessionClosed);
            }
        }
    }

    /// The lease to register under: a new one of our own (or the spare of a lost answer), or
    /// the session's. `None` when there is none yet (retry later).
    async fn lease_for_registration(&mut self) -> Option<i64> {
        if let Some(session) = &self.session {
            return match *session.watch_lease().borrow() {
                SessionLease::Live(id) => Some(id),
                SessionLease::Renewing => None,
                SessionLease::Closed => {
                    self.ending = Some(Stopped::SessionClosed);
                    None
                }
            };
        }
        if self.spare.is_none() {
            match self.etcd.grant(self.lease_ttl).await {
                Ok(lease) => self.spare = Some(lease),
                Err(e) => tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    "lease not granted; retrying"
                ),
            }
        }
        self.spare
    }

    /// Tells the session, if any, that `lease` is gone, so that it replaces it now.
    pub(super) fn report_lost(&self, lease: i64) {
        if let Some(session) = &self.session {
            session.report_lost(lease);
        }
    }

    /// Registers again after a lost lease: a lease and the create-if-absent transaction.
    /// Returns whether nothing is left to retry.
    pub(super) async fn register(&mut self) -> bool {
        let Some(lease) = self.lease_for_registration().await else {
            return self.ending.is_some();
        };
        let value = self.value();
        match self.claim(value, lease, false).await {
            Ok(Claim::Written { epoch, cluster_id }) => self.registered(lease, epoch, cluster_id),
            Ok(Claim::Held {
                epoch,
                lease: held,
                cluster_id,
                ..
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
                self.report_lost(lease);
                return false;
            }
            Err(e) => {
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    "registration not written; retrying"
                );
                return false;
            }
        }
        true
    }

    pub(super) fn registered(&mut self, lease: i64, epoch: u64, cluster_id: u64) {
        tracing::info!(target: CONNECTION_LOG, epoch, lease, "registered in etcd again");
        self.adopt(lease, epoch, cluster_id);
    }

    /// Takes a registration written under `lease` at `epoch` as the current one.
    pub(super) fn adopt(&mut self, lease: i64, epoch: u64, cluster_id: u64) {
        Counters::bump(&self.counters.registrations);
        self.spare = None;
        self.lease = Some(lease);
        self.epoch = epoch;
        self.cluster_id = cluster_id;
        self.seen = epoch as i64;
        self.rewrite_due = false;
        self.keep_alive_at = Instant::now() + self.period;
        let meta_version = self.meta_version();
        self.set_standing(|s| {
            s.epoch = epoch;
            s.meta_version = meta_version;
        });
    }
}
