//! One etcd watch per prefix for every announcer on a session, on one stream.
//!
//! The hub watches the services prefix of each Herald prefix its announcers register under:
//! one etcd watcher, however many keys, opened when the first announcer of that prefix asks
//! and cancelled when the last one leaves. Each event goes to the announcer of its key. An
//! announcer subscribes before it claims its key, and the subscription is answered once etcd
//! has created the watch, so no change after the claim can pass unseen; and a watch that starts
//! at the current revision costs etcd no catch-up through history, where a watcher per key,
//! each starting at its own claim's revision, did.
//!
//! When the stream breaks, the hub opens it again and resumes each prefix after the last
//! revision it saw, without the announcers noticing. When etcd compacted that revision away,
//! the watch resumes from the oldest revision left, and every announcer of the prefix is told
//! that history was lost, so that it reads its key.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions, WatchResponse, WatchStream};
use herald_shared::backoff::Backoff;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use super::SessionCounters;
use crate::etcd_calls::{CallError, Etcd};

/// One change of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyChange {
    /// The revision of the change.
    pub(crate) revision: i64,
    /// The lease a write put the key under (0 for a deletion).
    pub(crate) lease: i64,
    pub(crate) deleted: bool,
}

impl KeyChange {
    fn of(event: &etcd_client::Event) -> Option<KeyChange> {
        let kv = event.kv()?;
        Some(KeyChange {
            revision: kv.mod_revision(),
            lease: kv.lease(),
            deleted: event.event_type() == EventType::Delete,
        })
    }
}

/// What a watch tells of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyNews {
    /// Changes of the key, in order, from the cluster `cluster_id` (0: not said).
    Changes {
        cluster_id: u64,
        changes: Vec<KeyChange>,
    },
    /// The watch lost part of its history (compacted, or cancelled by etcd): the key must be
    /// read to know where it stands.
    HistoryLost,
}

/// The news of a key, for the session's registry: the tag its subscriber gave, the share
/// ([`KeyWatch::route`]) that carried it, and the news, or `None` once that share ended.
pub(crate) type News = (u64, u64, Option<KeyNews>);

/// One key's share of the session's watch; dropping it ends the share. Its news go to the
/// session's registry, tagged.
#[derive(Debug)]
pub(crate) struct KeyWatch {
    key: Arc<str>,
    id: u64,
    hub: mpsc::UnboundedSender<HubRequest>,
}

impl KeyWatch {
    /// The share's number: news of an earlier share of the same key are stale.
    pub(crate) fn route(&self) -> u64 {
        self.id
    }
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        let _ = self.hub.send(HubRequest::Cancel(self.key.clone(), self.id));
    }
}

type Answer = oneshot::Sender<Result<KeyWatch, CallError>>;

#[derive(Debug)]
pub(crate) enum HubRequest {
    Subscribe {
        prefix: Arc<str>,
        key: Arc<str>,
        tag: u64,
        reply: Answer,
    },
    Cancel(Arc<str>, u64),
}

/// The handle to the hub's task.
#[derive(Debug, Clone)]
pub(crate) struct WatchHub {
    requests: mpsc::UnboundedSender<HubRequest>,
}

fn gone() -> CallError {
    CallError::Failed(herald_shared::EtcdError::unreachable("session gone"))
}

impl WatchHub {
    pub(crate) fn spawn(
        etcd: Etcd,
        counters: Arc<SessionCounters>,
        news: mpsc::UnboundedSender<News>,
        span: tracing::Span,
    ) -> Self {
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let task = HubTask {
            etcd,
            stream: None,
            prefixes: HashMap::new(),
            by_id: HashMap::new(),
            routes: HashMap::new(),
            next_route: 1,
            news,
            next_watch: 1,
            requests: requests_rx,
            handle: requests.downgrade(),
            counters,
            reopen_at: None,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(1)),
        };
        tokio::spawn(task.run().instrument(span));
        WatchHub { requests }
    }

    /// Follows `key` through the session's watch of `prefix` (which holds it), its news
    /// tagged `tag`. Answers once etcd has created that watch: any change of the key from
    /// then on is seen.
    pub(crate) async fn subscribe(
        &self,
        prefix: &str,
        key: &str,
        tag: u64,
    ) -> Result<KeyWatch, CallError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(HubRequest::Subscribe {
                prefix: prefix.into(),
                key: key.into(),
                tag,
                reply,
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// The session's watch of one prefix.
struct PrefixWatch {
    /// Its watch id on the current stream.
    id: i64,
    /// etcd confirmed it on the current stream.
    created: bool,
    /// The last revision it saw (0: none yet); it resumes after it.
    seen: i64,
    /// Keys followed through it.
    keys: usize,
    /// Subscriptions (key, tag) answered once it is created.
    waiting: Vec<(Arc<str>, u64, Answer)>,
}

/// Where one key's news goes: to the registry, tagged.
struct Route {
    id: u64,
    prefix: Arc<str>,
    tag: u64,
}

struct HubTask {
    etcd: Etcd,
    stream: Option<WatchStream>,
    prefixes: HashMap<Arc<str>, PrefixWatch>,
    /// Watch id on the current stream → its prefix.
    by_id: HashMap<i64, Arc<str>>,
    routes: HashMap<Arc<str>, Route>,
    next_route: u64,
    /// The session registry's news.
    news: mpsc::UnboundedSender<News>,
    next_watch: i64,
    requests: mpsc::UnboundedReceiver<HubRequest>,
    /// Given to subscriptions so they can cancel; weak, so the task ends with the last hub.
    handle: mpsc::WeakUnboundedSender<HubRequest>,
    counters: Arc<SessionCounters>,
    /// When to open the broken stream again.
    reopen_at: Option<Instant>,
    backoff: Backoff,
}

/// What a watch of `prefix` covers: every key under it when it ends with `/` (a session's
/// services prefix), else that one key (a session of one announcer).
fn range(opts: WatchOptions, prefix: &str) -> WatchOptions {
    if prefix.ends_with('/') {
        opts.with_prefix()
    } else {
        opts
    }
}

async fn next_response(
    stream: &mut Option<WatchStream>,
) -> Result<Option<WatchResponse>, etcd_client::Error> {
    match stream {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl HubTask {
    async fn run(mut self) {
        loop {
            tokio::select! {
                request = self.requests.recv() => match request {
                    Some(HubRequest::Subscribe { prefix, key, tag, reply }) => {
                        // Boxed: etcd-client's futures are large, and the task waits
                        // almost always.
                        Box::pin(self.subscribe(prefix, key, tag, reply)).await;
                    }
                    Some(HubRequest::Cancel(key, id)) => Box::pin(self.cancel(&key, id)).await,
                    None => return,
                },
                msg = next_response(&mut self.stream) => match msg {
                    Ok(Some(resp)) => Box::pin(self.on_response(resp)).await,
                    Ok(None) | Err(_) => self.broken(),
                },
                () = until(self.reopen_at) => {
                    self.reopen_at = None;
                    Box::pin(self.reopen()).await;
                }
            }
        }
    }

    async fn subscribe(&mut self, prefix: Arc<str>, key: Arc<str>, tag: u64, reply: Answer) {
        if let Some(watch) = self.prefixes.get_mut(&prefix) {
            if watch.created {
                let sub = self.route(prefix, key, tag);
                let _ = reply.send(sub);
            } else {
                watch.waiting.push((key, tag, reply));
            }
            return;
        }
        let id = self.watch_id(&prefix);
        self.prefixes.insert(
            prefix.clone(),
            PrefixWatch {
                id,
                created: false,
                seen: 0,
                keys: 0,
                waiting: vec![(key, tag, reply)],
            },
        );
        self.count();
        if self.stream.is_some() || self.reopen_at.is_none() {
            let opts = range(WatchOptions::new(), &prefix).with_watch_id(id);
            if let Err(e) = self.send_watch(&prefix, opts).await {
                // Nobody can be answered before the stream is back: fail them, they retry.
                let watch = self.prefixes.remove(&prefix).expect("inserted above");
                self.by_id.remove(&id);
                self.count();
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    "session watch not opened"
                );
                for (_, _, reply) in watch.waiting {
                    let _ = reply.send(Err(CallError::Failed(
                        herald_shared::EtcdError::unreachable(
                            "the session's watch could not be opened",
                        ),
                    )));
                }
            }
        }
    }

    /// A new watch id for `prefix` on the current stream.
    fn watch_id(&mut self, prefix: &Arc<str>) -> i64 {
        let id = self.next_watch;
        self.next_watch += 1;
        self.by_id.insert(id, prefix.clone());
        id
    }

    /// Asks for a watch of `prefix`, opening the stream when there is none.
    async fn send_watch(&mut self, prefix: &str, opts: WatchOptions) -> Result<(), CallError> {
        if let Some(stream) = &mut self.stream {
            return match stream.watch(prefix, Some(opts)).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    self.broken();
                    Err(CallError::Failed(herald_shared::etcd::classify(e)))
                }
            };
        }
        let mut client = etcd_client::Client::clone(&self.etcd.client);
        match tokio::time::timeout(self.etcd.timeout, client.watch(prefix, Some(opts))).await {
            Ok(Ok(stream)) => {
                self.counters.watch_streams.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("session watch stream opened");
                self.stream = Some(stream);
                Ok(())
            }
            Ok(Err(e)) => Err(CallError::Failed(herald_shared::etcd::classify(e))),
            Err(_) => Err(CallError::Failed(herald_shared::EtcdError::no_answer(
                self.etcd.timeout,
            ))),
        }
    }

    fn route(&mut self, prefix: Arc<str>, key: Arc<str>, tag: u64) -> Result<KeyWatch, CallError> {
        let hub = self.handle.upgrade().ok_or_else(gone)?;
        let id = self.next_route;
        self.next_route += 1;
        let replaced = self.routes.insert(
            key.clone(),
            Route {
                id,
                prefix: prefix.clone(),
                tag,
            },
        );
        if let Some(old) = &replaced {
            // The key's earlier share ends here: no news of it follows.
            let _ = self.news.send((old.tag, old.id, None));
        }
        if replaced.is_none()
            && let Some(watch) = self.prefixes.get_mut(&prefix)
        {
            watch.keys += 1;
        }
        self.count();
        Ok(KeyWatch { key, id, hub })
    }

    async fn on_response(&mut self, resp: WatchResponse) {
        let Some(prefix) = self.by_id.get(&resp.watch_id()).cloned() else {
            return;
        };
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.compact_revision() > 0 {
            self.history_lost(&prefix, resp.compact_revision()).await;
            return;
        }
        if resp.canceled() {
            // etcd ended the watch for another reason (a permission, a member going away):
            // its announcers read their keys, and every prefix resumes on a new stream after
            // a pause.
            tracing::debug!(%prefix, reason = resp.cancel_reason(), "session watch cancelled by etcd");
            // Those still waiting for it (a watch etcd refused at once, for a missing
            // permission) are not kept waiting: their own calls will say why.
            if let Some(watch) = self.prefixes.get_mut(&prefix) {
                for (_, _, reply) in std::mem::take(&mut watch.waiting) {
                    let _ = reply.send(Err(CallError::Failed(
                        herald_shared::EtcdError::unreachable("etcd cancelled the session's watch"),
                    )));
                }
            }
            self.tell_history_lost(&prefix);
            self.stream = None;
            self.broken();
            return;
        }
        let Some(watch) = self.prefixes.get_mut(&prefix) else {
            return;
        };
        if resp.created() && !watch.created {
            watch.created = true;
            if watch.seen == 0 {
                watch.seen = revision;
            }
            self.backoff.reset();
            for (key, tag, reply) in std::mem::take(&mut watch.waiting) {
                let sub = self.route(prefix.clone(), key, tag);
                let _ = reply.send(sub);
            }
            return;
        }
        let cluster_id = resp.header().map_or(0, |h| h.cluster_id());
        let mut seen = revision.max(watch.seen);
        for event in resp.events() {
            let Some(change) = KeyChange::of(event) else {
                continue;
            };
            seen = seen.max(change.revision);
            let Some(key) = event.kv().and_then(|kv| kv.key_str().ok()) else {
                continue;
            };
            let Some(route) = self.routes.get(key) else {
                continue;
            };
            let news = KeyNews::Changes {
                cluster_id,
                changes: vec![change],
            };
            // The registry gone, the session is: nothing to tell.
            let _ = self.news.send((route.tag, route.id, Some(news)));
        }
        if let Some(watch) = self.prefixes.get_mut(&prefix) {
            watch.seen = seen;
        }
    }

    /// etcd dropped part of `prefix`'s history: every announcer of it is told, and the watch
    /// resumes from the oldest revision left (`compacted`), or after the last one seen.
    async fn history_lost(&mut self, prefix: &Arc<str>, compacted: i64) {
        tracing::debug!(%prefix, compacted, "session watch lost its history");
        self.tell_history_lost(prefix);
        let Some(watch) = self.prefixes.get(prefix) else {
            return;
        };
        let from = if compacted > 0 {
            compacted
        } else {
            watch.seen + 1
        };
        let old = watch.id;
        self.by_id.remove(&old);
        let id = self.watch_id(prefix);
        if let Some(watch) = self.prefixes.get_mut(prefix) {
            watch.id = id;
            watch.created = false;
        }
        let opts = range(WatchOptions::new(), prefix)
            .with_watch_id(id)
            .with_start_revision(from);
        if self.send_watch(prefix, opts).await.is_err() {
            self.broken();
        }
    }

    /// Tells every announcer of `prefix` that history was lost.
    fn tell_history_lost(&mut self, prefix: &Arc<str>) {
        for route in self.routes.values() {
            if &route.prefix == prefix {
                let _ = self
                    .news
                    .send((route.tag, route.id, Some(KeyNews::HistoryLost)));
            }
        }
    }

    async fn cancel(&mut self, key: &str, id: u64) {
        let Some(route) = self.routes.get(key).filter(|r| r.id == id) else {
            return;
        };
        let prefix = route.prefix.clone();
        let _ = self.news.send((route.tag, route.id, None));
        self.routes.remove(key);
        let Some(watch) = self.prefixes.get_mut(&prefix) else {
            self.count();
            return;
        };
        watch.keys = watch.keys.saturating_sub(1);
        if watch.keys == 0 && watch.waiting.is_empty() {
            // Nobody follows the prefix any more: etcd drops its watcher.
            let watch_id = watch.id;
            self.prefixes.remove(&prefix);
            self.by_id.remove(&watch_id);
            if let Some(stream) = &mut self.stream
                && stream.cancel(watch_id).await.is_err()
            {
                self.broken();
            }
        }
        self.count();
    }

    /// The stream broke: every prefix resumes on a new one, shortly.
    fn broken(&mut self) {
        if self.stream.take().is_some() {
            tracing::debug!(
                prefixes = self.prefixes.len(),
                keys = self.routes.len(),
                "session watch stream lost; resuming"
            );
        }
        for watch in self.prefixes.values_mut() {
            watch.created = false;
            // Who waits for a watch is not kept waiting through the outage: an announcer
            // that starts claims without it and opens it later (then reads its key).
            for (_, _, reply) in std::mem::take(&mut watch.waiting) {
                let _ = reply.send(Err(CallError::Failed(
                    herald_shared::EtcdError::unreachable("the session's watch broke"),
                )));
            }
        }
        if !self.prefixes.is_empty() && self.reopen_at.is_none() {
            self.reopen_at = Some(Instant::now() + self.backoff.next_pause());
        }
    }

    /// Opens the stream again and resumes every prefix after the last revision it saw.
    async fn reopen(&mut self) {
        self.by_id.clear();
        let prefixes: Vec<(Arc<str>, i64)> = self
            .prefixes
            .iter()
            .map(|(p, w)| (p.clone(), w.seen))
            .collect();
        for (prefix, seen) in prefixes {
            let id = self.watch_id(&prefix);
            if let Some(watch) = self.prefixes.get_mut(&prefix) {
                watch.id = id;
                watch.created = false;
            }
            let mut opts = range(WatchOptions::new(), &prefix).with_watch_id(id);
            if seen > 0 {
                opts = opts.with_start_revision(seen + 1);
            }
            if let Err(e) = self.send_watch(&prefix, opts).await {
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    "session watch not resumed"
                );
                self.stream = None;
                self.broken();
                return;
            }
        }
    }

    fn count(&self) {
        let c = &self.counters;
        c.key_watches
            .store(self.routes.len() as u64, Ordering::Relaxed);
        c.etcd_watchers
            .store(self.prefixes.len() as u64, Ordering::Relaxed);
    }
}
