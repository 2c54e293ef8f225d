//! The registration calls of a session's announcers, batched: the claims and deletions asked
//! for while one transaction is in flight go together in the next, each as a transaction of
//! its own key nested in one, up to etcd's limit of operations per transaction.
//!
//! Each key's outcome is what its own transaction would have given: written (its epoch is the
//! batch's revision), or held (by whom, at which epoch), or deleted or not. A batch holds each
//! key once and one lease only (etcd refuses a transaction that writes a key twice, and fails
//! a whole transaction whose lease is gone); the others wait for the next batch. A batch that
//! gets no answer fails each of its calls, which their announcers retry as before.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::SessionCounters;
use crate::etcd_calls::{
    CallError, Claim, Etcd, answer_lost, claim_outcome, claim_txn, lost_answer, neither_way, sort,
};

/// Keys in one transaction. etcd's default `--max-txn-ops` is 128, and it gives a nested
/// transaction what the outer one leaves of that limit: 127 keys leave one operation for each
/// key's own transaction, which has one operation per branch.
pub(crate) const MAX_OPS: usize = 127;

/// One call of one key.
#[derive(Debug)]
enum Call {
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

#[derive(Debug)]
struct Request {
    key: Arc<str>,
    lease: i64,
    call: Call,
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

    /// As [`Etcd::delete_if_lease`], in the next batch.
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
    /// Asked for, but kept out of a batch (a key or lease it could not take).
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
            self.carry_out(batch).await;
        }
    }

    /// `first` and what waits behind it, as far as one transaction can take.
    fn batch(&mut self, first: Request) -> Vec<Request> {
        let lease = first.lease;
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
            if next.lease == lease && keys.insert(next.key.clone()) {
                batch.push(next);
            } else {
                left.push_back(next);
            }
        }
        left.append(&mut self.waiting);
        self.waiting = left;
        batch
    }

    async fn carry_out(&self, batch: Vec<Request>) {
        let ops: Vec<TxnOp> = batch
            .iter()
            .map(|r| {
                TxnOp::txn(match &r.call {
                    Call::Claim {
                        value, takeover, ..
                    } => claim_txn(&r.key, value.clone(), r.lease, *takeover),
                    Call::Delete { .. } => Txn::new()
                        .when([Compare::lease(&*r.key, CompareOp::Equal, r.lease)])
                        .and_then([TxnOp::delete(&*r.key, None)]),
                })
            })
            .collect();
        let calls = batch.len();
        self.counters.batches.fetch_add(1, Relaxed);
        self.counters.batched_calls.fetch_add(calls as u64, Relaxed);
        let mut client = Client::clone(&self.etcd.client);
        let txn = client.txn(Txn::new().and_then(ops));
        let answer = match tokio::time::timeout(self.etcd.timeout, txn).await {
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
                    fail(r.call, error.clone());
                }
                return;
            }
        };
        tracing::debug!(calls, "batch carried out");
        let header = resp.header();
        let nested = resp.op_responses();
        for (i, r) in batch.into_iter().enumerate() {
            let outcome = match nested.get(i) {
                Some(TxnOpResponse::Txn(t)) => Ok(t),
                _ => Err(neither_way()),
            };
            match r.call {
                Call::Claim { reply, .. } => {
                    let claim =
                        outcome.and_then(|t| claim_outcome(t, header).ok_or_else(neither_way));
                    let claim = if claim.is_ok() && answer_lost() {
                        Err(lost_answer())
                    } else {
                        claim
                    };
                    let _ = reply.send(claim);
                }
                Call::Delete { reply } => {
                    let _ = reply.send(outcome.map(|t| t.succeeded()));
                }
            }
        }
    }
}

fn fail(call: Call, e: CallError) {
    match call {
        Call::Claim { reply, .. } => {
            let _ = reply.send(Err(e));
        }
        Call::Delete { reply } => {
            let _ = reply.send(Err(e));
        }
    }
}
