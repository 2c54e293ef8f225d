//! [`Servers`]: the fresh `nats-server` and `etcd` of one run, and connections to them.

use std::time::Duration;

use futures::StreamExt;

use herald_shared::{EtcdConfig, NatsConfig};
use herald_testkit::{EtcdServer, NatsServer};

/// Connections opened at once by [`Servers::connect_many`].
const CONNECTS_AT_ONCE: usize = 32;

/// The servers of one run; killed (and their temp dirs removed) when dropped.
#[derive(Debug)]
pub struct Servers {
    /// The run's `nats-server`.
    pub nats: NatsServer,
    /// The run's single-member etcd.
    pub etcd: EtcdServer,
}

impl Servers {
    /// Starts both, on free loopback ports.
    pub async fn start() -> Servers {
        let (nats, etcd) = tokio::join!(NatsServer::start(), EtcdServer::start());
        Servers { nats, etcd }
    }

    /// A new NATS connection.
    pub async fn nats_client(&self) -> async_nats::Client {
        NatsConfig::new([self.nats.url()])
            .connect()
            .await
            .expect("NATS connects")
            .0
    }

    /// A new etcd client (one gRPC channel; each call bounded by 5 s).
    pub async fn etcd_client(&self) -> etcd_client::Client {
        EtcdConfig::new([self.etcd.endpoint()])
            .connect()
            .await
            .expect("etcd connects")
    }

    /// `n` connections made by `connect`, a few at a time (thousands of simulated processes
    /// connect in seconds rather than one after another).
    pub async fn connect_many<T, F, Fut>(n: usize, connect: F) -> Vec<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        futures::stream::iter(0..n)
            .map(|_| connect())
            .buffered(CONNECTS_AT_ONCE)
            .collect()
            .await
    }

    /// The port of etcd's plain-HTTP metrics listener.
    pub fn etcd_metrics_port(&self) -> u16 {
        let url = self.etcd.metrics_url();
        url.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("metrics URL ends with a port")
    }

    /// The TTL etcd grants when asked for `ttl`: its minimum lease TTL is 1.5 election
    /// timeouts rounded up to whole seconds, so a short request may come back longer.
    pub async fn granted_lease_ttl(&self, ttl: Duration) -> Duration {
        let mut etcd = self.etcd_client().await;
        let grant = etcd
            .lease_grant(ttl.as_secs() as i64, None)
            .await
            .expect("lease granted");
        let _ = etcd.lease_revoke(grant.id()).await;
        Duration::from_secs(grant.ttl().max(0) as u64)
    }
}
