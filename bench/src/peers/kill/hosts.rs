//! The parent's side of the host processes: spawn them (guarded, so that they die with the
//! parent even on a panic), wait for each to say it is ready, and SIGKILL one as the crash.

use std::path::Path;
use std::time::Instant;

use crate::child::Child;
use crate::peers::kill::host::{HostArgs, HostReport};

/// The subcommand of `herald-bench` that runs a host.
pub const HOST_SUBCOMMAND: &str = "kill-host";

/// `SIGKILL`: the process dies at once, and its host closes its connections.
const SIGKILL: i32 = 9;

/// One host process.
type Host = Child<HostReport>;

/// The host processes of one cell; killed when dropped.
#[derive(Debug)]
pub struct Hosts {
    hosts: Vec<Host>,
}

impl Hosts {
    /// Spawns one `program` process per entry of `args`. They start their instances at once;
    /// [`Hosts::wait_ready`] waits for them.
    pub fn spawn(program: &Path, args: &[HostArgs]) -> Hosts {
        let hosts = args
            .iter()
            .map(|a| Child::spawn(program, 0, HOST_SUBCOMMAND, a))
            .collect();
        Hosts { hosts }
    }

    /// Waits until every host said `ready`; returns the instances they started, or why one
    /// did not.
    ///
    /// # Errors
    ///
    /// A host that failed, exited, or said nothing before `deadline`.
    pub async fn wait_ready(&mut self, deadline: Instant) -> Result<usize, String> {
        let mut started = 0;
        for (i, host) in self.hosts.iter_mut().enumerate() {
            match host.next(deadline).await {
                Ok((_, HostReport::Ready(n))) => started += n,
                Ok((_, HostReport::Failed(why))) => return Err(format!("host {i}: {why}")),
                Err(e) => return Err(format!("host {i}: {e}")),
            }
        }
        Ok(started)
    }

    /// How many hosts there are.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// SIGKILLs host `i`; returns the moment just before the signal went out. The dead
    /// process is reaped when the hosts are dropped.
    pub fn kill(&mut self, i: usize) -> Instant {
        let at = Instant::now();
        if let Err(e) = self.hosts[i].guard().signal(SIGKILL) {
            eprintln!("kill of host {i} failed: {e}");
        }
        at
    }

    /// The hosts' process ids, for their CPU time.
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.hosts.iter().map(|h| Some(h.pid())).collect()
    }
}
