//! Launching one server process: finding its binary, sending its output to a log file, and
//! waiting until a readiness probe succeeds, with failures that quote the log's tail.

use std::ffi::OsString;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{ChildGuard, try_spawn_guarded};

/// How many log lines a failure message quotes.
const TAIL_LINES: usize = 40;

/// Why a launch did not produce a ready server.
#[derive(Debug)]
pub(crate) enum LaunchError {
    /// The process exited because one of its ports was taken; worth retrying.
    AddrInUse(String),
    /// Anything else: the message says what happened and quotes the log.
    Failed(String),
}

impl LaunchError {
    pub(crate) fn message(&self) -> &str {
        match self {
            LaunchError::AddrInUse(m) | LaunchError::Failed(m) => m,
        }
    }
}

/// Finds `name` on `PATH`, else in `fallbacks` (Debian installs `nats-server` in `/usr/sbin`,
/// often not on a user's `PATH`). The environment variable `env_override`, if set, wins.
pub(crate) fn find_binary(name: &str, env_override: &str, fallbacks: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(env_override) {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found on PATH nor in {fallbacks:?}; set {env_override} to its path")
        })
}

/// Spawns `program args` with stdout and stderr appended to `log`, in a process group of its
/// own. Returns the guard and the log length before this run, so only this run's output is
/// searched for errors.
///
/// A terminal's Ctrl-C signals its whole foreground process group: in the caller's group the
/// servers would die at the same moment as the program using them, which could then not shut
/// down cleanly. Out of that group they still go with the caller: the guard kills them on drop
/// and the parent-death signal when the caller dies without unwinding.
pub(crate) fn spawn_logged(
    program: &Path,
    args: &[OsString],
    log: &Path,
) -> Result<(ChildGuard, u64), LaunchError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| LaunchError::Failed(format!("cannot open log {}: {e}", log.display())))?;
    let offset = file.metadata().map(|m| m.len()).unwrap_or(0);
    let stderr = file
        .try_clone()
        .map_err(|e| LaunchError::Failed(format!("cannot clone log handle: {e}")))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(stderr))
        .process_group(0);
    let child = try_spawn_guarded(cmd)
        .map_err(|e| LaunchError::Failed(format!("cannot spawn {}: {e}", program.display())))?;
    Ok((child, offset))
}

/// Polls `probe` every 25 ms until it returns true, the child exits, or `timeout` passes.
pub(crate) async fn wait_ready<F, Fut>(
    child: &mut ChildGuard,
    what: &str,
    log: &Path,
    log_offset: u64,
    timeout: Duration,
    mut probe: F,
) -> Result<(), LaunchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_status() {
            let this_run = read_from(log, log_offset);
            let msg = format!(
                "{what} exited during startup ({status}); log {}:\n{}",
                log.display(),
                tail(&this_run)
            );
            return Err(if this_run.contains("address already in use") {
                LaunchError::AddrInUse(msg)
            } else {
                LaunchError::Failed(msg)
            });
        }
        if probe().await {
            tracing::debug!(elapsed = ?started.elapsed(), "{what} is ready");
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(LaunchError::Failed(format!(
                "{what} not ready after {timeout:?}; log {}:\n{}",
                log.display(),
                log_tail(log)
            )));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The last lines of the log file at `log` (empty if it cannot be read).
pub(crate) fn log_tail(log: &Path) -> String {
    tail(&read_from(log, 0))
}

fn read_from(log: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let mut bytes = Vec::new();
        if f.seek(SeekFrom::Start(offset)).is_ok() && f.read_to_end(&mut bytes).is_ok() {
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}
