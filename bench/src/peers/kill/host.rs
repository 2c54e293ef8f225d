//! A host process (`herald-bench kill-host`): a few instances of one system in a process of
//! their own, on one NATS connection (and one etcd client for Herald), as the instances of a
//! real process would be. Killing it is the crash.
//!
//! It reports [`HostReport::Ready`] once its instances have started (or `Failed`), then holds
//! them until its stdin closes, and exits without any goodbye.

use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::child;
use crate::peers::herald::Herald;
use crate::peers::polling::Polling;
use crate::peers::scenario::instance_id;
use crate::peers::servers::Endpoints;
use crate::peers::settings::Timing;
use crate::peers::system::System;

/// Instances a host starts at once.
const START_AT_ONCE: usize = 16;

/// Which system's instances a host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostSystem {
    /// Herald announcers, each with its own etcd lease, on the host's shared clients.
    Herald,
    /// Instances answering the poller's PINGs.
    Polling,
}

/// A host's command line, written by the parent and read by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// What a host reports, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostReport {
    /// Its instances started: this many.
    Ready(usize),
    /// It cannot start them.
    Failed(String),
}

/// Runs the host until its stdin closes.
///
/// # Errors
///
/// The first instance start that failed, as a message (also said on stdout).
pub async fn run(args: HostArgs) -> Result<(), String> {
    // No order comes: the channel closing (stdin closed) is the signal.
    let closed = child::orders::<()>();
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

/// Starts `ids` on `system`, says so, and holds them until `closed` closes.
async fn hold<S: System>(
    system: S,
    ids: Vec<String>,
    mut closed: mpsc::UnboundedReceiver<()>,
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
                child::report(&HostReport::Failed(e.clone()));
                return Err(e);
            }
        }
    }
    child::report(&HostReport::Ready(instances.len()));
    while closed.recv().await.is_some() {}
    // The parent is done with this host: go as a crash would, no goodbye.
    for i in instances {
        system.crash(i);
    }
    Ok(())
}
