//! Announcers in a process of their own, for tests that kill it with SIGKILL or stop it.
//!
//! Usage: `announce_child NATS_URL PREFIX SERVICE INSTANCE INTERVAL_MS TTL_MS [COUNT]`. With
//! `COUNT` (default 1) above 1, announces `INSTANCE0` .. `INSTANCE{COUNT-1}`, all on one
//! shared NATS connection. Prints `ready` once every `start()` returned (the first tokens are
//! out), then announces until killed; on SIGTERM it shuts down gracefully.

use std::time::Duration;

use herald_announcer::Announcer;
use herald_shared::NatsConfig;

const USAGE: &str =
    "usage: announce_child NATS_URL PREFIX SERVICE INSTANCE INTERVAL_MS TTL_MS [COUNT]";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, prefix, service, instance, interval_ms, ttl_ms, count) = match args.as_slice() {
        [u, p, s, i, iv, t] => (u, p, s, i, iv, t, 1),
        [u, p, s, i, iv, t, n] => (u, p, s, i, iv, t, n.parse().expect("COUNT")),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let ms = |s: &str| Duration::from_millis(s.parse().expect("milliseconds"));
    let config = NatsConfig::new([url.clone()]);
    let builder = |id: String| {
        Announcer::builder(service.as_str(), "127.0.0.1:9000")
            .prefix(prefix.as_str())
            .instance(id)
            .interval(ms(interval_ms))
            .ttl(ms(ttl_ms))
    };
    let mut announcers = Vec::new();
    if count == 1 {
        let a = builder(instance.clone()).nats(config).start().await;
        announcers.push(a.expect("announcer starts"));
    } else {
        let (client, _events) = config.connect().await.expect("NATS connects");
        let nats = herald_announcer::Connection::new(client);
        for i in 0..count {
            let a = builder(format!("{instance}{i}"))
                .connection(&nats)
                .start()
                .await;
            announcers.push(a.expect("announcer starts"));
        }
    }
    // The handler is in place before `ready`: a SIGTERM right after it is a graceful stop.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    println!("ready");
    term.recv().await;
    for a in announcers {
        a.shutdown().await.expect("graceful shutdown");
    }
}
