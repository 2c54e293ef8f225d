//! The registration calls of a session's announcers, batched: the claims (or the deletions)
//! asked for while one transaction is in flight go together in the next, up to etcd's limit
//! of operations per transaction.
//!
//! A batch is one flat transaction: "if every key is absent, put them all, else read them
//! all" (a deletion: "if every key is still under our lease, delete them all, else read
//! them"). When the compare fails, the reads tell each key's outcome: held (by whom, at which
//! epoch) or not ours any more; the keys whose compare did hold go again in the next batch.
//! So each key's outcome is what its own transaction would have given, and its epoch, when
//! written, is the batch's revision. Nested transactions would decide per key in one
//! round, but etcd 3.4 before 3.4.26 does not check permissions inside them: a user without
//! write access could register.
//!
//! A batch holds one kind of call, one lease and each key once (etcd refuses a transaction
//! that writes a key twice, and fails a whole transaction whose lease is gone); the others
//! wait for the next batch. A batch that gets no answer fails each of its calls, which their
//! announcers retry as before.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::SessionCounters;
use crate::etcd_calls::{CallError, Claim, Etcd, Holder, answer_lost, lost_answer, sort};

/// Keys in one transaction: etcd's default `--max-txn-ops` (a transaction's compares, and
/// each of its branches, count against it).
pub(crate) const MAX_OPS: usize = 128;

/// One call of one key.
#[derive(Debug)]
enum Call {
    /// Put the value if the key is absent; with `takeover`, whatever holds it.
    Claim {
        value: Vec<u8>,
        takeover: bool,
        reply: oneshot::Sender<Result<Claim, CallError>>,
    },
    /// Delete the key if it is still attached to the lease.
    Delete {
        reply: oneshot::Sender<Result<bool, CallError>>,
    },
}

/// What a batch holds one of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Claim,
    Takeover,
    Delete,
}

#[derive(Debug)]
struct Request {
    key: Arc<str>,
    lease: i64,
    call: Call,
}

impl Request {
    fn kind(&self) -> Kind {
        match self.call {
            Call::Claim {
                takeover: false, ..
            } => Kind::Claim,
            Call::Claim { takeover: true, .. } => Kind::Takeover,
            Call::Delete { .. } => Kind::Delete,
        }
    }

    fn fail(self, e: CallError) {
        match self.call {
            Call::Claim { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Call::Delete { reply } => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// The handle to a session's batching task; the task ends with the last handle.
#[derive(Debug, Clone)]
pub(crate) struct Batcher {
    requests: mpsc::UnboundedSender<Request>,
}

fn gone() -> CallError {
    CallError::Failed(herald_shared::EtcdError::unreachable("session gone"))
}

impl Batcher {
    pub(crate) fn spawn(etcd: Etcd, counters: Arc<SessionCounters>, span: tracing::Span) -> Self {
        let (requests, rx) = mpsc::unbounded_channel();
        let task = BatchTask {
            etcd,
            counters,
            requests: rx,
            waiting: VecDeque::new(),
        };
        tokio::spawn(task.run().instrument(span));
        Batcher { requests }
    }

    /// As [`Etcd::claim`], in the next batch.
    pub(crate) async fn claim(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
        takeover: bool,
    ) -> Result<Claim, CallError> {
        let (reply, answer) = oneshot::channel();
        let call = Call::Claim {
            value,
            takeover,
            reply,
        };
        self.send(key, lease, call)?;
        answer.await.map_err(|_| gone())?
    }

    /// Deletes `key` if it is still attached to `lease`, in the next batch; whether it was.
    pub(crate) async fn delete_if_lease(&self, key: &str, lease: i64) -> Result<bool, CallError> {
        let (reply, answer) = oneshot::channel();
        self.send(key, lease, Call::Delete { reply })?;
        answer.await.map_err(|_| gone())?
    }

    fn send(&self, key: &str, lease: i64, call: Call) -> Result<(), CallError> {
        let request = Request {
            key: key.into(),
            lease,
            call,
        };
        self.requests.send(request).map_err(|_| gone())
    }
}

struct BatchTask {
    etcd: Etcd,
    counters: Arc<SessionCounters>,
    requests: mpsc::UnboundedReceiver<Request>,
    /// Asked for, but kept out of a batch (another kind, lease or a key already in it), or
    /// to go again (its compare held while another's failed).
    waiting: VecDeque<Request>,
}

impl BatchTask {
    async fn run(mut self) {
        loop {
            let first = match self.waiting.pop_front() {
                Some(r) => r,
                None => match self.requests.recv().await {
                    Some(r) => r,
                    None => return,
                },
            };
            let batch = self.batch(first);
            // Boxed: etcd-client's futures are large, and the task waits almost always.
            let again = Box::pin(self.carry_out(batch)).await;
            for r in again.into_iter().rev() {
                self.waiting.push_front(r);
            }
        }
    }

    /// `first` and what waits behind it, as far as one transaction can take.
    fn batch(&mut self, first: Request) -> Vec<Request> {
        let (lease, kind) = (first.lease, first.kind());
        let mut keys = HashSet::from([first.key.clone()]);
        let mut batch = vec![first];
        let mut left = VecDeque::new();
        while batch.len() < MAX_OPS {
            let next = match self.waiting.pop_front() {
                Some(r) => r,
                None => match self.requests.try_recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            if next.lease == lease && next.kind() == kind && keys.insert(next.key.clone()) {
                batch.push(next);
            } else {
                left.push_back(next);
            }
        }
        left.append(&mut self.waiting);
        self.waiting = left;
        batch
    }

    /// Runs one batch and answers its calls; returns those that go again.
    async fn carry_out(&self, batch: Vec<Request>) -> Vec<Request> {
        let kind = batch[0].kind();
        let txn = match kind {
            Kind::Claim => Txn::new()
                .when(each(&batch, |r| {
                    Compare::create_revision(&*r.key, CompareOp::Equal, 0)
                }))
                .and_then(each(&batch, put))
                .or_else(each(&batch, |r| TxnOp::get(&*r.key, None))),
            Kind::Takeover => Txn::new().and_then(each(&batch, put)),
            Kind::Delete => Txn::new()
                .when(each(&batch, |r| {
                    Compare::lease(&*r.key, CompareOp::Equal, r.lease)
                }))
                .and_then(each(&batch, |r| TxnOp::delete(&*r.key, None)))
                .or_else(each(&batch, |r| TxnOp::get(&*r.key, None))),
        };
        let calls = batch.len();
        self.counters.batches.fetch_add(1, Relaxed);
        self.counters.batched_calls.fetch_add(calls as u64, Relaxed);
        let mut client = Client::clone(&self.etcd.client);
        let answer = match tokio::time::timeout(self.etcd.timeout, client.txn(txn)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(sort(e)),
            Err(_) => Err(CallError::Failed(herald_shared::EtcdError::no_answer(
                self.etcd.timeout,
            ))),
        };
        let resp = match answer {
            Ok(resp) => resp,
            Err(error) => {
                tracing::debug!(
                    calls,
                    error = &error as &dyn std::error::Error,
                    "batch failed"
                );
                for r in batch {
                    r.fail(error.clone());
                }
                return Vec::new();
            }
        };
        let (epoch, cluster_id) = resp
            .header()
            .map_or((0, 0), |h| (h.revision().max(0) as u64, h.cluster_id()));
        let answers = resp.op_responses();
        tracing::debug!(calls, succeeded = resp.succeeded(), "batch carried out");
        let mut again = Vec::new();
        for (r, answer) in batch.into_iter().zip(answers.iter()) {
            match (r.call, resp.succeeded()) {
                (Call::Claim { reply, .. }, true) => {
                    if let TxnOpResponse::Put(p) = answer
                        && let Some(prev) = p.prev_key()
                    {
                        tracing::warn!(
                            replaced_epoch = prev.mod_revision(),
                            epoch,
                            "took over the registration of another incarnation"
                        );
                    }
                    let _ = reply.send(answered(Claim::Written { epoch, cluster_id }));
                }
                (Call::Delete { reply }, true) => {
                    let _ = reply.send(Ok(true));
                }
                (call, false) => {
                    let held = match answer {
                        TxnOpResponse::Get(g) => g.kvs().first().map(Holder::of),
                        _ => None,
                    };
                    match (call, held) {
                        (Call::Claim { reply, .. }, Some(h)) => {
                            let _ = reply.send(answered(Claim::Held {
                                epoch: h.epoch,
                                lease: h.lease,
                                token_ttl: h.token_ttl,
                                cluster_id,
                            }));
                        }
                        (Call::Delete { reply }, Some(h)) if h.lease != r.lease => {
                            let _ = reply.send(Ok(false));
                        }
                        (Call::Delete { reply }, None) => {
                            let _ = reply.send(Ok(false));
                        }
                        // Its compare held; another's did not: it goes again.
                        (call, _) => again.push(Request {
                            key: r.key,
                            lease: r.lease,
                            call,
                        }),
                    }
                }
            }
        }
        again
    }
}

/// A claim's outcome as its announcer gets it (lost on the way when a test says so).
fn answered(claim: Claim) -> Result<Claim, CallError> {
    if answer_lost() {
        Err(lost_answer())
    } else {
        Ok(claim)
    }
}

fn each<T>(batch: &[Request], f: impl Fn(&Request) -> T) -> Vec<T> {
    batch.iter().map(f).collect()
}

/// The write of a claim: the value under the lease, noting what it replaced.
fn put(r: &Request) -> TxnOp {
    let Call::Claim { value, .. } = &r.call else {
        unreachable!("only claims are put")
    };
    TxnOp::put(
        &*r.key,
        value.clone(),
        Some(PutOptions::new().with_lease(r.lease).with_prev_key()),
    )
}
