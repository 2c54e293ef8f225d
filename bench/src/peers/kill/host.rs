//! A host process (`herald-bench kill-host`): a few instances of one system in a process of
//! their own, on one NATS connection (and one etcd client for Herald), as the instances of a
//! real process would be. Killing it is the crash.
//!
//! It says `ready N` on stdout once its N instances have started (or `failed WHY`), then
//! holds them until its stdin closes, and exits without any goodbye.

use std::io::{BufRead, Write};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;

use crate::peers::herald::Herald;
use crate::peers::polling::Polling;
use crate::peers::scenario::instance_id;
use crate::peers::servers::Endpoints;
use crate::peers::settings::Timing;
use crate::peers::system::System;

/// Instances a host starts at once.
const START_AT_ONCE: usize = 16;

/// Which system's instances a host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostSystem {
    /// Herald announcers, each with its own etcd lease, on the host's shared clients.
    Herald,
    /// Instances answering the poller's PINGs.
    Polling,
}

/// A host's command line, written by the parent and read by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostArgs {
    /// The system.
    pub system: HostSystem,
    /// Where the servers are.
    pub endpoints: Endpoints,
    /// The crash-detection target the announcers' interval and TTL derive from.
    pub target: Duration,
    /// Herald's etcd lease TTL.
    pub herald_lease: Duration,
    /// The first instance of the host ([`instance_id`] numbering).
    pub first: usize,
    /// How many instances, from `first` on.
    pub count: usize,
}

impl HostArgs {
    /// The arguments of `herald-bench kill-host` (after the subcommand).
    pub fn to_args(&self) -> Vec<String> {
        let system = match self.system {
            HostSystem::Herald => "herald",
            HostSystem::Polling => "polling",
        };
        [
            system.to_owned(),
            self.endpoints.nats.clone(),
            self.endpoints.etcd.clone(),
            self.target.as_millis().to_string(),
            self.herald_lease.as_millis().to_string(),
            self.first.to_string(),
            self.count.to_string(),
        ]
        .into()
    }

    /// Reads what [`HostArgs::to_args`] wrote.
    pub fn parse(args: &[String]) -> Option<HostArgs> {
        let millis = |s: &String| s.parse().ok().map(Duration::from_millis);
        match args {
            [system, nats, etcd, target, lease, first, count] => Some(HostArgs {
                system: match system.as_str() {
                    "herald" => HostSystem::Herald,
                    "polling" => HostSystem::Polling,
                    _ => return None,
                },
                endpoints: Endpoints {
                    nats: nats.clone(),
                    etcd: etcd.clone(),
                },
                target: millis(target)?,
                herald_lease: millis(lease)?,
                first: first.parse().ok()?,
                count: count.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// Runs the host until its stdin closes.
///
/// # Errors
///
/// The first instance start that failed, as a message (also said on stdout).
pub async fn run(args: HostArgs) -> Result<(), String> {
    let (closed_tx, closed) = oneshot::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
        }
        let _ = closed_tx.send(());
    });
    let timing = Timing {
        herald_lease: args.herald_lease,
        ..Timing::for_target(args.target)
    };
    let ids = (args.first..args.first + args.count)
        .map(instance_id)
        .collect();
    match args.system {
        HostSystem::Herald => {
            let system = Herald::connect(&args.endpoints, timing, false, 1).await;
            hold(system, ids, closed).await
        }
        HostSystem::Polling => {
            let system = Polling::connect(&args.endpoints, timing, 1).await;
            hold(system, ids, closed).await
        }
    }
}

/// Starts `ids` on `system`, says so, and holds them until `closed` resolves.
async fn hold<S: System>(
    system: S,
    ids: Vec<String>,
    closed: oneshot::Receiver<()>,
) -> Result<(), String> {
    let started: Vec<_> = futures::stream::iter(ids)
        .map(|id| system.start_instance(id))
        .buffer_unordered(START_AT_ONCE)
        .collect()
        .await;
    let mut instances = Vec::with_capacity(started.len());
    for r in started {
        match r {
            Ok(i) => instances.push(i),
            Err(e) => {
                say(&format!("failed {e}"));
                return Err(e);
            }
        }
    }
    say(&format!("ready {}", instances.len()));
    let _ = closed.await;
    // The parent is done with this host: go as a crash would, no goodbye.
    for i in instances {
        system.crash(i);
    }
    Ok(())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.replace('\n', " ")).and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_read_back() {
        let args = HostArgs {
            system: HostSystem::Polling,
            endpoints: Endpoints {
                nats: "nats://127.0.0.1:1".into(),
                etcd: "http://127.0.0.1:2".into(),
            },
            target: Duration::from_millis(500),
            herald_lease: Duration::from_secs(30),
            first: 1_000,
            count: 1,
        };
        assert_eq!(HostArgs::parse(&args.to_args()), Some(args));
        assert_eq!(HostArgs::parse(&["herald".to_owned()]), None);
    }
}
