//! One etcd watch stream carrying the key watches of every announcer on a session.
//!
//! etcd multiplexes watchers on a stream by watch id; the hub picks the ids itself (etcd 3.4+
//! takes a client-chosen id), so each response goes to its announcer without a lookup by key.
//! The hub's task owns the stream: it opens it on the first watch, routes every response, and
//! when the stream breaks it drops every subscription, whose announcers resume their watch from
//! the last revision they saw, as they do with a watch of their own.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use etcd_client::{WatchOptions, WatchResponse, WatchStream};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::SessionCounters;
use crate::etcd_calls::{CallError, Etcd};

/// Responses waiting for one announcer; it sees at most a few per registration.
const SUBSCRIPTION_QUEUE: usize = 16;

/// A response on its way to one announcer. Boxed: a channel allocates its first block of 32
/// slots when it is made, and 32 inline responses are 4 KB per announcer, for a queue that
/// is nearly always empty.
type Routed = Box<WatchResponse>;

/// A watch of one announcer's key.
#[derive(Debug)]
pub(crate) enum KeyWatch {
    /// A watch stream of the announcer's own.
    Own(Box<WatchStream>),
    /// A watch on the session's shared stream.
    Shared(Subscription),
}

impl KeyWatch {
    /// The next response; `Ok(None)` when the watch ended (resume it).
    pub(crate) async fn message(&mut self) -> Result<Option<WatchResponse>, etcd_client::Error> {
        match self {
            KeyWatch::Own(stream) => stream.message().await,
            KeyWatch::Shared(sub) => Ok(sub.responses.recv().await.map(|r| *r)),
        }
    }
}

/// One key watch on the shared stream; dropping it cancels the watch.
#[derive(Debug)]
pub(crate) struct Subscription {
    id: i64,
    responses: mpsc::Receiver<Routed>,
    hub: mpsc::UnboundedSender<HubRequest>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.hub.send(HubRequest::Cancel(self.id));
    }
}

#[derive(Debug)]
pub(crate) enum HubRequest {
    Watch {
        key: String,
        from: i64,
        reply: oneshot::Sender<Result<Subscription, CallError>>,
    },
    Cancel(i64),
}

/// The handle to the hub's task.
#[derive(Debug, Clone)]
pub(crate) struct WatchHub {
    requests: mpsc::UnboundedSender<HubRequest>,
}

impl WatchHub {
    pub(crate) fn spawn(etcd: Etcd, counters: Arc<SessionCounters>, span: tracing::Span) -> Self {
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let task = HubTask {
            etcd,
            stream: None,
            routes: HashMap::new(),
            next_id: 1,
            requests: requests_rx,
            handle: requests.downgrade(),
            counters,
        };
        tokio::spawn(task.run().instrument(span));
        WatchHub { requests }
    }

    /// Watches `key` from revision `from` on the shared stream.
    pub(crate) async fn watch(&self, key: String, from: i64) -> Result<KeyWatch, CallError> {
        let (reply, answer) = oneshot::channel();
        let gone = || CallError::Failed(herald_shared::EtcdError::unreachable("session gone"));
        self.requests
            .send(HubRequest::Watch { key, from, reply })
            .map_err(|_| gone())?;
        let sub = answer.await.map_err(|_| gone())??;
        Ok(KeyWatch::Shared(sub))
    }
}

struct HubTask {
    etcd: Etcd,
    stream: Option<WatchStream>,
    /// Watch id → the announcer's queue.
    routes: HashMap<i64, mpsc::Sender<Routed>>,
    next_id: i64,
    requests: mpsc::UnboundedReceiver<HubRequest>,
    /// Given to subscriptions so they can cancel; weak, so the task ends with the last hub.
    handle: mpsc::WeakUnboundedSender<HubRequest>,
    counters: Arc<SessionCounters>,
}

async fn next_response(
    stream: &mut Option<WatchStream>,
) -> Result<Option<WatchResponse>, etcd_client::Error> {
    match stream {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

impl HubTask {
    async fn run(mut self) {
        loop {
            tokio::select! {
                request = self.requests.recv() => match request {
                    Some(HubRequest::Watch { key, from, reply }) => {
                        let answer = self.watch(key, from).await;
                        let _ = reply.send(answer);
                    }
                    Some(HubRequest::Cancel(id)) => self.cancel(id).await,
                    None => return,
                },
                msg = next_response(&mut self.stream) => match msg {
                    Ok(Some(resp)) => self.route(resp).await,
                    Ok(None) | Err(_) => self.broken(),
                },
            }
        }
    }

    async fn watch(&mut self, key: String, from: i64) -> Result<Subscription, CallError> {
        let Some(handle) = self.handle.upgrade() else {
            return Err(CallError::Failed(herald_shared::EtcdError::unreachable(
                "session gone",
            )));
        };
        let id = self.next_id;
        self.next_id += 1;
        let opts = WatchOptions::new()
            .with_start_revision(from)
            .with_watch_id(id);
        match &mut self.stream {
            Some(stream) => {
                if let Err(e) = stream.watch(key, Some(opts)).await {
                    tracing::debug!(error = %e, "shared watch stream broken");
                    self.broken();
                    return Err(CallError::Failed(herald_shared::etcd::classify(e)));
                }
            }
            None => {
                let mut client = etcd_client::Client::clone(&self.etcd.client);
                let opened =
                    tokio::time::timeout(self.etcd.timeout, client.watch(key, Some(opts))).await;
                match opened {
                    Ok(Ok(stream)) => {
                        self.counters.watch_streams.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("shared watch stream opened");
                        self.stream = Some(stream);
                    }
                    Ok(Err(e)) => return Err(CallError::Failed(herald_shared::etcd::classify(e))),
                    Err(_) => {
                        return Err(CallError::Failed(herald_shared::EtcdError::no_answer(
                            self.etcd.timeout,
                        )));
                    }
                }
            }
        }
        let (tx, responses) = mpsc::channel(SUBSCRIPTION_QUEUE);
        self.routes.insert(id, tx);
        self.count_routes();
        Ok(Subscription {
            id,
            responses,
            hub: handle,
        })
    }

    /// Hands `resp` to the announcer whose watch it answers. One whose queue is full or gone
    /// loses its watch: it resumes from the last revision it saw.
    async fn route(&mut self, resp: WatchResponse) {
        let id = resp.watch_id();
        let ended = resp.canceled();
        let Some(route) = self.routes.get(&id) else {
            return;
        };
        if route.try_send(Box::new(resp)).is_err() || ended {
            self.cancel(id).await;
        }
    }

    async fn cancel(&mut self, id: i64) {
        if self.routes.remove(&id).is_none() {
            return;
        }
        self.count_routes();
        if let Some(stream) = &mut self.stream
            && stream.cancel(id).await.is_err()
        {
            self.broken();
        }
    }

    /// The stream broke: every subscription ends, and its announcer resumes.
    fn broken(&mut self) {
        if self.stream.take().is_some() {
            tracing::debug!(watches = self.routes.len(), "shared watch stream lost");
        }
        self.routes.clear();
        self.count_routes();
    }

    fn count_routes(&self) {
        self.counters
            .key_watches
            .store(self.routes.len() as u64, Ordering::Relaxed);
    }
}
