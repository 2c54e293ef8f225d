//! A scope's listing: every registration at one revision, read page by page.
//!
//! The listing is paged (etcd-client refuses responses over 4 MiB, about 19k registrations)
//! and every page is read at the first page's revision, so the snapshot is one consistent
//! revision however large. The first listing goes to the ingest task page by page, as each
//! arrives, so that the store fills while the next page is read and tokens keep being taken
//! from NATS in between.

use std::time::Duration;

use etcd_client::{Client, GetOptions};
use herald_shared::Subjects;
use tokio::sync::mpsc;

use super::{
    EtcdUpdate, Listing, Registration, ResumePoint, prefix_end, registration, scope_prefix,
};

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
pub(super) async fn first_listing(
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
}
