//! Noticing NATS reconnects: one poller per connection, shared by every announcer on it.
//!
//! A reconnect is read from the connection's counter (`Client::statistics().connects`), which
//! works the same for a client the announcer built and for one it was given, and cannot lag or
//! overflow as an event channel can. Reading it every [`RECONNECT_POLL`] in each announcer would
//! wake thousands of tasks 20 times a second in a process that announces thousands of
//! instances on one connection; one poller task per connection reads it instead and publishes
//! the count on a watch channel that every announcer on that connection awaits.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::{Client, Statistics};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// How often a connection's counter is read: small next to the reconnect backoff.
pub(crate) const RECONNECT_POLL: Duration = Duration::from_millis(50);

/// The poller of one connection; it stops when the last announcer on the connection drops it.
#[derive(Debug)]
pub(crate) struct Poller {
    connects: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Poller {
    /// The connection's connect count as it changes.
    pub(crate) fn connects(&self) -> watch::Receiver<u64> {
        self.connects.clone()
    }
}

/// Live pollers, by the address of their connection's statistics (which the poller holds, so
/// the address cannot be reused while the entry lives).
static POLLERS: Mutex<Option<HashMap<usize, Weak<Poller>>>> = Mutex::new(None);

/// The poller of `client`'s connection, started if none runs.
pub(crate) fn poller(client: &Client) -> Arc<Poller> {
    let stats = client.statistics();
    let key = Arc::as_ptr(&stats) as usize;
    let mut pollers = POLLERS.lock().unwrap_or_else(|e| e.into_inner());
    let pollers = pollers.get_or_insert_with(HashMap::new);
    if let Some(live) = pollers.get(&key).and_then(Weak::upgrade)
        && !live.task.is_finished()
    {
        return live;
    }
    pollers.retain(|_, p| p.strong_count() > 0);
    let (tx, connects) = watch::channel(stats.connects.load(Ordering::Relaxed));
    let task = tokio::spawn(poll(stats, tx));
    let poller = Arc::new(Poller { connects, task });
    pollers.insert(key, Arc::downgrade(&poller));
    poller
}

async fn poll(stats: Arc<Statistics>, tx: watch::Sender<u64>) {
    let mut tick = tokio::time::interval(RECONNECT_POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = stats.connects.load(Ordering::Relaxed);
        tx.send_if_modified(|seen| {
            let newer = now > *seen;
            if newer {
                *seen = now;
            }
            newer
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn announcers_on_one_connection_share_one_poller() {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("127.0.0.1:1")
            .await
            .expect("a client that keeps trying to connect");
        let a = poller(&client);
        let b = poller(&client.clone());
        assert!(Arc::ptr_eq(&a, &b), "one poller per connection");
        let other = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("127.0.0.1:1")
            .await
            .unwrap();
        assert!(
            !Arc::ptr_eq(&a, &poller(&other)),
            "another connection, another poller"
        );
        let task_done = {
            drop(b);
            a.task.abort_handle()
        };
        drop(a);
        for _ in 0..200 {
            if task_done.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            task_done.is_finished(),
            "the last announcer stops the poller"
        );
        assert!(
            !Arc::ptr_eq(&poller(&other), &poller(&client)),
            "and a new one starts on demand"
        );
    }
}
