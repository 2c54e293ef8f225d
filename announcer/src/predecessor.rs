//! Whether the holder of the instance's key still lives. A process restarted with the same
//! instance id (under a supervisor, after a `kill -9`) finds its key held by the lease of its
//! dead predecessor, which etcd keeps for the whole lease TTL. Before refusing the id,
//! `start()` asks the holder: it listens on the service's announce subject, probes the service
//! (every live announcer of it answers at once), and waits up to the holder's token TTL (from
//! its registered value) for a token of the instance at the holder's epoch or later. Silence
//! means what it means to every subscriber: the holder is gone, and its key may be taken over
//! (see DESIGN, "Crash seen as a closed connection").

use std::time::Duration;

use futures::StreamExt;
use herald_shared::{codec, round_trip};
use tokio::time::Instant;

use crate::error::{Error, ErrorKind};

/// Bound of the subscription's round trip before the first probe.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// What the holder did while it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// A token of it arrived: it lives.
    Answered,
    /// Nothing within its TTL.
    Silent,
}

/// The NATS side of the question: where the instance's tokens and probes travel.
#[derive(Debug, Clone)]
pub(crate) struct Predecessor {
    pub(crate) client: async_nats::Client,
    /// The service's announce subject.
    pub(crate) announce: String,
    /// The service's probe subject.
    pub(crate) probe: String,
    pub(crate) service: String,
    pub(crate) instance: String,
}

impl Predecessor {
    /// Probes the service and waits up to `ttl` for a token of the instance at `epoch` or
    /// later (a holder that rewrote its key meanwhile has a higher one). A second probe goes
    /// out halfway, in case the first fell into the holder's probe coalescing.
    ///
    /// # Errors
    ///
    /// `Subscribe` or `Publish` when NATS refuses the listening or the probe.
    pub(crate) async fn ask(&self, epoch: u64, ttl: Duration) -> Result<Holder, Error> {
        let mut tokens = self
            .client
            .subscribe(self.announce.clone())
            .await
            .map_err(|e| Error::with_source(ErrorKind::Subscribe, e))?;
        round_trip::confirm_subscriptions(&self.client, CONFIRM_TIMEOUT)
            .await
            .map_err(|e| Error::with_source(ErrorKind::Subscribe, e))?;
        let give_up = Instant::now() + ttl;
        let mut again = Some(Instant::now() + ttl / 2);
        self.send_probe().await?;
        let holder = loop {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(give_up) => break Holder::Silent,
                () = sleep_until_some(again) => {
                    again = None;
                    self.send_probe().await?;
                }
                message = tokens.next() => {
                    let Some(message) = message else { break Holder::Silent };
                    if self.is_holder(&message.payload, epoch) {
                        break Holder::Answered;
                    }
                }
            }
        };
        let _ = tokens.unsubscribe().await;
        Ok(holder)
    }

    /// Whether `payload` is a valid token of this instance at `epoch` or later.
    fn is_holder(&self, payload: &[u8], epoch: u64) -> bool {
        codec::accept(payload, &self.service)
            .is_ok_and(|t| t.instance == self.instance && t.epoch >= epoch)
    }

    async fn send_probe(&self) -> Result<(), Error> {
        self.client
            .publish(self.probe.clone(), bytes::Bytes::new())
            .await
            .map_err(|e| Error::with_source(ErrorKind::Publish, e))
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
