//! What `/proc` tells about a process beyond its CPU time (see [`crate::cpu`]): its resident
//! set size, and how many read and write system calls it made (batching shows there: a
//! server that reads many messages per call spends far less per message).

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

#[cfg(test)]
mod tests {
    use super::*;

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
