//! Peer baselines: Herald against the two usual ways of doing discovery, on the same machine
//! in one run, each system on its own fresh `nats-server` and `etcd`.
//!
//! - **Herald**: announcers broadcast tokens on NATS and hold a lease-backed key in etcd; a
//!   subscriber (with etcd) is the consumer. Crash detection is the token TTL.
//! - **etcd-only**: each instance's lease is its heartbeat (kept alive every third of its TTL);
//!   the consumer lists the prefix and watches it. Crash detection is lease expiry.
//! - **NATS polling**, in the style of the NATS Services API: instances answer a PING on
//!   `$SRV.PING.<service>`; the consumer polls. Crash detection is a missed poll.
//!
//! All three are tuned to one crash-detection target ([`Timing::for_target`]). For each
//! system and size, `size` instances come up and stay up; etcd's requests (handled calls plus
//! messages on streams, keep-alives apart), NATS's messages and each process's CPU are read
//! over a steady window; then joins, graceful leaves and crashes are timed from the action to
//! the consumer's view ([`Outcome`]).
//!
//! ```no_run
//! # async fn run() {
//! use herald_bench::peers::{Kind, Settings, report, scenario};
//!
//! let mut settings = Settings::bench();
//! settings.sizes = vec![20];
//! let mut outcomes = Vec::new();
//! for kind in Kind::ALL {
//!     outcomes.push(scenario::run(kind, 20, &settings).await);
//! }
//! println!("{}", report::table(&outcomes));
//! # }
//! ```
//!
//! # Layout
//! - [`settings`]: what a run measures, and each system's knobs for the target;
//! - [`system`]: the [`System`] trait every discovery system implements;
//! - [`herald`], [`etcd_only`], [`polling`]: the three systems;
//! - [`observer`]: what a consumer saw and when, by instance id;
//! - [`phases`]: joins, leaves and crashes spread over a span, and their latencies;
//! - [`servers`]: a run's fresh servers, where they listen, and clients;
//! - [`processes`]: the simulated processes, each with its own connections;
//! - [`load`]: etcd, NATS and CPU load over a window (counters from [`crate::metrics`]);
//! - [`quiet`]: waiting for builds on the machine to end, and noticing them;
//! - [`scenario`]: one system at one size, start to finish;
//! - [`report`]: the table, the details and the verdict;
//! - [`kill`]: crashes as real processes die (SIGKILL of host processes), with and without
//!   disconnect advisories, against polling.

pub mod etcd_only;
pub mod herald;
pub mod kill;
pub mod load;
pub mod observer;
pub mod phases;
pub mod polling;
pub mod processes;
pub mod quiet;
pub mod report;
pub mod scenario;
pub mod servers;
pub mod settings;
pub mod system;

pub use observer::Observer;
pub use scenario::Outcome;
pub use settings::{Kind, Settings, Timing};
pub use system::System;
