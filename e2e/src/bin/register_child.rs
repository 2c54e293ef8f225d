//! A registered announcer in a process of its own, for tests that kill it with SIGKILL.
//!
//! Usage: `register_child NATS_URL ETCD_ENDPOINTS PREFIX SERVICE INSTANCE INTERVAL_MS TTL_MS
//! LEASE_TTL_S`, with `ETCD_ENDPOINTS` comma-separated. Prints `ready EPOCH` once `start()`
//! returned (registered in etcd, first token out), then announces until killed; on SIGTERM it
//! shuts down gracefully.

use std::time::Duration;

use herald_announcer::Announcer;
use herald_shared::{EtcdConfig, NatsConfig};

const USAGE: &str = "usage: register_child NATS_URL ETCD_ENDPOINTS PREFIX SERVICE INSTANCE \
                     INTERVAL_MS TTL_MS LEASE_TTL_S";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [
        url,
        endpoints,
        prefix,
        service,
        instance,
        interval_ms,
        ttl_ms,
        lease_ttl_s,
    ] = args.as_slice()
    else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let ms = |s: &str| Duration::from_millis(s.parse().expect("milliseconds"));
    let announcer = Announcer::builder(service.as_str(), "127.0.0.1:9000")
        .nats(NatsConfig::new([url.clone()]))
        .etcd(EtcdConfig::new(endpoints.split(',')))
        .prefix(prefix.as_str())
        .instance(instance.as_str())
        .interval(ms(interval_ms))
        .ttl(ms(ttl_ms))
        .lease_ttl(Duration::from_secs(lease_ttl_s.parse().expect("seconds")))
        .start()
        .await
        .expect("announcer starts");
    // The handler is in place before `ready`: a SIGTERM right after it is a graceful stop.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    println!("ready {}", announcer.epoch());
    term.recv().await;
    announcer.shutdown().await.expect("graceful shutdown");
}
