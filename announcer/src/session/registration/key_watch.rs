//! The watch of the instance's own key, and what a change means: a write under another lease
//! fences this incarnation; a deletion deregisters it if our lease still lives, else the lease
//! expired and the instance registers again.

use tokio::time::Instant;

use super::Registrar;
use crate::session::KeyNews;
use crate::status::Stopped;

impl Registrar {
    /// Opens the key's share of the session's watch again, after which the key is read
    /// (changes since the last share ended may have passed unseen).
    pub(super) async fn open_watch(&mut self) -> bool {
        let opened = self
            .session
            .hub()
            .subscribe(&self.watch_prefix, &self.etcd.key, self.id)
            .await;
        if opened.is_ok() {
            self.check_key = true;
        }
        match opened {
            Ok(watch) => {
                self.watch = Some(watch);
                true
            }
            Err(e) => {
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    "watch of the registration not opened; retrying"
                );
                false
            }
        }
    }

    /// News of the key from its share of the session's watch.
    pub(super) fn on_watch(&mut self, news: KeyNews) {
        let (cluster, changes) = match news {
            KeyNews::Changes {
                cluster_id,
                changes,
            } => (cluster_id, changes),
            KeyNews::HistoryLost => {
                // The session's watch resumes by itself.
                self.check_key = true;
                self.retry_at = Some(Instant::now());
                return;
            }
        };
        if cluster != 0 && self.cluster_id != 0 && cluster != self.cluster_id {
            self.lease_lost("a different etcd cluster answers");
            return;
        }
        let lease = self.lease.unwrap_or(0);
        for change in changes {
            self.seen = self.seen.max(change.revision);
            let revision = change.revision.max(0) as u64;
            if revision <= self.epoch {
                continue;
            }
            if change.deleted {
                self.check_delete = true;
                self.retry_at = Some(Instant::now());
            } else if change.lease != lease {
                self.ending = Some(Stopped::Fenced { by_epoch: revision });
                return;
            }
        }
    }

    /// The key was deleted: by an operator if our lease still lives, else by its expiry.
    pub(super) async fn judge_delete(&mut self) -> bool {
        let Some(lease) = self.lease else {
            self.check_delete = false;
            return true;
        };
        match self.etcd.lease_alive(lease).await {
            Ok(true) => self.ending = Some(Stopped::Deregistered),
            Ok(false) => {
                self.report_lost(lease);
                self.lease_lost("the registration was deleted with its lease");
            }
            Err(_) => return false,
        }
        self.check_delete = false;
        true
    }

    /// After the watch lost its history: read the key and carry on from what it says.
    pub(super) async fn judge_key(&mut self) -> bool {
        let Ok((holder, revision, _)) = self.etcd.holder().await else {
            return false;
        };
        self.check_key = false;
        match holder {
            Some(h) if Some(h.lease) == self.lease => self.seen = revision as i64,
            Some(h) => self.ending = Some(Stopped::Fenced { by_epoch: h.epoch }),
            None => {
                self.seen = revision as i64;
                self.check_delete = true;
                return self.judge_delete().await;
            }
        }
        true
    }
}

impl Registrar {
    /// Whether `route` is the key's current share of the session's watch (news of an earlier
    /// share that ended are stale).
    pub(super) fn watches(&self, route: u64) -> bool {
        self.watch.as_ref().is_some_and(|w| w.route() == route)
    }
}
