//! etcd deletions held for one round trip on the subscriber's own NATS connection, so that a
//! graceful stop's goodbye, already on its way, is read before its deletion applies.

use std::pin::Pin;
use std::time::Duration;

use futures::{FutureExt, StreamExt};

use super::Ingest;

/// The longest a batch of deletions waits for its round trip (a NATS server that does not
/// answer): then it is applied anyway, and a goodbye still on its way reads as a
/// deregistration.
const DELETE_BARRIER_TIMEOUT: Duration = Duration::from_secs(1);

/// Most tokens read after a barrier before its deletions apply: every message the server
/// wrote before the echo is in the subscription's buffer by then, and the buffer holds no
/// more than this.
const DRAIN_BEFORE_DELETES: usize = 65_536;

/// An etcd deletion: service, instance, revision.
type Delete = (String, String, u64);

/// etcd deletions and the barrier they wait for.
///
/// An announcer that stops gracefully sends its goodbye and revokes its lease only once the
/// NATS server has routed the goodbye, so the server wrote that goodbye to this subscriber's
/// socket before the deletion existed. One round trip on this subscriber's own connection,
/// begun after the deletion arrived, ends after every such goodbye has been read: the
/// deletion then applies, and the stop reads as a goodbye rather than a deregistration. One
/// round trip covers every deletion that arrived before it began.
#[derive(Default)]
pub(crate) struct Deletes {
    /// Arrived since the barrier in flight began: they wait for the next one.
    waiting: Vec<Delete>,
    /// Covered by the barrier in flight.
    covered: Vec<Delete>,
}

/// A round trip in flight.
pub(super) type Barrier = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Deletes {
    /// A deletion arrived from etcd: it waits for the next barrier.
    pub(super) fn push(&mut self, service: String, instance: String, revision: u64) {
        self.waiting.push((service, instance, revision));
    }
}

impl Ingest {
    /// Begins the round trip that the deletions waiting need, if any wait.
    pub(super) fn begin_barrier(&mut self) -> Option<Barrier> {
        if self.deletes.waiting.is_empty() {
            return None;
        }
        let mut waiting = std::mem::take(&mut self.deletes.waiting);
        self.deletes.covered.append(&mut waiting);
        // Disconnected, no goodbye can be on its way: nothing to wait for.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Some(Box::pin(std::future::ready(())));
        }
        let client = self.client.clone();
        Some(Box::pin(async move {
            if let Err(e) =
                herald_shared::round_trip::server_handled(&client, DELETE_BARRIER_TIMEOUT).await
            {
                tracing::debug!(error = %e, "deletions applied without their round trip");
            }
        }))
    }

    /// The barrier passed: the goodbyes sent before the covered deletions are in the
    /// subscription's buffer. They are read first, then the deletions apply.
    pub(super) fn apply_covered_deletes(&mut self) {
        for _ in 0..DRAIN_BEFORE_DELETES {
            match self.subs.next().now_or_never() {
                Some(Some(msg)) => self.ingest_one(&msg),
                _ => break,
            }
        }
        for (service, instance, revision) in std::mem::take(&mut self.deletes.covered) {
            self.store.deregister(&service, &instance, revision);
        }
        self.store.flush();
    }
}

/// Resolves when the barrier in flight passed; never without one.
pub(super) async fn passed(barrier: &mut Option<Barrier>) {
    match barrier {
        Some(b) => b.await,
        None => std::future::pending().await,
    }
}
