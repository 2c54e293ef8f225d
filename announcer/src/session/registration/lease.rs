//! The session's lease as the registration sees it: its loss, and registering again.

use herald_shared::CONNECTION_LOG;
use tokio::time::Instant;

use super::Registrar;
use crate::etcd_calls::{CallError, Claim};
use crate::messages::SessionLease;
use crate::stats::Counters;
use crate::status::Stopped;

impl Registrar {
    pub(super) fn lease_lost(&mut self, why: &str) {
        Counters::bump(&self.counters.lease_losses);
        tracing::warn!(
            epoch = self.epoch,
            why,
            "lease lost; still broadcasting, registering again"
        );
        self.lease = None;
        self.watch = None;
        self.check_delete = false;
        self.check_key = false;
        self.retry_at = Some(Instant::now());
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

    /// The session's lease to register under; `None` while it is being replaced (retry
    /// later).
    fn lease_for_registration(&mut self) -> Option<i64> {
        match *self.session.watch_lease().borrow() {
            SessionLease::Live(id) => Some(id),
            SessionLease::Renewing => None,
            SessionLease::Closed => {
                self.ending = Some(Stopped::SessionClosed);
                None
            }
        }
    }

    /// Tells the session that `lease` is gone, so that it replaces it now.
    pub(super) fn report_lost(&self, lease: i64) {
        self.session.report_lost(lease);
    }

    /// Registers again after a lost lease: a lease and the create-if-absent transaction.
    /// Returns whether nothing is left to retry.
    pub(super) async fn register(&mut self) -> bool {
        let Some(lease) = self.lease_for_registration() else {
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
        self.lease = Some(lease);
        self.epoch = epoch;
        self.cluster_id = cluster_id;
        self.seen = epoch as i64;
        self.rewrite_due = false;
        let meta_version = self.meta_version();
        self.set_standing(|s| {
            s.epoch = epoch;
            s.meta_version = meta_version;
        });
    }
}
