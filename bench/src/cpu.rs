//! CPU time of a process, read from `/proc/<pid>/stat` (user + system, every thread
//! including those that have exited), in clock ticks of 10 ms.

use std::time::Duration;

/// Clock ticks per second (`getconf CLK_TCK`): 100 on every Linux this runs on.
const TICKS_PER_SEC: u64 = 100;

/// CPU time used so far by process `pid` (`None` for this process), or `None` when it
/// cannot be read.
pub fn process_cpu(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces; fields after it are space-separated.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SEC,
    ))
}

/// CPU time of several processes sampled together.
#[derive(Debug, Clone)]
pub struct CpuSample {
    at: std::time::Instant,
    cpu: Vec<Option<Duration>>,
}

impl CpuSample {
    /// Samples the processes `pids` (`None` is this process) now.
    pub fn take(pids: &[Option<u32>]) -> CpuSample {
        CpuSample {
            at: std::time::Instant::now(),
            cpu: pids.iter().map(|p| process_cpu(*p)).collect(),
        }
    }

    /// CPU used by each process between `earlier` and `self`, as a share of one core.
    pub fn cores_since(&self, earlier: &CpuSample) -> Vec<f64> {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        self.cpu
            .iter()
            .zip(&earlier.cpu)
            .map(|(now, then)| match (now, then) {
                (Some(n), Some(t)) if wall > 0.0 => n.saturating_sub(*t).as_secs_f64() / wall,
                _ => f64::NAN,
            })
            .collect()
    }

    /// CPU used by process `i` of the sample between `earlier` and `self`.
    pub fn used_since(&self, earlier: &CpuSample, i: usize) -> Option<Duration> {
        Some(
            self.cpu
                .get(i)
                .copied()??
                .saturating_sub(earlier.cpu.get(i).copied()??),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_time() {
        let before = process_cpu(None).expect("/proc/self/stat is readable");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = process_cpu(None).unwrap();
        assert!(after > before, "60 ms of spinning must show as CPU time");
    }
}
