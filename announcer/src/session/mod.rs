//! [`Session`]: one etcd lease shared by the announcers of a process, as etcd's own
//! concurrency sessions do, and one watch stream that carries all their key watches.
//!
//! Without a session every announcer grants its own lease, keeps it alive on its own timer and
//! opens its own watch stream: etcd's load grows with the number of instances. With one, etcd
//! sees one lease, one keep-alive per third of its TTL and one watch stream per process,
//! however many instances it announces. Liveness still comes from the broadcast tokens; the
//! lease only ties the registrations to the life of the process.
//!
//! The session's task (`keeper`) owns the lease: it keeps it alive, and grants a new one when
//! etcd says it is gone; every announcer on the session then registers again under the new
//! lease. `watch_hub` owns the session's watch: one etcd watcher per prefix, whose events it
//! hands to the registration of each key. `registration` keeps every announcer's
//! registration as a record in one task (its `registry`), not a task per announcer.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_shared::EtcdConfig;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use crate::error::{Error, ErrorKind};
use crate::etcd_calls::{Etcd, retried};
use crate::messages::{SessionLease, SessionRequest};
use crate::settings::{MAX_LEASE_TTL, MIN_LEASE_TTL};
use crate::stats::Counters;

mod batch;
mod keeper;
pub(crate) mod registration;
mod watch_hub;

pub(crate) use batch::Batcher;
use registration::registry::Registry;
pub(crate) use watch_hub::{KeyNews, KeyWatch, News, WatchHub};

/// Deadline of each etcd call of a session built on a caller's client.
const SHARED_CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// One etcd lease shared by the announcers of a process, kept alive by one task.
///
/// Build it once, give it to every announcer with
/// [`AnnouncerBuilder::session`](crate::AnnouncerBuilder::session), and close it when the
/// process stops. The announcers' keys are all attached to its lease: if the process dies,
/// they all disappear when the lease expires; when [`close`](Session::close) revokes it, at
/// once. An announcer on a session that is shut down deletes its own key; one that is dropped
/// deletes it two token TTLs later (so that subscribers see a crash, as without a
/// session).
///
/// A `Session` is a cheap handle (clone it freely); its task runs until it is closed, or until
/// every handle and every announcer on it is gone, which leaves the lease to expire.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use herald_announcer::{Announcer, Connection, Session};
/// use herald_shared::{EtcdConfig, NatsConfig};
///
/// # async fn run() -> Result<(), herald_announcer::Error> {
/// let session = Session::connect(
///     EtcdConfig::new(["http://127.0.0.1:2379"]),
///     Duration::from_secs(30),
/// )
/// .await?;
/// let nats = Connection::new(NatsConfig::new(["nats://127.0.0.1:4222"]).connect().await?.0);
/// let mut announcers = Vec::new();
/// for (i, port) in (9000..9100).enumerate() {
///     let announcer = Announcer::builder("shard", format!("10.0.0.7:{port}"))
///         .connection(&nats)
///         .session(&session)
///         .instance(format!("shard-{i}"))
///         .start()
///         .await?;
///     announcers.push(announcer);
/// }
/// println!("one lease for all: {:?}", session.lease());
/// for announcer in announcers {
///     announcer.shutdown().await?;
/// }
/// session.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    etcd: Etcd,
    ttl: Duration,
    lease: watch::Receiver<SessionLease>,
    requests: mpsc::Sender<SessionRequest>,
    hub: WatchHub,
    /// Claims and deletions, batched.
    batcher: Batcher,
    /// The registrations of the session's announcers, as records.
    registry: Registry,
    counters: Arc<SessionCounters>,
    /// Made by one announcer for itself (one without a session): its lease holds that
    /// announcer's key alone.
    private: bool,
    /// The keys its announcers hold (see [`Session::hold`]).
    held: Arc<Mutex<HashSet<String>>>,
    /// Stops the task when the last handle goes (the lease is left to expire).
    _stop: DropGuard,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("lease", &*self.inner.lease.borrow())
            .field("ttl", &self.inner.ttl)
            .finish()
    }
}

/// A snapshot of a session's counters, all since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Keep-alives etcd answered with the lease alive.
    pub keep_alives: u64,
    /// Keep-alives that got no answer (etcd unreachable, stream broken, timed out).
    pub keep_alive_failures: u64,
    /// Leases found gone, each replaced by a new grant (the announcers register again).
    pub lease_losses: u64,
    /// Keys followed through the session's watch now (one per registered announcer).
    pub key_watches: u64,
    /// Watchers the session holds on etcd now: one per prefix its announcers register under,
    /// however many keys.
    pub etcd_watchers: u64,
    /// Times the shared watch stream was opened (the first time, and after each break).
    pub watch_streams: u64,
    /// etcd transactions that carried the announcers' claims and deletions.
    pub batches: u64,
    /// Claims and deletions carried in those transactions (several to a transaction when
    /// announcers start or stop together).
    pub batched_calls: u64,
}

#[derive(Debug, Default)]
pub(crate) struct SessionCounters {
    pub(crate) keep_alives: AtomicU64,
    pub(crate) keep_alive_failures: AtomicU64,
    pub(crate) lease_losses: AtomicU64,
    pub(crate) key_watches: AtomicU64,
    pub(crate) etcd_watchers: AtomicU64,
    pub(crate) watch_streams: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) batched_calls: AtomicU64,
}

impl Session {
    /// Connects to etcd and grants the session's lease of `lease_ttl` (whole seconds, 2 s ..=
    /// 1 h, rounded up), before it returns.
    ///
    /// # Errors
    ///
    /// `Config` naming the field when `config` or `lease_ttl` is invalid; `EtcdUnreachable` or
    /// `EtcdAuth` when etcd cannot be used.
    pub async fn connect(config: EtcdConfig, lease_ttl: Duration) -> Result<Session, Error> {
        config.validate()?;
        let lease_ttl = checked_ttl(lease_ttl)?;
        let timeout = config.request_timeout;
        let client = config.connect().await?;
        Session::start(Etcd::leases(client, timeout), lease_ttl, None).await
    }

    /// As [`connect`](Session::connect), through an existing client (an application's own, or
    /// one shared with subscribers); each call is bounded by 5 s.
    ///
    /// # Errors
    ///
    /// `Config` when `lease_ttl` is out of bounds; `EtcdUnreachable` or `EtcdAuth` when the
    /// lease cannot be granted.
    pub async fn with_client(
        client: etcd_client::Client,
        lease_ttl: Duration,
    ) -> Result<Session, Error> {
        let lease_ttl = checked_ttl(lease_ttl)?;
        Session::start(Etcd::leases(client, SHARED_CLIENT_TIMEOUT), lease_ttl, None).await
    }

    /// The session of one announcer without one: the same lease path, with a lease that holds
    /// that announcer's key alone. Its keep-alives are counted in the announcer's own
    /// counters (`mirror`) as well.
    pub(crate) async fn private(
        etcd: Etcd,
        lease_ttl: Duration,
        mirror: Arc<Counters>,
    ) -> Result<Session, Error> {
        Session::start(etcd, lease_ttl, Some(mirror)).await
    }

    async fn start(
        mut etcd: Etcd,
        ttl: Duration,
        mirror: Option<Arc<Counters>>,
    ) -> Result<Session, Error> {
        // A listed member may be down: the grant is tried again within the call deadline.
        let lease = retried(etcd.timeout, || etcd.grant(ttl)).await?;
        let private = mirror.is_some();
        // A call that outlasts the keep-alive period would put the lease at risk.
        etcd.timeout = etcd.timeout.min(ttl / 3);
        let span = tracing::debug_span!("session", lease);
        tracing::info!(parent: &span, ttl_s = ttl.as_secs(), "session lease granted");
        let (lease_tx, lease_rx) = watch::channel(SessionLease::Live(lease));
        let (requests, requests_rx) = mpsc::channel(64);
        let counters = Arc::new(SessionCounters::default());
        let stop = CancellationToken::new();
        let (news, news_rx) = mpsc::unbounded_channel();
        let hub = WatchHub::spawn(etcd.clone(), counters.clone(), news, span.clone());
        let registry = Registry::spawn(lease_rx.clone(), news_rx, span.clone());
        let batcher = Batcher::spawn(etcd.clone(), counters.clone(), span.clone());
        let keeper = keeper::Keeper::new(
            etcd.clone(),
            ttl,
            lease,
            lease_tx,
            requests_rx,
            counters.clone(),
            stop.clone(),
        )
        .mirrored(mirror);
        tokio::spawn(keeper.run().instrument(span));
        Ok(Session {
            inner: Arc::new(Inner {
                etcd,
                ttl,
                lease: lease_rx,
                requests,
                hub,
                batcher,
                registry,
                counters,
                private,
                held: Arc::default(),
                _stop: stop.drop_guard(),
            }),
        })
    }

    /// Whether the session is one announcer's own (see [`Session::private`]).
    pub(crate) fn is_private(&self) -> bool {
        self.inner.private
    }

    /// The id of the session's lease now; `None` while a lost lease is being replaced, and
    /// once the session is closed.
    pub fn lease(&self) -> Option<i64> {
        match *self.inner.lease.borrow() {
            SessionLease::Live(id) => Some(id),
            SessionLease::Renewing | SessionLease::Closed => None,
        }
    }

    /// The TTL of the session's lease (whole seconds).
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The session's counters.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn run(session: herald_announcer::Session) {
    /// let stats = session.stats();
    /// println!("{} keep-alives, {} key watches", stats.keep_alives, stats.key_watches);
    /// # }
    /// ```
    pub fn stats(&self) -> SessionStats {
        let c = &self.inner.counters;
        SessionStats {
            keep_alives: c.keep_alives.load(Ordering::Relaxed),
            keep_alive_failures: c.keep_alive_failures.load(Ordering::Relaxed),
            lease_losses: c.lease_losses.load(Ordering::Relaxed),
            key_watches: c.key_watches.load(Ordering::Relaxed),
            etcd_watchers: c.etcd_watchers.load(Ordering::Relaxed),
            watch_streams: c.watch_streams.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            batched_calls: c.batched_calls.load(Ordering::Relaxed),
        }
    }

    /// Revokes the lease: every registration still on it disappears at once, and the
    /// announcers still running on the session stop with [`Stopped::SessionClosed`]. Shut the
    /// announcers down first for graceful goodbyes.
    ///
    /// # Errors
    ///
    /// `EtcdUnreachable` when the revoke got no answer (the lease then expires on its own);
    /// `Stopped` when the session was already closed.
    ///
    /// [`Stopped::SessionClosed`]: crate::Stopped::SessionClosed
    pub async fn close(&self) -> Result<(), Error> {
        let (reply, done) = oneshot::channel();
        self.inner
            .requests
            .send(SessionRequest::Close(reply))
            .await
            .map_err(|_| Error::new(ErrorKind::Stopped))?;
        done.await.map_err(|_| Error::new(ErrorKind::Stopped))?
    }

    /// The client the session's announcers register through.
    pub(crate) fn etcd(&self) -> &Etcd {
        &self.inner.etcd
    }

    /// The lease as it changes.
    pub(crate) fn watch_lease(&self) -> watch::Receiver<SessionLease> {
        self.inner.lease.clone()
    }

    /// Tells the task that `lease` was found gone.
    pub(crate) fn report_lost(&self, lease: i64) {
        let _ = self.inner.requests.try_send(SessionRequest::Lost(lease));
    }

    /// The shared watch stream.
    pub(crate) fn hub(&self) -> &WatchHub {
        &self.inner.hub
    }

    /// The batched registration calls.
    pub(crate) fn batcher(&self) -> &Batcher {
        &self.inner.batcher
    }

    /// The registrations of the session's announcers.
    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Marks `key` as one of this session's announcers' own while the hold lives; `None` when
    /// another announcer on the session holds it.
    ///
    /// Every key of the session is written under the same lease, so the lease cannot tell
    /// whose a key is. The hold can: a claim that finds its key under the session's lease
    /// while holding it is this announcer's own earlier attempt, whose answer was lost.
    pub(crate) fn hold(&self, key: &str) -> Option<KeyHold> {
        let mut held = self.inner.held.lock().unwrap_or_else(|e| e.into_inner());
        held.insert(key.to_owned()).then(|| KeyHold {
            held: self.inner.held.clone(),
            key: key.to_owned(),
        })
    }
}

/// A key held by one announcer of a session; released when dropped.
#[derive(Debug)]
pub(crate) struct KeyHold {
    held: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for KeyHold {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.key);
    }
}

fn checked_ttl(ttl: Duration) -> Result<Duration, Error> {
    if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&ttl) {
        return Err(Error::config("lease_ttl", "must be within 2 s ..= 1 h"));
    }
    Ok(Duration::from_secs(ttl.as_secs_f64().ceil() as u64))
}
