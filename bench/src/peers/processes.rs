//! [`Processes`]: the simulated processes of a run, each with its own connections, handed
//! to instances in turn. An instance uses its process's NATS and etcd clients (and, for
//! Herald's shared lease, its process's session), as the instances of one real process would.

use std::sync::atomic::{AtomicUsize, Ordering};

/// One value per process (a client, a session), given to instances round robin.
#[derive(Debug)]
pub struct Processes<T> {
    each: Vec<T>,
    next: AtomicUsize,
}

impl<T> Processes<T> {
    /// One value per process.
    pub fn new(each: Vec<T>) -> Processes<T> {
        assert!(!each.is_empty(), "at least one process");
        Processes {
            each,
            next: AtomicUsize::new(0),
        }
    }

    /// The next instance's process's value.
    pub fn next(&self) -> &T {
        &self.each[self.next.fetch_add(1, Ordering::Relaxed) % self.each.len()]
    }

    /// Every process's value.
    pub fn all(&self) -> &[T] {
        &self.each
    }
}

/// How many processes hold `size` instances at `per_process` each (`None`: one process).
pub fn count(size: usize, per_process: Option<usize>) -> usize {
    match per_process {
        Some(p) if p > 0 => size.div_ceil(p).max(1),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_in_turn() {
        let p = Processes::new(vec!['a', 'b']);
        let got: String = (0..5).map(|_| *p.next()).collect();
        assert_eq!(got, "ababa");
        assert_eq!(count(1_000, Some(10)), 100);
        assert_eq!(count(1_001, Some(10)), 101);
        assert_eq!(count(1_000, None), 1);
    }
}
