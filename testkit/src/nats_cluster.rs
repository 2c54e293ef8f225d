//! A cluster of `nats-server` processes on loopback, each routed to all the others, and the
//! wait until every member reports a route to every other (monitoring `/routez`).

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::http;
use crate::nats::{NatsBuilder, NatsRoutes, NatsServer};
use crate::ports::free_port;

/// How long the routes may take to form.
const ROUTES_TIMEOUT: Duration = Duration::from_secs(30);

/// `n` routed `nats-server`s; all killed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` servers, each with routes to all the others, and waits until every route is
    /// up (panics after 30 s, quoting the logs).
    pub async fn start(n: usize) -> NatsCluster {
        NatsCluster::start_with(n, |b| b).await
    }

    /// As [`start`](NatsCluster::start), each member's options first passed through
    /// `configure` (e.g. [`NatsBuilder::advisories`]).
    pub async fn start_with(
        n: usize,
        configure: impl Fn(NatsBuilder) -> NatsBuilder,
    ) -> NatsCluster {
        assert!(n >= 1, "a cluster needs at least one server");
        let name = format!("herald-test-{}", free_port());
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut nodes = Vec::with_capacity(n);
        for (i, &port) in cluster_ports.iter().enumerate() {
            let routes = cluster_ports
                .iter()
                .filter(|&&p| p != port)
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            let node = configure(NatsServer::builder())
                .name(format!("n{i}"))
                .cluster(NatsRoutes {
                    name: name.clone(),
                    port,
                    routes,
                })
                .start()
                .await;
            nodes.push(node);
        }
        let cluster = NatsCluster { nodes };
        cluster.wait_for_routes().await;
        tracing::info!(urls = ?cluster.urls(), "nats cluster formed");
        cluster
    }

    /// The client URLs of all members, in member order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no members (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Member `i`, to kill, stop or restart it.
    pub fn node(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// All members.
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Waits until every running member has a route to every other running member (for
    /// instance after a restart). Panics after 30 s.
    pub async fn wait_for_routes(&self) {
        let started = Instant::now();
        loop {
            if self.routes_complete().await {
                tracing::debug!(elapsed = ?started.elapsed(), "nats routes complete");
                return;
            }
            if started.elapsed() >= ROUTES_TIMEOUT {
                let logs: String = self
                    .nodes
                    .iter()
                    .map(|n| format!("--- {} ---\n{}\n", n.url(), n.log_tail()))
                    .collect();
                panic!("nats routes not complete after {ROUTES_TIMEOUT:?}\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn routes_complete(&self) -> bool {
        let running: Vec<&NatsServer> = self.nodes.iter().filter(|n| n.is_running()).collect();
        let mut ids = Vec::with_capacity(running.len());
        for node in &running {
            let Ok(varz) = http::get(node.monitor_port(), "/varz").await else {
                return false;
            };
            let Ok(varz) = varz.json::<Varz>() else {
                return false;
            };
            ids.push(varz.server_id);
        }
        for (node, own_id) in running.iter().zip(&ids) {
            let Ok(routez) = http::get(node.monitor_port(), "/routez").await else {
                return false;
            };
            let Ok(routez) = routez.json::<Routez>() else {
                return false;
            };
            if routez.num_routes != running.len() - 1 {
                return false;
            }
            let sees_all = ids
                .iter()
                .filter(|id| *id != own_id)
                .all(|id| routez.routes.iter().any(|r| r.remote_id == *id));
            if !sees_all {
                return false;
            }
        }
        true
    }
}

/// The part of monitoring's `/varz` the wait reads.
#[derive(Deserialize)]
struct Varz {
    server_id: String,
}

/// The part of monitoring's `/routez` the wait reads.
#[derive(Deserialize)]
struct Routez {
    num_routes: usize,
    #[serde(default)]
    routes: Vec<Route>,
}

#[derive(Deserialize)]
struct Route {
    remote_id: String,
}
