//! Other work on the same machine skews the figures: [`wait_quiet`] waits until no `rustc`
//! or `cargo` process has run and the machine has been nearly idle for a while,
//! [`BuildWatch`] tells whether a build ran during a measurement, [`crate::process::machine_busy`] reads
//! the CPU the whole machine used (to tell this run's share from everyone else's), and
//! [`gated`] runs a measurement when the machine is quiet, again when it was not.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::process::{build_running, machine_busy};

/// How often the process table is scanned.
const SCAN_EVERY: Duration = Duration::from_millis(500);

/// Below this many busy cores, the machine counts as idle between runs.
const IDLE_CORES: f64 = 0.3;

/// Waits until, for `quiet`, no build has run and the machine has used less than 0.3 of a
/// core, or until `limit` has passed; returns whether the machine went quiet.
pub async fn wait_quiet(quiet: Duration, limit: Duration) -> bool {
    let give_up = Instant::now() + limit;
    let mut quiet_since = Instant::now();
    let mut last = (Instant::now(), machine_busy());
    loop {
        let now = (Instant::now(), machine_busy());
        let cores = match (now.1, last.1) {
            (Some(b), Some(a)) => {
                b.saturating_sub(a).as_secs_f64() / now.0.duration_since(last.0).as_secs_f64()
            }
            _ => 0.0,
        };
        last = now;
        if build_running() || cores >= IDLE_CORES {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= quiet {
            return true;
        }
        if Instant::now() >= give_up {
            return false;
        }
        tokio::time::sleep(SCAN_EVERY).await;
    }
}

/// [`gated`] waits for a spell this long without a build before each attempt ...
pub const QUIET: Duration = Duration::from_secs(10);
/// ... but no longer than this before it runs anyway.
pub const QUIET_LIMIT: Duration = Duration::from_secs(90);

/// Runs `run` once the machine is quiet ([`wait_quiet`] for [`QUIET`], at most
/// [`QUIET_LIMIT`]), and again, up to `attempts` runs in all, while `disturbed` says other
/// work overlapped the last one (with the cores other processes used); returns the last run.
pub async fn gated<T, F, Fut>(
    attempts: usize,
    mut run: F,
    disturbed: impl Fn(&T) -> Option<f64>,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let attempts = attempts.max(1);
    let mut last = None;
    for attempt in 1..=attempts {
        if !wait_quiet(QUIET, QUIET_LIMIT).await {
            println!("  (no {QUIET:?} without a build within {QUIET_LIMIT:?}; running anyway)");
        }
        let outcome = run().await;
        let other = disturbed(&outcome);
        last = Some(outcome);
        let Some(other) = other else { break };
        println!(
            "  a build or other work ran meanwhile ({other:.2} other cores; attempt {attempt} of \
             {attempts})"
        );
    }
    last.expect("at least one attempt")
}

/// Scans for builds in the background until dropped.
#[derive(Debug)]
pub struct BuildWatch {
    seen: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl BuildWatch {
    /// Starts scanning.
    pub fn start() -> BuildWatch {
        let seen = Arc::new(AtomicBool::new(false));
        let flag = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                if build_running() {
                    flag.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(SCAN_EVERY).await;
            }
        });
        BuildWatch { seen, task }
    }

    /// Whether a build ran at any scan so far.
    pub fn overlapped(&self) -> bool {
        self.seen.load(Ordering::Relaxed)
    }
}

impl Drop for BuildWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
