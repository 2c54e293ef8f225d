//! `pick` allocates nothing, whatever the strategy: checked with a counting allocator on a
//! real subscriber holding a service of 10 and one of 1,000 instances.

use std::hint::black_box;
use std::time::{Duration, Instant};

use herald_bench::alloc::{Counting, thread_allocations};
use herald_bench::fleet::{self, Fleet};
use herald_shared::{NatsConfig, Subjects, Token};
use herald_subscriber::{Strategy, Subscriber};
use herald_testkit::NatsServer;

#[global_allocator]
static ALLOC: Counting = Counting;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picks_do_not_allocate() {
    let nats = NatsServer::start().await;
    let config = NatsConfig::new([nats.url()]);
    let sub = Subscriber::builder()
        .nats(config.clone())
        .start()
        .await
        .expect("subscriber starts");
    let (publisher, _) = config.connect().await.expect("publisher connects");
    let tokens: Vec<Token> = (0..10)
        .map(|i| fleet::typical_token(0, i, 3_600_000))
        .chain((0..1_000).map(|i| fleet::typical_token(1, i, 3_600_000)))
        .collect();
    let mut fleet = Fleet::from_tokens(&tokens, &Subjects::default());
    for k in 0..fleet.len() {
        let (subject, payload) = fleet.next_token(k as f32 / 1_000.0, herald_shared::unix_millis());
        publisher.publish(subject, payload).await.expect("publish");
    }
    publisher.flush().await.expect("flush");
    let deadline = Instant::now() + Duration::from_secs(20);
    while sub.stats().instances != tokens.len() as u64 {
        assert!(Instant::now() < deadline, "every instance is listed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for service in [fleet::service_name(0), fleet::service_name(1)] {
        for strategy in [
            Strategy::RoundRobin,
            Strategy::Random,
            Strategy::LeastLoad,
            Strategy::PowerOfTwoChoices,
            Strategy::WeightedRandom,
            Strategy::Affinity("user-4242"),
        ] {
            // Thread-locals (the pick generator, arc-swap's debt list) settle first.
            assert!(sub.pick(&service, strategy).is_some(), "{strategy:?} picks");
            let before = thread_allocations();
            for _ in 0..10_000 {
                black_box(sub.pick(black_box(&service), black_box(strategy)));
            }
            let allocations = thread_allocations() - before;
            assert_eq!(
                allocations, 0,
                "{strategy:?} on {service} must not allocate, made {allocations} allocations"
            );
        }
    }
    sub.shutdown().await;
}
