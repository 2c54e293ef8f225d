//! What etcd reports (registrations, deletions, listings), applied through the store, and the
//! end of the first listing that `start()` waits for.

use super::{BATCH, EtcdUpdate, Ingest};

impl Ingest {
    /// Applies what etcd reported, through the same store and merge rules as tokens.
    pub(super) async fn on_etcd(&mut self, update: Option<EtcdUpdate>) {
        match update {
            Some(EtcdUpdate::Put(reg)) => self.store.register(&reg),
            // A graceful stop's goodbye and its lease's revoke travel different paths: the
            // deletion waits for the round trip that proves the goodbye read (`Deletes`).
            // Revisions keep this safe against any registration applied meanwhile.
            Some(EtcdUpdate::Delete {
                service,
                instance,
                revision,
            }) => self.deletes.push(service, instance, revision),
            Some(EtcdUpdate::Resync {
                listing,
                new_cluster,
            }) => {
                if new_cluster {
                    self.store.forget_epochs(listing.scope.as_deref());
                }
                self.store.reconcile(&listing);
                self.probe_wanted = true;
            }
            Some(EtcdUpdate::Page(page)) => {
                // A page holds thousands of registrations: tokens waiting meanwhile are
                // taken in between, so that the subscription's buffer never waits for it.
                // Yielding renews the task's budget, without which tokio would report the
                // subscription empty for the rest of the page.
                for part in page.chunks(BATCH) {
                    self.store.register_page(part);
                    tokio::task::yield_now().await;
                    self.drain_ready_tokens();
                }
            }
            Some(EtcdUpdate::Listed) => {
                self.store.first_listing_read();
                self.scope_listed().await;
            }
            Some(EtcdUpdate::ListingFailed(e)) => {
                if let Some(first) = self.first_listing.take() {
                    let _ = first.done.send(Err(e));
                }
            }
            None => self.etcd = None,
        }
        self.store.flush();
    }

    /// A scope's first listing is applied; after the last, every announcer is asked to
    /// answer and `start()` returns.
    pub(super) async fn scope_listed(&mut self) {
        let Some(first) = &mut self.first_listing else {
            return;
        };
        first.scopes_left = first.scopes_left.saturating_sub(1);
        if first.scopes_left > 0 {
            return;
        }
        let first = self.first_listing.take().expect("checked above");
        self.store.end_first_listing();
        self.store.flush();
        self.probe().await;
        let _ = first.done.send(Ok(()));
    }
}
