//! Herald's benchmarks, and the pieces they share.
//!
//! One program, `herald-bench`, runs them, a subcommand each (`herald-bench help`); each
//! starts its own `nats-server` and etcd (through `herald-testkit`) and prints its figures.
//! `BENCHMARKS.md` at the repository root records how they were run and what they gave.
//!
//! - `propagation`: publish-to-visible latency, raw NATS against Herald's join and goodbye,
//!   and a real announcer's start;
//! - `ingest`: tokens per second and CPU per token of a subscriber under a flood, against a
//!   plain NATS subscription of the same messages;
//! - `memory`: live heap bytes per cached instance;
//! - `scale` ([`scale`]), `peers` and `peers-kill` ([`peers`]), `churn` ([`churn`]);
//! - criterion benches: `pick` (nanoseconds per pick for each strategy, and the allocations
//!   100,000 picks make) and `hot_path` (each step of ingest on its own).
//!
//! # Layout
//! - [`fleet`]: typical tokens for a fleet of instances, pre-encoded with patchable fields;
//! - [`stats`]: percentiles and medians of samples;
//! - [`process`]: CPU time, RSS and system calls of a process, and the machine's CPU, from `/proc`;
//! - [`metrics`]: etcd's and nats-server's counters;
//! - [`child`]: the one protocol with child processes (JSON settings, JSON lines);
//! - [`alloc`]: a counting global allocator (live bytes, allocations per thread).
#![deny(missing_docs)]

pub mod alloc;
pub mod child;
pub mod churn;
pub mod fleet;
pub mod metrics;
pub mod peers;
pub mod process;
pub mod scale;
pub mod stats;
