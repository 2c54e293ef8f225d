//! A multi-member `etcd` cluster on loopback bootstrapped with one shared `--initial-cluster`,
//! per-member kill and restart, and finding the leader from each member's
//! `/v3/maintenance/status`.

use std::time::{Duration, Instant};

use crate::etcd::{EtcdServer, READY_TIMEOUT, new_cluster_token};
use crate::ports::free_port;

/// `n` etcd members forming one cluster; all killed on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdServer>,
    /// Member ids by index (stable across restarts on the same data dir).
    ids: Vec<u64>,
}

impl EtcdCluster {
    /// Starts `n` members (names `m0`, `m1`, ...), waits until each is healthy and all agree on
    /// a leader. Panics, quoting the logs, after 30 s.
    pub async fn start(n: usize) -> EtcdCluster {
        assert!(n >= 1, "a cluster needs at least one member");
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer, _))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let token = new_cluster_token();
        let mut members: Vec<EtcdServer> = ports
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let mut m = EtcdServer::new(format!("m{i}"), None);
                m.set_member(p, &initial_cluster, &token);
                m
            })
            .collect();
        // All members must run before any can be healthy: health needs a quorum.
        let mut offsets = Vec::with_capacity(n);
        for m in &mut members {
            match m.spawn() {
                Ok(offset) => offsets.push(offset),
                Err(e) => panic!("{}", e.message()),
            }
        }
        for (m, offset) in members.iter_mut().zip(offsets) {
            if let Err(e) = m.wait_ready(offset).await {
                panic!("{}", e.message());
            }
        }
        let mut ids = Vec::with_capacity(n);
        for m in &members {
            let status = m.status().await;
            let Some(status) = status else {
                panic!(
                    "etcd {} answers no status; log:\n{}",
                    m.name(),
                    m.log_tail()
                );
            };
            ids.push(status.member_id);
        }
        let cluster = EtcdCluster { members, ids };
        let leader = cluster.wait_for_leader().await;
        tracing::info!(endpoints = ?cluster.endpoints(), leader, "etcd cluster formed");
        cluster
    }

    /// The client URLs of all members (running or not), in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::endpoint).collect()
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never, once started).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `i`.
    pub fn member(&self, i: usize) -> &EtcdServer {
        &self.members[i]
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Stops member `i` gracefully (SIGTERM, SIGKILL after 5 s).
    pub async fn stop(&mut self, i: usize) {
        self.members[i].stop().await;
    }

    /// Restarts member `i` on its ports and data dir; it rejoins from its WAL. Waits until it
    /// is healthy, which needs a quorum of running members.
    pub async fn restart(&mut self, i: usize) {
        self.members[i].restart().await;
    }

    /// The index of the leader, if a majority of members answer and all that answer agree on
    /// one running leader.
    pub async fn leader_index(&self) -> Option<usize> {
        let mut answers = 0;
        let mut leader = None;
        for m in &self.members {
            let Some(status) = m.status().await else {
                continue;
            };
            answers += 1;
            if status.leader == 0 || leader.is_some_and(|l| l != status.leader) {
                return None;
            }
            leader = Some(status.leader);
        }
        if answers <= self.members.len() / 2 {
            return None;
        }
        let index = self.ids.iter().position(|&id| Some(id) == leader)?;
        self.members[index].is_running().then_some(index)
    }

    /// Waits until [`EtcdCluster::leader_index`] finds a leader and returns it. Panics, quoting
    /// the logs, after 30 s.
    pub async fn wait_for_leader(&self) -> usize {
        let started = Instant::now();
        loop {
            if let Some(i) = self.leader_index().await {
                tracing::debug!(elapsed = ?started.elapsed(), leader = i, "etcd leader found");
                return i;
            }
            if started.elapsed() >= READY_TIMEOUT {
                let logs: String = self
                    .members
                    .iter()
                    .map(|m| format!("--- {} ---\n{}\n", m.name(), m.log_tail()))
                    .collect();
                panic!("no etcd leader after {READY_TIMEOUT:?}\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
