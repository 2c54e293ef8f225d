//! [`Servers`]: the fresh `nats-server` and `etcd` of one run, and [`Endpoints`]: where they
//! listen, and connections to them (from this process or from a host process).

use std::time::Duration;

use futures::StreamExt;

use herald_shared::{EtcdConfig, NatsConfig};
use herald_testkit::{EtcdServer, NatsBuilder, NatsServer};

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

/// Where a run's servers listen: all a process needs to connect to them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoints {
    /// The NATS URL.
    pub nats: String,
    /// The etcd endpoint.
    pub etcd: String,
}

impl Endpoints {
    /// A new NATS connection.
    pub async fn nats_client(&self) -> async_nats::Client {
        NatsConfig::new([self.nats.clone()])
            .connect()
            .await
            .expect("NATS connects")
            .0
    }

    /// A new etcd client (one gRPC channel; each call bounded by 5 s).
    pub async fn etcd_client(&self) -> etcd_client::Client {
        EtcdConfig::new([self.etcd.clone()])
            .connect()
            .await
            .expect("etcd connects")
    }
}

impl Servers {
    /// Starts both, on free loopback ports.
    pub async fn start() -> Servers {
        Servers::start_with(NatsServer::builder()).await
    }

    /// Starts both, nats-server with the options of `nats` (such as
    /// [`NatsBuilder::advisories`]).
    pub async fn start_with(nats: NatsBuilder) -> Servers {
        let (nats, etcd) = tokio::join!(nats.start(), EtcdServer::start());
        Servers { nats, etcd }
    }

    /// Where both listen.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            nats: self.nats.url(),
            etcd: self.etcd.endpoint(),
        }
    }

    /// A new NATS connection.
    pub async fn nats_client(&self) -> async_nats::Client {
        self.endpoints().nats_client().await
    }

    /// A new etcd client (one gRPC channel; each call bounded by 5 s).
    pub async fn etcd_client(&self) -> etcd_client::Client {
        self.endpoints().etcd_client().await
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
