//! Herald's benchmarks, and the few pieces they share.
//!
//! Each benchmark is a program that starts its own `nats-server` (through `herald-testkit`)
//! and prints its figures; `BENCHMARKS.md` at the repository root records how they were run
//! and what they gave.
//!
//! - `propagation` (bin): publish-to-visible latency, raw NATS against Herald's join and
//!   goodbye, and a real announcer's start;
//! - `ingest` (bin): tokens per second and CPU per token of a subscriber under a flood,
//!   against a plain NATS subscription of the same messages;
//! - `memory` (bin): live heap bytes per cached instance;
//! - `pick` (criterion bench): nanoseconds per pick for each strategy, and the allocations
//!   100,000 picks make.
//!
//! # Layout
//! - [`fleet`]: typical tokens for a fleet of instances, pre-encoded with patchable fields;
//! - [`summary`]: percentiles of latency samples;
//! - [`cpu`]: CPU time of a process, from `/proc`;
//! - [`alloc`]: a counting global allocator (live bytes, allocations per thread).
#![deny(missing_docs)]

pub mod alloc;
pub mod churn;
pub mod cpu;
pub mod fleet;
pub mod peers;
pub mod scale;
pub mod summary;
