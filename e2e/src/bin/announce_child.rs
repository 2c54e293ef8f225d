//! An announcer in a process of its own, for tests that kill it with SIGKILL.
//!
//! Usage: `announce_child NATS_URL PREFIX SERVICE INSTANCE INTERVAL_MS TTL_MS`. Prints
//! `ready` once `start()` returned (the first token is out), then announces until killed;
//! on SIGTERM it shuts down gracefully.

use std::time::Duration;

use herald_announcer::Announcer;
use herald_shared::NatsConfig;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, prefix, service, instance, interval_ms, ttl_ms] = args.as_slice() else {
        eprintln!("usage: announce_child NATS_URL PREFIX SERVICE INSTANCE INTERVAL_MS TTL_MS");
        std::process::exit(2);
    };
    let ms = |s: &str| Duration::from_millis(s.parse().expect("milliseconds"));
    let announcer = Announcer::builder(service.as_str(), "127.0.0.1:9000")
        .nats(NatsConfig::new([url.clone()]))
        .prefix(prefix.as_str())
        .instance(instance.as_str())
        .interval(ms(interval_ms))
        .ttl(ms(ttl_ms))
        .start()
        .await
        .expect("announcer starts");
    println!("ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    term.recv().await;
    announcer.shutdown().await.expect("graceful shutdown");
}
