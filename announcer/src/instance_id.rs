//! The default instance id: `{host}-{16 hex digits}`, unique per process start.
//!
//! The host part makes ids readable in a listing; the random part makes two processes on one
//! host (or one process restarted) distinct without any coordination.

/// Longest host part kept, in bytes (the whole id stays far below the 128-byte bound).
const MAX_HOST_PART: usize = 64;

/// A fresh id such as `web-3-5f0c2a9e41d7b6c8`.
pub(crate) fn generate() -> String {
    from_host(hostname().as_deref(), fastrand::u64(..))
}

fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
}

/// The id for `host` (first DNS label, characters outside `[A-Za-z0-9_-]` replaced by `-`,
/// `inst` when nothing is left) and `random`.
fn from_host(host: Option<&str>, random: u64) -> String {
    let label = host.unwrap_or("").trim().split('.').next().unwrap_or("");
    let mut host: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    host.truncate(MAX_HOST_PART);
    if host.is_empty() {
        host.push_str("inst");
    }
    format!("{host}-{random:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_for_any_host_name() {
        let long = "h".repeat(300);
        for host in [
            None,
            Some(""),
            Some("web-3.example.com\n"),
            Some("wé b"),
            Some(long.as_str()),
        ] {
            let id = from_host(host, 0x5f0c_2a9e_41d7_b6c8);
            assert!(
                herald_shared::validate::instance_id(&id).is_ok(),
                "generated id {id:?} must be a valid instance id"
            );
        }
        assert_eq!(
            from_host(Some("web-3.example.com\n"), 1),
            "web-3-0000000000000001"
        );
        assert_eq!(from_host(None, 1), "inst-0000000000000001");
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(generate(), generate(), "two ids must not collide");
    }
}
