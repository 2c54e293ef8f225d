//! Probe subscriptions shared by the announcers of one NATS connection: one subscription per
//! probe subject (a service's own, and the probe-all subject) per connection, however many
//! announcers on it listen.
//!
//! A process that announces thousands of instances on one connection would otherwise hold two
//! subscriptions per instance in nats-server, and a probe of every service would be delivered
//! once per instance. Here each subject's one subscription is read by one task, which bumps a
//! counter on a watch channel; every announcer of that subject awaits the channel. Probes are
//! coalesced by each announcer's schedule anyway, so a counter loses nothing an announcer needs.
//! The subscription ends (and is unsubscribed) when its last announcer drops it.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use async_nats::{Client, Statistics, SubscribeError};
use futures::StreamExt;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// One subject's subscription on one connection, and the task that reads it.
#[derive(Debug)]
struct SubjectFeed {
    probes: watch::Receiver<u64>,
    task: JoinHandle<()>,
    /// Keeps the connection's statistics, whose address keys the registry, alive.
    _connection: Arc<Statistics>,
}

impl Drop for SubjectFeed {
    fn drop(&mut self) {
        // Dropping the task's subscriber unsubscribes it.
        self.task.abort();
    }
}

/// Live feeds by connection (the address of its statistics) and subject. An async lock: the
/// first announcer of a subject subscribes while holding it, so that a second one waits and
/// shares the subscription rather than making its own.
static FEEDS: Mutex<Option<Registry>> = Mutex::const_new(None);

/// Feeds by `(connection, subject)`.
type Registry = HashMap<(usize, String), Weak<SubjectFeed>>;

async fn feed(client: &Client, subject: String) -> Result<Arc<SubjectFeed>, SubscribeError> {
    let connection = client.statistics();
    let key = (Arc::as_ptr(&connection) as usize, subject);
    let mut feeds = FEEDS.lock().await;
    let feeds = feeds.get_or_insert_with(HashMap::new);
    if let Some(live) = feeds.get(&key).and_then(Weak::upgrade)
        && !live.task.is_finished()
    {
        return Ok(live);
    }
    feeds.retain(|_, f| f.strong_count() > 0);
    let mut subscriber = client.subscribe(key.1.clone()).await?;
    let (tx, probes) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        while subscriber.next().await.is_some() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    });
    let feed = Arc::new(SubjectFeed {
        probes,
        task,
        _connection: connection,
    });
    feeds.insert(key, Arc::downgrade(&feed));
    Ok(feed)
}

/// The probes one announcer answers: its service's and the probe-all subject's.
#[derive(Debug)]
pub(crate) struct ProbeFeed {
    service: watch::Receiver<u64>,
    all: watch::Receiver<u64>,
    _feeds: [Arc<SubjectFeed>; 2],
}

impl ProbeFeed {
    /// The feeds of `service_subject` and `all_subject` on `client`'s connection, subscribed
    /// if no announcer on it has them yet. The caller confirms the subscriptions on the server.
    pub(crate) async fn new(
        client: &Client,
        service_subject: String,
        all_subject: String,
    ) -> Result<ProbeFeed, SubscribeError> {
        let service = feed(client, service_subject).await?;
        let all = feed(client, all_subject).await?;
        let mut feed = ProbeFeed {
            service: service.probes.clone(),
            all: all.probes.clone(),
            _feeds: [service, all],
        };
        // Only probes from now on.
        feed.service.mark_unchanged();
        feed.all.mark_unchanged();
        Ok(feed)
    }

    /// Resolves at the next probe on either subject; `false` once both subscriptions ended
    /// (the connection is gone).
    pub(crate) async fn next(&mut self) -> bool {
        tokio::select! {
            changed = self.service.changed() => changed.is_ok() || self.all.changed().await.is_ok(),
            changed = self.all.changed() => changed.is_ok() || self.service.changed().await.is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn announcers_on_one_connection_share_each_probe_subscription() {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("127.0.0.1:1")
            .await
            .expect("a client that keeps trying to connect");
        let a = ProbeFeed::new(&client, "h.probe.a".into(), "h.probe".into())
            .await
            .unwrap();
        let b = ProbeFeed::new(&client, "h.probe.b".into(), "h.probe".into())
            .await
            .unwrap();
        let a2 = ProbeFeed::new(&client, "h.probe.a".into(), "h.probe".into())
            .await
            .unwrap();
        assert!(
            Arc::ptr_eq(&a._feeds[0], &a2._feeds[0]),
            "service a: one subscription"
        );
        assert!(
            !Arc::ptr_eq(&a._feeds[0], &b._feeds[0]),
            "service b: its own"
        );
        assert!(
            Arc::ptr_eq(&a._feeds[1], &b._feeds[1]),
            "the probe-all subject: one subscription for all"
        );
        let service_a = a._feeds[0].task.abort_handle();
        drop(a);
        assert!(!service_a.is_finished(), "a2 still listens");
        drop(a2);
        for _ in 0..200 {
            if service_a.is_finished() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(
            service_a.is_finished(),
            "the last listener ends the subscription"
        );
    }
}
