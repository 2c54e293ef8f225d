//! Child processes that cannot outlive the test: [`ChildGuard`] owns a child and SIGKILLs and
//! reaps it on drop (so a panicking test still tears its servers down), and every child is
//! spawned with a parent-death signal (so a SIGKILLed test binary does too).
//!
//! The kernel sends the parent-death signal when the *thread* that forked the child exits, not
//! the process. Test threads and runtime worker threads come and go, so all children are forked
//! from one spawner thread that lives until the process exits.

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// How often the async waits poll the child.
const POLL: Duration = Duration::from_millis(10);

fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    crate::sys::die_with_parent(&mut cmd);
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the process-spawning thread");
        tx
    })
}

/// Spawns `cmd` (with a parent-death signal) and returns the guard that owns the child.
///
/// Stdio is whatever `cmd` was given. Panics if the program cannot be started, naming it.
pub fn spawn_guarded(cmd: Command) -> ChildGuard {
    let name = cmd.get_program().to_string_lossy().into_owned();
    match try_spawn_guarded(cmd) {
        Ok(guard) => guard,
        Err(e) => panic!("cannot spawn {name}: {e}"),
    }
}

/// Like [`spawn_guarded`], returning the spawn error instead of panicking.
pub fn try_spawn_guarded(cmd: Command) -> io::Result<ChildGuard> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    let child = reply_rx
        .recv()
        .map_err(|_| io::Error::other("spawner thread is gone"))??;
    tracing::debug!(pid = child.id(), program = %name, "spawned");
    Ok(ChildGuard {
        child,
        status: None,
        name,
    })
}

/// Whether process `pid` exists and is not a zombie (reads `/proc/<pid>/stat`).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state letter follows the parenthesised command name, which may contain spaces.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Sends signal number `sig` to process `pid`, one this process did not start (a child's
/// child, say).
///
/// # Errors
///
/// When the process does not exist or cannot be signalled.
pub fn signal_pid(pid: u32, sig: i32) -> io::Result<()> {
    crate::sys::signal(pid, sig)
}

/// Owns a child process; SIGKILLs and reaps it when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    status: Option<ExitStatus>,
    name: String,
}

impl ChildGuard {
    /// The child's process id (still reported after it exited).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The underlying child, for its stdio pipes (`take()` them) or anything else; waiting
    /// on it directly is fine, std remembers the status.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Whether the child has not exited yet (reaps it if it has).
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Whether the child is alive, without reaping it: an exited but unreaped child still
    /// holds its pid, so the check cannot be fooled by pid reuse.
    pub fn is_alive(&self) -> bool {
        self.status.is_none() && pid_alive(self.pid())
    }

    /// The exit status if the child has exited, without blocking.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(Some(status)) => self.status = Some(status),
                Ok(None) => {}
                Err(e) => tracing::warn!(pid = self.child.id(), "try_wait failed: {e}"),
            }
        }
        self.status
    }

    /// SIGKILLs the child and reaps it, blocking until it is gone. Idempotent.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            match self.child.wait() {
                Ok(status) => self.status = Some(status),
                Err(e) => tracing::warn!(pid = self.child.id(), "wait failed: {e}"),
            }
        }
        self.status
    }

    /// Sends `sig` (a signal number such as 15 for SIGTERM) unless the child already exited.
    pub fn signal(&mut self, sig: i32) -> io::Result<()> {
        if self.try_status().is_some() {
            return Ok(());
        }
        crate::sys::signal(self.pid(), sig)
    }

    /// Sends `sig` to the process group led by the child (as a terminal's Ctrl-C does), for a
    /// child spawned with `CommandExt::process_group(0)`; nothing if the child already exited.
    pub fn signal_group(&mut self, sig: i32) -> io::Result<()> {
        if self.try_status().is_some() {
            return Ok(());
        }
        crate::sys::signal_group(self.pid(), sig)
    }

    /// Waits up to `timeout` for the child to exit by itself; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, then waits up to `grace` for a clean exit, then SIGKILL. Returns the status.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Err(e) = self.signal(rustix::process::Signal::TERM.as_raw()) {
            tracing::warn!(pid = self.pid(), "SIGTERM failed: {e}");
        }
        match self.wait_exit(grace).await {
            Some(status) => Some(status),
            None => {
                tracing::warn!(pid = self.pid(), program = %self.name, "no exit after SIGTERM; killing");
                self.kill()
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            tracing::debug!(pid = self.pid(), program = %self.name, "killing on drop");
            self.kill();
        }
    }
}

/// The path of a binary target under test: where `cargo nextest` says it is at run time
/// (`NEXTEST_BIN_EXE_<name>`, also looked up with `_` for `-`; it differs from the build-time
/// path when the tests run from an archive), else `built`, the path at build time
/// (`env!("CARGO_BIN_EXE_<name>")`).
///
/// ```no_run
/// // In an integration test of the crate that has the `herald` binary:
/// // let program = herald_testkit::bin_exe("herald", env!("CARGO_BIN_EXE_herald"));
/// let program = herald_testkit::bin_exe("herald", "/path/at/build/time/herald");
/// std::process::Command::new(program).arg("--help").status().unwrap();
/// ```
pub fn bin_exe(name: &str, built: &str) -> std::path::PathBuf {
    [name.to_owned(), name.replace('-', "_")]
        .iter()
        .find_map(|n| std::env::var_os(format!("NEXTEST_BIN_EXE_{n}")))
        .map_or_else(|| std::path::PathBuf::from(built), std::path::PathBuf::from)
}
