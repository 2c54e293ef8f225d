//! NATS Services-API-style discovery: each instance answers PINGs on `$SRV.PING.<service>`
//! with one reply (its id and address, as `nats micro` does); a consumer publishes a PING with
//! a reply inbox every poll period and collects the replies for a window. An instance is
//! known once it replies, and gone once a window closes without its reply.
//!
//! The Services API has no goodbye: a service that stops just unsubscribes, so a graceful
//! leave and a crash look the same to a poller, and both are seen at the end of the next
//! window.

use std::collections::HashSet;

use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::peers::observer::Observer;
use crate::peers::processes::Processes;
use crate::peers::servers::{Endpoints, Servers};
use crate::peers::settings::Timing;
use crate::peers::system::{Background, SERVICE, System};

/// The subject instances answer on.
fn ping_subject() -> String {
    format!("$SRV.PING.{SERVICE}")
}

/// NATS polling, the instances of each process on one NATS client.
#[derive(Debug)]
pub struct Polling {
    nats: Processes<async_nats::Client>,
    endpoints: Endpoints,
    timing: Timing,
}

/// A running instance: the task that answers PINGs.
#[derive(Debug)]
pub struct PollingInstance {
    task: JoinHandle<()>,
}

impl Polling {
    /// Connects one client per process to the servers at `servers` (the consumer connects
    /// its own when it starts).
    pub async fn connect(servers: &Endpoints, timing: Timing, processes: usize) -> Polling {
        let each = Servers::connect_many(processes, || servers.nats_client()).await;
        Polling {
            nats: Processes::new(each),
            endpoints: servers.clone(),
            timing,
        }
    }
}

/// A poller on its own connection to `servers`, polling as `timing` says and reporting into
/// `observer` until stopped.
pub async fn consumer(servers: &Endpoints, timing: Timing, observer: Observer) -> Background {
    let nats = servers.nats_client().await;
    let inbox = nats.new_inbox();
    let replies = nats
        .subscribe(format!("{inbox}.*"))
        .await
        .expect("reply inbox subscribed");
    let mut poller = Poller {
        nats,
        replies,
        inbox,
        window: timing.poll_window,
        known: HashSet::new(),
        observer,
    };
    let period = timing.poll_period;
    Background::spawn(move |mut stop| async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        for round in 0u64.. {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            poller.poll(round).await;
        }
    })
}

/// The instance id in a PING reply (`{"id": "...", ...}`).
pub fn reply_id(payload: &[u8]) -> Option<&str> {
    #[derive(serde::Deserialize)]
    struct Reply<'a> {
        id: &'a str,
    }
    serde_json::from_slice::<Reply<'_>>(payload)
        .ok()
        .map(|r| r.id)
}

/// The consumer: its connection, its reply inbox, and what it knows.
struct Poller {
    nats: async_nats::Client,
    replies: async_nats::Subscriber,
    inbox: String,
    window: std::time::Duration,
    known: HashSet<String>,
    observer: Observer,
}

impl Poller {
    /// One poll: PING, collect this round's replies until the window closes, then drop
    /// every known instance that did not reply.
    async fn poll(&mut self, round: u64) {
        let reply_to = format!("{}.{round}", self.inbox);
        self.nats
            .publish_with_reply(ping_subject(), reply_to.clone(), Bytes::new())
            .await
            .expect("PING published");
        let closes = Instant::now() + self.window;
        let mut seen = HashSet::with_capacity(self.known.len());
        while let Ok(Some(msg)) = tokio::time::timeout_at(closes, self.replies.next()).await {
            // A late reply to an earlier round does not count for this one.
            if msg.subject.as_str() != reply_to {
                continue;
            }
            let Some(id) = reply_id(&msg.payload) else {
                continue;
            };
            if !self.known.contains(id) {
                // Known from its first reply on.
                self.observer.added(id);
            }
            seen.insert(id.to_owned());
        }
        for id in self.known.difference(&seen) {
            self.observer.removed(id, "missed poll");
        }
        self.known = seen;
    }
}

impl System for Polling {
    type Instance = PollingInstance;

    async fn start_consumer(&self, observer: Observer) -> Background {
        consumer(&self.endpoints, self.timing, observer).await
    }

    async fn start_instance(&self, id: String) -> Result<PollingInstance, String> {
        let nats = self.nats.next().clone();
        let mut pings = nats
            .subscribe(ping_subject())
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        let reply = Bytes::from(format!(
            r#"{{"type":"io.nats.micro.v1.ping_response","name":"{SERVICE}","id":"{id}","version":"1.0.0","metadata":{{"addr":"127.0.0.1:7000"}}}}"#
        ));
        let task = tokio::spawn(async move {
            while let Some(ping) = pings.next().await {
                if let Some(to) = ping.reply {
                    let _ = nats.publish(to, reply.clone()).await;
                }
            }
        });
        Ok(PollingInstance { task })
    }

    async fn leave(&self, instance: PollingInstance) {
        // What a stopping service does: unsubscribe. Nothing tells the pollers.
        instance.task.abort();
    }

    fn crash(&self, instance: PollingInstance) {
        instance.task.abort();
    }

    fn notes(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_id_of_a_reply() {
        let r = br#"{"type":"io.nats.micro.v1.ping_response","name":"billing","id":"billing-7","version":"1.0.0"}"#;
        assert_eq!(reply_id(r), Some("billing-7"));
        assert_eq!(reply_id(b"{}"), None);
    }
}
