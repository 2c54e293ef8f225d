//! `start()`'s registration, before the first token goes out: the session to register on
//! (the caller's, or one of this announcer alone over the configured connection or client),
//! the first claim of the instance's key, and the record handed to the session's registry
//! once the claim landed. From then on the session keeps the registration (see
//! [`crate::session::registration`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::etcd_calls::Etcd;
use crate::plan::{EtcdConnection, EtcdPlan};
use crate::predecessor::Predecessor;
use crate::session::Session;
use crate::session::registration::registry::RecordHandle;
use crate::session::registration::{Links, Registrar};

/// What the registration starts from.
#[derive(Debug)]
pub(crate) struct Setup {
    pub(crate) plan: EtcdPlan,
    /// The instance's key.
    pub(crate) key: String,
    /// The TTL of the lease of a session of this announcer alone (a shared session's lease
    /// has its own).
    pub(crate) lease_ttl: Duration,
    /// Asks a holder of the key whether it lives, before the id is refused (not with
    /// takeover, which replaces any holder).
    pub(crate) predecessor: Option<Predecessor>,
    /// The prefix a shared session watches for the key.
    pub(crate) watch_prefix: Arc<str>,
}

/// Registers the instance before its first token, and returns the handle to the record its
/// session keeps from then on (the epoch is in the standing the record writes). When `abort` fires first, what was written
/// is undone before this returns `Stopped`.
///
/// # Errors
///
/// `EtcdUnreachable` or `EtcdAuth` when etcd cannot be used, `DuplicateInstance` when the
/// key is held by a live holder (without takeover), `Stopped` when aborted; nothing is left
/// behind on an error.
pub(crate) async fn register(
    setup: Setup,
    links: Links,
    abort: &CancellationToken,
) -> Result<RecordHandle, Error> {
    let Setup {
        plan,
        key,
        lease_ttl,
        predecessor,
        watch_prefix,
    } = setup;
    // Without a session the announcer makes one of its own: one lease path for all.
    let private = |client| {
        let leases = Etcd::leases(client, plan.timeout);
        Session::private(leases, lease_ttl, links.counters.clone())
    };
    let session = async {
        Ok::<_, Error>(match plan.connection {
            EtcdConnection::Config(config) => (private(config.connect().await?).await?, None),
            EtcdConnection::Client(client) => (private(*client).await?, None),
            EtcdConnection::Session(session) => (session, Some(watch_prefix)),
        })
    };
    // Nothing is registered yet: a stop drops what was asked (a lease granted meanwhile
    // holds no key, and expires).
    let (session, watch_prefix) = tokio::select! {
        biased;
        () = abort.cancelled() => return Err(Error::start_stopped()),
        session = Box::pin(session) => session?,
    };
    // A session of one announcer watches its key alone.
    let watch_prefix = watch_prefix.unwrap_or_else(|| key.as_str().into());
    let etcd = Etcd {
        client: session.etcd().client.clone(),
        key,
        timeout: plan.timeout,
    };
    let record = Registrar::new(etcd, session, watch_prefix, links);
    let record = Box::pin(record.register_first(plan.takeover, predecessor, abort)).await?;
    let registry = record.session().registry().clone();
    Ok(registry.adopt(record))
}
