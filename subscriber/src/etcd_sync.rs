//! The etcd source: a consistent listing at start, then a watch from the revision after it.
//!
//! A subscriber of some services lists and watches only their prefixes (one listing and one
//! watch per service: its scope); a subscriber of everything, the whole services prefix.
//!
//! The listing is paged (etcd-client refuses responses over 4 MiB, about 19k registrations)
//! and every page is read at the first page's revision, so the snapshot is one consistent
//! revision however large. The first listing goes to the ingest task page by page, as each
//! arrives, so that the store fills while the next page is read and tokens keep being taken
//! from NATS in between. The watch task resumes from the last revision it saw when etcd
//! comes back; when etcd compacted that revision away, or the cluster id in its response
//! headers changed (a different cluster answers), it lists again and hands the store a full
//! snapshot to reconcile. Everything goes to the ingest task, which applies it through the
//! same merge rules as tokens.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions};
use herald_shared::Subjects;
use herald_shared::backoff::Backoff;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::connections::{CONNECTION_LOG, Change, Tracker, seconds};

/// Keys fetched by the first page of a listing: 500 tokens of at most 4 KiB stay under
/// etcd-client's 4 MiB response limit whatever they hold.
pub(crate) const PAGE: i64 = 500;

/// What a page after the first aims at, in bytes of keys and values: half of etcd-client's
/// 4 MiB response limit, so that pages twice as large per key as those seen so far still
/// fit. etcd (3.4) walks every remaining key of the range for each page, so a listing costs
/// about the number of pages times the keys: fewer, larger pages are much faster.
const PAGE_BYTES: usize = 2 << 20;

/// The most keys a page asks for.
const MAX_PAGE: i64 = 20_000;

/// Keys for the next page, from the keys and bytes of the pages read so far.
pub(crate) fn page_after(keys: usize, bytes: usize) -> i64 {
    if keys == 0 || bytes == 0 {
        return PAGE;
    }
    let per_key = bytes.div_ceil(keys);
    i64::try_from(PAGE_BYTES / per_key)
        .unwrap_or(MAX_PAGE)
        .clamp(1, MAX_PAGE)
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

/// The pages of one scope's listing, all read at the revision of the first.
struct Pages {
    subjects: Subjects,
    scope: Option<String>,
    end: Vec<u8>,
    /// The key the next page starts at; `None` once the last page was read.
    next: Option<Vec<u8>>,
    revision: i64,
    cluster_id: u64,
    read: usize,
    /// Bytes of keys and values read so far, to size the next page.
    bytes: usize,
    /// Keys the next page asks for.
    limit: i64,
}

impl Pages {
    fn new(subjects: &Subjects, scope: Option<&str>) -> Self {
        let prefix = scope_prefix(subjects, scope);
        Pages {
            subjects: subjects.clone(),
            scope: scope.map(str::to_owned),
            end: prefix_end(&prefix),
            next: Some(prefix.into_bytes()),
            revision: 0,
            cluster_id: 0,
            read: 0,
            bytes: 0,
            limit: PAGE,
        }
    }

    /// The next page; `None` after the last.
    async fn next(
        &mut self,
        client: &mut Client,
    ) -> Result<Option<Vec<Registration>>, etcd_client::Error> {
        let Some(start) = self.next.take() else {
            return Ok(None);
        };
        let resp = loop {
            let mut opts = GetOptions::new()
                .with_range(self.end.clone())
                .with_limit(self.limit);
            if self.revision > 0 {
                opts = opts.with_revision(self.revision);
            }
            match get_with_retry(client, start.clone(), opts).await {
                Ok(resp) => break resp,
                Err(e) if herald_shared::etcd::is_too_large(&e) && self.limit > 1 => {
                    self.limit /= 2;
                    tracing::debug!(
                        limit = self.limit,
                        "etcd listing page too large; halving it"
                    );
                }
                Err(e) => return Err(e),
            }
        };
        self.bytes += resp
            .kvs()
            .iter()
            .map(|kv| kv.key().len() + kv.value().len())
            .sum::<usize>();
        if let Some(h) = resp.header() {
            if self.revision == 0 {
                self.revision = h.revision();
                self.cluster_id = h.cluster_id();
            }
        }
        let page: Vec<Registration> = resp
            .kvs()
            .iter()
            .filter_map(|kv| registration(&self.subjects, kv))
            .collect();
        self.read += resp.kvs().len();
        self.limit = page_after(self.read, self.bytes);
        if let Some(last) = resp.kvs().last().filter(|_| resp.more()) {
            let mut after = last.key().to_vec();
            after.push(0);
            self.next = Some(after);
        } else {
            tracing::info!(
                revision = self.revision,
                scope = self.scope.as_deref().unwrap_or("*"),
                keys = self.read,
                "etcd listing read"
            );
        }
        Ok(Some(page))
    }

    fn resume_point(&self) -> ResumePoint {
        ResumePoint {
            scope: self.scope.clone(),
            cluster_id: self.cluster_id,
            revision: self.revision,
        }
    }
}

/// Reads every registration of `scope` at one revision, page by page.
pub(crate) async fn list(
    client: &mut Client,
    subjects: &Subjects,
    scope: Option<&str>,
) -> Result<Listing, etcd_client::Error> {
    let mut pages = Pages::new(subjects, scope);
    let mut registrations = Vec::new();
    while let Some(page) = pages.next(client).await? {
        registrations.extend(page);
    }
    Ok(Listing {
        cluster_id: pages.cluster_id,
        revision: pages.revision,
        scope: pages.scope,
        registrations,
    })
}

/// A scope's first listing, each page sent to the ingest task as it is read; the position
/// to watch from, or `None` when the listing failed (reported) or ingest has stopped.
async fn first_listing(
    client: &mut Client,
    subjects: &Subjects,
    scope: Option<&str>,
    tx: &mpsc::Sender<EtcdUpdate>,
) -> Option<ResumePoint> {
    let mut pages = Pages::new(subjects, scope);
    loop {
        match pages.next(client).await {
            Ok(Some(page)) => tx.send(EtcdUpdate::Page(page)).await.ok()?,
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(EtcdUpdate::ListingFailed(e)).await;
                return None;
            }
        }
    }
    tx.send(EtcdUpdate::Listed).await.ok()?;
    Some(pages.resume_point())
}

/// One page of the listing; a request the balancer sent to a dead member of a degraded
/// cluster is tried again (a few times, briefly) before the listing fails.
async fn get_with_retry(
    client: &mut Client,
    key: Vec<u8>,
    opts: GetOptions,
) -> Result<etcd_client::GetResponse, etcd_client::Error> {
    let mut attempt = 0;
    loop {
        match client.get(key.clone(), Some(opts.clone())).await {
            Ok(resp) => return Ok(resp),
            Err(e)
                if attempt < 5
                    && !herald_shared::etcd::is_auth(&e)
                    && !herald_shared::etcd::is_too_large(&e) =>
            {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "etcd listing page failed; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

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
        listed = first_listing(&mut client, &subjects, scope.as_deref(), &tx) => listed,
    };
    let Some(from) = listed else { return };
    let mut link = Link {
        up: true,
        connections,
        back_at: None,
        flapping: false,
    };
    let ResumePoint {
        scope,
        mut cluster_id,
        mut revision,
    } = from;
    let prefix = scope_prefix(&subjects, scope.as_deref());
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    'reconnect: while !cancel.is_cancelled() {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1)
            .with_progress_notify();
        let mut stream = tokio::select! {
            () = cancel.cancelled() => return,
            r = client.watch(prefix.clone(), Some(opts)) => match r {
                Ok(s) => s,
                Err(e) => {
                    link.lost(revision, &e);
                    pause(&cancel, &mut backoff).await;
                    continue;
                }
            },
        };
        loop {
            let msg = tokio::select! {
                () = cancel.cancelled() => return,
                m = stream.message() => m,
            };
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    link.lost(revision, &"the watch stream ended");
                    pause(&cancel, &mut backoff).await;
                    continue 'reconnect;
                }
                Err(e) => {
                    link.lost(revision, &e);
                    pause(&cancel, &mut backoff).await;
                    continue 'reconnect;
                }
            };
            // The first answer of a new watch (etcd confirms its creation at once).
            link.back(revision);
            backoff.reset();
            let seen_cluster = resp.header().map_or(cluster_id, |h| h.cluster_id());
            let new_cluster = seen_cluster != cluster_id;
            if new_cluster || resp.compact_revision() > 0 || resp.canceled() {
                if new_cluster {
                    tracing::warn!(
                        old = cluster_id,
                        new = seen_cluster,
                        "a different etcd cluster answers; listing again and forgetting old epochs"
                    );
                } else {
                    tracing::warn!(
                        compacted = resp.compact_revision(),
                        revision,
                        "etcd watch revision compacted; listing again"
                    );
                }
                match list(&mut client, &subjects, scope.as_deref()).await {
                    Ok(listing) => {
                        cluster_id = listing.cluster_id;
                        revision = listing.revision;
                        if tx
                            .send(EtcdUpdate::Resync {
                                listing,
                                new_cluster,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        link.lost(revision, &e);
                        pause(&cancel, &mut backoff).await;
                    }
                }
                continue 'reconnect;
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                revision = revision.max(kv.mod_revision());
                let update = match event.event_type() {
                    EventType::Put => match registration(&subjects, kv) {
                        Some(r) => EtcdUpdate::Put(r),
                        None => continue,
                    },
                    EventType::Delete => {
                        let Some((service, instance)) =
                            kv.key_str().ok().and_then(|k| subjects.parse_key(k))
                        else {
                            continue;
                        };
                        EtcdUpdate::Delete {
                            service: service.to_owned(),
                            instance: instance.to_owned(),
                            revision: kv.mod_revision().max(0) as u64,
                        }
                    }
                };
                if tx.send(update).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// One scope's watch as the readiness record sees it. Each scope reports its own transitions
/// once; the warning and the info line go out when etcd as a whole changes, so an outage
/// logs one warning and one recovery however many scopes and retries it spans. Retries are
/// logged at debug.
struct Link {
    up: bool,
    connections: Arc<Tracker>,
    /// When the watch last came back. A watch that breaks again within [`SETTLE`] (a
    /// restarted member drops the first stream) belongs to the same outage: logged at debug.
    back_at: Option<tokio::time::Instant>,
    /// The current loss is such a flap: its end is not announced again either.
    flapping: bool,
}

/// How long a resumed watch must hold before a new loss is a new outage.
const SETTLE: Duration = Duration::from_secs(2);

impl Link {
    fn lost(&mut self, revision: i64, error: &dyn std::fmt::Display) {
        if !self.up {
            tracing::debug!(error = %error, revision, "etcd still unreachable; trying again");
            return;
        }
        self.up = false;
        let flap = self.back_at.is_some_and(|t| t.elapsed() < SETTLE);
        self.flapping = flap;
        match self.connections.etcd_watch(false) {
            Some(Change::Lost) if flap => {
                tracing::debug!(error = %error, revision, "etcd watch broke again just after resuming");
            }
            Some(Change::Lost) => tracing::warn!(
                target: CONNECTION_LOG,
                error = %error,
                revision,
                "etcd watch lost: keeping the NATS view, resuming from the last revision seen when etcd is back"
            ),
            _ => tracing::debug!(error = %error, revision, "etcd watch of this scope lost"),
        }
    }

    fn back(&mut self, revision: i64) {
        if self.up {
            return;
        }
        self.up = true;
        self.back_at = Some(tokio::time::Instant::now());
        match self.connections.etcd_watch(true) {
            Some(Change::Back(_)) if std::mem::take(&mut self.flapping) => {
                tracing::debug!(revision, "etcd watch resumed again");
            }
            Some(Change::Back(down)) => tracing::info!(
                target: CONNECTION_LOG,
                revision,
                down_ms = down.as_millis() as u64,
                "etcd watch resumed after {}",
                seconds(down)
            ),
            _ => tracing::debug!(revision, "etcd watch of this scope resumed"),
        }
    }
}

async fn pause(cancel: &CancellationToken, backoff: &mut Backoff) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(backoff.next_pause()) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_grow_to_half_the_response_limit_and_stay_bounded() {
        assert_eq!(page_after(0, 0), PAGE, "nothing read yet");
        // 250 B a key: about 8,400 keys make 2 MiB.
        assert_eq!(page_after(500, 125_000), 8_388);
        assert!(
            page_after(500, 500 * 4_400) * 4_400 <= 4 << 20,
            "large tokens"
        );
        assert_eq!(page_after(500, 500), MAX_PAGE, "tiny values");
        assert_eq!(page_after(1, 10 << 20), 1, "never zero");
    }

    #[test]
    fn prefix_end_bumps_the_last_byte() {
        assert_eq!(prefix_end("/h/services/"), b"/h/services0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
