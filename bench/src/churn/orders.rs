//! What the harness orders the fleet ([`Soak::next_order`], [`Soak::leave_all`]), chosen by
//! the seeded generator from the current population, and the truth the fleet's answers
//! confirm ([`Soak::on_answer`]).

use std::time::Instant;

use super::protocol::{Answer, Order};
use super::soak::Soak;
use super::truth::{Ending, Incarnation, Kind};

impl Soak {
    /// The next action, chosen by `rng` from the current population.
    pub(super) fn next_order(&mut self, rng: &mut fastrand::Rng, now: Instant) -> Option<Order> {
        let alive = self.alive_ids();
        let joining = self
            .instances
            .values()
            .filter(|i| i.joined.is_none() && !i.failed)
            .count();
        let population = alive.len() + joining;
        let r = rng.f64();
        let choice = if population < self.settings.min_live || alive.is_empty() {
            0
        } else if population >= self.settings.max_live {
            if r < 0.5 { 1 } else { 2 }
        } else if r < 0.4 {
            0
        } else if r < 0.6 {
            1
        } else if r < 0.8 {
            2
        } else {
            3
        };
        self.actions[choice] += 1;
        if choice == 0 {
            let id = format!("i{:06}", self.next_id);
            self.next_id += 1;
            self.instances.insert(
                id.clone(),
                Incarnation {
                    join_sent: now,
                    joined: None,
                    failed: false,
                    end: None,
                    last_token: None,
                    tokens_after_death: 0,
                    listed: false,
                    added: None,
                    removed: None,
                    version: (0, 0),
                    starved: false,
                },
            );
            return Some(Order::Join(id));
        }
        let id = alive[rng.usize(..alive.len())].clone();
        let kind = match choice {
            1 => Kind::Crash,
            2 => Kind::Leave,
            _ => return Some(Order::Load(id, (rng.f32() * 100.0).round() / 100.0)),
        };
        let inc = self.instances.get_mut(&id)?;
        inc.end = Some(Ending {
            kind,
            ordered: now,
            done: None,
        });
        Some(match kind {
            Kind::Crash => Order::Crash(id),
            Kind::Leave => Order::Leave(id),
        })
    }

    /// Leave orders for every live instance (the wind-down).
    pub(super) fn leave_all(&mut self, now: Instant) -> Vec<Order> {
        let ids = self.alive_ids();
        for id in &ids {
            if let Some(inc) = self.instances.get_mut(id) {
                inc.end = Some(Ending {
                    kind: Kind::Leave,
                    ordered: now,
                    done: None,
                });
            }
        }
        ids.into_iter().map(Order::Leave).collect()
    }

    pub(super) fn on_answer(&mut self, answer: Answer, at: Instant) {
        let id = match &answer {
            Answer::Joined(id, _)
            | Answer::Failed(id, _)
            | Answer::Crashed(id)
            | Answer::Left(id, _)
            | Answer::Loaded(id) => id.clone(),
        };
        let Some(inc) = self.instances.get_mut(&id) else {
            eprintln!("churn: answer for an unknown instance: {answer:?}");
            return;
        };
        match answer {
            Answer::Joined(..) => inc.joined = Some(at),
            Answer::Failed(_, e) => {
                eprintln!("churn: {id} failed to start: {e}");
                inc.failed = true;
                self.join_failures += 1;
            }
            Answer::Crashed(_) | Answer::Left(_, None) => {
                if let Some(end) = inc.end.as_mut() {
                    end.done = Some(at);
                }
            }
            Answer::Left(_, Some(e)) => {
                eprintln!("churn: {id} shutdown failed: {e}");
                self.leave_errors += 1;
                if let Some(end) = inc.end.as_mut() {
                    end.done = Some(at);
                }
            }
            Answer::Loaded(_) => {}
        }
    }
}
