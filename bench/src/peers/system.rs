//! [`System`]: what the harness asks of each discovery system (start its consumer, start an
//! instance, make one leave or crash), and [`Background`], a spawned consumer that stops on
//! request.

use std::future::Future;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::peers::observer::Observer;

/// One discovery system under test, with its clients already connected to the run's servers.
///
/// Instances of one system share this process's clients (one NATS client, one etcd client),
/// as the announcers of one process would.
pub trait System: Send + Sync + 'static {
    /// A running instance.
    type Instance: Send + 'static;

    /// Starts the consumer: from now on it reports every instance it lists or drops into
    /// `observer`. Returns once it is ready (snapshot read, subscriptions active).
    fn start_consumer(&self, observer: Observer) -> impl Future<Output = Background> + Send;

    /// Starts one instance of the bench's service with this id; returns once the system's own
    /// start call returned.
    fn start_instance(
        &self,
        id: String,
    ) -> impl Future<Output = Result<Self::Instance, String>> + Send;

    /// Stops an instance the way the system stops gracefully.
    fn leave(&self, instance: Self::Instance) -> impl Future<Output = ()> + Send;

    /// Stops an instance as a crash would: no goodbye, no revoke, its heartbeat just stops.
    fn crash(&self, instance: Self::Instance);

    /// Counters worth printing with the figures (lease losses, failed keep-alives, ...).
    fn notes(&self) -> Vec<(&'static str, u64)>;
}

/// A spawned consumer task and the signal that stops it.
#[derive(Debug)]
pub struct Background {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Background {
    /// Spawns `run`, which must return soon after its stop signal resolves.
    pub fn spawn<F, Fut>(run: F) -> Background
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        Background {
            stop,
            task: tokio::spawn(run(stopped)),
        }
    }

    /// Signals the task and waits for it to end.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The one service every instance of the bench belongs to.
pub const SERVICE: &str = "billing";
