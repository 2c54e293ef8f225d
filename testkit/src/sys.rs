//! The kit's only `unsafe` code: two thin wrappers over `libc` calls that the standard
//! library does not offer.
//!
//! - [`die_with_parent`] installs a `pre_exec` hook calling `prctl(PR_SET_PDEATHSIG, SIGKILL)`,
//!   so a server child is killed by the kernel even when the test process is SIGKILLed and no
//!   destructor gets to run.
//! - [`signal`] sends an arbitrary signal (std's `Child::kill` only sends SIGKILL; a graceful
//!   stop needs SIGTERM).
// Workspace lints deny unsafe code; these two calls have no safe equivalent in std or in the
// workspace's dependencies, and each is a single async-signal-safe libc call.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Arranges for the child spawned from `cmd` to receive SIGKILL when the thread that spawns it
/// exits. The kernel ties the death signal to the spawning *thread*, which is why
/// [`crate::process`] spawns every child from one thread that lives as long as the process.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook runs in the forked child before exec and only calls `prctl` and
    // `getppid`, both async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would signal us.
            if libc::getppid() != parent {
                return Err(io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
    }
}

/// Sends `sig` to process `pid`.
pub(crate) fn signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: `kill` has no memory-safety preconditions; a stale pid only yields ESRCH.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
