//! Noticing NATS reconnects: one poller per connection, owned by the connection's scheduler
//! and shared by every announcer on it.
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

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::Client;
use async_nats::connection::State;
use herald_shared::CONNECTION_LOG;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, DropGuard};

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

/// The poller of one connection, owned by its scheduler; it stops when dropped.
#[derive(Debug)]
pub(crate) struct Poller {
    link: watch::Receiver<Link>,
    _stop: DropGuard,
}

impl Poller {
    /// Starts polling `client`'s connection.
    pub(crate) fn spawn(client: &Client) -> Poller {
        let (tx, link) = watch::channel(Link::read(client));
        let stop = CancellationToken::new();
        tokio::spawn(poll(client.clone(), tx, stop.clone()));
        Poller {
            link,
            _stop: stop.drop_guard(),
        }
    }

    /// The connection's connect count and server connection as they change.
    pub(crate) fn link(&self) -> watch::Receiver<Link> {
        self.link.clone()
    }
}

async fn poll(client: Client, tx: watch::Sender<Link>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(RECONNECT_POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut outage = Outage::default();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
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
    async fn a_dropped_poller_stops_its_task() {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("127.0.0.1:1")
            .await
            .expect("a client that keeps trying to connect");
        let poller = Poller::spawn(&client);
        let mut link = poller.link();
        drop(poller);
        // The task owns the sending side: it is dropped when the task ends.
        let ended = tokio::time::timeout(Duration::from_secs(5), link.changed()).await;
        assert!(
            matches!(ended, Ok(Err(_))),
            "the dropped poller's task still runs"
        );
    }
}
