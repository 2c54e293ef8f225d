//! The service `herald announce -- CMD` runs as its child: started in a process group of its
//! own (a terminal's Ctrl-C reaches `announce` alone, which then stops the service in order),
//! killed by the kernel if `announce` dies (parent-death signal), stopped with SIGTERM to its
//! group and SIGKILL after a timeout, and its end told as an exit code.
// Workspace lints deny unsafe code; `pre_exec` has no safe counterpart in std or in rustix.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use rustix::process::{Pid, Signal};

/// A running child service.
#[derive(Debug)]
pub(crate) struct Service {
    child: tokio::process::Child,
    pid: Pid,
    /// The command as typed, for messages.
    pub(crate) name: String,
    /// Set once it has exited.
    status: Option<ExitStatus>,
}

impl Service {
    /// Starts `command` (program, then arguments) with this process's stdin, stdout and
    /// stderr. The kernel ties the parent-death signal to the spawning thread: call it from
    /// the thread that runs the command to its end (the main thread, here).
    pub(crate) fn spawn(command: &[String]) -> anyhow::Result<Service> {
        let (program, args) = command.split_first().context("no command given after --")?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .process_group(0);
        let parent = rustix::process::getpid();
        let hook = move || -> io::Result<()> {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            // The parent may have died between fork and prctl: then nobody would signal us.
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        };
        // SAFETY: the hook runs in the forked child before exec; it allocates nothing, takes
        // no lock and makes only `prctl` and `getppid` system calls (rustix issues them
        // directly), both async-signal-safe.
        unsafe {
            cmd.pre_exec(hook);
        }
        let child = tokio::process::Command::from(cmd)
            .spawn()
            .with_context(|| format!("cannot run `{program}`"))?;
        let pid = child
            .id()
            .and_then(|id| Pid::from_raw(id as i32))
            .context("the command exited at once")?;
        Ok(Service {
            child,
            pid,
            name: command.join(" "),
            status: None,
        })
    }

    /// Resolves when the service exits, with its status (at once if it already has).
    pub(crate) async fn exited(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let status = match self.child.wait().await {
            Ok(status) => status,
            // Waiting on our own child cannot fail but for a bug; read it as a crash.
            Err(e) => {
                tracing::error!(error = %e, "cannot wait for the command");
                ExitStatus::from_raw(libc_sigkill())
            }
        };
        self.status = Some(status);
        status
    }

    /// Stops the service: SIGTERM to its process group, then SIGKILL after `timeout`. Returns
    /// the exit code `announce` ends with: 0 when it exits 0 or dies of that SIGTERM, its
    /// code otherwise, 128 + the signal that killed it.
    pub(crate) async fn stop(&mut self, timeout: Duration) -> u8 {
        if let Some(status) = self.status {
            return code(status);
        }
        let _ = rustix::process::kill_process_group(self.pid, Signal::TERM);
        let status = match tokio::time::timeout(timeout, self.exited()).await {
            Ok(status) => status,
            Err(_) => {
                eprintln!(
                    "herald: `{}` did not exit {} after SIGTERM (--stop-timeout); killing it",
                    self.name,
                    humantime::format_duration(timeout)
                );
                let _ = rustix::process::kill_process_group(self.pid, Signal::KILL);
                self.exited().await
            }
        };
        match status.signal() {
            Some(s) if s == Signal::TERM.as_raw() => 0,
            _ => code(status),
        }
    }
}

/// The exit code that tells `status`: its code, or 128 + the signal that ended it.
pub(crate) fn code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

/// How `status` reads in a message: "exit code 3", "killed by signal 9".
pub(crate) fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "ended".to_owned(),
    }
}

/// The raw wait status of a death by SIGKILL.
fn libc_sigkill() -> i32 {
    Signal::KILL.as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_code_is_passed_on_and_a_signal_is_128_plus_it() {
        assert_eq!(code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(code(ExitStatus::from_raw(0)), 0);
        assert_eq!(code(ExitStatus::from_raw(9)), 137);
        assert_eq!(describe(ExitStatus::from_raw(9)), "killed by signal 9");
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exit code 3");
    }
}
