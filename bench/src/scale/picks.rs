//! `pick` latency on the live cache: many picks over random services in a tight loop, each
//! timed alone, while ingest goes on.
//!
//! Each sample includes one `Instant::now()` pair; [`clock_overhead_ns`] measures what that
//! pair costs alone, so that a reader can subtract it.

use std::time::Instant;

use herald_subscriber::{Strategy, Subscriber};
use serde::{Deserialize, Serialize};

use crate::stats::{median, nearest_rank};

/// The strategies timed, by the names `Strategy::parse` reads.
pub const STRATEGIES: [&str; 3] = ["p2c", "least_load", "round_robin"];

/// Latency of one strategy, nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PickTiming {
    /// The strategy's name.
    pub strategy: String,
    /// Picks timed.
    pub picks: usize,
    /// Picks that found no instance (0 when every service is listed).
    pub misses: usize,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Mean.
    pub mean_ns: f64,
}

/// Times `picks` picks with each of [`STRATEGIES`], each over a service drawn at random from
/// `services`. Runs on the calling thread and blocks it.
pub fn time_picks(sub: &Subscriber, services: &[String], picks: usize) -> Vec<PickTiming> {
    let mut rng = fastrand::Rng::with_seed(7);
    // Draw the services first, so that the draw is not timed.
    let order: Vec<&str> = (0..picks)
        .map(|_| services[rng.usize(..services.len())].as_str())
        .collect();
    STRATEGIES
        .iter()
        .map(|name| {
            let strategy = Strategy::parse(name).expect("a known strategy");
            // Warm up: caches and the per-thread generator.
            for s in order.iter().take(1_000) {
                std::hint::black_box(sub.pick(s, strategy));
            }
            let mut samples = Vec::with_capacity(picks);
            let mut misses = 0;
            for s in &order {
                let t = Instant::now();
                let found = sub.pick(s, strategy);
                let ns = t.elapsed().as_nanos() as u64;
                misses += usize::from(found.is_none());
                std::hint::black_box(found);
                samples.push(ns);
            }
            summarise(name, samples, misses)
        })
        .collect()
}

fn summarise(name: &str, mut samples: Vec<u64>, misses: usize) -> PickTiming {
    samples.sort_unstable();
    let rank = |q: f64| nearest_rank(&samples, q);
    PickTiming {
        strategy: name.to_owned(),
        picks: samples.len(),
        misses,
        p50_ns: rank(0.50),
        p99_ns: rank(0.99),
        mean_ns: samples.iter().sum::<u64>() as f64 / samples.len() as f64,
    }
}

/// Median cost of an `Instant::now()` pair with nothing between, nanoseconds.
pub fn clock_overhead_ns() -> u64 {
    let samples: Vec<u64> = (0..100_000)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(());
            t.elapsed().as_nanos() as u64
        })
        .collect();
    median(&samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_nearest_ranks() {
        let t = summarise("p2c", (1..=100).rev().collect(), 2);
        assert_eq!((t.p50_ns, t.p99_ns, t.misses), (50, 99, 2));
        assert_eq!(t.mean_ns, 50.5);
        assert!(clock_overhead_ns() < 10_000, "a clock read is cheap");
    }
}
