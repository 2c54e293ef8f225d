//! Crashes as real processes die: instances live in host processes (`herald-bench kill-host`),
//! and a crash is a SIGKILL of one of them. Every consumer's view is timed from the
//! kill to its `Removed`, for three ways of finding a dead process:
//!
//! - **herald + advisories**: the subscriber follows NATS disconnect advisories; the killed
//!   process's host closes its connection, the server says so, and the instances whose
//!   latest token came over it are removed after the grace (`disconnected`);
//! - **herald, TTL alone**: the same subscriber without advisories; the instance goes when
//!   its token TTL runs out (`expired`);
//! - **NATS polling**: the poller of `crate::peers::polling`; the instance goes at the end
//!   of the next poll window without its reply (`missed poll`).
//!
//! Each cell (a system at a crash-detection target) runs on its own fresh servers, started
//! with advisories for every cell so that the servers are the same. `size` instances stay up
//! in hosts of `per_process` instances each, and `samples` more live one per host: those
//! hosts are the ones killed, at random offsets over the spread. Any removal of an instance
//! whose host was not killed (or before its kill) is a false removal.
//!
//! ```no_run
//! # async fn run() {
//! use herald_bench::peers::kill::{self, Cell, KillSettings};
//!
//! let mut settings = KillSettings::bench("target/release/herald-bench");
//! settings.cells = vec![Cell::parse("herald-advisories@3s").unwrap()];
//! let outcome = kill::run(&settings.cells[0], &settings).await;
//! println!("{}", kill::report::table(&[outcome]));
//! # }
//! ```
//!
//! # Layout
//! - [`cell`]: the systems, a cell (system at a target), and what a run measures;
//! - [`host`]: the body of a host process, and its command line;
//! - [`hosts`]: the parent's side of the host processes: spawn, wait ready, kill;
//! - [`scenario`]: one cell, start to finish;
//! - [`report`]: the table, the details and the verdict.

pub mod cell;
pub mod host;
pub mod hosts;
pub mod report;
pub mod scenario;

pub use cell::{Cell, Detector, KillSettings};
pub use scenario::{KillOutcome, run};
