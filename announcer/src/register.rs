//! The registration of `start()`: connect to etcd, take a lease (its own, or a session's), and
//! claim the instance's key in one transaction, before the first token goes out. Each call is
//! tried again, within the call deadline, when etcd does not answer: a listed member may be
//! down.

use std::sync::Arc;
use std::time::Duration;

use herald_shared::backoff::Backoff;
use herald_shared::{EtcdError, Token};

use crate::error::{Duplicate, Error, ErrorKind};
use crate::etcd_calls::{CallError, Claim, Etcd};
use crate::plan::{EtcdConnection, EtcdPlan};
use crate::registrar::value_of;
use crate::session::{Session, SessionLease};

/// A registration written by `start()`.
#[derive(Debug)]
pub(crate) struct Registered {
    pub(crate) etcd: Etcd,
    pub(crate) lease: i64,
    pub(crate) epoch: u64,
    pub(crate) cluster_id: u64,
    /// The session whose lease holds the key, if any.
    pub(crate) session: Option<Session>,
}

impl Registered {
    /// Undoes a registration `start()` cannot go on with (best effort): revokes its own lease,
    /// or deletes the key from a session's.
    pub(crate) async fn abandon(self) {
        let undone = match self.session {
            Some(_) => self.etcd.delete_if_lease(self.lease).await.map(|_| ()),
            None => self.etcd.revoke(self.lease).await,
        };
        if let Err(e) = undone {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "registration not undone; it goes when its lease expires"
            );
        }
    }
}

/// Pauses before trying a registration call again: from about [`PAUSE_FIRST`], doubled after
/// each try up to [`PAUSE_MAX`].
const PAUSE_FIRST: Duration = Duration::from_millis(20);
const PAUSE_MAX: Duration = Duration::from_millis(500);

/// Runs `call` again while etcd gives no answer, for up to `budget` in all: a listed member
/// may be down, and etcd-client's channel may send the next try to another. A refused
/// connection fails at once, so many tries fit; a member that does not answer at all uses up
/// the call's own deadline.
async fn retried<T, F>(budget: Duration, mut call: impl FnMut() -> F) -> Result<T, CallError>
where
    F: Future<Output = Result<T, CallError>>,
{
    let give_up = tokio::time::Instant::now() + budget;
    let mut backoff = Backoff::new(PAUSE_FIRST, PAUSE_MAX);
    let mut pause = backoff.next_pause();
    let mut tries = 1u32;
    loop {
        match call().await {
            Err(CallError::Failed(EtcdError::Unreachable(e)))
                if tokio::time::Instant::now() + pause < give_up =>
            {
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    tries,
                    "etcd did not answer; trying again"
                );
                tokio::time::sleep(pause).await;
                pause = backoff.next_pause();
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Connects (or takes the session's client), takes a lease (its own, of `lease_ttl`, or the
/// session's), and registers `token` under `key`.
///
/// # Errors
///
/// `EtcdUnreachable` or `EtcdAuth` when etcd cannot be used, `DuplicateInstance` when the key
/// is held (without takeover). An own lease is revoked on every error.
pub(crate) async fn register(
    plan: EtcdPlan,
    key: String,
    token: &Token,
    lease_ttl: Duration,
) -> Result<Registered, Error> {
    let (client, session) = match plan.connection {
        EtcdConnection::Config(config) => (Arc::new(config.connect().await?), None),
        EtcdConnection::Client(client) => (Arc::new(*client), None),
        EtcdConnection::Session(session) => (session.etcd().client.clone(), Some(session)),
    };
    let etcd = Etcd {
        client,
        key,
        timeout: plan.timeout,
    };
    let lease = match &session {
        Some(session) => session_lease(session, plan.timeout).await?,
        None => retried(plan.timeout, || etcd.grant(lease_ttl)).await?,
    };
    let value = value_of(token);
    let claim = retried(plan.timeout, || {
        etcd.claim(value.clone(), lease, plan.takeover)
    })
    .await;
    let held = match claim {
        Ok(Claim::Written { epoch, cluster_id }) => {
            tracing::info!(epoch, lease, key = %etcd.key, shared = session.is_some(), "registered");
            return Ok(Registered {
                etcd,
                lease,
                epoch,
                cluster_id,
                session,
            });
        }
        // Our own lease holds it: an earlier attempt landed and its answer was lost.
        Ok(Claim::Held {
            epoch,
            lease: held,
            cluster_id,
        }) if held == lease && session.is_none() => {
            tracing::info!(epoch, lease, key = %etcd.key, "registered");
            return Ok(Registered {
                etcd,
                lease,
                epoch,
                cluster_id,
                session,
            });
        }
        Ok(Claim::Held { epoch, .. }) => Error::duplicate(Duplicate {
            instance: token.instance.clone(),
            key: etcd.key.clone(),
            epoch,
        }),
        Err(e) => {
            if let (Some(session), CallError::LeaseGone) = (&session, &e) {
                session.report_lost(lease);
            }
            e.into()
        }
    };
    if session.is_none()
        && let Err(e) = etcd.revoke(lease).await
    {
        tracing::warn!(
            error = &e as &dyn std::error::Error,
            lease,
            "lease of a failed registration not revoked; it expires"
        );
    }
    Err(held)
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
