//! Changes to the set of live instances, as a stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::Instance;

/// Why an instance left the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalCause {
    /// No token arrived within its TTL (the process crashed or was cut off).
    Expired,
    /// It announced `leaving` (a graceful stop).
    Goodbye,
    /// Its etcd registration was deleted.
    Deregistered,
    /// A newer incarnation took over its id.
    Fenced,
    /// The NATS connection that carried its latest token closed (its process died), and no
    /// token came over another connection within the grace. Only with disconnect advisories
    /// ([`crate::SubscriberBuilder::disconnect_advisories`]).
    Disconnected,
}

impl RemovalCause {
    /// A short label: `expired`, `goodbye`, `deregistered`, `fenced` or `disconnected`.
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalCause::Expired => "expired",
            RemovalCause::Goodbye => "goodbye",
            RemovalCause::Deregistered => "deregistered",
            RemovalCause::Fenced => "fenced",
            RemovalCause::Disconnected => "disconnected",
        }
    }
}

/// One change to the view.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A new instance is live.
    Added(Instance),
    /// A live instance changed: load, state, or (with a new record) address, zone, weight,
    /// metadata or epoch.
    Updated(Instance),
    /// An instance left the view.
    Removed {
        /// The instance as it was last known.
        instance: Instance,
        /// Why it left.
        cause: RemovalCause,
    },
    /// This stream fell behind and `missed` events were dropped for it; ingest never waits
    /// for a slow consumer. Re-read [`crate::Subscriber::instances`] to resynchronise.
    Lagged {
        /// Number of events this consumer missed.
        missed: u64,
    },
}

/// The stream returned by [`crate::Subscriber::events`].
#[derive(Debug)]
pub struct EventStream {
    inner: BroadcastStream<Event>,
}

impl EventStream {
    pub(crate) fn new(rx: tokio::sync::broadcast::Receiver<Event>) -> Self {
        EventStream {
            inner: BroadcastStream::new(rx),
        }
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|r| match r {
                Ok(e) => e,
                Err(BroadcastStreamRecvError::Lagged(missed)) => Event::Lagged { missed },
            })
        })
    }
}
