//! The registration's calls to etcd, each under a deadline, with the answers sorted into what
//! the registration decides on: written, held by someone else, lease gone, or no answer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, KeyValue, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp, TxnOpResponse, TxnResponse,
};
use herald_shared::backoff::Backoff;
use herald_shared::{EtcdError, codec};

use crate::error::{Error, ErrorKind};

/// Why a call did not do what was asked.
#[derive(Debug, Clone)]
pub(crate) enum CallError {
    /// The lease is unknown to the cluster that answered (expired, revoked, or a new cluster).
    LeaseGone,
    /// No answer in time, or etcd failed the call.
    Failed(EtcdError),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::LeaseGone => f.write_str("lease not found"),
            // Transparent: the etcd error says it.
            CallError::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::LeaseGone => None,
            CallError::Failed(e) => e.source(),
        }
    }
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Self {
        match e {
            CallError::LeaseGone => {
                Error::with_source(ErrorKind::EtcdUnreachable, "lease not found")
            }
            CallError::Failed(e) => e.into(),
        }
    }
}

pub(crate) fn sort(e: etcd_client::Error) -> CallError {
    if herald_shared::etcd::is_lease_not_found(&e) {
        CallError::LeaseGone
    } else {
        CallError::Failed(herald_shared::etcd::classify(e))
    }
}

/// The outcome of a registration transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Written under our lease: the write's revision is the epoch.
    Written { epoch: u64, cluster_id: u64 },
    /// The key exists: its holder's epoch (`mod_revision`) and lease, and the cluster that
    /// answered.
    Held {
        epoch: u64,
        lease: i64,
        /// The holder's token TTL, from its registered value.
        token_ttl: Option<Duration>,
        cluster_id: u64,
    },
}

/// The key as etcd holds it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) epoch: u64,
    pub(crate) lease: i64,
    /// The token TTL its registered value names (`None` when the value is not a token).
    pub(crate) token_ttl: Option<Duration>,
}

impl Holder {
    pub(crate) fn of(kv: &KeyValue) -> Holder {
        Holder {
            epoch: kv.mod_revision().max(0) as u64,
            lease: kv.lease(),
            token_ttl: codec::decode(kv.value())
                .ok()
                .map(|t| Duration::from_millis(u64::from(t.ttl_ms))),
        }
    }
}

/// What one keep-alive learned.
#[derive(Debug)]
pub(crate) enum Renewal {
    /// etcd renewed the lease.
    Alive,
    /// etcd says the lease is gone (expired, revoked, or unknown to this cluster).
    Gone,
    /// No answer: the stream broke, the call failed or timed out.
    Failed(EtcdError),
}

/// A lease's keep-alive stream, opened on first use and dropped when it breaks.
#[derive(Default)]
pub(crate) struct KeepAlive {
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

impl fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepAlive")
            .field("open", &self.stream.is_some())
            .finish()
    }
}

impl KeepAlive {
    /// Renews `lease` once through `etcd`: a request on the open stream and its answer, or a
    /// new stream (whose opening renews the lease), all within the call deadline.
    pub(crate) async fn renew(&mut self, etcd: &Etcd, lease: i64) -> Renewal {
        let answer = tokio::time::timeout(etcd.timeout, async {
            match &mut self.stream {
                Some((keeper, stream)) => {
                    keeper
                        .keep_alive()
                        .await
                        .map_err(herald_shared::etcd::classify)?;
                    match stream.message().await {
                        Ok(Some(resp)) => Ok(resp.ttl()),
                        Ok(None) => Err(EtcdError::unreachable("keep-alive stream closed")),
                        Err(e) => Err(herald_shared::etcd::classify(e)),
                    }
                }
                None => match etcd.keep_alive(lease).await {
                    Ok(opened) => {
                        self.stream = Some(opened);
                        Ok(1)
                    }
                    Err(CallError::LeaseGone) => Ok(0),
                    Err(CallError::Failed(e)) => Err(e),
                },
            }
        })
        .await
        .unwrap_or_else(|_| Err(EtcdError::no_answer(etcd.timeout)));
        match answer {
            Ok(ttl) if ttl > 0 => Renewal::Alive,
            Ok(_) => {
                self.stream = None;
                Renewal::Gone
            }
            Err(error) => {
                self.stream = None;
                Renewal::Failed(error)
            }
        }
    }

    /// Forgets the stream (the lease it renews is gone or replaced).
    pub(crate) fn close(&mut self) {
        self.stream = None;
    }
}

/// One instance's registration key, and the client that writes it.
#[derive(Clone)]
pub(crate) struct Etcd {
    /// Shared: etcd-client's client is about 3.7 KB, and the announcers of a session all use
    /// the session's.
    pub(crate) client: Arc<Client>,
    pub(crate) key: String,
    /// Deadline of each unary call.
    pub(crate) timeout: Duration,
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn revision(header: Option<&etcd_client::ResponseHeader>) -> (u64, u64) {
    header.map_or((0, 0), |h| (h.revision().max(0) as u64, h.cluster_id()))
}

impl Etcd {
    /// Lease calls only (grant, keep-alive, revoke), for a lease that holds no key of its own.
    pub(crate) fn leases(client: Client, timeout: Duration) -> Self {
        Etcd {
            client: Arc::new(client),
            key: String::new(),
            timeout,
        }
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(sort),
            Err(_) => Err(CallError::Failed(EtcdError::no_answer(self.timeout))),
        }
    }

    /// Grants a lease of `ttl` (whole seconds).
    pub(crate) async fn grant(&self, ttl: Duration) -> Result<i64, CallError> {
        let mut client = Client::clone(&self.client);
        let ttl = ttl.as_secs() as i64;
        let resp = self.bounded(client.lease_grant(ttl, None)).await?;
        Ok(resp.id())
    }

    /// Registers `value` under `lease` if the key does not exist (or over it, with
    /// `takeover`), in one transaction.
    pub(crate) async fn claim(
        &self,
        value: Vec<u8>,
        lease: i64,
        takeover: bool,
    ) -> Result<Claim, CallError> {
        let txn = claim_txn(&self.key, value, lease, takeover);
        // One transaction: the compare saw the key, so the get does too.
        let claim = self.settle(txn).await?.ok_or_else(neither_way);
        if answer_lost() {
            return Err(lost_answer());
        }
        claim
    }

    /// Registers `value` under `lease` over the incarnation at `holder_epoch`, if the key is
    /// still that one's; if the key is gone meanwhile, claims it as new.
    pub(crate) async fn replace(
        &self,
        value: Vec<u8>,
        lease: i64,
        holder_epoch: u64,
    ) -> Result<Claim, CallError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.key.clone(),
                CompareOp::Equal,
                holder_epoch as i64,
            )])
            .and_then([self.put(value.clone(), lease)])
            .or_else([TxnOp::get(self.key.clone(), None)]);
        match self.settle(txn).await? {
            Some(claim) => Ok(claim),
            None => self.claim(value, lease, false).await,
        }
    }

    fn put(&self, value: Vec<u8>, lease: i64) -> TxnOp {
        put(&self.key, value, lease)
    }

    /// Runs a registration transaction: written (noting an incarnation it replaced), held by
    /// the holder its `or_else` read, or `None` when its compare failed on an absent key.
    async fn settle(&self, txn: Txn) -> Result<Option<Claim>, CallError> {
        let mut client = Client::clone(&self.client);
        let resp = self.bounded(client.txn(txn)).await?;
        Ok(claim_outcome(&resp, resp.header()))
    }

    /// Rewrites the key with `value` if it is still attached to `lease`; the new epoch, or
    /// `None` when the key is no longer ours (the watch says what happened).
    pub(crate) async fn rewrite(
        &self,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<Option<u64>, CallError> {
        let txn = Txn::new()
            .when([Compare::lease(self.key.clone(), CompareOp::Equal, lease)])
            .and_then([TxnOp::put(
                self.key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let mut client = Client::clone(&self.client);
        let resp = self.bounded(client.txn(txn)).await?;
        Ok(resp.succeeded().then(|| revision(resp.header()).0))
    }

    /// The key's holder, if it exists, and the revision and cluster of the answer.
    pub(crate) async fn holder(&self) -> Result<(Option<Holder>, u64, u64), CallError> {
        let mut client = Client::clone(&self.client);
        let resp = self.bounded(client.get(self.key.clone(), None)).await?;
        let (rev, cluster) = revision(resp.header());
        let holder = resp.kvs().first().map(Holder::of);
        Ok((holder, rev, cluster))
    }

    /// Whether `lease` is alive.
    pub(crate) async fn lease_alive(&self, lease: i64) -> Result<bool, CallError> {
        let mut client = Client::clone(&self.client);
        match self.bounded(client.lease_time_to_live(lease, None)).await {
            Ok(resp) => Ok(resp.ttl() > 0),
            Err(CallError::LeaseGone) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Revokes `lease`: its keys disappear at once.
    pub(crate) async fn revoke(&self, lease: i64) -> Result<(), CallError> {
        let mut client = Client::clone(&self.client);
        match self.bounded(client.lease_revoke(lease)).await {
            Ok(_) | Err(CallError::LeaseGone) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Opens a keep-alive stream for `lease`; opening renews the lease once (etcd-client sends
    /// the first request and checks its answer).
    pub(crate) async fn keep_alive(
        &self,
        lease: i64,
    ) -> Result<(LeaseKeeper, LeaseKeepAliveStream), CallError> {
        let mut client = Client::clone(&self.client);
        self.bounded(client.lease_keep_alive(lease)).await
    }
}

/// The registration transaction of `key`: put `value` under `lease` if the key does not
/// exist, else read it; with `takeover`, put it whatever holds the key.
pub(crate) fn claim_txn(key: &str, value: Vec<u8>, lease: i64, takeover: bool) -> Txn {
    if takeover {
        Txn::new().and_then([put(key, value, lease)])
    } else {
        Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([put(key, value, lease)])
            .or_else([TxnOp::get(key, None)])
    }
}

fn put(key: &str, value: Vec<u8>, lease: i64) -> TxnOp {
    TxnOp::put(
        key,
        value,
        Some(PutOptions::new().with_lease(lease).with_prev_key()),
    )
}

/// What a registration transaction did, answered under `header`: written (noting an
/// incarnation it replaced), held by the holder its `or_else` read, or `None` when its
/// compare failed on an absent key.
pub(crate) fn claim_outcome(
    resp: &TxnResponse,
    header: Option<&etcd_client::ResponseHeader>,
) -> Option<Claim> {
    let (epoch, cluster_id) = revision(header);
    if resp.succeeded() {
        if let Some(prev) = previous(resp) {
            tracing::warn!(
                replaced_epoch = prev.epoch,
                epoch,
                "took over the registration of another incarnation"
            );
        }
        return Some(Claim::Written { epoch, cluster_id });
    }
    read(resp).map(|h| Claim::Held {
        epoch: h.epoch,
        lease: h.lease,
        token_ttl: h.token_ttl,
        cluster_id,
    })
}

/// A registration transaction that neither wrote nor read: no answer that makes sense.
pub(crate) fn neither_way() -> CallError {
    CallError::Failed(EtcdError::unreachable(
        "registration transaction answered neither way",
    ))
}

/// Whether the answer of a registration that etcd carried out is to be lost (a fault a test
/// injected; never without the `faults` feature).
pub(crate) fn answer_lost() -> bool {
    #[cfg(feature = "faults")]
    return crate::faults::claim_answer_lost();
    #[cfg(not(feature = "faults"))]
    false
}

pub(crate) fn lost_answer() -> CallError {
    CallError::Failed(EtcdError::unreachable(
        "the registration's answer was lost (injected fault)",
    ))
}

fn previous(resp: &TxnResponse) -> Option<Holder> {
    resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Put(p) => p.prev_key().map(Holder::of),
        _ => None,
    })
}

fn read(resp: &TxnResponse) -> Option<Holder> {
    resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(g) => g.kvs().first().map(Holder::of),
        _ => None,
    })
}

/// Pauses before trying a call again: from about [`PAUSE_FIRST`], doubled after each try up
/// to [`PAUSE_MAX`].
const PAUSE_FIRST: Duration = Duration::from_millis(20);
const PAUSE_MAX: Duration = Duration::from_millis(500);

/// Runs `call` again while etcd gives no answer, for up to `budget` in all: a listed member
/// may be down, and etcd-client's channel may send the next try to another. A refused
/// connection fails at once, so many tries fit; a member that does not answer at all uses up
/// the call's own deadline.
pub(crate) async fn retried<T, F>(
    budget: Duration,
    mut call: impl FnMut() -> F,
) -> Result<T, CallError>
where
    F: Future<Output = Result<T, CallError>>,
{
    let give_up = tokio::time::Instant::now() + budget;
    let mut backoff = Backoff::new(PAUSE_FIRST, PAUSE_MAX);
    let mut tries = 1u32;
    loop {
        let pause = backoff.next_pause();
        match call().await {
            Err(CallError::Failed(e @ EtcdError::Unreachable(_)))
                if tokio::time::Instant::now() + pause < give_up =>
            {
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    tries,
                    "etcd did not answer; trying again"
                );
                tokio::time::sleep(pause).await;
                tries += 1;
            }
            other => return other,
        }
    }
}
