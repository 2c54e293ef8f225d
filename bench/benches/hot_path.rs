//! The steps of ingest, each on its own: `codec::accept` of a typical token, the merge
//! decision for a refresh, the store's ingest (`codec::accept`, then `Store::apply`) of a
//! refresh-only token and of one whose load changed (into a store of 10,000 instances in
//! 100 services), and a join and a leave in a service of 1,000, each publishing the
//! service's snapshot. `pick` is `benches/pick.rs`.
//!
//! `cargo bench -p herald-bench --bench hot_path`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use herald_bench::fleet::{self, Template};
use herald_shared::{Subjects, codec};
use herald_subscriber::internals::{BareStore, merge_refresh};

/// Instances in the store: 100 services of 100.
const SERVICES: usize = 100;
const PER_SERVICE: usize = 100;
/// A TTL no run outlasts: nothing expires while measuring.
const TTL_MS: u32 = 3_600_000;
/// `seq` and `sent_at_ms` keep their 8-byte encoding above this.
const BASE: u64 = 1 << 40;

/// Every instance's template, with its service's name.
fn templates() -> Vec<(String, Template)> {
    let subjects = Subjects::default();
    (0..SERVICES)
        .flat_map(|s| (0..PER_SERVICE).map(move |i| (s, i)))
        .map(|(s, i)| {
            let token = fleet::typical_token(s, i, TTL_MS);
            (token.service.clone(), Template::new(&token, &subjects))
        })
        .collect()
}

/// A store holding every instance of `templates`, each at `seq` BASE.
fn filled(templates: &[(String, Template)]) -> BareStore {
    let mut store = BareStore::new();
    for (service, t) in templates {
        store.ingest(service, &t.payload(BASE, 0.25, BASE));
    }
    store.flush();
    store
}

fn decode(c: &mut Criterion) {
    let token = fleet::typical_token(1, 7, TTL_MS);
    let payload = codec::encode(&token).unwrap();
    c.bench_function(&format!("codec::accept ({} B token)", payload.len()), |b| {
        b.iter(|| codec::accept(black_box(&payload), black_box(&token.service)).is_ok())
    });
}

fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge (refresh of a live instance)");
    for (name, registry) in [("bus", false), ("registry", true)] {
        let mut seq = 1;
        group.bench_function(name, |b| {
            b.iter(|| {
                seq += 1;
                merge_refresh(black_box(registry), black_box(seq - 1), black_box(seq))
            })
        });
    }
    group.finish();
}

fn apply(c: &mut Criterion) {
    let templates = templates();
    let mut group = c.benchmark_group("ingest: codec::accept + Store::apply (10,000 instances)");
    for (name, changing_load) in [("refresh-only", false), ("load changed", true)] {
        let mut store = filled(&templates);
        let mut next = 0usize;
        let mut seq = BASE + 1;
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || {
                    next = (next + 1) % templates.len();
                    // One token per instance per pass over the fleet, each pass standing for
                    // a second: the pace of announcers, which a run far faster than that
                    // would exceed (its tokens would be dropped as seq jumps).
                    let new_pass = next == 0;
                    if new_pass {
                        seq += 1;
                    }
                    let load = if changing_load {
                        ((seq + next as u64) % 100) as f32
                    } else {
                        0.25
                    };
                    let (service, t) = &templates[next];
                    (service.as_str(), t.payload(seq, load, seq), new_pass)
                },
                |(service, payload, new_pass): &mut (&str, Bytes, bool)| {
                    if *new_pass {
                        store.advance_clock(1_000);
                    }
                    store.ingest(service, payload)
                },
                BatchSize::SmallInput,
            )
        });
        let stats = store.stats();
        assert_eq!(
            (stats.seq_jump_drops, stats.duplicate_drops),
            (0, 0),
            "every token of the benchmark was applied"
        );
    }
    group.finish();
}

fn publish(c: &mut Criterion) {
    let subjects = Subjects::default();
    let templates: Vec<(String, Template)> = (0..1_001)
        .map(|i| {
            let token = fleet::typical_token(0, i, TTL_MS);
            (token.service.clone(), Template::new(&token, &subjects))
        })
        .collect();
    let (newcomer, rest) = templates.split_last().unwrap();
    let mut store = filled(rest);
    let mut seq = BASE;
    c.bench_function(
        "join and leave in a service of 1,000 (two snapshots published)",
        |b| {
            b.iter_batched_ref(
                || {
                    seq += 2;
                    let mut leaving = fleet::typical_token(0, 1_000, TTL_MS);
                    leaving.seq = seq;
                    let leaving = codec::encode(&fleet::goodbye(&leaving)).unwrap();
                    (newcomer.1.payload(seq, 0.5, seq), leaving)
                },
                |(join, leave)| {
                    store.ingest(&newcomer.0, join);
                    store.flush();
                    store.ingest(&newcomer.0, leave);
                    store.flush();
                },
                BatchSize::SmallInput,
            )
        },
    );
    assert_eq!(store.listed(&newcomer.0), 1_000, "every leave went through");
}

criterion_group!(benches, decode, merge, apply, publish);
criterion_main!(benches);
