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
//! - `rolling` ([`rolling`]): failed calls through a rolling restart, with and without a
//!   drain, and the drain that makes them 0;
//! - criterion benches: `pick` (nanoseconds per pick for each strategy, and the allocations
//!   100,000 picks make) and `hot_path` (each step of ingest on its own).
//!
//! # Layout
//! - [`fleet`]: typical tokens for a fleet of instances, pre-encoded with patchable fields;
//! - [`stats`]: percentiles and medians of samples;
//! - [`process`]: CPU time, RSS and system calls of a process, and the machine's CPU, from `/proc`;
//! - [`metrics`]: etcd's and nats-server's counters;
//! - [`child`]: the one protocol with child processes (JSON settings, JSON lines);
//! - [`alloc`]: a counting global allocator (live bytes, allocations per thread);
//! - [`defaults`], [`at_least_one`], [`nonzero_duration`]: a scenario's settings as its
//!   command line.
//!
//! # Adding a scenario
//! 1. Its settings: one struct deriving `clap::Args`, each option with its default in the
//!    attribute ([`peers::Settings`] is one); `Settings::bench()` is [`defaults`].
//! 2. Its run: servers from `herald_testkit` (fresh ones, on free ports); processes of its
//!    own, if any, are this program again under a hidden subcommand, spoken to through
//!    [`child`]; figures from [`stats`], [`process`] and [`metrics`].
//! 3. A subcommand in `src/bin/herald-bench/main.rs` that prints the figures.
//! 4. A smoke test in `bench/tests/` at a tiny size, asserting what the figures claim
//!    (nextest's `serial-servers` group runs it one at a time with the other tests that
//!    start servers).
//! 5. The command, the conditions and the figures in `BENCHMARKS.md`.
#![deny(missing_docs)]

pub mod alloc;
pub mod child;
pub mod churn;
pub mod fleet;
pub mod metrics;
pub mod peers;
pub mod process;
pub mod rolling;
pub mod scale;
pub mod stats;

/// A settings struct whose fields are command-line options, each at its default.
///
/// # Panics
///
/// When a default does not parse: a bug in the struct's attributes.
pub fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults"));
    T::from_arg_matches(&command.get_matches_from(["defaults"])).expect("the defaults parse")
}

/// A duration above zero, for the options that a rate is divided by or a timer ticks at.
///
/// # Errors
///
/// When `s` is not a duration (`humantime`'s format) or is zero.
pub fn nonzero_duration(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be above zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// A count of at least one, for the options that take one.
///
/// # Errors
///
/// When `s` is not a number above 0.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_counts_and_durations_are_refused() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("x").is_err());
        assert_eq!(
            nonzero_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        assert!(nonzero_duration("0s").is_err());
        assert!(nonzero_duration("soon").is_err());
        let s: peers::Settings = defaults();
        assert_eq!(s.seed, 2026, "the defaults parse");
    }
}
