//! Free loopback ports, never the same one twice within a process, and waiting for a port to
//! become bindable again (for restarts on the same port).

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The loopback address every server of the kit listens on.
pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before, so two servers of one test binary never get the same port even before they bind.
pub fn free_port() -> u16 {
    let mut seen = handed_out().lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1000 {
        let listener = TcpListener::bind((LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if seen.insert(port) {
            return port;
        }
    }
    panic!("no unused loopback port after 1000 attempts");
}

/// Whether `port` on 127.0.0.1 can be bound right now.
pub fn port_is_bindable(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from((LOCALHOST, port))).is_ok()
}

/// Waits until every port in `ports` can be bound, up to `timeout`; returns whether they can.
pub async fn wait_bindable(ports: &[u16], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ports.iter().all(|&p| port_is_bindable(p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
