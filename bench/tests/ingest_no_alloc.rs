//! A token that changes nothing but freshness and load is applied without allocating:
//! checked with a counting allocator on the store a subscriber's ingest drives, holding
//! 1,000 instances in 10 services.

use bytes::Bytes;
use herald_bench::alloc::{Counting, thread_allocations};
use herald_bench::fleet::{self, Template};
use herald_shared::Subjects;
use herald_subscriber::internals::BareStore;

#[global_allocator]
static ALLOC: Counting = Counting;

/// `seq` and `sent_at_ms` keep their 8-byte encoding above this.
const BASE: u64 = 1 << 40;

#[test]
fn refresh_only_and_load_change_tokens_do_not_allocate() {
    let subjects = Subjects::default();
    let templates: Vec<(String, Template)> = (0..10)
        .flat_map(|s| (0..100).map(move |i| (s, i)))
        .map(|(s, i)| {
            let token = fleet::typical_token(s, i, 3_600_000);
            (token.service.clone(), Template::new(&token, &subjects))
        })
        .collect();
    let mut store = BareStore::new();
    for (service, t) in &templates {
        store.ingest(service, &t.payload(BASE, 0.25, BASE));
    }
    store.flush();
    assert_eq!(store.listed(&templates[0].0), 100);

    for (what, load_of) in [
        ("refresh-only", (|_| 0.25) as fn(u64) -> f32),
        ("load-change", |round| round as f32),
    ] {
        // Built before counting: ten rounds of a newer token for every instance.
        let rounds: Vec<Vec<Bytes>> = (1..=10)
            .map(|round| {
                let seq = BASE + round + if what == "load-change" { 10 } else { 0 };
                templates
                    .iter()
                    .map(|(_, t)| t.payload(seq, load_of(round), seq))
                    .collect()
            })
            .collect();
        let before = thread_allocations();
        for round in &rounds {
            for ((service, _), payload) in templates.iter().zip(round) {
                store.ingest(service, payload);
            }
            store.flush();
        }
        let allocations = thread_allocations() - before;
        assert_eq!(
            allocations, 0,
            "{what} tokens must not allocate: {allocations} allocations for 10,000 tokens"
        );
    }
    let stats = store.stats();
    assert_eq!(
        (
            stats.accepted,
            stats.duplicate_drops,
            stats.stale_epoch_drops,
            stats.instances
        ),
        (21_000, 0, 0, 1_000),
        "every token was applied as a refresh: {stats:?}"
    );

    // The counter counts on this path: a newcomer's entry and snapshot are allocations.
    let newcomer = Template::new(&fleet::typical_token(0, 100, 3_600_000), &subjects);
    let payload = newcomer.payload(BASE, 0.25, BASE);
    let before = thread_allocations();
    store.ingest(&templates[0].0, &payload);
    store.flush();
    assert!(thread_allocations() > before, "a join allocates");
    assert_eq!(store.listed(&templates[0].0), 101);
}
