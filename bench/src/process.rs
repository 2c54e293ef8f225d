//! What `/proc` tells about a process and the machine: CPU time (user + system, every
//! thread including those that have exited, in clock ticks of 10 ms), resident set size,
//! read and write system calls (batching shows there: a server that reads many messages per
//! call spends far less per message), the CPU the whole machine used, and whether a build
//! runs.

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

/// The file `name` of process `pid` (`None` for this process).
fn read(pid: Option<u32>, name: &str) -> Option<String> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/{name}"),
        None => format!("/proc/self/{name}"),
    };
    std::fs::read_to_string(path).ok()
}

/// The number after `key` in a `key: value` file.
fn field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// RSS of process `pid` (`None` for this process) in bytes, or `None` when it cannot be read.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    Some(field(&read(pid, "status")?, "VmRSS:")? * 1024)
}

/// Read and write system calls made so far by process `pid` (every thread), from
/// `/proc/<pid>/io`, or `None` when it cannot be read. Only calls through the file layer
/// count (`read`, `write`, `readv`, `writev`: what Go's network poller uses), not `recv` or
/// `send`.
pub fn syscalls(pid: Option<u32>) -> Option<(u64, u64)> {
    let io = read(pid, "io")?;
    Some((field(&io, "syscr:")?, field(&io, "syscw:")?))
}

/// Whether a `rustc` or `cargo` process runs now (read from `/proc/*/comm`).
pub fn build_running() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|entry| {
        std::fs::read_to_string(entry.path().join("comm"))
            .is_ok_and(|comm| matches!(comm.trim_end(), "rustc" | "cargo"))
    })
}

/// CPU time used by the whole machine so far (every core, all but idle and iowait), from
/// the first line of `/proc/stat`.
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(Duration::from_millis(busy * 10))
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

    #[test]
    fn reads_own_rss_and_syscalls() {
        let rss = rss_bytes(None).expect("/proc/self/status is readable");
        assert!(rss > 1 << 20, "a test process holds more than 1 MiB");
        assert_eq!(rss_bytes(Some(u32::MAX)), None, "no such process");
        let (reads, _) = syscalls(None).expect("/proc/self/io is readable");
        std::fs::read_to_string("/proc/self/stat").unwrap();
        let (later, _) = syscalls(None).unwrap();
        assert!(later > reads, "reading a file is a read call");
    }
}

/// Processes that keep a CPU busy each (a shell's empty loop) at normal priority, to load
/// the machine for as long as they live; killed when dropped.
#[derive(Debug)]
pub struct Burners(Vec<std::process::Child>);

impl Burners {
    /// Starts `n` burners.
    ///
    /// # Panics
    ///
    /// When `sh` cannot be started.
    pub fn start(n: usize) -> Burners {
        Burners(
            (0..n)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("a CPU burner (sh) starts")
                })
                .collect(),
        )
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
