//! Cost of one `pick` per strategy, for a service of 10 and one of 1,000 instances among
//! 10,000 cached, read from a real subscriber fed over a local nats-server; and the
//! allocations 100,000 picks make on the calling thread (the target is none).
//!
//! `cargo bench -p herald-bench --bench pick`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use herald_bench::alloc::{Counting, thread_allocations};
use herald_bench::fleet::{self, Fleet};
use herald_shared::{NatsConfig, Subjects, Token};
use herald_subscriber::{Strategy, Subscriber};
use herald_testkit::NatsServer;

#[global_allocator]
static ALLOC: Counting = Counting;

/// Services and sizes: `service-00` has 10 instances, `service-01` 1,000, and 98 more
/// services share the other 8,990.
const SMALL: (&str, usize) = ("service-00", 10);
const BIG: (&str, usize) = ("service-01", 1_000);
const TOTAL: usize = 10_000;

const STRATEGIES: [(&str, Strategy<'static>); 6] = [
    ("round_robin", Strategy::RoundRobin),
    ("random", Strategy::Random),
    ("least_load", Strategy::LeastLoad),
    ("p2c", Strategy::PowerOfTwoChoices),
    ("weighted_random", Strategy::WeightedRandom),
    ("affinity", Strategy::Affinity("user-4242")),
];

fn tokens() -> Vec<Token> {
    let mut tokens: Vec<Token> = (0..SMALL.1)
        .map(|i| fleet::typical_token(0, i, 3_600_000))
        .chain((0..BIG.1).map(|i| fleet::typical_token(1, i, 3_600_000)))
        .collect();
    let rest = TOTAL - tokens.len();
    tokens.extend((0..rest).map(|k| fleet::typical_token(2 + k % 98, k, 3_600_000)));
    tokens
}

/// A nats-server and a subscriber of every service holding [`TOTAL`] instances with
/// random loads and the longest TTL (nothing expires during the benchmark).
async fn setup() -> (NatsServer, Subscriber) {
    let nats = NatsServer::start().await;
    let config = NatsConfig::new([nats.url()]);
    let subscriber = Subscriber::builder()
        .nats(config.clone())
        .start()
        .await
        .expect("subscriber starts");
    let (publisher, _) = config.connect().await.expect("publisher connects");
    let mut fleet = Fleet::from_tokens(&tokens(), &Subjects::default());
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..fleet.len() {
        let (subject, payload) = fleet.next_token(rng.f32(), herald_shared::unix_millis());
        publisher.publish(subject, payload).await.expect("publish");
    }
    publisher.flush().await.expect("flush");
    let deadline = Instant::now() + Duration::from_secs(20);
    while subscriber.stats().instances != TOTAL as u64 {
        assert!(Instant::now() < deadline, "every instance is listed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(subscriber.instances(SMALL.0).len(), SMALL.1);
    assert_eq!(subscriber.instances(BIG.0).len(), BIG.1);
    (nats, subscriber)
}

/// Allocations on this thread over 100,000 picks (after 1,000 to warm thread-locals up).
fn allocations_per_100k(sub: &Subscriber, service: &str, strategy: Strategy<'_>) -> u64 {
    for _ in 0..1_000 {
        black_box(sub.pick(service, strategy));
    }
    let before = thread_allocations();
    for _ in 0..100_000 {
        black_box(sub.pick(black_box(service), black_box(strategy)));
    }
    thread_allocations() - before
}

fn pick(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (nats, sub) = rt.block_on(setup());

    println!("allocations on the calling thread over 100,000 picks (target 0):");
    for (service, n) in [SMALL, BIG] {
        for (name, strategy) in STRATEGIES {
            let count = allocations_per_100k(&sub, service, strategy);
            println!(
                "  {name:<16} service of {n:>5}: {count}{}",
                if count == 0 { "" } else { "  <- ALLOCATES" }
            );
        }
    }

    let mut group = c.benchmark_group("pick");
    for (service, n) in [SMALL, BIG] {
        for (name, strategy) in STRATEGIES {
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| sub.pick(black_box(service), black_box(strategy)))
            });
        }
    }
    group.finish();
    rt.block_on(sub.shutdown());
    drop(nats);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(40)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1_500));
    targets = pick
}
criterion_main!(benches);
