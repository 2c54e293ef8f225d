//! Probe subscriptions shared by the announcers of one NATS connection: one subscription per
//! probe subject (a service's own, and the probe-all subject) per connection, however many
//! announcers on it listen.
//!
//! A process that announces thousands of instances on one connection would otherwise hold two
//! subscriptions per instance in nats-server, and a probe of every service would be delivered
//! once per instance. Here each subject's one subscription is read by one task, which tells the
//! connection's scheduler that the subject was probed; the scheduler has every announcer of that
//! subject answer. Probes are coalesced by each announcer's schedule anyway, so the reader
//! tells the scheduler once until it has read the news, however many probes come meanwhile.
//! The subscription ends (and is unsubscribed) when its last announcer drops it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use async_nats::{Client, SubscribeError};
use futures::StreamExt;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

/// A subject that was probed, as its reader tells the scheduler.
#[derive(Debug)]
pub(crate) struct Probed {
    pub(crate) subject: Arc<str>,
    /// Set while the scheduler has not read this news yet.
    unread: AtomicBool,
}

impl Probed {
    /// The scheduler has read the news: the next probe tells it again.
    pub(crate) fn read(&self) {
        self.unread.store(false, Ordering::Release);
    }
}

/// One subject's subscription on the connection, and the task that reads it.
#[derive(Debug)]
pub(crate) struct SubjectFeed {
    subject: Arc<str>,
    task: JoinHandle<()>,
    /// Stops the task, which unsubscribes, when the last announcer of the subject is gone.
    _stop: DropGuard,
}

/// The live feeds of one connection, by subject. An async lock: the first announcer of a
/// subject subscribes while holding it, so that a second one waits and shares the
/// subscription rather than making its own.
#[derive(Debug)]
pub(crate) struct ProbeFeeds {
    feeds: Mutex<HashMap<Arc<str>, Weak<SubjectFeed>>>,
    probed: mpsc::UnboundedSender<Arc<Probed>>,
}

impl ProbeFeeds {
    /// Feeds whose readers tell `probed`.
    pub(crate) fn new(probed: mpsc::UnboundedSender<Arc<Probed>>) -> Self {
        ProbeFeeds {
            feeds: Mutex::new(HashMap::new()),
            probed,
        }
    }

    /// The feeds of `service_subject` and `all_subject` on `client`'s connection, subscribed
    /// if no announcer on it has them yet; the flag says whether a subscription was made, which
    /// the caller then confirms on the server.
    pub(crate) async fn join(
        &self,
        client: &Client,
        service_subject: String,
        all_subject: String,
    ) -> Result<(ProbeFeed, bool), SubscribeError> {
        let (service, new_service) = self.feed(client, service_subject).await?;
        let (all, new_all) = self.feed(client, all_subject).await?;
        Ok((ProbeFeed([service, all]), new_service || new_all))
    }

    async fn feed(
        &self,
        client: &Client,
        subject: String,
    ) -> Result<(Arc<SubjectFeed>, bool), SubscribeError> {
        let mut feeds = self.feeds.lock().await;
        if let Some(live) = feeds.get(subject.as_str()).and_then(Weak::upgrade)
            && !live.task.is_finished()
        {
            return Ok((live, false));
        }
        feeds.retain(|_, f| f.strong_count() > 0);
        let mut subscriber = client.subscribe(subject.clone()).await?;
        let subject: Arc<str> = subject.into();
        let news = Arc::new(Probed {
            subject: subject.clone(),
            unread: AtomicBool::new(false),
        });
        let probed = self.probed.clone();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                let probe = tokio::select! {
                    () = stopped.cancelled() => break,
                    probe = subscriber.next() => probe,
                };
                if probe.is_none() {
                    return;
                }
                if !news.unread.swap(true, Ordering::AcqRel) && probed.send(news.clone()).is_err() {
                    break;
                }
            }
            let _ = subscriber.unsubscribe().await;
        });
        let feed = Arc::new(SubjectFeed {
            subject: subject.clone(),
            task,
            _stop: stop.drop_guard(),
        });
        feeds.insert(subject, Arc::downgrade(&feed));
        Ok((feed, true))
    }
}

/// The subscriptions of the probes one announcer answers: its service's and the probe-all
/// subject's.
#[derive(Debug)]
pub(crate) struct ProbeFeed([Arc<SubjectFeed>; 2]);

impl ProbeFeed {
    /// The two subjects.
    pub(crate) fn subjects(&self) -> [&Arc<str>; 2] {
        [&self.0[0].subject, &self.0[1].subject]
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
        let feeds = ProbeFeeds::new(mpsc::unbounded_channel().0);
        let join =
            |service: &str| feeds.join(&client, format!("h.probe.{service}"), "h.probe".into());
        let (a, new_a) = join("a").await.unwrap();
        let (b, new_b) = join("b").await.unwrap();
        let (a2, new_a2) = join("a").await.unwrap();
        assert!(new_a && new_b, "each first subscription is new");
        assert!(!new_a2, "nothing to confirm for a shared one");
        assert!(
            Arc::ptr_eq(&a.0[0], &a2.0[0]),
            "service a: one subscription"
        );
        assert!(!Arc::ptr_eq(&a.0[0], &b.0[0]), "service b: its own");
        assert!(
            Arc::ptr_eq(&a.0[1], &b.0[1]),
            "the probe-all subject: one subscription for all"
        );
        let service_a = a.0[0].task.abort_handle();
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
