//! One announcer's registration, kept as a record by its session's registry (see
//! [`registry`]): the instance's key in etcd, from the first claim (`first`, which `start()`
//! waits for) on. The lease is always a [`Session`]'s: a session shared by many announcers,
//! or one this announcer made for itself, so there is one lease path and one keep-alive loop
//! (the session's). The record registers again when the lease is lost, rewrites the key for
//! `set_meta`, and follows the key through the session's watch: a write by another lease
//! fences this incarnation, a deletion while the lease lives deregisters it. Either stops the
//! broadcasting at once, without a goodbye. Tokens stay the scheduler's: the record only
//! publishes the epoch they carry.
//!
//! A record is data, not a task: the registry runs its steps (an etcd call and what its
//! answer means) one at a time, and between steps the record costs its own size.

use std::sync::Arc;
use std::time::Duration;

use herald_shared::backoff::Backoff;
use herald_shared::{State, Token, codec};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::etcd_calls::{CallError, Claim, Etcd};
use crate::messages::{StagedMeta, Standing};
use crate::scheduler::Nudge;
use crate::session::{KeyHold, KeyWatch, Session};
use crate::stats::Counters;
use crate::status::Stopped;

mod ending;
mod first;
mod key_watch;
mod lease;
pub(crate) mod registry;

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

/// One announcer's registration: everything its steps read and write.
#[derive(Debug)]
pub(crate) struct Registrar {
    /// The record's number in its session's registry; the session's watch tags the key's
    /// news with it.
    id: u64,
    etcd: Etcd,
    /// A third of the lease TTL: no single call may take longer, and retries wait less.
    period: Duration,
    /// The lease the key is attached to; `None` once lost, until registered again.
    lease: Option<i64>,
    epoch: u64,
    cluster_id: u64,
    /// The last revision of the key seen.
    seen: i64,
    /// The lease's owner: a [`Session`] shared by many announcers, or one of this announcer
    /// alone ([`Session::is_private`]). The session keeps the lease alive.
    session: Session,
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
    counters: Arc<Counters>,
    /// Cancelled when the broadcasting has ended.
    broadcast_done: CancellationToken,
    /// The announcer's span, which the record's steps run in.
    span: tracing::Span,
}

/// What the record shares with the broadcasting and the handle.
#[derive(Debug)]
pub(crate) struct Links {
    pub(crate) standing: watch::Sender<Standing>,
    pub(crate) last_token: watch::Receiver<Token>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) broadcast_done: CancellationToken,
    pub(crate) nudge: Nudge,
    pub(crate) span: tracing::Span,
}

impl Registrar {
    /// The record of `etcd.key` on `session` before its first registration.
    pub(crate) fn new(etcd: Etcd, session: Session, watch_prefix: Arc<str>, links: Links) -> Self {
        let period = session.ttl() / 3;
        let Links {
            standing,
            last_token,
            counters,
            broadcast_done,
            nudge,
            span,
        } = links;
        Registrar {
            id: session.registry().next_id(),
            etcd,
            period,
            lease: None,
            epoch: 0,
            cluster_id: 0,
            seen: 0,
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
            counters,
            broadcast_done,
            span,
        }
    }

    /// The record's number in its session's registry.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The announcer's span.
    fn span(&self) -> tracing::Span {
        self.span.clone()
    }

    /// The session the record registers on.
    pub(crate) fn session(&self) -> &Session {
        &self.session
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

    /// Takes `meta` as the metadata to write, unless a newer one is already staged (calls
    /// that crossed on their way keep the newest).
    fn stage(&mut self, meta: StagedMeta) {
        if self.meta.as_ref().is_none_or(|m| m.version < meta.version) {
            self.meta = Some(meta);
        }
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

    /// Whether pending work is due now.
    fn due(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|at| at <= now)
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

    fn next_backoff(&mut self) -> Duration {
        let period = self.period;
        self.backoff
            .get_or_insert_with(|| Box::new(Backoff::new(RETRY_FIRST, RETRY_MAX.min(period))))
            .next_pause()
    }
}
