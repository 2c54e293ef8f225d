//! Rewriting the key for `set_meta`, and the ways a registration ends: halted by etcd's
//! authority (no goodbye, own lease revoked), left at `shutdown()` (key deleted or lease
//! revoked after the goodbye), or dropped with its handle (left as a crash would leave it).

use tokio::time::Instant;

use super::{RETRY_FIRST, Registrar};
use crate::error::{Context, Error, ErrorKind};
use crate::etcd_calls::CallError;
use crate::status::Stopped;

/// How long a halt waits for the broadcast task to end before revoking the lease.
const HALT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Registrar {
    /// Writes the current token to the key (after `set_meta`) and adopts the new epoch.
    pub(super) async fn rewrite(&mut self) -> Result<(), Error> {
        let Some(lease) = self.lease else {
            // The next registration writes the current token.
            return Ok(());
        };
        let value = self.value();
        match self.etcd.rewrite(value, lease).await {
            Ok(Some(epoch)) => {
                self.rewrite_due = false;
                self.epoch = epoch;
                let meta_version = self.meta_version();
                self.set_standing(|s| {
                    s.epoch = epoch;
                    s.meta_version = meta_version;
                });
                Ok(())
            }
            // Not ours any more: the watch reports what happened.
            Ok(None) => Ok(()),
            Err(CallError::LeaseGone) => {
                self.lease_lost("etcd says the lease is gone");
                Ok(())
            }
            Err(e) => {
                self.rewrite_due = true;
                self.retry_at.get_or_insert(Instant::now() + RETRY_FIRST);
                Err(Error::with_source(
                    ErrorKind::EtcdUnreachable,
                    Context::new(
                        "the new metadata goes out once etcd answers and the registration is rewritten",
                        e,
                    ),
                ))
            }
        }
    }

    /// etcd ended this incarnation: stop the broadcast task without a goodbye, revoke the
    /// lease if it is this announcer's alone (never a shared session's), and report why.
    pub(super) async fn halt(self, reason: Stopped) -> Result<(), Error> {
        tracing::warn!(
            target: herald_shared::STOPPED_LOG,
            epoch = self.epoch,
            %reason,
            "announcer stopped by etcd"
        );
        self.set_standing(|s| s.halted = true);
        let _ = tokio::time::timeout(HALT_WAIT, self.broadcast_done.cancelled()).await;
        // A shared session's lease holds other announcers' keys. The key is not ours any
        // more anyway (taken over, or deleted).
        if self.session.is_private()
            && let Err(e) = self.session.close().await
        {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "own lease not revoked; it expires on its own"
            );
        }
        self.set_standing(|s| s.stopped = Some(reason));
        Ok(())
    }

    /// The handle was dropped without `shutdown()`: leave the registration as a crash would.
    pub(super) async fn dropped(self) {
        if !self.session.is_private() {
            return self.forget_after_ttl().await;
        }
        tracing::debug!("handle dropped without shutdown; the lease is left to expire");
    }

    /// `shutdown()` asked: remove the registration once the goodbye is out (revoke a lease of
    /// this announcer alone; delete the key from a shared session's), before `deadline`.
    pub(super) async fn leave(self, deadline: Instant) -> Result<(), Error> {
        if !self.session.is_private() {
            return self.leave_session(deadline).await;
        }
        // The leaving token first, so subscribers see a goodbye rather than a deregistration;
        // but keep half of the time left for the revoke.
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(left / 2, self.broadcast_done.cancelled()).await;
        match tokio::time::timeout_at(deadline, self.session.close()).await {
            Ok(Ok(())) => {
                tracing::info!("lease revoked; registration removed");
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "lease not revoked; the registration goes when it expires"
                );
                Err(Error::with_source(
                    ErrorKind::EtcdUnreachable,
                    Context::new(
                        "lease not revoked, the registration goes when it expires",
                        e,
                    ),
                ))
            }
            Err(_) => {
                tracing::warn!(
                    "lease not revoked before the deadline; the registration goes when it expires"
                );
                Err(Error::with_source(
                    ErrorKind::TimedOut,
                    "lease not revoked before the shutdown deadline",
                ))
            }
        }
    }
}

impl Registrar {
    /// `shutdown()` on a session: delete our key (if still ours) once the goodbye is out; the
    /// shared lease lives on.
    async fn leave_session(self, deadline: Instant) -> Result<(), Error> {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(left / 2, self.broadcast_done.cancelled()).await;
        let Some(lease) = self.lease else {
            return Ok(());
        };
        match tokio::time::timeout_at(deadline, self.delete_if_lease(lease)).await {
            Ok(Ok(_)) => {
                tracing::info!("registration removed");
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "registration not removed; it goes with the session's lease"
                );
                Err(Error::with_source(
                    ErrorKind::EtcdUnreachable,
                    Context::new(
                        "registration not removed, it goes with the session's lease",
                        e,
                    ),
                ))
            }
            Err(_) => Err(Error::with_source(
                ErrorKind::TimedOut,
                "registration not removed before the shutdown deadline",
            )),
        }
    }

    /// A dropped handle on a session: the shared lease outlives it, so the key would stay.
    /// Subscribers first see what a crash looks like (the tokens stop, the instance expires
    /// after its TTL); then the key goes, a second TTL later, so that the deletion never
    /// races the expiry (subscribers sweep expired entries every few tens of milliseconds).
    async fn forget_after_ttl(self) {
        let Some(lease) = self.lease else {
            return;
        };
        let ttl = std::time::Duration::from_millis(u64::from(self.last_token.borrow().ttl_ms));
        tokio::time::sleep(ttl * 2).await;
        match self.delete_if_lease(lease).await {
            Ok(_) => tracing::debug!("handle dropped; registration removed after the token TTL"),
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "registration of a dropped handle not removed; it goes with the session's lease"
                )
            }
        }
    }
}
