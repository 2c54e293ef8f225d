//! The session's registry: one task that keeps the registration of every announcer on the
//! session as a record ([`Registrar`]), instead of a task, channels and a waiting future per
//! announcer. It takes the records `start()` hands over once their first claim landed, routes
//! to each the news of its key from the session's watch, the session's lease changes and the
//! handle's requests (`set_meta`, `shutdown()`, a drop), and runs each record's steps (an
//! etcd call and what its answer means) one at a time per record, many records at once.
//!
//! A record is either at rest in the registry's map, costing its own size, or taken by the
//! step that runs; what arrives for it meanwhile waits in its slot, in order, and is applied
//! when the step gives the record back. A halt (etcd ended the incarnation) comes before
//! anything that waits.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::Registrar;
use crate::error::{Error, ErrorKind};
use crate::messages::{SessionLease, StagedMeta};
use crate::session::{KeyNews, News};

/// What a handle asks of its record.
#[derive(Debug)]
enum Request {
    /// Rewrite the key with this metadata; answer once written.
    Rewrite {
        meta: StagedMeta,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// `shutdown()`: remove the registration before the deadline, once the goodbye is out.
    Leave {
        deadline: Instant,
        done: oneshot::Sender<Result<(), Error>>,
    },
    /// The handle was dropped without `shutdown()`.
    Dropped,
}

/// What the registry task is told.
#[derive(Debug)]
enum Input {
    /// A record whose first claim landed.
    Adopt(Box<Registrar>),
    /// A handle's request to record `id`.
    Ask(u64, Request),
}

/// The handle to a session's registry.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    inputs: mpsc::UnboundedSender<Input>,
    next_id: Arc<AtomicU64>,
}

/// Something that waits for a record while its step runs.
#[derive(Debug)]
enum Waiting {
    News(u64, KeyNews),
    Lease(SessionLease),
    Asked(Request),
}

/// A record's place in the registry.
enum Slot {
    AtRest(Box<Registrar>),
    /// Taken by a step; what came meanwhile, in order.
    Busy(VecDeque<Waiting>),
}

/// What a step gives back: the record, unless the step ended it.
type Step = BoxFuture<'static, (u64, Option<Box<Registrar>>)>;

impl Registry {
    /// Spawns the registry of a session whose lease is `lease` and whose watch sends its news
    /// to `news`.
    pub(crate) fn spawn(
        lease: watch::Receiver<SessionLease>,
        news: mpsc::UnboundedReceiver<News>,
        span: tracing::Span,
    ) -> Registry {
        let (inputs, inputs_rx) = mpsc::unbounded_channel();
        let task = RegistryTask {
            inputs: inputs_rx,
            news,
            lease,
            records: HashMap::new(),
            early: HashMap::new(),
            steps: FuturesUnordered::new(),
            timers: BinaryHeap::new(),
        };
        tokio::spawn(tracing::Instrument::instrument(task.run(), span));
        Registry {
            inputs,
            next_id: Arc::default(),
        }
    }

    /// A number for a new record.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Hands `record` (its first claim landed) to the registry, which keeps it from now on.
    /// The returned handle asks it for what the announcer's handle needs.
    pub(crate) fn adopt(&self, record: Registrar) -> RecordHandle {
        let id = record.id();
        let _ = self.inputs.send(Input::Adopt(Box::new(record)));
        RecordHandle {
            inputs: self.inputs.clone(),
            id,
            left: false,
        }
    }
}

/// An announcer handle's link to its record; dropping it without [`leave`](Self::leave)
/// tells the record that the handle was dropped.
#[derive(Debug)]
pub(crate) struct RecordHandle {
    inputs: mpsc::UnboundedSender<Input>,
    id: u64,
    left: bool,
}

fn stopped() -> Error {
    Error::new(ErrorKind::Stopped)
}

impl RecordHandle {
    /// Rewrites the registration with `meta`; resolves once it is written.
    ///
    /// # Errors
    ///
    /// `EtcdUnreachable` when etcd did not answer (the record writes it later), `Stopped` when
    /// the registration has ended.
    pub(crate) async fn rewrite(&self, meta: StagedMeta) -> Result<(), Error> {
        let (reply, written) = oneshot::channel();
        self.inputs
            .send(Input::Ask(self.id, Request::Rewrite { meta, reply }))
            .map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())?
    }

    /// Asks the record to remove the registration before `deadline`, once the broadcasting
    /// has ended; the answer says how that went.
    pub(crate) fn leave(mut self, deadline: Instant) -> oneshot::Receiver<Result<(), Error>> {
        self.left = true;
        let (done, answer) = oneshot::channel();
        let _ = self
            .inputs
            .send(Input::Ask(self.id, Request::Leave { deadline, done }));
        answer
    }
}

impl Drop for RecordHandle {
    fn drop(&mut self) {
        if !self.left {
            let _ = self.inputs.send(Input::Ask(self.id, Request::Dropped));
        }
    }
}

struct RegistryTask {
    inputs: mpsc::UnboundedReceiver<Input>,
    news: mpsc::UnboundedReceiver<News>,
    lease: watch::Receiver<SessionLease>,
    records: HashMap<u64, Slot>,
    /// News of keys whose record is not adopted yet (its first claim is under way), by
    /// record; dropped when the key's share of the watch ends.
    early: HashMap<u64, Vec<(u64, KeyNews)>>,
    steps: FuturesUnordered<Step>,
    /// When records want to retry pending work, earliest first; an entry whose record has
    /// moved on is skipped.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl RegistryTask {
    /// Runs until every handle to the registry is gone and no record is left.
    async fn run(mut self) {
        let (mut inputs_open, mut lease_open) = (true, true);
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                input = self.inputs.recv(), if inputs_open => match input {
                    Some(Input::Adopt(record)) => self.adopt(record),
                    Some(Input::Ask(id, request)) => self.deliver(id, Waiting::Asked(request)),
                    None => inputs_open = false,
                },
                Some((tag, route, news)) = self.news.recv() => self.on_news(tag, route, news),
                changed = self.lease.changed(), if lease_open => {
                    let lease = match changed {
                        Ok(()) => *self.lease.borrow_and_update(),
                        // The session's task ended without closing: its lease expires with
                        // it, and no new one comes.
                        Err(_) => {
                            lease_open = false;
                            SessionLease::Renewing
                        }
                    };
                    let ids: Vec<u64> = self.records.keys().copied().collect();
                    for id in ids {
                        self.deliver(id, Waiting::Lease(lease));
                    }
                }
                Some((id, record)) = self.steps.next() => self.step_done(id, record),
                () = sleep_until(next_timer) => self.timers_due(),
            }
            if !inputs_open && self.records.is_empty() && self.steps.is_empty() {
                return;
            }
        }
    }

    fn adopt(&mut self, mut record: Box<Registrar>) {
        let id = record.id();
        if record.watch.is_none() {
            // Not opened within the first claim's wait: open it (and read the key) now.
            record.retry_at = Some(Instant::now());
        }
        let early = self.early.remove(&id).unwrap_or_default();
        let waiting = early
            .into_iter()
            .map(|(route, news)| Waiting::News(route, news))
            .collect();
        self.carry_on(id, record, waiting);
    }

    /// News of a key from the session's watch: `None` when the key's share `route` ended.
    fn on_news(&mut self, tag: u64, route: u64, news: Option<KeyNews>) {
        match (self.records.contains_key(&tag), news) {
            (true, Some(news)) => self.deliver(tag, Waiting::News(route, news)),
            (false, Some(news)) => self.early.entry(tag).or_default().push((route, news)),
            (_, None) => {
                self.early.remove(&tag);
            }
        }
    }

    /// Gives `what` to record `id`: at once when it is at rest, after its step otherwise.
    fn deliver(&mut self, id: u64, what: Waiting) {
        match self.records.get_mut(&id) {
            Some(Slot::Busy(waiting)) => waiting.push_back(what),
            Some(Slot::AtRest(_)) => {
                let Some(Slot::AtRest(record)) = self.records.remove(&id) else {
                    unreachable!("matched at rest");
                };
                self.carry_on(id, record, VecDeque::from([what]));
            }
            // The record has ended: a request gets the answer of an ended registration.
            None => answer_ended(what),
        }
    }

    fn step_done(&mut self, id: u64, record: Option<Box<Registrar>>) {
        let waiting = match self.records.remove(&id) {
            Some(Slot::Busy(waiting)) => waiting,
            Some(Slot::AtRest(_)) | None => VecDeque::new(),
        };
        match record {
            Some(record) => self.carry_on(id, record, waiting),
            None => waiting.into_iter().for_each(answer_ended),
        }
    }

    /// Applies what waits for `record`, in order, until a step takes it; then leaves it at
    /// rest, with a timer for its retries.
    fn carry_on(&mut self, id: u64, mut record: Box<Registrar>, mut waiting: VecDeque<Waiting>) {
        loop {
            if let Some(reason) = record.ending {
                return self.run_step(id, record.span(), waiting, async move {
                    let _ = record.halt(reason).await;
                    None
                });
            }
            let Some(next) = waiting.pop_front() else {
                break;
            };
            match next {
                Waiting::News(route, news) => {
                    if record.watches(route) {
                        record.on_watch(news);
                    }
                }
                Waiting::Lease(lease) => record.on_session_lease(lease),
                Waiting::Asked(Request::Rewrite { meta, reply }) => {
                    record.stage(meta);
                    return self.run_step(id, record.span(), waiting, async move {
                        let done = record.rewrite().await;
                        let _ = reply.send(done);
                        Some(record)
                    });
                }
                Waiting::Asked(Request::Leave { deadline, done }) => {
                    return self.run_step(id, record.span(), waiting, async move {
                        let _ = done.send(record.leave(deadline).await);
                        None
                    });
                }
                Waiting::Asked(Request::Dropped) => {
                    return self.run_step(id, record.span(), waiting, async move {
                        record.dropped().await;
                        None
                    });
                }
            }
        }
        if record.due(Instant::now()) {
            return self.run_step(id, record.span(), waiting, async move {
                record.tick().await;
                Some(record)
            });
        }
        if let Some(at) = record.retry_at {
            self.timers.push(Reverse((at, id)));
        }
        self.records.insert(id, Slot::AtRest(record));
    }

    /// Runs a step of record `id`, in the announcer's span; what waits for the record stays
    /// in its slot.
    fn run_step(
        &mut self,
        id: u64,
        span: tracing::Span,
        waiting: VecDeque<Waiting>,
        step: impl Future<Output = Option<Box<Registrar>>> + Send + 'static,
    ) {
        self.records.insert(id, Slot::Busy(waiting));
        let step = tracing::Instrument::instrument(step, span);
        self.steps
            .push(Box::pin(async move { (id, step.await) }) as Step);
    }

    /// Records whose retry time has come get their step.
    fn timers_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(Slot::AtRest(record)) = self.records.get(&id) else {
                continue;
            };
            if !record.due(now) {
                continue;
            }
            let Some(Slot::AtRest(record)) = self.records.remove(&id) else {
                unreachable!("checked at rest");
            };
            self.carry_on(id, record, VecDeque::new());
        }
    }
}

/// The answer to what came for a record that has ended: a `set_meta` fails (nothing is
/// registered any more); a `shutdown()` has nothing left to remove.
fn answer_ended(what: Waiting) {
    match what {
        Waiting::Asked(Request::Rewrite { reply, .. }) => {
            let _ = reply.send(Err(stopped()));
        }
        Waiting::Asked(Request::Leave { done, .. }) => {
            let _ = done.send(Ok(()));
        }
        Waiting::Asked(Request::Dropped) | Waiting::News(..) | Waiting::Lease(_) => {}
    }
}

/// Until `at`; never without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
