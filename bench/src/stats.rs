//! Statistics of samples, in one place: nearest-rank percentiles ([`nearest_rank`],
//! [`Summary`] of latencies) and medians ([`median`]).

use std::fmt;
use std::time::Duration;

/// Nearest-rank percentiles of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
}

impl Summary {
    /// Summarises `samples` (sorted in place). Panics when there is none.
    pub fn of(samples: &mut [Duration]) -> Summary {
        assert!(!samples.is_empty(), "a summary needs at least one sample");
        samples.sort_unstable();
        let rank = |q: f64| nearest_rank(samples, q);
        Summary {
            n: samples.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// The nearest-rank `q` quantile (`0 < q <= 1`) of `sorted`, which must not be empty: the
/// smallest sample with at least `q` of them at or below it.
pub fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> T {
    let i = (q * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

/// The median of `values` (the upper one of an even count), which must not be empty.
pub fn median<T: Copy + PartialOrd>(values: &[T]) -> T {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={:>5}  p50={:>7} ms  p90={:>7} ms  p99={:>7} ms  max={:>7} ms",
            self.n,
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let s = Summary::of(&mut v);
        assert_eq!(s.p50, Duration::from_micros(50));
        assert_eq!(s.p99, Duration::from_micros(99));
        assert_eq!(s.max, Duration::from_micros(100));
        let s = Summary::of(&mut [Duration::from_micros(7)]);
        assert_eq!(
            (s.p50, s.p99),
            (Duration::from_micros(7), Duration::from_micros(7)),
            "one sample is every percentile"
        );
    }

    #[test]
    fn medians_take_the_upper_middle() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4_u64, 1, 3, 2]), 3);
    }
}
