//! Another process announcing the same instance id, without etcd.
//!
//! With etcd a second process is refused (or takes over and fences the first). Without etcd
//! nothing refuses it: subscribers list the newer run and drop the older one's tokens as
//! duplicates. So an announcer without etcd listens at start, for about two intervals, to its
//! service's tokens: a token of its own id whose `seq` is not of its own run means another
//! process uses the id. It warns and counts
//! ([`Stats::namesakes_heard`](crate::stats::Stats::namesakes_heard)); subscribers warn as
//! well.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Subscriber;
use futures::StreamExt;
use herald_shared::pace::NEW_RUN_JUMP;
use herald_shared::{Received, codec};
use tokio_util::sync::CancellationToken;

use crate::stats::Counters;

/// Bounds of how long the start-up check listens (two intervals): another process's periodic
/// token comes within one of its intervals. The check sends no probe, which would make every
/// announcer of the service answer.
const LISTEN_MIN: Duration = Duration::from_secs(1);
const LISTEN_MAX: Duration = Duration::from_secs(30);

/// Most tokens the check reads: the server ends the subscription after these, so that a
/// large service (or a flood on its subject) cannot pile up in this process's buffers.
const MAX_TOKENS: u64 = 4_096;

/// What the check needs to tell this run's tokens from another run's.
#[derive(Debug)]
pub(crate) struct Check {
    /// Subscribed to the service's announce subject before the first token went out.
    pub(crate) tokens: Subscriber,
    pub(crate) interval: Duration,
    pub(crate) service: String,
    pub(crate) instance: String,
    pub(crate) first_seq: u64,
    pub(crate) counters: Arc<Counters>,
}

impl Check {
    /// Listens for two intervals (within [`LISTEN_MIN`] and [`LISTEN_MAX`]); ends early when
    /// `cancel` fires (the announcer stopped) or when another run was heard.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let listen_for = (self.interval * 2).clamp(LISTEN_MIN, LISTEN_MAX);
        if let Err(e) = self.tokens.unsubscribe_after(MAX_TOKENS).await {
            tracing::debug!(error = %e, "instance id check not bounded; not checking");
            return;
        }
        let listen = async {
            while let Some(msg) = self.tokens.next().await {
                // The other run's tokens are mostly heartbeats, which carry no address.
                let (instance, epoch, seq, addr) = match codec::receive(&msg.payload, &self.service)
                {
                    Ok(Received::Token(t)) => (t.instance, t.epoch, t.seq, t.addr),
                    Ok(Received::Heartbeat(h)) => (h.instance, h.epoch, h.seq, "unknown"),
                    Err(_) => continue,
                };
                let other_run =
                    seq < self.first_seq || seq > self.first_seq.saturating_add(NEW_RUN_JUMP);
                if instance == self.instance && epoch == 0 && other_run {
                    return Some(addr.to_owned());
                }
            }
            None
        };
        let heard = tokio::select! {
            () = cancel.cancelled() => None,
            heard = tokio::time::timeout(listen_for, listen) => heard.ok().flatten(),
        };
        if let Some(other_addr) = heard {
            Counters::bump(&self.counters.namesakes_heard);
            tracing::warn!(
                service = self.service,
                instance = self.instance,
                other_addr,
                "another process announces this instance id: subscribers list the newer run and drop the other's tokens; give each process its own instance id"
            );
        }
        // Dropping the subscriber unsubscribes.
    }
}
