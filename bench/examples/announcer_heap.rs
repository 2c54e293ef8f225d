//! Live heap per announcer on a session: the bytes a process holds for each announcer it
//! runs (counted by the bench's global allocator), and by allocation size class.
//!
//! It starts its own `nats-server` and `etcd` (the test kit's, on free loopback ports), 200
//! announcers to warm every buffer up, then `N` more (default 5,000), 100 at a time, on one
//! NATS connection and one session (`private`: each with a lease of its own instead, through
//! one etcd client), and
//! reads the live heap before and after.
//!
//! `cargo run --release -p herald-bench --example announcer_heap -- [N] [private]`

use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use herald_announcer::{Announcer, AnnouncerBuilder, Connection, Session};
use herald_bench::alloc::{SIZE_CLASSES, live_bytes, live_bytes_by_class};
use herald_shared::{EtcdConfig, NatsConfig};
use herald_testkit::{EtcdServer, NatsServer};

#[global_allocator]
static ALLOC: herald_bench::alloc::Counting = herald_bench::alloc::Counting;

/// Announcers started before the baseline, so that shared buffers have grown already.
const WARM_UP: usize = 200;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let private = args.next().is_some_and(|a| a == "private");
    let nats = NatsServer::start().await;
    let etcd = EtcdServer::start().await;
    let (client, _events) = NatsConfig::new([nats.url()])
        .connect()
        .await
        .expect("NATS connects");
    let client = Connection::new(client);
    let session = Session::connect(EtcdConfig::new([etcd.endpoint()]), Duration::from_secs(30))
        .await
        .expect("the session starts");
    let etcd_client = EtcdConfig::new([etcd.endpoint()])
        .connect()
        .await
        .expect("etcd connects");
    let builder = |i: usize| -> AnnouncerBuilder {
        let b = Announcer::builder("shard", format!("10.0.{}.{}:8080", i / 250, i % 250))
            .connection(&client)
            .instance(format!("shard-{i:06}"))
            .interval(Duration::from_secs(5));
        match private {
            true => b.etcd_client(etcd_client.clone()),
            false => b.session(&session),
        }
    };
    let start_all = |from: usize, count: usize| {
        futures::stream::iter(from..from + count)
            .map(|i| async move { builder(i).start().await.expect("the announcer starts") })
            .buffer_unordered(100)
            .collect::<Vec<_>>()
    };
    let warm = start_all(0, WARM_UP).await;
    let settle = Duration::from_secs(1);
    tokio::time::sleep(settle).await;
    let (bytes_before, classes_before) = (live_bytes(), live_bytes_by_class());
    let started = std::time::Instant::now();
    let announcers = start_all(WARM_UP, n).await;
    let took = started.elapsed();
    // The first tokens and the registrations' watch news are all in.
    tokio::time::sleep(settle).await;
    let (bytes_after, classes_after) = (live_bytes(), live_bytes_by_class());

    let per = |before: i64, after: i64| (after - before) / n as i64;
    let mut out = format!(
        "{n} announcers ({}) started in {took:.2?}\nlive heap per announcer: {} B\n",
        if private {
            "a lease each"
        } else {
            "one session"
        },
        per(bytes_before, bytes_after)
    );
    for k in 0..SIZE_CLASSES {
        let bytes = per(classes_before[k], classes_after[k]);
        if bytes != 0 {
            out += &format!("  requests under {:>7} B: {bytes:>5} B\n", 1u64 << k);
        }
    }
    let stats = session.stats();
    out += &format!(
        "session: {} batches carried {} calls; {} watch streams, {} key watches\n",
        stats.batches, stats.batched_calls, stats.watch_streams, stats.key_watches
    );
    if std::env::var_os("SHOW_ETCD").is_some() {
        let port = etcd.port();
        if let Ok(r) = herald_testkit::http::get(port, "/metrics").await {
            for l in r
                .body
                .lines()
                .filter(|l| l.starts_with("grpc_server_handled_total") && !l.ends_with(" 0"))
            {
                out += l;
                out += "\n";
            }
        }
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    // What the announcers do when they stop is not measured: leave at once.
    std::mem::forget((warm, announcers));
    std::process::exit(0);
}
