//! The first registration, which `start()` waits for: the claim of the instance's key under
//! the session's lease, in the session's next batch, before the first token goes out. Each
//! call is tried again, within the call deadline, when etcd does not answer: a listed member
//! may be down. On failure, or when the start is stopped, nothing is left behind.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Registrar;
use crate::error::{Duplicate, Error, ErrorKind};
use crate::etcd_calls::{CallError, Claim, retried};
use crate::messages::SessionLease;
use crate::predecessor::{Holder, Predecessor};
use crate::session::Session;
use crate::stats::Counters;

/// The longest the first claim waits for the key's watch to open.
const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(1);

impl Registrar {
    /// The first registration, which `start()` waits for: the claim of the key under the
    /// session's lease. When `abort` fires first, what the claim may have written is undone
    /// before this returns `Stopped`.
    ///
    /// # Errors
    ///
    /// As [`claim_first`](Registrar::claim_first); `Stopped` when aborted.
    pub(crate) async fn register_first(
        mut self,
        takeover: bool,
        predecessor: Option<Predecessor>,
        abort: &CancellationToken,
    ) -> Result<Registrar, Error> {
        let claimed = tokio::select! {
            biased;
            () = abort.cancelled() => None,
            claimed = self.claim_first(takeover, predecessor) => Some(claimed),
        };
        match claimed {
            Some(claimed) => claimed?,
            // The claim may have landed: it is undone before `start()` hears of it.
            None => {
                let lease = match *self.session.watch_lease().borrow() {
                    SessionLease::Live(id) => id,
                    SessionLease::Renewing | SessionLease::Closed => 0,
                };
                return Err(self.undo(lease, Error::start_stopped()).await);
            }
        }
        // A call that outlasts the keep-alive period would put the lease at risk: from now
        // on, give up on it and retry instead.
        self.etcd.timeout = self.etcd.timeout.min(self.period);
        Ok(self)
    }
}

impl Registrar {
    /// Claims the key under the session's lease.
    ///
    /// # Errors
    ///
    /// `EtcdUnreachable` or `EtcdAuth` when etcd cannot be used, `DuplicateInstance` when the
    /// key is held by a live holder (without takeover); what NATS said when the holder could
    /// not be asked. Nothing is left behind on an error (see [`Registrar::undo`]).
    async fn claim_first(
        &mut self,
        takeover: bool,
        predecessor: Option<Predecessor>,
    ) -> Result<(), Error> {
        let budget = self.etcd.timeout;
        let session = &self.session;
        self.key_hold = session.hold(&self.etcd.key);
        if self.key_hold.is_none() && !takeover {
            // Another announcer on this session has the id: no claim could tell whose the
            // key is, since both would write under the same lease.
            let holder = retried(budget, || self.etcd.holder()).await;
            let epoch = holder.ok().and_then(|(h, ..)| h).map_or(0, |h| h.epoch);
            return Err(self.duplicate(epoch));
        }
        if self.key_hold.is_some() {
            // Before the claim: no change after it can pass unseen. A watch etcd does not
            // open at once (a missing permission can leave it unanswered) does not hold the
            // claim up: the task opens it later and reads the key then.
            let wait = budget.min(SUBSCRIBE_WITHIN);
            let tag = self.id;
            self.watch = subscribed(session, &self.watch_prefix, &self.etcd.key, tag, wait).await;
        }
        let lease = match session_lease(session, budget).await {
            Ok(lease) => lease,
            Err(e) => return Err(self.undo(0, e).await),
        };
        let value = self.value();
        let mut claim = retried(budget, || self.claim(value.clone(), lease, takeover)).await;
        if let Ok(Claim::Held {
            epoch,
            lease: held,
            token_ttl,
            ..
        }) = claim
            && held != lease
            && let Some(predecessor) = predecessor
        {
            match self.ask(&predecessor, epoch, token_ttl).await {
                Ok(Holder::Answered) => {}
                Ok(Holder::Silent) => {
                    claim =
                        retried(budget, || self.etcd.replace(value.clone(), lease, epoch)).await;
                    if let Ok(Claim::Written { .. }) = claim {
                        Counters::bump(&self.counters.silent_holders_replaced);
                    }
                }
                Err(e) => return Err(self.undo(lease, e).await),
            }
        }
        let failed = match claim {
            Ok(Claim::Written { epoch, cluster_id }) => {
                self.first_registered(lease, epoch, cluster_id);
                return Ok(());
            }
            // Our lease holds it, and no other announcer on the session holds the key: an
            // earlier attempt landed and its answer was lost.
            Ok(Claim::Held {
                epoch,
                lease: held,
                cluster_id,
                ..
            }) if held == lease && self.key_hold.is_some() => {
                self.first_registered(lease, epoch, cluster_id);
                return Ok(());
            }
            Ok(Claim::Held { epoch, .. }) => self.duplicate(epoch),
            Err(e) => {
                if let CallError::LeaseGone = e {
                    self.report_lost(lease);
                }
                e.into()
            }
        };
        Err(self.undo(lease, failed).await)
    }

    /// `DuplicateInstance`: the key is held, at `epoch`.
    fn duplicate(&self, epoch: u64) -> Error {
        Error::duplicate(Duplicate {
            instance: self.last_token.borrow().instance.clone(),
            key: self.etcd.key.clone(),
            epoch,
        })
    }

    /// Asks the holder of the key at `epoch` whether it lives, waiting up to its token TTL
    /// (`token_ttl`, or this instance's own when its value does not say).
    async fn ask(
        &self,
        predecessor: &Predecessor,
        epoch: u64,
        token_ttl: Option<Duration>,
    ) -> Result<Holder, Error> {
        let own = Duration::from_millis(u64::from(self.last_token.borrow().ttl_ms));
        let ttl = token_ttl.unwrap_or(own);
        tracing::info!(
            holder_epoch = epoch,
            ttl_ms = ttl.as_millis() as u64,
            "the instance id is registered; probing its holder"
        );
        let holder = predecessor.ask(epoch, ttl).await?;
        match holder {
            Holder::Answered => tracing::debug!(holder_epoch = epoch, "the holder answered"),
            Holder::Silent => tracing::warn!(
                holder_epoch = epoch,
                ttl_ms = ttl.as_millis() as u64,
                "the holder sent no token within its TTL (a crashed predecessor); taking over \
                 its registration"
            ),
        }
        Ok(holder)
    }

    /// Gives up the registration `start()` failed with, and returns `failed`. A session of
    /// this announcer alone is closed: its lease is revoked, which deletes the key if a claim
    /// did land. A shared session's lease stays: the key is deleted if a claim landed under
    /// it, unless another announcer on the session holds the key.
    pub(crate) async fn undo(&self, lease: i64, failed: Error) -> Error {
        if self.session.is_private() {
            if let Err(e) = self.session.close().await {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "lease of a failed registration not revoked; it expires"
                );
            }
        } else if self.key_hold.is_some() && lease != 0 {
            match self.delete_if_lease(lease).await {
                Ok(true) => tracing::debug!(lease, "a claim that had landed was deleted"),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    lease,
                    "the key of a failed registration may stay until the session's lease ends"
                ),
            }
        }
        failed
    }

    fn first_registered(&mut self, lease: i64, epoch: u64, cluster_id: u64) {
        tracing::info!(
            epoch,
            lease,
            key = %self.etcd.key,
            shared = !self.session.is_private(),
            "registered"
        );
        self.adopt(lease, epoch, cluster_id);
    }
}

/// The key's share of the session's watch, or `None` when it is not open within `wait`
/// (the registry opens it later, and reads the key then).
async fn subscribed(
    session: &Session,
    prefix: &str,
    key: &str,
    tag: u64,
    wait: Duration,
) -> Option<crate::session::KeyWatch> {
    match tokio::time::timeout(wait, session.hub().subscribe(prefix, key, tag)).await {
        Ok(Ok(watch)) => Some(watch),
        Ok(Err(e)) => {
            tracing::debug!(
                error = &e as &dyn std::error::Error,
                "session watch not open yet"
            );
            None
        }
        Err(_) => {
            tracing::debug!("session watch not open yet; the claim goes on without it");
            None
        }
    }
}

/// The session's live lease, waiting up to `timeout` while a lost one is being replaced.
async fn session_lease(session: &Session, timeout: Duration) -> Result<i64, Error> {
    let mut lease = session.watch_lease();
    let closed = || Error::with_source(ErrorKind::Stopped, "the session is closed");
    let live = tokio::time::timeout(
        timeout,
        lease.wait_for(|l| !matches!(l, SessionLease::Renewing)),
    )
    .await;
    match live {
        Ok(Ok(l)) => match *l {
            SessionLease::Live(id) => Ok(id),
            SessionLease::Renewing | SessionLease::Closed => Err(closed()),
        },
        Ok(Err(_)) => Err(closed()),
        Err(_) => Err(Error::with_source(
            ErrorKind::EtcdUnreachable,
            "the session's lease is lost and etcd grants no new one",
        )),
    }
}
