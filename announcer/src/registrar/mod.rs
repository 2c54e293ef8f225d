//! The registration task: sole owner of the instance's key in etcd, from the first claim
//! (`first`: the registration `start()` waits for) on. The lease is always a [`Session`]'s: a
//! session shared by many announcers, or one this announcer made for itself, so there is one
//! lease path and one keep-alive loop (the session's). The task registers again when the
//! lease is lost, rewrites the key for `set_meta`, and watches the key through the session: a
//! write by another lease fences this incarnation, a deletion while the lease lives
//! deregisters it. Either stops the broadcast task at once, without a goodbye. Tokens stay the
//! broadcast task's: this task only publishes the epoch they carry.

use std::sync::Arc;
use std::time::Duration;

use herald_shared::backoff::Backoff;
use herald_shared::{State, Token, codec};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::etcd_calls::{CallError, Claim, Etcd};
use crate::messages::{Rewrite, SessionLease, StagedMeta, Standing};
use crate::scheduler::Nudge;
use crate::session::{KeyHold, KeyNews, KeyWatch, Session};
use crate::stats::Counters;
use crate::status::Stopped;

mod ending;
mod first;
mod key_watch;
mod lease;

pub(crate) use first::{Setup, run};

/// The first and the largest pause before retrying a call etcd did not answer.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The value written to the key: the token, without its per-token stamps.
fn value_of(mut t: Token) -> Vec<u8> {
    t.epoch = 0;
    t.seq = 0;
    if t.state == State::Leaving {
        t.state = State::Up;
    }
    t.sent_at_ms = herald_shared::unix_millis();
    // Checked by `check_token` before start and at every metadata change.
    codec::encode(&t).unwrap_or_default()
}

/// Everything the registration task owns.
#[derive(Debug)]
pub(crate) struct Registrar {
    etcd: Etcd,
    /// A third of the lease TTL: no single call may take longer, and retries wait less.
    period: Duration,
    /// The lease the key is attached to; `None` once lost, until registered again.
    lease: Option<i64>,
    epoch: u64,
    cluster_id: u64,
    /// The last revision of the key seen: the watch resumes after it.
    seen: i64,
    /// The lease's owner: a [`Session`] shared by many announcers, or one of this announcer
    /// alone ([`Session::is_private`]). The session keeps the lease alive.
    session: Session,
    /// The session's lease as it changes.
    session_lease: Option<watch::Receiver<SessionLease>>,
    watch: Option<KeyWatch>,
    /// When to retry pending work (registration, watch, checks) after a failure.
    retry_at: Option<Instant>,
    /// Made at the first failure and dropped once a step succeeds: most registrations never
    /// need one, and it is the largest field.
    backoff: Option<Box<Backoff>>,
    /// The key was deleted: whether by an operator or by lease expiry is still to be told.
    check_delete: bool,
    /// The watch lost its history (compaction): read the key to know where we stand.
    check_key: bool,
    /// A metadata change not yet written.
    rewrite_due: bool,
    /// What the session's watch covers for the key: the services prefix on a shared session,
    /// the key itself on a private one.
    watch_prefix: Arc<str>,
    /// The newest metadata `set_meta` asked for; every write of the key carries it.
    meta: Option<StagedMeta>,
    /// The key is this announcer's among the session's (see [`Session::hold`]); `None` when
    /// another announcer on the session holds it.
    key_hold: Option<KeyHold>,
    ending: Option<Stopped>,
    standing: watch::Sender<Standing>,
    /// Tells the connection's scheduler of a new epoch or a halt.
    nudge: Nudge,
    last_token: watch::Receiver<Token>,
    rewrites: flume::Receiver<Rewrite>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    /// Carries `shutdown()`'s deadline; closed without a value when the handle is dropped,
    /// which leaves the lease to expire (crash semantics).
    farewell: oneshot::Receiver<Instant>,
    /// Cancelled when the broadcast task has ended.
    broadcast_done: CancellationToken,
}

/// What the task shares with the broadcast task and the handle.
#[derive(Debug)]
pub(crate) struct Links {
    pub(crate) standing: watch::Sender<Standing>,
    pub(crate) last_token: watch::Receiver<Token>,
    pub(crate) rewrites: flume::Receiver<Rewrite>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) cancel: CancellationToken,
    pub(crate) farewell: oneshot::Receiver<Instant>,
    pub(crate) broadcast_done: CancellationToken,
    pub(crate) nudge: Nudge,
}

async fn next_watch(watch: &mut Option<KeyWatch>) -> Result<Option<KeyNews>, etcd_client::Error> {
    match watch {
        Some(w) => w.message().await,
        None => std::future::pending().await,
    }
}

async fn next_session_lease(lease: &mut Option<watch::Receiver<SessionLease>>) -> SessionLease {
    match lease {
        Some(rx) => match rx.changed().await {
            Ok(()) => *rx.borrow_and_update(),
            // The session's task ended without closing: its lease expires with it.
            Err(_) => {
                *lease = None;
                SessionLease::Renewing
            }
        },
        None => std::future::pending().await,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

impl Registrar {
    /// The task's state before its first registration.
    fn new(etcd: Etcd, session: Session, watch_prefix: Arc<str>, links: Links) -> Self {
        let period = session.ttl() / 3;
        let Links {
            standing,
            last_token,
            rewrites,
            counters,
            cancel,
            farewell,
            broadcast_done,
            nudge,
        } = links;
        Registrar {
            etcd,
            period,
            lease: None,
            epoch: 0,
            cluster_id: 0,
            seen: 0,
            session_lease: Some(session.watch_lease()),
            session,
            watch: None,
            retry_at: None,
            backoff: None,
            check_delete: false,
            check_key: false,
            rewrite_due: false,
            watch_prefix,
            meta: None,
            key_hold: None,
            ending: None,
            standing,
            nudge,
            last_token,
            rewrites,
            counters,
            cancel,
            farewell,
            broadcast_done,
        }
    }

    /// The value to write: the token as last sent, with the newest metadata `set_meta` asked
    /// for.
    fn value(&self) -> Vec<u8> {
        let mut token = self.last_token.borrow().clone();
        if let Some(staged) = &self.meta {
            token.meta = staged.meta.clone();
        }
        value_of(token)
    }

    /// Claims the key, in the session's next batch.
    async fn claim(&self, value: Vec<u8>, lease: i64, takeover: bool) -> Result<Claim, CallError> {
        let batcher = self.session.batcher();
        batcher.claim(&self.etcd.key, value, lease, takeover).await
    }

    /// Deletes the key if it is still attached to `lease`, in the session's next batch.
    async fn delete_if_lease(&self, lease: i64) -> Result<bool, CallError> {
        let batcher = self.session.batcher();
        batcher.delete_if_lease(&self.etcd.key, lease).await
    }

    /// The metadata version every write of the key carries now.
    fn meta_version(&self) -> u64 {
        self.meta.as_ref().map_or(0, |m| m.version)
    }

    /// Writes the standing; a new epoch or a halt is news for the broadcasting as well.
    fn set_standing(&self, change: impl FnOnce(&mut Standing)) {
        let before = *self.standing.borrow();
        self.standing.send_modify(change);
        let after = *self.standing.borrow();
        if (after.epoch, after.halted) != (before.epoch, before.halted) {
            self.nudge.standing_changed();
        }
    }

    /// Runs until cancelled, or until etcd's authority stops the announcer.
    ///
    /// Every step that calls etcd is boxed: etcd-client's futures are large, and a process
    /// may run thousands of these tasks that wait almost all the time, so the waiting state
    /// stays small (about 1 KiB instead of 34) and a step's state lives only while it runs.
    async fn run(mut self) -> Result<(), Error> {
        if self.watch.is_none() && !Box::pin(self.open_watch()).await {
            self.retry_at = Some(Instant::now() + RETRY_FIRST);
        }
        let mut rewrites_open = true;
        loop {
            let due = self.retry_at.unwrap_or_else(far_future);
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Box::pin(self.finish()).await,
                msg = next_watch(&mut self.watch) => Box::pin(self.on_watch(msg)).await,
                lease = next_session_lease(&mut self.session_lease) => self.on_session_lease(lease),
                request = self.rewrites.recv_async(), if rewrites_open => match request.ok() {
                    Some(Rewrite { meta, reply }) => {
                        // Calls that crossed on their way keep the newest metadata.
                        if self.meta.as_ref().is_none_or(|m| m.version < meta.version) {
                            self.meta = Some(meta);
                        }
                        let done = Box::pin(self.rewrite()).await;
                        let _ = reply.send(done);
                    }
                    None => rewrites_open = false,
                },
                () = tokio::time::sleep_until(due) => Box::pin(self.tick()).await,
            }
            if let Some(reason) = self.ending {
                return Box::pin(self.halt(reason)).await;
            }
        }
    }

    /// Does whatever work is pending. Each step may uncover the next (a lost history, a
    /// deletion, a lost lease, a registration to watch), so they run in that order; what
    /// fails is retried after a jittered backoff.
    async fn tick(&mut self) {
        let mut failed = false;
        if self.check_key && self.ending.is_none() {
            failed |= !self.judge_key().await;
        }
        if self.check_delete && self.ending.is_none() {
            failed |= !self.judge_delete().await;
        }
        if self.lease.is_none() && self.ending.is_none() {
            failed |= !self.register().await;
        }
        if self.lease.is_some() && self.watch.is_none() && self.ending.is_none() {
            failed |= !self.open_watch().await;
        }
        if self.rewrite_due && self.lease.is_some() && self.ending.is_none() {
            failed |= self.rewrite().await.is_err();
        }
        self.retry_at = if failed {
            Some(Instant::now() + self.next_backoff())
        } else {
            self.backoff = None;
            None
        };
    }

    pub(super) fn next_backoff(&mut self) -> Duration {
        let period = self.period;
        self.backoff
            .get_or_insert_with(|| Box::new(Backoff::new(RETRY_FIRST, RETRY_MAX.min(period))))
            .next_pause()
    }
}
