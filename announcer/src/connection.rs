//! [`Connection`]: one NATS connection shared by the announcers of a process, and the one
//! scheduler that times and publishes all their tokens (see `scheduler`).
//!
//! The connection owns its scheduler: announcers on the same `Connection` share one task,
//! one heap of turns, one reconnect poller and one subscription per probe subject, however
//! many they are. The scheduler starts with the first announcer and stops once the
//! `Connection` and every announcer on it are gone.

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::scheduler::Scheduler;

/// One NATS connection shared by the announcers of a process.
///
/// Wrap the application's client once, and give the `Connection` to every announcer with
/// [`AnnouncerBuilder::connection`](crate::AnnouncerBuilder::connection): one task then sends
/// the tokens of all of them. A `Connection` is a cheap handle (clone it freely); the
/// announcers never close the client.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use herald_announcer::{Announcer, Connection};
///
/// let nats = Connection::new(async_nats::connect("nats://127.0.0.1:4222").await?);
/// let mut announcers = Vec::new();
/// for port in 9000..9010 {
///     let announcer = Announcer::builder("shard", format!("10.0.0.7:{port}"))
///         .connection(&nats)
///         .start()
///         .await?;
///     announcers.push(announcer);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    /// Started by the first announcer (it needs the runtime), and again if its task ended.
    scheduler: Mutex<Option<Arc<Scheduler>>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.inner.client.server_info().server_name)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Shares `client` among the announcers given this connection.
    pub fn new(client: async_nats::Client) -> Connection {
        Connection {
            inner: Arc::new(Inner {
                client,
                scheduler: Mutex::new(None),
            }),
        }
    }

    /// The client the announcers publish on.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The connection's scheduler, started if none runs.
    pub(crate) fn scheduler(&self) -> Arc<Scheduler> {
        let mut slot = self
            .inner
            .scheduler
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(live) if live.is_running() => live.clone(),
            _ => slot.insert(Scheduler::spawn(&self.inner.client)).clone(),
        }
    }
}
