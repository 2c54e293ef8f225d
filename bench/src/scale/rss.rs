//! Resident set size of a process, from `/proc/<pid>/status`.

/// RSS of process `pid` (`None` for this process) in bytes, or `None` when it cannot be read.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_rss() {
        let rss = rss_bytes(None).expect("/proc/self/status is readable");
        assert!(rss > 1 << 20, "a test process holds more than 1 MiB");
        assert_eq!(rss_bytes(Some(u32::MAX)), None, "no such process");
    }
}
