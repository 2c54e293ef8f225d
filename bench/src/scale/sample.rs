//! Every counter of a case at one moment ([`Sample`]), and the rates between two samples
//! ([`Window`]): CPU of this process (the subscriber), etcd, nats-server and the hosts;
//! etcd's requests and keep-alives; NATS's messages and bytes; the subscriber's and the
//! hosts' own counters.

use std::time::Instant;

use herald_subscriber::Subscriber;
use herald_subscriber::{LATENCY_BUCKETS_MS, LatencyHistogram};
use herald_testkit::{EtcdServer, NatsServer};
use serde::{Deserialize, Serialize};

use crate::metrics::{EtcdMetrics, NatsVarz};
use crate::process::CpuSample;
use crate::process::syscalls;
use crate::scale::hosts::Hosts;
use crate::scale::protocol::HostStats;

/// The counters at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    /// This process, etcd, nats-server, then each host.
    cpu: CpuSample,
    /// etcd's figures.
    pub etcd: EtcdMetrics,
    nats: NatsVarz,
    sub: herald_subscriber::Stats,
    hosts: HostStats,
    /// Read and write calls of nats-server.
    nats_syscalls: (u64, u64),
}

impl Sample {
    /// Reads everything now.
    ///
    /// # Errors
    ///
    /// A server endpoint or a host that does not answer.
    pub async fn take(
        etcd: &EtcdServer,
        nats: &NatsServer,
        sub: &Subscriber,
        hosts: &mut Hosts,
    ) -> Result<Sample, String> {
        let mut pids = vec![None, etcd.pid(), nats.pid()];
        pids.extend(hosts.pids().into_iter().map(Some));
        let cpu = CpuSample::take(&pids);
        let nats_syscalls = nats
            .pid()
            .and_then(|p| syscalls(Some(p)))
            .unwrap_or_default();
        let sub_stats = sub.stats();
        let (metrics, varz) = tokio::join!(EtcdMetrics::read(etcd), NatsVarz::read(nats));
        Ok(Sample {
            at: Instant::now(),
            cpu,
            etcd: metrics.map_err(|e| format!("etcd /metrics: {e}"))?,
            nats: varz.map_err(|e| format!("nats /varz: {e}"))?,
            sub: sub_stats,
            hosts: hosts.stats().await?,
            nats_syscalls,
        })
    }
}

/// Rates over a window, per second unless named otherwise; CPU in cores (1.0 = one core
/// busy all the time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Length of the window, seconds.
    pub seconds: f64,
    /// This process: the subscriber (nothing else runs in it during the window).
    pub subscriber_cpu: f64,
    /// Tokens the subscriber accepted.
    pub accepted: f64,
    /// Messages the subscriber received on announce subjects.
    pub received: f64,
    /// Instances the subscriber removed in the window (any cause): 0 when it keeps up.
    pub removed: u64,
    /// Of which expired (no token within their TTL).
    pub expirations: u64,
    /// Probes the subscriber sent in the window (each makes every announcer answer).
    pub probes_sent: u64,
    /// Full etcd listings the subscriber made in the window.
    pub etcd_resyncs: u64,
    /// NATS reconnects of the subscriber in the window.
    pub reconnects: u64,
    /// Announce-to-visible latency of the window's tokens, median: the upper bound of its
    /// histogram bucket, milliseconds (`None` beyond the last bound).
    pub visible_p50_ms: Option<u64>,
    /// The same, 99th percentile.
    pub visible_p99_ms: Option<u64>,
    /// Tokens the subscriber counted lost (`seq` gaps) in the window.
    pub tokens_lost: u64,
    /// Slow-consumer events of the subscriber's connection in the window.
    pub slow_consumer_events: u64,
    /// etcd's CPU.
    pub etcd_cpu: f64,
    /// Lease keep-alive messages etcd received.
    pub keep_alives: f64,
    /// Leases etcd renewed.
    pub leases_renewed: f64,
    /// etcd requests: handled calls plus messages on streams.
    pub etcd_requests: f64,
    /// nats-server's CPU.
    pub nats_cpu: f64,
    /// Messages into nats-server.
    pub nats_in_msgs: f64,
    /// Messages out of nats-server.
    pub nats_out_msgs: f64,
    /// Payload bytes into nats-server.
    pub nats_in_bytes: f64,
    /// Payload bytes out of nats-server.
    pub nats_out_bytes: f64,
    /// Slow-consumer events on nats-server in the window.
    pub nats_slow_consumers: u64,
    /// nats-server's read system calls.
    pub nats_reads: f64,
    /// nats-server's write system calls.
    pub nats_writes: f64,
    /// The hosts' CPU, summed.
    pub hosts_cpu: f64,
    /// Tokens the hosts' announcers sent.
    pub host_tokens: f64,
    /// Keep-alives answered, as the hosts counted them.
    pub host_keep_alives: f64,
    /// Publish errors the hosts counted in the window.
    pub host_publish_errors: u64,
}

impl Window {
    /// Rates from `a` to `b`.
    pub fn between(a: &Sample, b: &Sample) -> Window {
        let seconds = b.at.duration_since(a.at).as_secs_f64();
        let rate = |d: f64| d / seconds;
        let count = |x: u64, y: u64| rate(y.saturating_sub(x) as f64);
        let cores = b.cpu.cores_since(&a.cpu);
        let removed = |s: &herald_subscriber::Stats| {
            s.expirations + s.goodbyes + s.deregistrations + s.fenced
        };
        Window {
            seconds,
            subscriber_cpu: cores[0],
            accepted: count(a.sub.accepted, b.sub.accepted),
            received: count(a.sub.received, b.sub.received),
            removed: removed(&b.sub) - removed(&a.sub),
            expirations: b.sub.expirations - a.sub.expirations,
            probes_sent: b.sub.probes_sent - a.sub.probes_sent,
            etcd_resyncs: b.sub.etcd_resyncs - a.sub.etcd_resyncs,
            reconnects: b.sub.reconnects - a.sub.reconnects,
            visible_p50_ms: latency_between(&a.sub.latency, &b.sub.latency, 0.50),
            visible_p99_ms: latency_between(&a.sub.latency, &b.sub.latency, 0.99),
            tokens_lost: b.sub.tokens_lost - a.sub.tokens_lost,
            slow_consumer_events: b.sub.slow_consumer_events - a.sub.slow_consumer_events,
            etcd_cpu: cores[1],
            keep_alives: rate(b.etcd.keep_alives - a.etcd.keep_alives),
            leases_renewed: rate(b.etcd.leases_renewed - a.etcd.leases_renewed),
            etcd_requests: rate(b.etcd.requests() - a.etcd.requests()),
            nats_cpu: cores[2],
            nats_in_msgs: count(a.nats.in_msgs, b.nats.in_msgs),
            nats_out_msgs: count(a.nats.out_msgs, b.nats.out_msgs),
            nats_in_bytes: count(a.nats.in_bytes, b.nats.in_bytes),
            nats_out_bytes: count(a.nats.out_bytes, b.nats.out_bytes),
            nats_slow_consumers: b.nats.slow_consumers - a.nats.slow_consumers,
            nats_reads: count(a.nats_syscalls.0, b.nats_syscalls.0),
            nats_writes: count(a.nats_syscalls.1, b.nats_syscalls.1),
            hosts_cpu: cores[3..].iter().sum(),
            host_tokens: count(a.hosts.tokens, b.hosts.tokens),
            host_keep_alives: count(a.hosts.keep_alives, b.hosts.keep_alives),
            host_publish_errors: b.hosts.publish_errors - a.hosts.publish_errors,
        }
    }
}

/// Quantile `q` of the latency histogram's growth from `a` to `b`.
fn latency_between(a: &LatencyHistogram, b: &LatencyHistogram, q: f64) -> Option<u64> {
    let counts: Vec<u64> = b
        .counts
        .iter()
        .zip(&a.counts)
        .map(|(later, earlier)| later - earlier)
        .collect();
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return LATENCY_BUCKETS_MS.get(i).copied();
        }
    }
    None
}
