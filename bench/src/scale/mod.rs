//! The scale benchmark: tens of thousands of announcers, simulated by a few host processes,
//! against one subscriber of every service.
//!
//! A host (`herald-bench scale-host`) runs many announcers on one NATS connection and, by default, one
//! `Session` (one etcd lease, one keep-alive timer and one watch stream for the whole
//! process, as etcd's own sessions do), or a lease per announcer for comparison. A case
//! starts fresh servers and its hosts, cold-starts a subscriber with etcd in this process,
//! checks that it lists exactly every instance, then measures a steady window: the
//! subscriber's CPU and memory, `pick` latency on the live cache, etcd's CPU, keep-alives,
//! requests, leases and watches, NATS's traffic, and the hosts' CPU and memory.
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! use herald_bench::scale::{case, plan::Case, report};
//!
//! let settings = case::Settings::bench("target/release/herald-bench".into());
//! let outcome = case::run(&Case::parse("10x1000").unwrap(), &settings).await?;
//! assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
//! println!("{}", report::figures(std::slice::from_ref(&outcome)));
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`plan`]: a case (hosts, announcers per host, services, interval, leases) and its
//!   instance names;
//! - [`protocol`]: a host's settings, its parent's orders, and its reports;
//! - [`host`]: the body of a host process;
//! - [`hosts`]: the parent's side of the host processes;
//! - [`sample`]: every counter at one moment, and the rates over a window;
//! - [`settle`]: waiting until a case is steady, and the exact-listing check;
//! - [`picks`]: `pick` latency on the live cache;
//! - [`case`]: one case from start to finish;
//! - [`outcome`]: what a case measured, and its checks;
//! - [`report`], [`cost`]: the figures as a table, and the cost per instance derived from
//!   them (`table`, private: the table both use).

pub mod case;
pub mod cost;
pub mod host;
pub mod hosts;
pub mod outcome;
pub mod picks;
pub mod plan;
pub mod protocol;
pub mod report;
pub mod sample;
pub mod settle;
pub(crate) mod table;
