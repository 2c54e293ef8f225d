//! The one protocol between a benchmark and its child processes (`herald-bench` started
//! again with a hidden subcommand: scale's hosts, the kill comparison's hosts, the churn
//! soak's fleet).
//!
//! The child's settings go as one JSON argument after the subcommand. Then, one JSON value a
//! line: orders on the child's stdin, reports on its stdout. The parent stamps each report
//! on arrival, on a thread of its own, whatever its runtime is doing; a line that is not a
//! report (a library writing to stdout) is passed to stderr. Closing the child's stdin asks
//! it to finish.
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use std::path::Path;
//! use std::time::{Duration, Instant};
//! use herald_bench::child::Child;
//!
//! let mut child: Child<String> =
//!     Child::spawn(Path::new("target/release/herald-bench"), 0, "some-child", &42_u32);
//! child.send(&"stats")?;
//! let (at, report) = child.next(Instant::now() + Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::time::Instant;

use herald_testkit::{ChildGuard, spawn_guarded};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// A child process, its reports of type `R` stamped on arrival.
pub struct Child<R> {
    /// Declared first: closing stdin lets the child finish before the guard kills it.
    stdin: Option<ChildStdin>,
    reports: mpsc::UnboundedReceiver<(Instant, R)>,
    guard: ChildGuard,
}

impl<R> fmt::Debug for Child<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.guard.pid())
            .finish_non_exhaustive()
    }
}

impl<R: DeserializeOwned + Send + 'static> Child<R> {
    /// Starts `program subcommand SETTINGS` (through `nice -n NICE` unless `nice` is 0, which
    /// keeps the pid the child's), `settings` as JSON.
    pub fn spawn(program: &Path, nice: i32, subcommand: &str, settings: &impl Serialize) -> Self {
        let mut cmd = if nice == 0 {
            Command::new(program)
        } else {
            let mut c = Command::new("nice");
            c.arg("-n").arg(nice.to_string()).arg(program);
            c
        };
        cmd.arg(subcommand)
            .arg(serde_json::to_string(settings).expect("settings serialise"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut guard = spawn_guarded(cmd);
        let stdin = guard.child_mut().stdin.take();
        let stdout = guard.child_mut().stdout.take().expect("piped stdout");
        let (tx, reports) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name(format!("{subcommand}-reports"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let at = Instant::now();
                    match serde_json::from_str(&line) {
                        Ok(report) => {
                            if tx.send((at, report)).is_err() {
                                break;
                            }
                        }
                        Err(_) => eprintln!("{line}"),
                    }
                }
            })
            .expect("start a reader thread");
        Child {
            stdin,
            reports,
            guard,
        }
    }

    /// Sends one order.
    ///
    /// # Errors
    ///
    /// When the child's stdin is closed or broken.
    pub fn send(&mut self, order: &impl Serialize) -> Result<(), String> {
        let pid = self.guard.pid();
        let stdin = self.stdin.as_mut().ok_or("stdin already closed")?;
        let line = serde_json::to_string(order).expect("orders serialise");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("child {pid} stdin: {e}"))
    }

    /// Closes the child's stdin: it finishes.
    pub fn close(&mut self) {
        self.stdin = None;
    }

    /// The next report, by `deadline`.
    ///
    /// # Errors
    ///
    /// The child exited, or said nothing in time.
    pub async fn next(&mut self, deadline: Instant) -> Result<(Instant, R), String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.reports.recv()).await {
            Ok(Some(report)) => Ok(report),
            Ok(None) => Err(format!(
                "child {} exited without a word ({:?})",
                self.guard.pid(),
                self.guard.try_status()
            )),
            Err(_) => Err(format!("child {} said nothing in time", self.guard.pid())),
        }
    }

    /// The reports as they come, for a `select!`.
    pub fn reports(&mut self) -> &mut mpsc::UnboundedReceiver<(Instant, R)> {
        &mut self.reports
    }

    /// The process.
    pub fn guard(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }
}

/// In a child: its settings, from the argument after the subcommand.
///
/// # Errors
///
/// When the argument is not the JSON of `T`.
pub fn settings<T: DeserializeOwned>(arg: &str) -> Result<T, String> {
    serde_json::from_str(arg).map_err(|e| format!("unreadable settings: {e}"))
}

/// In a child: writes one report on stdout.
pub fn report(report: &impl Serialize) {
    let line = serde_json::to_string(report).expect("reports serialise");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// In a child: the orders read from stdin, on a thread of its own; the channel closes with
/// stdin.
pub fn orders<T: DeserializeOwned + Send + 'static>() -> mpsc::UnboundedReceiver<T> {
    let (tx, orders) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str(&line) {
                Ok(order) => {
                    if tx.send(order).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("unreadable order {line:?}: {e}"),
            }
        }
    });
    orders
}
