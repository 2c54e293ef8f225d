//! tower integration (feature `tower`): one service's instances as a
//! [`tower::discover::Discover`], for `tower::balance::p2c::Balance` or tonic's
//! `Channel::balance_channel`.
//!
//! The stream follows the service's snapshot (not the event stream), so it cannot lag: each
//! time the snapshot changes it diffs it against what it has inserted. A draining instance is
//! removed from the balancer like a departed one (no new requests), and inserted again when
//! it is back up; a new record (address, zone, weight, metadata, epoch) is re-inserted.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tower::discover::Change;

use crate::{Instance, ServiceSnapshot};

/// The stream returned by [`crate::Subscriber::discover`]: `Change<instance id, S>`.
pub struct Discover<S, F> {
    snapshots: WatchStream<ServiceSnapshot>,
    make: F,
    inserted: HashMap<String, Instance>,
    pending: VecDeque<Change<String, S>>,
}

impl<S, F> std::fmt::Debug for Discover<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discover")
            .field("inserted", &self.inserted.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<S, F> Discover<S, F>
where
    F: FnMut(&Instance) -> S,
{
    pub(crate) fn new(rx: watch::Receiver<ServiceSnapshot>, make: F) -> Self {
        Discover {
            snapshots: WatchStream::new(rx),
            make,
            inserted: HashMap::new(),
            pending: VecDeque::new(),
        }
    }

    fn diff(&mut self, snapshot: &ServiceSnapshot) {
        let available: HashMap<&str, &Instance> = snapshot
            .iter()
            .filter(|i| i.is_available())
            .map(|i| (i.id(), i))
            .collect();
        let gone: Vec<String> = self
            .inserted
            .keys()
            .filter(|id| !available.contains_key(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            self.inserted.remove(&id);
            self.pending.push_back(Change::Remove(id));
        }
        for (id, instance) in available {
            let fresh = self
                .inserted
                .get(id)
                .is_none_or(|known| !known.same_record(instance));
            if fresh {
                self.inserted.insert(id.to_owned(), instance.clone());
                let service = (self.make)(instance);
                self.pending
                    .push_back(Change::Insert(id.to_owned(), service));
            }
        }
    }
}

impl<S, F> Stream for Discover<S, F>
where
    F: FnMut(&Instance) -> S + Unpin,
    S: Unpin,
{
    type Item = Result<Change<String, S>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match Pin::new(&mut self.snapshots).poll_next(cx) {
                Poll::Ready(Some(snapshot)) => self.diff(&snapshot),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
