//! Memory per cached instance: live heap bytes (counted by a global allocator) that a
//! subscriber holds for 10,000 instances of typical size (service ~10 B, instance id 20 B,
//! address `10.x.y.z:8080`, a zone, two metadata entries), divided by 10,000.
//!
//! The baseline is taken after the subscriber and the publishing connection have already
//! carried 10,000 tokens that the subscriber rejects (so their buffers have grown to their
//! working size and only what the cache keeps is counted). The publisher runs in this
//! process; its buffers are the same before and after.
//!
//! For comparison, the same instances as the naive structure a hand-written cache would
//! start with: `HashMap<(String, String), Token>`.
//!
//! `cargo run --release -p herald-bench -- memory [--classes]`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_bench::alloc::{SIZE_CLASSES, live_bytes, live_bytes_by_class, live_chunk_bytes};
use herald_bench::fleet::{self, Fleet, Layout};
use herald_shared::{NatsConfig, Subjects, Token};
use herald_subscriber::{Instance, Subscriber};
use herald_testkit::NatsServer;

/// Live bytes as requested, and as glibc lays them out.
#[derive(Debug, Clone, Copy)]
struct Live {
    bytes: i64,
    chunks: i64,
    by_class: [i64; SIZE_CLASSES],
}

impl Live {
    fn now() -> Live {
        Live {
            bytes: live_bytes(),
            chunks: live_chunk_bytes(),
            by_class: live_bytes_by_class(),
        }
    }

    /// The size classes whose live bytes moved since `since`, as `"<=64K: +131072"` items.
    fn class_changes(&self, since: &Live) -> String {
        let mut out = Vec::new();
        for k in 0..SIZE_CLASSES {
            let delta = self.by_class[k] - since.by_class[k];
            if delta != 0 {
                let upper = 1u64 << k;
                let label = if upper >= 1 << 20 {
                    format!("<{}M", upper >> 20)
                } else if upper >= 1 << 10 {
                    format!("<{}K", upper >> 10)
                } else {
                    format!("<{upper}")
                };
                out.push(format!("{label}: {delta:+}"));
            }
        }
        out.join(", ")
    }

    fn per(self, since: Live, n: usize) -> (f64, f64) {
        (
            (self.bytes - since.bytes) as f64 / n as f64,
            (self.chunks - since.chunks) as f64 / n as f64,
        )
    }
}

/// Lets the ingest task's sweeps and moka's housekeeping run several times.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Tokens published between two flushes. The publishing connection lives in this process,
/// and its write buffer grows with the longest unflushed burst: bounded bursts keep it at the
/// size the warm-up gave it (unbounded, it sometimes doubled to 245 KiB while the instances
/// were listed, 12 bytes per instance that were not the subscriber's).
const BURST: usize = 100;

async fn publish_all(client: &async_nats::Client, fleet: &mut Fleet) {
    for k in 1..=fleet.len() {
        let (subject, payload) = fleet.next_token(0.25, herald_shared::unix_millis());
        client.publish(subject, payload).await.expect("publish");
        if k % BURST == 0 {
            client.flush().await.expect("flush");
        }
    }
    client.flush().await.expect("flush");
}

/// Bytes per instance a subscriber holds for `layout`: once listed, and again after every
/// instance has been refreshed twice (nothing may grow with refreshes).
async fn subscriber_bytes(url: &str, layout: Layout) -> (Live, Live, Live) {
    let subjects = Subjects::default();
    let config = NatsConfig::new([url]);
    let (publisher, _) = config.connect().await.expect("publisher connects");
    let sub = Subscriber::builder()
        .nats(config)
        .start()
        .await
        .expect("subscriber starts");

    // Same shape and count, on service-00's subject but naming another service: rejected,
    // so nothing is cached, but every buffer on the way has carried the load once.
    let target = subjects.announce(&fleet::service_name(0));
    for k in 0..layout.len() {
        let mut t = fleet::typical_token(0, k, 3_000);
        t.service = "warm-up".to_owned();
        let payload = herald_shared::codec::encode(&t).expect("encodes");
        publisher
            .publish(target.clone(), payload.into())
            .await
            .expect("publish");
    }
    publisher.flush().await.expect("flush");
    wait_until("warm-up tokens seen", || {
        sub.stats().rejected_total() == layout.len() as u64
    })
    .await;
    // The publisher's templates exist before the baseline: they are not the subscriber's.
    let mut fleet = Fleet::new(layout, 60_000, &subjects);
    settle().await;
    let base = Live::now();

    publish_all(&publisher, &mut fleet).await;
    wait_until("every instance listed", || {
        sub.stats().instances == layout.len() as u64
    })
    .await;
    settle().await;
    let listed = Live::now();

    for _ in 0..2 {
        publish_all(&publisher, &mut fleet).await;
    }
    wait_until("every refresh applied", || {
        sub.stats().accepted == 3 * layout.len() as u64
    })
    .await;
    settle().await;
    let refreshed = Live::now();
    sub.shutdown().await;
    (base, listed, refreshed)
}

/// Bytes per instance of the parts a subscriber's entry is made of, measured alone:
/// the record behind an `Instance` handle (built with `Instance::from_token`, which also
/// gives each one its own copy of the service name), and one moka entry keyed by two shared
/// `Arc<str>` with a per-entry expiry, as the store's cache holds.
fn component_bytes(layout: Layout) -> ((f64, f64), (f64, f64)) {
    let tokens: Vec<Token> = (0..layout.services)
        .flat_map(|s| (0..layout.per_service).map(move |i| fleet::typical_token(s, i, 3_000)))
        .collect();
    let base = Live::now();
    let records: Vec<Instance> = tokens.iter().map(Instance::from_token).collect();
    // The vector of handles is not part of a record.
    let record = Live {
        bytes: Live::now().bytes - (records.capacity() * std::mem::size_of::<Instance>()) as i64,
        chunks: Live::now().chunks
            - super_chunk(records.capacity() * std::mem::size_of::<Instance>()),
        by_class: [0; SIZE_CLASSES],
    }
    .per(base, layout.len());

    struct Expiry;
    impl moka::Expiry<(Arc<str>, Arc<str>), Arc<Instance>> for Expiry {
        fn expire_after_create(
            &self,
            _: &(Arc<str>, Arc<str>),
            _: &Arc<Instance>,
            _: Instant,
        ) -> Option<Duration> {
            Some(Duration::from_secs(60))
        }
    }
    let keys: Vec<(Arc<str>, Arc<str>, Arc<Instance>)> = tokens
        .iter()
        .zip(&records)
        .map(|(t, r)| {
            (
                Arc::from(t.service.as_str()),
                Arc::from(t.instance.as_str()),
                Arc::new(r.clone()),
            )
        })
        .collect();
    let base = Live::now();
    let cache: moka::sync::Cache<(Arc<str>, Arc<str>), Arc<Instance>> =
        moka::sync::Cache::builder().expire_after(Expiry).build();
    for (s, i, r) in &keys {
        cache.insert((s.clone(), i.clone()), r.clone());
    }
    cache.run_pending_tasks();
    let moka = Live::now().per(base, layout.len());
    drop(cache);
    (record, moka)
}

/// glibc's footprint of one allocation of `size` bytes.
fn super_chunk(size: usize) -> i64 {
    ((size + 8 + 15) & !15).max(32) as i64
}

/// Bytes per instance of `HashMap<(String, String), Token>` holding the same tokens.
fn naive_bytes(layout: Layout) -> (f64, f64) {
    let tokens: Vec<Token> = (0..layout.services)
        .flat_map(|s| (0..layout.per_service).map(move |i| fleet::typical_token(s, i, 3_000)))
        .collect();
    let base = Live::now();
    let mut map: HashMap<(String, String), Token> = HashMap::new();
    for t in &tokens {
        map.insert((t.service.clone(), t.instance.clone()), t.clone());
    }
    let per = Live::now().per(base, layout.len());
    drop(map);
    per
}

/// What `memory` takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Also print which request sizes the live bytes are in (what moved).
    #[arg(long)]
    classes: bool,
}

pub(crate) fn run(args: Args) {
    crate::runtime().block_on(measure(args.classes));
}

async fn measure(by_class: bool) {
    let nats = NatsServer::start().await;
    println!(
        "memory per cached instance (live heap bytes / instances; 'malloc' adds glibc's \
         8-byte header and 16-byte rounding per allocation)\n"
    );
    println!(
        "  {:<20} {:>22} {:>26}",
        "layout", "listed: bytes (malloc)", "refreshed x2: bytes (malloc)"
    );
    for layout in Layout::STANDARD {
        let (base, listed_at, refreshed_at) = subscriber_bytes(&nats.url(), layout).await;
        let (listed, refreshed) = (
            listed_at.per(base, layout.len()),
            refreshed_at.per(base, layout.len()),
        );
        println!(
            "  {:<20} {:>10.0} ({:>5.0}) {:>15.0} ({:>5.0})",
            layout.to_string(),
            listed.0,
            listed.1,
            refreshed.0,
            refreshed.1
        );
        if by_class {
            println!(
                "    listed, bytes by request size: {}",
                listed_at.class_changes(&base)
            );
            println!(
                "    refreshes, bytes by request size: {}",
                refreshed_at.class_changes(&listed_at)
            );
        }
    }
    let layout = Layout {
        services: 100,
        per_service: 100,
    };
    let (record, moka) = component_bytes(layout);
    println!("\n  parts, measured alone (100 svc x 100):");
    println!(
        "    {:<58} {:>5.0} ({:>5.0})",
        "record behind an Instance (Instance::from_token)", record.0, record.1
    );
    println!(
        "    {:<58} {:>5.0} ({:>5.0})",
        "moka entry, key (Arc<str>, Arc<str>), per-entry expiry", moka.0, moka.1
    );
    let naive = naive_bytes(layout);
    println!(
        "    {:<58} {:>5.0} ({:>5.0})",
        "naive HashMap<(String, String), Token>, for comparison", naive.0, naive.1
    );
    println!("\n  target: at most 512 bytes per instance, malloc included");
}
