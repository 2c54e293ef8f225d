//! The observer's tokens ([`Soak::on_token`]: when each instance last spoke) and the
//! event-stream checks ([`Soak::on_event`]): order and versions per instance, removal
//! causes, false removals, early expiries, and the removal delays.

use std::time::Instant;

use herald_shared::{Received, State, codec};
use herald_subscriber::{Event, Instance, RemovalCause};

use super::soak::Soak;
use super::truth::{Kind, Violation};

/// An event's change, its instance aside.
#[derive(Debug, Clone, Copy)]
enum Change {
    Added,
    Updated,
    Removed(RemovalCause),
}

impl Soak {
    pub(super) fn on_token(&mut self, payload: &[u8], at: Instant) {
        let (instance, leaving) = match codec::decode_received(payload) {
            Ok(Received::Token(t)) => (t.instance, t.state == State::Leaving),
            Ok(Received::Heartbeat(h)) => (h.instance, false),
            Err(_) => return,
        };
        self.tokens_seen += 1;
        let Some(inc) = self.instances.get_mut(instance) else {
            if self.is_retired(instance) {
                self.retired_tokens_after_death += 1;
            } else {
                self.phantoms
                    .entry(instance.to_owned())
                    .or_insert_with(|| "token from an instance never started".into());
            }
            return;
        };
        if !leaving {
            inc.last_token = Some(at);
        }
        // A token handed to the connection just before the end may still be in flight when
        // the end is confirmed.
        let slack = self.settings.expiry_slack;
        if inc.dead_since().is_some_and(|d| at > d + slack) {
            inc.tokens_after_death += 1;
        }
    }

    pub(super) fn on_event(&mut self, event: Event, at: Instant) {
        let (instance, change) = match event {
            Event::Added(i) => (i, Change::Added),
            Event::Updated(i) => (i, Change::Updated),
            Event::Removed { instance, cause } => (instance, Change::Removed(cause)),
            Event::Lagged { missed } => {
                self.violation(Violation::Lagged, format!("missed {missed}"));
                return;
            }
            other => {
                eprintln!("churn: unexpected event {other:?}");
                return;
            }
        };
        let id = instance.id().to_owned();
        let Some(inc) = self.instances.get_mut(&id) else {
            let detail = if self.is_retired(&id) {
                format!("{id} (long dead)")
            } else {
                id
            };
            self.violation(Violation::Unknown, detail);
            return;
        };
        let version = (instance.epoch(), instance.seq());
        let before = inc.version;
        inc.version = before.max(version);
        let listed = inc.listed;
        if version < before {
            let detail = format!("{id}: {version:?} after {before:?}");
            self.violation(Violation::OutOfOrder, detail);
        }
        match change {
            Change::Added if listed => {
                self.violation(Violation::DuplicateAdded, id);
            }
            Change::Added => {
                let inc = self.instances.get_mut(&id).expect("known instance");
                inc.listed = true;
                let readded = inc.removed.is_some() && !inc.starved;
                if inc.added.is_none() {
                    inc.added = Some(at);
                    self.join_delays
                        .push(at.saturating_duration_since(inc.join_sent));
                }
                if readded {
                    self.violation(Violation::Readded, id);
                }
            }
            Change::Updated if !listed => self.violation(Violation::UpdatedUnlisted, id),
            Change::Updated => {}
            Change::Removed(cause) => self.on_removed(&id, &instance, cause, at),
        }
    }

    fn on_removed(&mut self, id: &str, instance: &Instance, cause: RemovalCause, at: Instant) {
        let ttl = self.settings.ttl;
        let slack = self.settings.expiry_slack;
        let margin = self.settings.sweep_margin;
        let crash_cause = self.settings.crash_cause();
        let inc = self.instances.get_mut(id).expect("known instance");
        if !inc.listed {
            let detail = format!("{id} ({})", cause.as_str());
            self.violation(Violation::RemovedUnlisted, detail);
            return;
        }
        inc.listed = false;
        inc.removed = Some((at, cause));
        let since_token = inc.last_token.map(|t| at.saturating_duration_since(t));
        let kind = inc.end.as_ref().map(|e| e.kind);
        let label = match kind {
            None => "live",
            Some(Kind::Crash) => "crash",
            Some(Kind::Leave) => "leave",
        };
        let entry = self
            .causes
            .entry((label, cause.as_str()))
            .or_insert((cause, 0));
        entry.1 += 1;
        let dead = inc.dead_since();
        let ordered = inc.end.as_ref().map(|e| e.ordered);
        match kind {
            None => {
                let starved = since_token.is_none_or(|s| s + slack >= ttl);
                if cause == RemovalCause::Expired && starved {
                    inc.starved = true;
                    self.starved_expiries += 1;
                } else {
                    self.false_removals.push(format!(
                        "{id} removed ({}) while alive, {since_token:?} after its last token \
                         (seq {})",
                        cause.as_str(),
                        instance.seq()
                    ));
                }
            }
            Some(Kind::Crash) => {
                if cause != crash_cause {
                    let detail = format!("{id}: crash removed as {}", cause.as_str());
                    self.violation(Violation::WrongCause, detail);
                } else if cause == RemovalCause::Expired
                    && since_token.is_some_and(|s| s + slack < ttl)
                {
                    self.early_expiries
                        .push(format!("{id} expired {since_token:?} after its last token"));
                }
                if let Some(s) = since_token {
                    self.crash_since_token.push(s);
                }
                // The crash may be confirmed after the removal (the answer is in flight): the
                // delay is then counted from the order.
                let from = dead.or(ordered).expect("an ending");
                self.crash_removals.push(at.saturating_duration_since(from));
            }
            Some(Kind::Leave) => {
                match cause {
                    RemovalCause::Expired => self.leaves_expired += 1,
                    RemovalCause::Fenced => {
                        let detail = format!("{id}: leave removed as fenced");
                        self.violation(Violation::WrongCause, detail);
                    }
                    _ => {}
                }
                let from = ordered.expect("an ending");
                self.leave_removals.push(at.saturating_duration_since(from));
            }
        }
        if let Some(d) = dead {
            let late = at.saturating_duration_since(d);
            if late > ttl + margin {
                self.zombies
                    .entry(id.to_owned())
                    .or_insert_with(|| format!("removed {late:?} after its end"));
            }
        }
    }
}
