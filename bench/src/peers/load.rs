//! Load on the servers over a window: [`LoadSample`] reads etcd's request counters, NATS's
//! message counters and the CPU time of etcd, nats-server and this process; [`Load`] is the
//! rate between two samples.

use std::time::Instant;

use crate::metrics::{EtcdMetrics, NatsVarz};
use crate::peers::servers::Servers;
use crate::process::CpuSample;

/// The counters at one moment.
#[derive(Debug, Clone)]
pub struct LoadSample {
    at: Instant,
    etcd: EtcdMetrics,
    nats_msgs: u64,
    cpu: CpuSample,
    machine: Option<std::time::Duration>,
}

/// Rates between two samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// Length of the window, seconds.
    pub seconds: f64,
    /// etcd requests per second: handled calls plus messages on streams.
    pub etcd_requests: f64,
    /// Of which lease keep-alives per second.
    pub keep_alives: f64,
    /// Leases revoked (by a client or by expiry) in the window.
    pub leases_revoked: f64,
    /// etcd's CPU, in cores.
    pub etcd_cpu: f64,
    /// NATS messages per second, in plus out.
    pub nats_msgs: f64,
    /// nats-server's CPU, in cores.
    pub nats_cpu: f64,
    /// This process's CPU (instances and consumer), in cores.
    pub harness_cpu: f64,
    /// CPU used by everything else on the machine, in cores: what other work took from this
    /// run.
    pub other_cpu: f64,
}

impl LoadSample {
    /// Reads every counter now. Panics when a server's endpoint does not answer.
    pub async fn take(servers: &Servers) -> LoadSample {
        let (etcd, varz) = tokio::join!(
            EtcdMetrics::read(&servers.etcd),
            NatsVarz::read(&servers.nats)
        );
        let varz = varz.expect("nats /varz answers");
        LoadSample {
            at: Instant::now(),
            etcd: etcd.expect("etcd /metrics answers"),
            nats_msgs: varz.in_msgs + varz.out_msgs,
            cpu: CpuSample::take(&[servers.etcd.pid(), servers.nats.pid(), None]),
            machine: crate::process::machine_busy(),
        }
    }
}

impl Load {
    /// Rates from `before` to `after`.
    pub fn between(before: &LoadSample, after: &LoadSample) -> Load {
        let seconds = after.at.duration_since(before.at).as_secs_f64();
        let rate = |d: f64| if seconds > 0.0 { d / seconds } else { f64::NAN };
        let cores = after.cpu.cores_since(&before.cpu);
        Load {
            seconds,
            etcd_requests: rate(after.etcd.requests() - before.etcd.requests()),
            keep_alives: rate(after.etcd.keep_alives - before.etcd.keep_alives),
            leases_revoked: after.etcd.leases_revoked - before.etcd.leases_revoked,
            etcd_cpu: cores[0],
            nats_msgs: rate(after.nats_msgs.saturating_sub(before.nats_msgs) as f64),
            nats_cpu: cores[1],
            harness_cpu: cores[2],
            other_cpu: match (after.machine, before.machine) {
                (Some(a), Some(b)) if seconds > 0.0 => {
                    (a.saturating_sub(b).as_secs_f64() / seconds - cores.iter().sum::<f64>())
                        .max(0.0)
                }
                _ => f64::NAN,
            },
        }
    }
}
