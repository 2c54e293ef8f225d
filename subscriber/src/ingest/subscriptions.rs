//! The announce subscriptions, read as one stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt, stream::SelectAll};

/// The announce subscriptions: one (every service, or a single one) read directly, or several
/// merged. Most subscribers have one, and reading it without the merge saves a few percent
/// of ingest CPU.
pub(crate) enum Subscriptions {
    One(async_nats::Subscriber),
    Many(SelectAll<async_nats::Subscriber>),
}

impl Subscriptions {
    pub(crate) fn new(mut subs: Vec<async_nats::Subscriber>) -> Self {
        if subs.len() == 1 {
            Subscriptions::One(subs.remove(0))
        } else {
            Subscriptions::Many(subs.into_iter().collect())
        }
    }
}

impl Stream for Subscriptions {
    type Item = async_nats::Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Subscriptions::One(s) => s.poll_next_unpin(cx),
            Subscriptions::Many(m) => m.poll_next_unpin(cx),
        }
    }
}
