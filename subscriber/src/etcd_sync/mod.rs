//! The etcd source: a consistent listing at start (`listing`), then a watch from the
//! revision after it (`watch`).
//!
//! A subscriber of some services lists and watches only their prefixes (one listing and one
//! watch per service: its scope); a subscriber of everything, the whole services prefix.
//! This module holds what both share: the updates sent to the ingest task, which applies
//! them through the same merge rules as tokens, and the keys of a scope.

use std::sync::Arc;

use etcd_client::{Client, KeyValue};
use herald_shared::Subjects;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::connections::Tracker;

mod listing;
mod watch;

#[cfg(feature = "internals")]
pub(crate) use listing::{PAGE, page_after};

/// Lists a scope (its first listing, page by page), then watches its prefix from the
/// revision after the listing until cancelled, surviving etcd restarts, compactions and
/// cluster replacement.
pub(crate) async fn follow(
    mut client: Client,
    subjects: Subjects,
    scope: Option<String>,
    tx: mpsc::Sender<EtcdUpdate>,
    connections: Arc<Tracker>,
    cancel: CancellationToken,
) {
    let listed = tokio::select! {
        () = cancel.cancelled() => return,
        listed = listing::first_listing(&mut client, &subjects, scope.as_deref(), &tx) => listed,
    };
    if let Some(from) = listed {
        watch::watch(client, subjects, from, tx, connections, cancel).await;
    }
}

/// One registration as etcd holds it.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub(crate) service: String,
    pub(crate) instance: String,
    /// The token written at registration.
    pub(crate) value: Vec<u8>,
    /// The revision of the write: the incarnation's epoch.
    pub(crate) revision: u64,
    pub(crate) lease: i64,
}

/// Every registration of one scope (a service, or `None`: every service) at one revision
/// of one cluster.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    pub(crate) cluster_id: u64,
    pub(crate) revision: i64,
    pub(crate) scope: Option<String>,
    pub(crate) registrations: Vec<Registration>,
}

/// A scope's watch position: the cluster and the last revision seen.
#[derive(Debug, Clone)]
pub(crate) struct ResumePoint {
    scope: Option<String>,
    cluster_id: u64,
    revision: i64,
}

/// What the etcd source tells the store.
#[derive(Debug)]
pub(crate) enum EtcdUpdate {
    /// A key was written.
    Put(Registration),
    /// A key was deleted at `revision`.
    Delete {
        service: String,
        instance: String,
        revision: u64,
    },
    /// A full listing to reconcile with; `new_cluster` when a different cluster answered, so
    /// that epochs and tombstones of the old one are forgotten first.
    Resync { listing: Listing, new_cluster: bool },
    /// A page of a scope's first listing, to apply at once.
    Page(Vec<Registration>),
    /// A scope's first listing is complete: every page was sent.
    Listed,
    /// A scope's first listing failed: the subscriber cannot start.
    ListingFailed(etcd_client::Error),
}

fn registration(subjects: &Subjects, kv: &KeyValue) -> Option<Registration> {
    let key = kv.key_str().ok()?;
    let (service, instance) = subjects.parse_key(key)?;
    Some(Registration {
        service: service.to_owned(),
        instance: instance.to_owned(),
        value: kv.value().to_vec(),
        revision: u64::try_from(kv.mod_revision()).ok()?,
        lease: kv.lease(),
    })
}

/// The end of the key range that starts with `prefix` (etcd's prefix convention).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The etcd prefix of a scope.
fn scope_prefix(subjects: &Subjects, scope: Option<&str>) -> String {
    match scope {
        Some(service) => subjects.service_prefix(service),
        None => subjects.services_prefix(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bumps_the_last_byte() {
        assert_eq!(prefix_end("/h/services/"), b"/h/services0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
