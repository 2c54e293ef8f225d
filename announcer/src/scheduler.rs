//! One scheduler per NATS connection: the task that times and publishes the tokens of every
//! announcer on that connection.
//!
//! A process that announces thousands of instances on one connection would otherwise run a
//! task per instance, each with its own timers and channels. Here an announcer is a record in
//! one map, its next wake-up an entry in one heap, and everything that can make a token due
//! (the handle's requests, load changes, the registration's standing, probes, reconnects)
//! arrives on channels the one task reads. The timing rules stay in `schedule` and the token
//! rules in `task`; this module only decides whose turn it is.
//!
//! The heap holds `(instant, key)` entries and each record remembers the instant it is armed
//! for: an entry that no longer matches (the record was re-armed earlier, or is gone) is
//! skipped when it comes up, so re-arming never searches the heap.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::Client;
use herald_shared::State;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use crate::error::{Error, ErrorKind};
use crate::probes::{ProbeFeeds, Probed};
use crate::reconnects::{Link, Poller};
use crate::task::{Broadcaster, Goodbye, LoadCell, MetaRequest};

/// An announcer's key on its connection's scheduler.
pub(crate) type Key = u64;

/// The reply to a request that publishes: whether the token was handed to NATS.
pub(crate) type Reply = oneshot::Sender<Result<(), Error>>;

/// What the scheduler is asked to do, for the announcer of a key.
#[derive(Debug)]
enum Order {
    /// Take over the announcer's broadcasting (its first token is out).
    Join(Key, Box<Broadcaster>),
    /// `drain()`, `resume()`.
    SetState(Key, State, Reply),
    /// `set_meta()`.
    SetMeta(Key, MetaRequest, Reply),
    /// `set_load()`: read the announcer's load cell.
    Load(Key),
    /// The registration's standing changed.
    Standing(Key),
    /// `shutdown()`: send the goodbye and forget the announcer.
    Leave(Key, oneshot::Sender<Goodbye>),
    /// The handle was dropped: forget the announcer without a goodbye.
    Forget(Key),
}

/// The scheduler of one connection; it stops when its owner and the last announcer on it are
/// gone.
#[derive(Debug)]
pub(crate) struct Scheduler {
    orders: mpsc::UnboundedSender<Order>,
    /// The connection as its reconnect poller last saw it.
    link: watch::Receiver<Link>,
    probe_feeds: ProbeFeeds,
    next_key: AtomicU64,
    task: JoinHandle<()>,
    /// Stops the task when the last announcer on the connection is gone.
    _stop: DropGuard,
}

impl Scheduler {
    /// Starts the scheduler of `client`'s connection. Its owner is the announcer's own
    /// connection, or the [`Connection`](crate::Connection) the announcers share.
    pub(crate) fn spawn(client: &Client) -> Arc<Scheduler> {
        let (orders, orders_rx) = mpsc::unbounded_channel();
        let (probed, probed_rx) = mpsc::unbounded_channel();
        let poller = Poller::spawn(client);
        let link = poller.link();
        let turns = Turns {
            client: client.clone(),
            records: HashMap::new(),
            heap: BinaryHeap::new(),
            by_probe: HashMap::new(),
            orders: orders_rx,
            probed: probed_rx,
            link: link.clone(),
            _poller: poller,
        };
        let stop = CancellationToken::new();
        Arc::new(Scheduler {
            orders,
            link,
            probe_feeds: ProbeFeeds::new(probed),
            next_key: AtomicU64::new(0),
            task: tokio::spawn(turns.run(stop.clone())),
            _stop: stop.drop_guard(),
        })
    }

    /// Whether its task still runs.
    pub(crate) fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// The connection now: its connect count and the server connection that carries tokens.
    pub(crate) fn link(&self) -> Link {
        self.link.borrow().clone()
    }

    /// The probe subscriptions of the connection.
    pub(crate) fn probe_feeds(&self) -> &ProbeFeeds {
        &self.probe_feeds
    }

    /// A key for an announcer about to join.
    pub(crate) fn next_key(&self) -> Key {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Hands the announcer of `key` over to the scheduler; the handle's [`Member`] speaks for
    /// it from then on.
    pub(crate) fn join(
        self: &Arc<Self>,
        key: Key,
        broadcaster: Broadcaster,
        load: Arc<LoadCell>,
    ) -> Member {
        let _ = self.orders.send(Order::Join(key, Box::new(broadcaster)));
        Member {
            scheduler: self.clone(),
            key,
            load,
            gone: false,
        }
    }

    /// What samples `key`'s `load_fn` uses to hand over each sample.
    pub(crate) fn load_setter(&self, key: Key, load: Arc<LoadCell>) -> LoadSetter {
        LoadSetter {
            orders: self.orders.clone(),
            key,
            load,
        }
    }

    /// What the registration task of `key` uses to tell of a new standing.
    pub(crate) fn nudge(&self, key: Key) -> Nudge {
        Nudge {
            orders: self.orders.clone(),
            key,
        }
    }
}

/// Sets an announcer's load from outside its handle (its `load_fn`'s samples).
#[derive(Debug)]
pub(crate) struct LoadSetter {
    orders: mpsc::UnboundedSender<Order>,
    key: Key,
    load: Arc<LoadCell>,
}

impl LoadSetter {
    /// As [`Member::set_load`].
    pub(crate) fn set(&self, load: f32) {
        if self.load.set(load) {
            let _ = self.orders.send(Order::Load(self.key));
        }
    }
}

/// Tells the scheduler that an announcer's registration standing changed.
#[derive(Debug)]
pub(crate) struct Nudge {
    orders: mpsc::UnboundedSender<Order>,
    key: Key,
}

impl Nudge {
    pub(crate) fn standing_changed(&self) {
        let _ = self.orders.send(Order::Standing(self.key));
    }
}

/// An announcer's place on its connection's scheduler, held by its handle. Dropping it
/// forgets the announcer without a goodbye.
#[derive(Debug)]
pub(crate) struct Member {
    scheduler: Arc<Scheduler>,
    key: Key,
    load: Arc<LoadCell>,
    /// Left or forgotten already.
    gone: bool,
}

impl Member {
    /// The load the next token carries (an early token when it moved enough).
    pub(crate) fn set_load(&self, load: f32) {
        if self.load.set(load) {
            let _ = self.scheduler.orders.send(Order::Load(self.key));
        }
    }

    pub(crate) async fn set_state(&self, state: State) -> Result<(), Error> {
        self.request(|reply| Order::SetState(self.key, state, reply))
            .await
    }

    pub(crate) async fn set_meta(&self, request: MetaRequest) -> Result<(), Error> {
        self.request(|reply| Order::SetMeta(self.key, request, reply))
            .await
    }

    async fn request(&self, order: impl FnOnce(Reply) -> Order) -> Result<(), Error> {
        let stopped = || Error::new(ErrorKind::Stopped);
        let (reply, published) = oneshot::channel();
        self.scheduler
            .orders
            .send(order(reply))
            .map_err(|_| stopped())?;
        published.await.map_err(|_| stopped())?
    }

    /// Sends the goodbye (unless etcd halted the announcer) and forgets the announcer.
    /// `None` when the scheduler no longer knows it (halted, or the connection's task ended).
    pub(crate) async fn leave(mut self) -> Option<Goodbye> {
        self.gone = true;
        let (reply, goodbye) = oneshot::channel();
        let _ = self.scheduler.orders.send(Order::Leave(self.key, reply));
        goodbye.await.ok()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if !self.gone {
            let _ = self.scheduler.orders.send(Order::Forget(self.key));
        }
    }
}

/// A record and the instant its heap entry is for.
#[derive(Debug)]
struct Record {
    broadcaster: Box<Broadcaster>,
    armed: Option<Instant>,
}

impl Record {
    /// Puts the record in the heap for its next wake-up, unless it is in already for that
    /// instant or an earlier one.
    fn arm(&mut self, key: Key, heap: &mut BinaryHeap<Reverse<(Instant, Key)>>) {
        let wake = self.broadcaster.next_wake();
        if self.armed.is_none_or(|armed| wake < armed) {
            self.armed = Some(wake);
            heap.push(Reverse((wake, key)));
        }
    }
}

/// The scheduler's task.
struct Turns {
    client: Client,
    records: HashMap<Key, Record>,
    heap: BinaryHeap<Reverse<(Instant, Key)>>,
    /// The announcers of each probe subject.
    by_probe: HashMap<Arc<str>, HashSet<Key>>,
    orders: mpsc::UnboundedReceiver<Order>,
    probed: mpsc::UnboundedReceiver<Arc<Probed>>,
    link: watch::Receiver<Link>,
    /// The connection's reconnect poller, stopped with the scheduler.
    _poller: Poller,
}

/// How far ahead an idle scheduler sleeps.
const IDLE: Duration = Duration::from_secs(3600);

impl Turns {
    async fn run(mut self, stop: CancellationToken) {
        let wake = tokio::time::sleep(IDLE);
        tokio::pin!(wake);
        let mut link_open = true;
        loop {
            let next = self
                .heap
                .peek()
                .map_or(Instant::now() + IDLE, |Reverse((at, _))| *at);
            if wake.deadline() != next {
                wake.as_mut().reset(next);
            }
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                order = self.orders.recv() => match order {
                    Some(order) => self.order(order).await,
                    // Every sender is gone: the scheduler itself was dropped.
                    None => return,
                },
                Some(probed) = self.probed.recv() => self.probed(&probed),
                changed = self.link.changed(), if link_open => match changed {
                    Ok(()) => {
                        let now = self.link.borrow_and_update().clone();
                        self.reconnected(&now).await;
                    }
                    Err(_) => link_open = false,
                },
                () = &mut wake => {}
            }
            self.turns(Instant::now()).await;
        }
    }

    /// Gives their turn to the announcers whose entry is due at `now`.
    async fn turns(&mut self, now: Instant) {
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(record) = self.records.get_mut(&key) else {
                continue;
            };
            if record.armed != Some(at) {
                continue;
            }
            record.armed = None;
            let b = &mut record.broadcaster;
            let span = b.span.clone();
            b.turn(&self.client, now).instrument(span).await;
            self.arm(key);
        }
    }

    fn arm(&mut self, key: Key) {
        if let Some(record) = self.records.get_mut(&key) {
            record.arm(key, &mut self.heap);
        }
    }

    async fn order(&mut self, order: Order) {
        match order {
            Order::Join(key, broadcaster) => self.join(key, broadcaster).await,
            Order::SetState(key, state, reply) => {
                let result = match self.records.get_mut(&key) {
                    Some(r) => {
                        let span = r.broadcaster.span.clone();
                        (r.broadcaster.set_state(&self.client, state))
                            .instrument(span)
                            .await
                    }
                    None => Err(Error::new(ErrorKind::Stopped)),
                };
                let _ = reply.send(result);
                self.arm(key);
            }
            Order::SetMeta(key, meta, reply) => {
                let result = match self.records.get_mut(&key) {
                    Some(r) => {
                        let span = r.broadcaster.span.clone();
                        (r.broadcaster.set_meta(&self.client, meta))
                            .instrument(span)
                            .await
                    }
                    None => Err(Error::new(ErrorKind::Stopped)),
                };
                let _ = reply.send(result);
                self.arm(key);
            }
            Order::Load(key) => {
                if let Some(r) = self.records.get_mut(&key) {
                    r.broadcaster.load_set(Instant::now());
                    self.arm(key);
                }
            }
            Order::Standing(key) => self.standing_changed(key).await,
            Order::Leave(key, reply) => {
                if let Some(b) = self.forget(key) {
                    let span = b.span.clone();
                    let _ = reply.send(b.leave(&self.client).instrument(span).await);
                }
            }
            Order::Forget(key) => {
                if let Some(b) = self.forget(key) {
                    tracing::debug!(parent: &b.span, "handle dropped without shutdown; stopped without a leaving token");
                }
            }
        }
    }

    async fn join(&mut self, key: Key, broadcaster: Box<Broadcaster>) {
        for subject in broadcaster.probes.subjects() {
            self.by_probe
                .entry(subject.clone())
                .or_default()
                .insert(key);
        }
        self.records.insert(
            key,
            Record {
                broadcaster,
                armed: None,
            },
        );
        // A standing that changed before the record was here: its news was not for anyone.
        self.standing_changed(key).await;
        if let Some(r) = self.records.get_mut(&key) {
            let now = self.link.borrow().clone();
            let span = r.broadcaster.span.clone();
            (r.broadcaster.check_reconnect(&self.client, &now))
                .instrument(span)
                .await;
        }
        self.arm(key);
    }

    async fn standing_changed(&mut self, key: Key) {
        let Some(r) = self.records.get_mut(&key) else {
            return;
        };
        let span = r.broadcaster.span.clone();
        let announcing = (r.broadcaster.standing_changed(&self.client))
            .instrument(span)
            .await;
        if announcing {
            self.arm(key);
        } else {
            self.forget(key);
        }
    }

    /// Removes the announcer of `key`; dropping what is returned tells its registration task
    /// that no token leaves any more.
    fn forget(&mut self, key: Key) -> Option<Box<Broadcaster>> {
        let record = self.records.remove(&key)?;
        for subject in record.broadcaster.probes.subjects() {
            if let Entry::Occupied(mut keys) = self.by_probe.entry(subject.clone()) {
                keys.get_mut().remove(&key);
                if keys.get().is_empty() {
                    keys.remove();
                }
            }
        }
        Some(record.broadcaster)
    }

    /// A probe subject was probed: each of its announcers answers, paced by its schedule.
    fn probed(&mut self, probed: &Probed) {
        probed.read();
        let Some(keys) = self.by_probe.get(&probed.subject) else {
            return;
        };
        let now = Instant::now();
        for &key in keys {
            if let Some(r) = self.records.get_mut(&key) {
                r.broadcaster.schedule.probe(now);
                r.arm(key, &mut self.heap);
            }
        }
    }

    /// The connection reconnected (or its INFO changed): every announcer republishes.
    async fn reconnected(&mut self, now: &Link) {
        let keys: Vec<Key> = self.records.keys().copied().collect();
        for key in keys {
            if let Some(r) = self.records.get_mut(&key) {
                let span = r.broadcaster.span.clone();
                (r.broadcaster.check_reconnect(&self.client, now))
                    .instrument(span)
                    .await;
                self.arm(key);
            }
        }
    }
}
