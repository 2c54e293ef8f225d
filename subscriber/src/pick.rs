//! Pick strategies: pure functions over one service's snapshot.
//!
//! None of them allocates or looks beyond the service's own instances; the ones that need
//! no scan (random, round robin, power of two choices, weighted random) are O(1) expected,
//! least load and affinity are O(instances of the service). Draining and expired instances
//! are skipped. With a preferred zone, the zone's instances are tried first and the rest of
//! the service only when none of them is available.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use herald_shared::State;

use crate::Instance;
use crate::view::Snapshot;

/// How to choose one instance of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy<'k> {
    /// Each instance in turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// The instance with the lowest announced load (ties: the first by zone and id).
    LeastLoad,
    /// Two instances at random, the less loaded of them: nearly least-load quality without
    /// herding every client onto the same instance between two broadcasts.
    PowerOfTwoChoices,
    /// At random, in proportion to the announced weights.
    WeightedRandom,
    /// Rendezvous hashing of a caller's key: the key keeps its instance while that instance
    /// lives, and when one goes only its keys move (client-side sticky sessions).
    Affinity(&'k str),
}

impl Strategy<'_> {
    /// Parses a strategy name (`round_robin`, `random`, `least_load`, `p2c`,
    /// `weighted_random`); affinity needs a key and is not parsed.
    pub fn parse(name: &str) -> Option<Strategy<'static>> {
        Some(match name {
            "round_robin" | "rr" => Strategy::RoundRobin,
            "random" => Strategy::Random,
            "least_load" => Strategy::LeastLoad,
            "p2c" | "power_of_two" => Strategy::PowerOfTwoChoices,
            "weighted_random" | "weighted" => Strategy::WeightedRandom,
            _ => return None,
        })
    }
}

/// Picks from `snap` following `strategy`, preferring `zone` when given.
pub(crate) fn choose<'s>(
    snap: &'s Snapshot,
    strategy: Strategy<'_>,
    zone: Option<&str>,
    rng: &mut fastrand::Rng,
    round_robin: &AtomicUsize,
) -> Option<&'s Instance> {
    let now = snap.clock.now_ms();
    let confirmed = |i: &Instance| {
        i.0.is_confirmed() && i.0.state() == State::Up && snap.clock.is_live(&i.0, now)
    };
    if let Some(found) = choose_zoned(snap, strategy, zone, rng, round_robin, &confirmed) {
        return Some(found);
    }
    // Instances known only from etcd may be gone already: picked only when no instance that
    // was heard on NATS is available.
    let unconfirmed = |i: &Instance| {
        !i.0.is_confirmed() && i.0.state() == State::Up && snap.clock.is_live(&i.0, now)
    };
    choose_zoned(snap, strategy, zone, rng, round_robin, &unconfirmed)
}

/// Picks among the instances `available` accepts, from `zone` first when given.
fn choose_zoned<'s>(
    snap: &'s Snapshot,
    strategy: Strategy<'_>,
    zone: Option<&str>,
    rng: &mut fastrand::Rng,
    round_robin: &AtomicUsize,
    available: &impl Fn(&Instance) -> bool,
) -> Option<&'s Instance> {
    if let Some(range) = zone.and_then(|z| snap.zone_range(z)) {
        if let Some(found) = choose_in(snap, range, strategy, rng, round_robin, available) {
            return Some(found);
        }
    }
    choose_in(
        snap,
        0..snap.instances.len(),
        strategy,
        rng,
        round_robin,
        available,
    )
}

fn choose_in<'s>(
    snap: &'s Snapshot,
    range: Range<usize>,
    strategy: Strategy<'_>,
    rng: &mut fastrand::Rng,
    round_robin: &AtomicUsize,
    available: &impl Fn(&Instance) -> bool,
) -> Option<&'s Instance> {
    let all = &snap.instances[range.clone()];
    if all.is_empty() {
        return None;
    }
    let n = all.len();
    match strategy {
        Strategy::Random => first_available_from(all, rng.usize(..n), available),
        Strategy::RoundRobin => {
            first_available_from(all, round_robin.fetch_add(1, Relaxed) % n, available)
        }
        Strategy::LeastLoad => all
            .iter()
            .filter(|i| available(i))
            .min_by(|a, b| a.load().total_cmp(&b.load())),
        Strategy::PowerOfTwoChoices => {
            // Two distinct instances, the less loaded of them: with two available, the busier
            // is never picked.
            let i = rng.usize(..n);
            let a = first_available_from(all, i, available)?;
            if n == 1 {
                return Some(a);
            }
            let mut j = rng.usize(..n - 1);
            if j >= i {
                j += 1;
            }
            let other = |x: &Instance| available(x) && !std::ptr::eq(x, a);
            Some(match first_available_from(all, j, &other) {
                Some(b) if b.load() < a.load() => b,
                _ => a,
            })
        }
        Strategy::WeightedRandom => {
            let cum = &snap.cum_weight[range.start..=range.end];
            let (base, total) = (cum[0], cum[n] - cum[0]);
            if total == 0 {
                return first_available_from(all, rng.usize(..n), available);
            }
            let target = base + rng.u64(..total);
            // The instance whose [cum[i], cum[i+1]) holds target.
            let i = cum.partition_point(|c| *c <= target) - 1;
            first_available_from(all, i.min(n - 1), available)
        }
        Strategy::Affinity(key) => {
            let key_hash = crate::hash::hash_str(key);
            all.iter()
                .filter(|i| available(i))
                .max_by_key(|i| crate::hash::mix(key_hash ^ i.0.id_hash))
        }
    }
}

/// The first available instance at or after `start`, wrapping around.
fn first_available_from<'s>(
    all: &'s [Instance],
    start: usize,
    available: &impl Fn(&Instance) -> bool,
) -> Option<&'s Instance> {
    let (tail, head) = all.split_at(start);
    head.iter().chain(tail).find(|i| available(i))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use herald_shared::Token;

    use super::*;
    use crate::view::Clock;

    fn inst(id: &str, load: f32, zone: Option<&str>, weight: u32, state: State) -> Instance {
        let mut t = Token::new("svc", id, "10.0.0.1:80");
        t.load = load;
        t.zone = zone.map(str::to_owned);
        t.weight = weight;
        t.state = state;
        Instance::from_token(&t)
    }

    fn snap(list: Vec<Instance>) -> Snapshot {
        Snapshot::build(list, Arc::new(Clock::new()))
    }

    fn counts(
        s: &Snapshot,
        strategy: Strategy<'_>,
        zone: Option<&str>,
        n: usize,
    ) -> HashMap<String, usize> {
        let mut rng = fastrand::Rng::with_seed(7);
        let rr = AtomicUsize::new(0);
        let mut out = HashMap::new();
        for _ in 0..n {
            let i = choose(s, strategy, zone, &mut rng, &rr).expect("an instance is available");
            *out.entry(i.id().to_owned()).or_default() += 1;
        }
        out
    }

    fn unconfirmed(id: &str, load: f32, zone: Option<&str>) -> Instance {
        let i = inst(id, load, zone, 100, State::Up);
        i.0.confirmed.store(false, Relaxed);
        i
    }

    #[test]
    fn confirmed_instances_come_first_and_silent_ones_only_as_a_last_resort() {
        let every = [
            Strategy::RoundRobin,
            Strategy::Random,
            Strategy::LeastLoad,
            Strategy::PowerOfTwoChoices,
            Strategy::WeightedRandom,
            Strategy::Affinity("k"),
        ];
        // The silent one is the least loaded and in the preferred zone: still not picked.
        let s = snap(vec![
            unconfirmed("silent", 0.0, Some("z1")),
            inst("heard", 0.9, Some("z2"), 100, State::Up),
        ]);
        for strategy in every {
            let c = counts(&s, strategy, Some("z1"), 200);
            assert_eq!(c.get("heard"), Some(&200), "{strategy:?}: {c:?}");
        }
        let s = snap(vec![
            unconfirmed("silent", 0.0, None),
            inst("draining", 0.0, None, 100, State::Draining),
        ]);
        for strategy in every {
            let c = counts(&s, strategy, None, 50);
            assert_eq!(
                c.get("silent"),
                Some(&50),
                "{strategy:?}: no other is available"
            );
        }
    }

    #[test]
    fn empty_service_picks_nothing() {
        let s = snap(vec![]);
        let mut rng = fastrand::Rng::with_seed(1);
        assert!(choose(&s, Strategy::Random, None, &mut rng, &AtomicUsize::new(0)).is_none());
    }

    #[test]
    fn round_robin_visits_each_in_turn() {
        let s = snap(
            (0..4)
                .map(|i| inst(&format!("i{i}"), 0.0, None, 100, State::Up))
                .collect(),
        );
        let c = counts(&s, Strategy::RoundRobin, None, 400);
        assert!(
            c.values().all(|n| *n == 100),
            "round robin must be exactly even: {c:?}"
        );
    }

    #[test]
    fn draining_instances_are_never_picked() {
        let s = snap(vec![
            inst("a", 0.0, None, 100, State::Draining),
            inst("b", 0.9, None, 100, State::Up),
        ]);
        for strategy in [
            Strategy::RoundRobin,
            Strategy::Random,
            Strategy::LeastLoad,
            Strategy::PowerOfTwoChoices,
            Strategy::WeightedRandom,
            Strategy::Affinity("k"),
        ] {
            let c = counts(&s, strategy, None, 200);
            assert_eq!(c.get("a"), None, "{strategy:?} picked a draining instance");
        }
    }

    #[test]
    fn least_load_takes_the_minimum() {
        let s = snap(vec![
            inst("a", 0.5, None, 100, State::Up),
            inst("b", 0.1, None, 100, State::Up),
            inst("c", 0.3, None, 100, State::Up),
        ]);
        assert_eq!(counts(&s, Strategy::LeastLoad, None, 10)["b"], 10);
    }

    #[test]
    fn power_of_two_compares_two_distinct_instances() {
        let s = snap(vec![
            inst("busy", 0.9, None, 100, State::Up),
            inst("idle", 0.1, None, 100, State::Up),
        ]);
        let c = counts(&s, Strategy::PowerOfTwoChoices, None, 2_000);
        assert_eq!(
            c.get("busy"),
            None,
            "with two instances the busier is never picked: {c:?}"
        );
        let three = snap(vec![
            inst("low", 0.1, None, 100, State::Up),
            inst("mid", 0.5, None, 100, State::Up),
            inst("high", 0.9, None, 100, State::Up),
        ]);
        let c = counts(&three, Strategy::PowerOfTwoChoices, None, 3_000);
        assert_eq!(c.get("high"), None, "the busiest loses every pair: {c:?}");
        // Of the three pairs, `low` wins two and `mid` one.
        let low = c["low"] as f64 / 3_000.0;
        assert!(
            (0.62..0.71).contains(&low),
            "low's share {low} should be about 2/3"
        );
        // An unavailable instance is never one of the two.
        let draining = snap(vec![
            inst("busy", 0.9, None, 100, State::Up),
            inst("gone", 0.0, None, 100, State::Draining),
            inst("idle", 0.1, None, 100, State::Up),
        ]);
        let c = counts(&draining, Strategy::PowerOfTwoChoices, None, 2_000);
        assert_eq!(c.get("busy"), None, "{c:?}");
        assert_eq!(c.get("gone"), None, "{c:?}");
    }

    #[test]
    fn weighted_random_follows_weights() {
        let s = snap(vec![
            inst("light", 0.0, None, 100, State::Up),
            inst("heavy", 0.0, None, 300, State::Up),
        ]);
        let c = counts(&s, Strategy::WeightedRandom, None, 20_000);
        let heavy = c["heavy"] as f64 / 20_000.0;
        assert!(
            (0.73..0.77).contains(&heavy),
            "heavy share {heavy} should be about 3/4"
        );
    }

    #[test]
    fn zone_preference_falls_back_when_the_zone_is_unavailable() {
        let s = snap(vec![
            inst("a1", 0.0, Some("a"), 100, State::Up),
            inst("b1", 0.0, Some("b"), 100, State::Up),
            inst("b2", 0.0, Some("b"), 100, State::Draining),
        ]);
        let c = counts(&s, Strategy::Random, Some("b"), 100);
        assert_eq!(
            c.get("b1"),
            Some(&100),
            "the preferred zone wins while available"
        );
        let s = snap(vec![
            inst("a1", 0.0, Some("a"), 100, State::Up),
            inst("b2", 0.0, Some("b"), 100, State::Draining),
        ]);
        let c = counts(&s, Strategy::Random, Some("b"), 100);
        assert_eq!(
            c.get("a1"),
            Some(&100),
            "other zones serve when the preferred has none"
        );
    }

    #[test]
    fn affinity_moves_only_the_keys_of_a_departed_instance() {
        let all: Vec<Instance> = (0..5)
            .map(|i| inst(&format!("i{i}"), 0.0, None, 100, State::Up))
            .collect();
        let full = snap(all.clone());
        let without = snap(all.iter().filter(|i| i.id() != "i2").cloned().collect());
        let mut rng = fastrand::Rng::with_seed(1);
        let rr = AtomicUsize::new(0);
        let mut moved = 0;
        for k in 0..1_000 {
            let key = format!("user-{k}");
            let before = choose(&full, Strategy::Affinity(&key), None, &mut rng, &rr)
                .unwrap()
                .id()
                .to_owned();
            let after = choose(&without, Strategy::Affinity(&key), None, &mut rng, &rr)
                .unwrap()
                .id()
                .to_owned();
            if before != "i2" {
                assert_eq!(before, after, "key {key} moved though its instance stayed");
            } else {
                moved += 1;
            }
        }
        assert!(
            (120..280).contains(&moved),
            "about a fifth of keys were on i2, got {moved}"
        );
    }
}
