//! Noticing NATS reconnects: one poller per connection, shared by every announcer on it.
//!
//! A reconnect is read from the connection's counter (`Client::statistics().connects`), which
//! works the same for a client the announcer built and for one it was given, and cannot lag or
//! overflow as an event channel can. Beside it the poller reads which server connection
//! carries the tokens (`{server_id}/{client_id}` from the server's INFO, the token's `conn`),
//! which changes with every reconnect. Reading them every [`RECONNECT_POLL`] in each announcer
//! would wake thousands of tasks 20 times a second in a process that announces thousands of
//! instances on one connection; one poller task per connection reads them instead and
//! publishes them on a watch channel that every announcer on that connection awaits.
//!
//! The poller also says, once per outage and under [`CONNECTION_LOG`], when the connection is
//! lost and when it is back.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::Client;
use async_nats::connection::State;
use herald_shared::CONNECTION_LOG;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// How often a connection's counter is read: small next to the reconnect backoff.
pub(crate) const RECONNECT_POLL: Duration = Duration::from_millis(50);

/// What the poller reports of its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    /// How many times the client has connected (1 after the first connect).
    pub(crate) connects: u64,
    /// The server connection that carries the tokens, `{server_id}/{client_id}`; `None`
    /// before the first connect.
    pub(crate) conn: Option<Arc<str>>,
}

impl Link {
    fn read(client: &Client) -> Link {
        let connects = client.statistics().connects.load(Ordering::Relaxed);
        let info = client.server_info();
        let conn = (!info.server_id.is_empty()).then(|| {
            Arc::from(herald_shared::token::connection_name(
                &info.server_id,
                info.client_id,
            ))
        });
        Link { connects, conn }
    }
}

/// The poller of one connection; it stops when the last announcer on the connection drops it.
#[derive(Debug)]
pub(crate) struct Poller {
    link: watch::Receiver<Link>,
    task: JoinHandle<()>,
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Poller {
    /// The connection's connect count and server connection as they change.
    pub(crate) fn link(&self) -> watch::Receiver<Link> {
        self.link.clone()
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
    let (tx, link) = watch::channel(Link::read(client));
    // The task holds a clone of the client, not the statistics alone: the entry's key stays
    // the live connection's, and the poller reads its INFO.
    let task = tokio::spawn(poll(client.clone(), tx));
    let poller = Arc::new(Poller { link, task });
    pollers.insert(key, Arc::downgrade(&poller));
    poller
}

async fn poll(client: Client, tx: watch::Sender<Link>) {
    let mut tick = tokio::time::interval(RECONNECT_POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut outage = Outage::default();
    loop {
        tick.tick().await;
        outage.follow(client.connection_state());
        let now = Link::read(&client);
        tx.send_if_modified(|seen| {
            let newer = now.connects > seen.connects || now.conn != seen.conn;
            if newer {
                *seen = now;
            }
            newer
        });
    }
}

/// Says once when the connection is lost, and once when it is back with how long it was down.
#[derive(Debug, Default)]
struct Outage {
    connected_once: bool,
    down_since: Option<Instant>,
}

impl Outage {
    fn follow(&mut self, state: State) {
        match (state, self.down_since) {
            (State::Connected, None) => self.connected_once = true,
            (State::Connected, Some(since)) => {
                let down = since.elapsed();
                tracing::info!(
                    target: CONNECTION_LOG,
                    down_ms = down.as_millis() as u64,
                    "nats reconnected after {:.1} s: tokens flow again",
                    down.as_secs_f64()
                );
                self.down_since = None;
            }
            (State::Disconnected | State::Pending, None) if self.connected_once => {
                tracing::warn!(
                    target: CONNECTION_LOG,
                    "nats connection lost: tokens wait until it is back"
                );
                self.down_since = Some(Instant::now());
            }
            _ => {}
        }
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
