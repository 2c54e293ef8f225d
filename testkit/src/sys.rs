//! What the standard library does not offer for child processes, through `rustix`'s safe
//! system-call wrappers:
//!
//! - [`die_with_parent`] sets the parent-death signal in the forked child, so a server is
//!   killed by the kernel even when the test process is SIGKILLed and no destructor runs;
//! - [`signal`] and [`signal_group`] send any signal to a process or a process group (std's
//!   `Child::kill` only sends SIGKILL; a graceful stop needs SIGTERM, a Ctrl-C is SIGINT to a
//!   group).
//!
//! The one `unsafe` block left is std's `CommandExt::pre_exec` itself, which std declares
//! `unsafe` whatever the hook does; the hook only makes two raw system calls through rustix.
// Workspace lints deny unsafe code; `pre_exec` has no safe counterpart in std or in rustix.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::{Pid, Signal};

/// Arranges for the child spawned from `cmd` to receive SIGKILL when the thread that spawns it
/// exits. The kernel ties the death signal to the spawning *thread*, which is why
/// [`crate::process`] spawns every child from one thread that lives as long as the process.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    let parent = rustix::process::getpid();
    let hook = move || -> io::Result<()> {
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
        // The parent may have died between fork and prctl: then nobody would signal us.
        // (A raw OS error, since allocating in a forked child of a threaded process may hang.)
        if rustix::process::getppid() != Some(parent) {
            return Err(rustix::io::Errno::SRCH.into());
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec; it allocates nothing, takes no
    // lock and makes only `prctl` and `getppid` system calls (rustix issues them directly),
    // both async-signal-safe.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Sends signal number `sig` to process `pid`.
pub(crate) fn signal(pid: u32, sig: i32) -> io::Result<()> {
    Ok(rustix::process::kill_process(
        to_pid(pid)?,
        to_signal(sig)?,
    )?)
}

/// Sends signal number `sig` to every process of the group `pgid`.
pub(crate) fn signal_group(pgid: u32, sig: i32) -> io::Result<()> {
    Ok(rustix::process::kill_process_group(
        to_pid(pgid)?,
        to_signal(sig)?,
    )?)
}

fn to_pid(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad pid {pid}")))
}

fn to_signal(sig: i32) -> io::Result<Signal> {
    Signal::from_named_raw(sig)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad signal {sig}")))
}
