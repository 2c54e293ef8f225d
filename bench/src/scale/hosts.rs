//! The parent's side of the host processes: spawn them (guarded, so that they die with the
//! parent even on panic), read their report lines with the time each arrived, ask for their
//! counters, and stop them gracefully.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::child::Child;
use crate::scale::plan::Case;
use crate::scale::protocol::{HostArgs, HostOrder, HostStats, ReportLine};

/// The subcommand of `herald-bench` that runs a host.
pub const HOST_SUBCOMMAND: &str = "scale-host";

/// One host process.
type Host = Child<ReportLine>;

/// The next report of `host`, or why there is none (a `Failed` report is an error).
async fn next(host: &mut Host, deadline: Instant) -> Result<(Instant, ReportLine), String> {
    match host.next(deadline).await? {
        (_, ReportLine::Failed(why)) => Err(format!("host {} failed: {why}", host.pid())),
        report => Ok(report),
    }
}

/// What every host said when it was ready.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// From the spawn of the first host to the last `ready` line.
    pub all_ready: Duration,
    /// Longest time a host took from its first announcer start to its last.
    pub slowest_host: Duration,
    /// Announcers started, summed.
    pub instances: usize,
    /// RSS of the hosts before their announcers started, summed, bytes.
    pub base_rss: u64,
}

/// The host processes of a case.
#[derive(Debug)]
pub struct Hosts {
    hosts: Vec<Host>,
    spawned_at: Instant,
}

impl Hosts {
    /// Spawns `case.hosts` processes of `program` (through `nice -n NICE` unless `nice` is 0)
    /// against these servers. They start their announcers at once; [`Hosts::wait_ready`]
    /// waits for them.
    pub fn spawn(program: &Path, nice: i32, nats: &str, etcd: &[String], case: &Case) -> Hosts {
        let spawned_at = Instant::now();
        let hosts = (0..case.hosts)
            .map(|host| {
                let args = HostArgs {
                    nats: nats.to_owned(),
                    etcd: etcd.to_vec(),
                    host,
                    case: *case,
                };
                Child::spawn(program, nice, HOST_SUBCOMMAND, &args)
            })
            .collect();
        Hosts { hosts, spawned_at }
    }

    /// The hosts' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.hosts.iter().map(Child::pid).collect()
    }

    /// Waits until every host has said `ready`.
    ///
    /// # Errors
    ///
    /// A host that failed, exited, or was not ready within `timeout`.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Started, String> {
        let deadline = self.spawned_at + timeout;
        let mut started = Started {
            all_ready: Duration::ZERO,
            slowest_host: Duration::ZERO,
            instances: 0,
            base_rss: 0,
        };
        for host in &mut self.hosts {
            match next(host, deadline).await? {
                (
                    at,
                    ReportLine::Ready {
                        started: n,
                        millis,
                        base_rss,
                    },
                ) => {
                    started.all_ready = started.all_ready.max(at - self.spawned_at);
                    started.slowest_host = started.slowest_host.max(Duration::from_millis(millis));
                    started.instances += n;
                    started.base_rss += base_rss;
                }
                (_, other) => return Err(format!("expected ready, got {other:?}")),
            }
        }
        Ok(started)
    }

    /// Every host's counters now, summed.
    ///
    /// # Errors
    ///
    /// A host that did not answer within 5 s.
    pub async fn stats(&mut self) -> Result<HostStats, String> {
        for host in &mut self.hosts {
            host.send(&HostOrder::Stats)?;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut sum = HostStats::default();
        for host in &mut self.hosts {
            match next(host, deadline).await? {
                (_, ReportLine::Stats(s)) => {
                    sum.tokens += s.tokens;
                    sum.keep_alives += s.keep_alives;
                    sum.key_watches += s.key_watches;
                    sum.watch_streams += s.watch_streams;
                    sum.publish_errors += s.publish_errors;
                    sum.lease_losses += s.lease_losses;
                }
                (_, other) => return Err(format!("expected stats, got {other:?}")),
            }
        }
        Ok(sum)
    }

    /// Closes every host's stdin (each shuts its announcers down and closes its session),
    /// and waits for all of them to exit. Returns the time it took and the number of
    /// shutdown errors the hosts reported.
    ///
    /// # Errors
    ///
    /// A host that did not stop within `timeout` (it is then killed) or exited badly.
    pub async fn stop(&mut self, timeout: Duration) -> Result<(Duration, usize), String> {
        let began = Instant::now();
        for host in &mut self.hosts {
            host.close();
        }
        let deadline = began + timeout;
        let mut errors = 0;
        for host in &mut self.hosts {
            match next(host, deadline).await? {
                (_, ReportLine::Stopped { errors: e, .. }) => errors += e,
                (_, other) => return Err(format!("expected stopped, got {other:?}")),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match host.guard().wait_exit(left).await {
                Some(status) if status.success() => {}
                Some(status) => return Err(format!("host exited with {status}")),
                None => return Err(format!("host {} did not exit", host.pid())),
            }
        }
        Ok((began.elapsed(), errors))
    }
}
