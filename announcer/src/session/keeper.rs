//! The session's task: sole owner of the shared lease. It keeps the lease alive every third of
//! its TTL, checks it at once when an announcer found it gone, grants a new one when etcd says
//! it is gone (the announcers register again under it), and revokes it on `close()`.

use std::sync::Arc;
use std::time::Duration;

use herald_shared::CONNECTION_LOG;
use herald_shared::backoff::Backoff;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::SessionCounters;
use crate::error::Error;
use crate::etcd_calls::{Etcd, KeepAlive, Renewal};
use crate::messages::{SessionLease, SessionRequest};
use crate::stats::Counters;

/// The first and the largest pause before retrying a call etcd did not answer.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(super) struct Keeper {
    etcd: Etcd,
    ttl: Duration,
    period: Duration,
    /// The live lease; `None` while a new one is being granted.
    lease: Option<i64>,
    keep_alive: KeepAlive,
    next: Instant,
    backoff: Backoff,
    failing: u32,
    published: watch::Sender<SessionLease>,
    requests: mpsc::Receiver<SessionRequest>,
    counters: Arc<SessionCounters>,
    /// The announcer's own counters, when the session is one announcer's (see
    /// [`super::Session::private`]): its keep-alives are counted there too.
    mirror: Option<Arc<Counters>>,
    stop: CancellationToken,
}

impl Keeper {
    pub(super) fn new(
        etcd: Etcd,
        ttl: Duration,
        lease: i64,
        published: watch::Sender<SessionLease>,
        requests: mpsc::Receiver<SessionRequest>,
        counters: Arc<SessionCounters>,
        stop: CancellationToken,
    ) -> Self {
        let period = ttl / 3;
        Keeper {
            etcd,
            ttl,
            period,
            lease: Some(lease),
            keep_alive: KeepAlive::default(),
            next: Instant::now() + period,
            backoff: Backoff::new(RETRY_FIRST, RETRY_MAX.min(period)),
            failing: 0,
            published,
            requests,
            counters,
            mirror: None,
            stop,
        }
    }

    /// Counts the keep-alives in `mirror` too (an announcer's counters).
    pub(super) fn mirrored(mut self, mirror: Option<Arc<Counters>>) -> Self {
        self.mirror = mirror;
        self
    }

    /// Runs until `close()`, or until every handle is gone (the lease is then left to expire).
    pub(super) async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                () = self.stop.cancelled() => {
                    tracing::debug!("session dropped; its lease is left to expire");
                    return;
                }
                request = self.requests.recv() => match request {
                    Some(SessionRequest::Lost(lease)) if Some(lease) == self.lease => {
                        self.next = Instant::now();
                    }
                    Some(SessionRequest::Lost(_)) => {}
                    Some(SessionRequest::Close(reply)) => {
                        let _ = reply.send(Box::pin(self.close()).await);
                        return;
                    }
                    None => return,
                },
                // Boxed: etcd-client's futures are large, and the task waits almost always.
                () = tokio::time::sleep_until(self.next) => Box::pin(self.step()).await,
            }
        }
    }

    /// Renews the live lease, or grants a new one when it is gone.
    async fn step(&mut self) {
        match self.lease {
            Some(lease) => self.renew(lease).await,
            None => self.grant().await,
        }
    }

    async fn renew(&mut self, lease: i64) {
        match self.keep_alive.renew(&self.etcd, lease).await {
            Renewal::Alive => {
                Counters::bump(&self.counters.keep_alives);
                if let Some(mirror) = &self.mirror {
                    Counters::bump(&mirror.keep_alives);
                }
                if self.failing > 0 {
                    tracing::info!(
                        target: CONNECTION_LOG,
                        failures = self.failing,
                        "etcd lease keep-alives resumed"
                    );
                }
                self.failing = 0;
                self.backoff.reset();
                self.next = Instant::now() + self.period;
            }
            Renewal::Gone => {
                Counters::bump(&self.counters.lease_losses);
                tracing::warn!(
                    lease,
                    "etcd lease lost; granting a new one, every registration on it is written again"
                );
                self.lease = None;
                self.published.send_replace(SessionLease::Renewing);
                self.next = Instant::now();
            }
            Renewal::Failed(error) => {
                Counters::bump(&self.counters.keep_alive_failures);
                if let Some(mirror) = &self.mirror {
                    Counters::bump(&mirror.keep_alive_failures);
                }
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
                        "session keep-alive failed again"
                    );
                }
                self.failing += 1;
                self.next = Instant::now() + self.next_backoff();
            }
        }
    }

    async fn grant(&mut self) {
        match self.etcd.grant(self.ttl).await {
            Ok(lease) => {
                tracing::info!(target: CONNECTION_LOG, lease, "etcd session lease granted again");
                self.lease = Some(lease);
                self.backoff.reset();
                self.published.send_replace(SessionLease::Live(lease));
                self.next = Instant::now() + self.period;
            }
            Err(error) => {
                tracing::debug!(
                    error = &error as &dyn std::error::Error,
                    "session lease not granted; retrying"
                );
                self.next = Instant::now() + self.next_backoff();
            }
        }
    }

    async fn close(&mut self) -> Result<(), Error> {
        self.published.send_replace(SessionLease::Closed);
        let Some(lease) = self.lease.take() else {
            return Ok(());
        };
        self.keep_alive.close();
        match self.etcd.revoke(lease).await {
            Ok(()) => {
                tracing::info!(lease, "session closed; lease revoked");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    lease,
                    "session lease not revoked; it expires on its own"
                );
                Err(e.into())
            }
        }
    }

    fn next_backoff(&mut self) -> Duration {
        self.backoff.next_pause()
    }
}
