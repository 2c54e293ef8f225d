//! A scope's watch, from the revision after its listing, until cancelled: it survives etcd
//! restarts, and lists again when its revision was compacted away or a different cluster
//! answers (the cluster id in the response headers changed).

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, KeyValue, WatchOptions};
use herald_shared::Subjects;
use herald_shared::backoff::Backoff;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::listing::list;
use super::{EtcdUpdate, ResumePoint, registration, scope_prefix};
use crate::connections::{CONNECTION_LOG, Change, Tracker, seconds};

/// Watches a scope's prefix from the revision after `from` until cancelled or ingest stops.
pub(super) async fn watch(
    mut client: Client,
    subjects: Subjects,
    from: ResumePoint,
    tx: mpsc::Sender<EtcdUpdate>,
    connections: Arc<Tracker>,
    cancel: CancellationToken,
) {
    let mut link = Link {
        up: true,
        connections,
        back_at: None,
        flapping: false,
    };
    let ResumePoint {
        scope,
        mut cluster_id,
        mut revision,
    } = from;
    let prefix = scope_prefix(&subjects, scope.as_deref());
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    'reconnect: while !cancel.is_cancelled() {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1)
            .with_progress_notify();
        let mut stream = tokio::select! {
            () = cancel.cancelled() => return,
            r = client.watch(prefix.clone(), Some(opts)) => match r {
                Ok(s) => s,
                Err(e) => {
                    link.lost(revision, &e);
                    pause(&cancel, &mut backoff).await;
                    continue;
                }
            },
        };
        loop {
            let msg = tokio::select! {
                () = cancel.cancelled() => return,
                m = stream.message() => m,
            };
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    link.lost(revision, &"the watch stream ended");
                    pause(&cancel, &mut backoff).await;
                    continue 'reconnect;
                }
                Err(e) => {
                    link.lost(revision, &e);
                    pause(&cancel, &mut backoff).await;
                    continue 'reconnect;
                }
            };
            // The first answer of a new watch (etcd confirms its creation at once).
            link.back(revision);
            backoff.reset();
            let seen_cluster = resp.header().map_or(cluster_id, |h| h.cluster_id());
            let new_cluster = seen_cluster != cluster_id;
            if new_cluster || resp.compact_revision() > 0 || resp.canceled() {
                if new_cluster {
                    tracing::warn!(
                        old = cluster_id,
                        new = seen_cluster,
                        "a different etcd cluster answers; listing again and forgetting old epochs"
                    );
                } else {
                    tracing::warn!(
                        compacted = resp.compact_revision(),
                        revision,
                        "etcd watch revision compacted; listing again"
                    );
                }
                match list(&mut client, &subjects, scope.as_deref()).await {
                    Ok(listing) => {
                        cluster_id = listing.cluster_id;
                        revision = listing.revision;
                        if tx
                            .send(EtcdUpdate::Resync {
                                listing,
                                new_cluster,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        link.lost(revision, &e);
                        pause(&cancel, &mut backoff).await;
                    }
                }
                continue 'reconnect;
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                revision = revision.max(kv.mod_revision());
                let Some(update) = update_of(&subjects, event.event_type(), kv) else {
                    continue;
                };
                if tx.send(update).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// What a watch event of a registration key tells the store; `None` for a key that is not
/// one.
fn update_of(subjects: &Subjects, kind: EventType, kv: &KeyValue) -> Option<EtcdUpdate> {
    match kind {
        EventType::Put => registration(subjects, kv).map(EtcdUpdate::Put),
        EventType::Delete => {
            let (service, instance) = subjects.parse_key(kv.key_str().ok()?)?;
            Some(EtcdUpdate::Delete {
                service: service.to_owned(),
                instance: instance.to_owned(),
                revision: kv.mod_revision().max(0) as u64,
            })
        }
    }
}

/// One scope's watch as the readiness record sees it. Each scope reports its own transitions
/// once; the warning and the info line go out when etcd as a whole changes, so an outage
/// logs one warning and one recovery however many scopes and retries it spans. Retries are
/// logged at debug.
struct Link {
    up: bool,
    connections: Arc<Tracker>,
    /// When the watch last came back. A watch that breaks again within [`SETTLE`] (a
    /// restarted member drops the first stream) belongs to the same outage: logged at debug.
    back_at: Option<tokio::time::Instant>,
    /// The current loss is such a flap: its end is not announced again either.
    flapping: bool,
}

/// How long a resumed watch must hold before a new loss is a new outage.
const SETTLE: Duration = Duration::from_secs(2);

impl Link {
    fn lost(&mut self, revision: i64, error: &dyn std::fmt::Display) {
        if !self.up {
            tracing::debug!(error = %error, revision, "etcd still unreachable; trying again");
            return;
        }
        self.up = false;
        let flap = self.back_at.is_some_and(|t| t.elapsed() < SETTLE);
        self.flapping = flap;
        match self.connections.etcd_watch(false) {
            Some(Change::Lost) if flap => {
                tracing::debug!(error = %error, revision, "etcd watch broke again just after resuming");
            }
            Some(Change::Lost) => tracing::warn!(
                target: CONNECTION_LOG,
                error = %error,
                revision,
                "etcd watch lost: keeping the NATS view, resuming from the last revision seen when etcd is back"
            ),
            _ => tracing::debug!(error = %error, revision, "etcd watch of this scope lost"),
        }
    }

    fn back(&mut self, revision: i64) {
        if self.up {
            return;
        }
        self.up = true;
        self.back_at = Some(tokio::time::Instant::now());
        match self.connections.etcd_watch(true) {
            Some(Change::Back(_)) if std::mem::take(&mut self.flapping) => {
                tracing::debug!(revision, "etcd watch resumed again");
            }
            Some(Change::Back(down)) => tracing::info!(
                target: CONNECTION_LOG,
                revision,
                down_ms = down.as_millis() as u64,
                "etcd watch resumed after {}",
                seconds(down)
            ),
            _ => tracing::debug!(revision, "etcd watch of this scope resumed"),
        }
    }
}

async fn pause(cancel: &CancellationToken, backoff: &mut Backoff) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(backoff.next_pause()) => {}
    }
}
