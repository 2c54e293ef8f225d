//! The watch of the instance's own key, and what a change means: a write under another lease
//! fences this incarnation; a deletion deregisters it if our lease still lives, else the lease
//! expired and the instance registers again.

use etcd_client::{EventType, WatchResponse};
use tokio::time::Instant;

use super::Registrar;
use crate::session::KeyWatch;
use crate::status::Stopped;

impl Registrar {
    pub(super) async fn open_watch(&mut self) -> bool {
        let opened = match &self.session {
            Some(session) => {
                session
                    .hub()
                    .watch(self.etcd.key.clone(), self.seen + 1)
                    .await
            }
            None => self
                .etcd
                .watch(self.seen + 1)
                .await
                .map(|w| KeyWatch::Own(Box::new(w))),
        };
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

    pub(super) async fn on_watch(
        &mut self,
        msg: Result<Option<WatchResponse>, etcd_client::Error>,
    ) {
        let resp = match msg {
            Ok(Some(resp)) => resp,
            Ok(None) | Err(_) => {
                tracing::debug!(seen = self.seen, "watch of the registration lost; resuming");
                self.watch = None;
                self.retry_at = Some(Instant::now() + self.next_backoff());
                return;
            }
        };
        let cluster = resp.header().map_or(0, |h| h.cluster_id());
        if cluster != 0 && self.cluster_id != 0 && cluster != self.cluster_id {
            self.lease_lost("a different etcd cluster answers");
            return;
        }
        if resp.compact_revision() > 0 || resp.canceled() {
            self.watch = None;
            self.check_key = true;
            self.retry_at = Some(Instant::now());
            return;
        }
        let lease = self.lease.unwrap_or(0);
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            self.seen = self.seen.max(kv.mod_revision());
            let revision = kv.mod_revision().max(0) as u64;
            if revision <= self.epoch {
                continue;
            }
            match event.event_type() {
                EventType::Put if kv.lease() != lease => {
                    self.ending = Some(Stopped::Fenced { by_epoch: revision });
                    return;
                }
                EventType::Put => {}
                EventType::Delete => {
                    self.check_delete = true;
                    self.retry_at = Some(Instant::now());
                }
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
