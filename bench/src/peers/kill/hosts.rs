//! The parent's side of the host processes: spawn them (guarded, so that they die with the
//! parent even on a panic), wait for each to say it is ready, and SIGKILL one as the crash.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::time::Instant;

use herald_testkit::{ChildGuard, spawn_guarded};
use tokio::task::JoinHandle;

use crate::peers::kill::host::HostArgs;

/// `SIGKILL`: the process dies at once, and its host closes its connections.
/// The subcommand of `herald-bench` that runs a host.
pub const HOST_SUBCOMMAND: &str = "kill-host";

const SIGKILL: i32 = 9;

/// One host process.
#[derive(Debug)]
struct Host {
    /// Declared first: closing stdin lets the host exit before the guard kills it.
    _stdin: Option<ChildStdin>,
    child: ChildGuard,
    /// Its first line (`ready N` or `failed WHY`), read off the runtime.
    first_line: Option<JoinHandle<String>>,
}

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
            .map(|a| {
                let mut cmd = Command::new(program);
                cmd.arg(HOST_SUBCOMMAND)
                    .args(a.to_args())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit());
                let mut child = spawn_guarded(cmd);
                let stdin = child.child_mut().stdin.take();
                let stdout = child.child_mut().stdout.take().expect("host stdout");
                let first_line = tokio::task::spawn_blocking(move || {
                    let mut line = String::new();
                    let _ = BufReader::new(stdout).read_line(&mut line);
                    line.trim_end().to_owned()
                });
                Host {
                    _stdin: stdin,
                    child,
                    first_line: Some(first_line),
                }
            })
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
            let Some(line) = host.first_line.take() else {
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match tokio::time::timeout(left, line).await {
                Ok(Ok(line)) => line,
                Ok(Err(e)) => return Err(format!("host {i}: reading its stdout: {e}")),
                Err(_) => return Err(format!("host {i} said nothing in time")),
            };
            match line
                .strip_prefix("ready ")
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) => started += n,
                None if line.is_empty() => {
                    let status = host.child.try_status();
                    return Err(format!("host {i} exited without a word ({status:?})"));
                }
                None => return Err(format!("host {i}: {line}")),
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
        if let Err(e) = self.hosts[i].child.signal(SIGKILL) {
            eprintln!("kill of host {i} failed: {e}");
        }
        at
    }

    /// The hosts' process ids, for their CPU time.
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.hosts.iter().map(|h| Some(h.child.pid())).collect()
    }
}
