//! The subscriber's own NATS link: self-preservation while it is down, as
//! [`crate::merge::own_link`] decides, and the lines that report it.

use std::sync::atomic::Ordering::Relaxed;

use crate::connections::{CONNECTION_LOG, Change, seconds};
use crate::merge::{self, Link, LinkAction};

use super::Ingest;

impl Ingest {
    /// Looks at the link on every tick and carries out [`merge::own_link`].
    ///
    /// One warning when the link is lost and one info line when it is back (with how long it
    /// was down), whatever the number of ticks in between.
    pub(super) fn watch_connection(&mut self) {
        let clock = self.store.clock();
        let connected = self.client.connection_state() == async_nats::connection::State::Connected;
        let connects = self.client.statistics().connects.load(Relaxed);
        let change = self.connections.nats(connected);
        let link = Link {
            connected,
            preserving: clock.preserving.load(Relaxed),
            reconnected: connects != self.connects,
        };
        match merge::own_link(link) {
            LinkAction::None => {}
            LinkAction::Preserve => {
                clock.preserving.store(true, Relaxed);
                if change == Some(Change::Lost) {
                    tracing::warn!(
                        target: CONNECTION_LOG,
                        "nats connection lost: holding every instance until it is back"
                    );
                }
            }
            LinkAction::Resume => {
                // Fresh deadlines first, then lift preservation, so no reader sees a gap.
                self.store.refresh_all_deadlines();
                clock.preserving.store(false, Relaxed);
                self.counters
                    .reconnects
                    .fetch_add(connects.saturating_sub(self.connects).max(1), Relaxed);
                self.connects = connects;
                self.probe_wanted = true;
                match change {
                    Some(Change::Back(down)) => tracing::info!(
                        target: CONNECTION_LOG,
                        down_ms = down.as_millis() as u64,
                        "nats reconnected after {}: fresh TTL for every instance, probing",
                        seconds(down)
                    ),
                    // Lost and back between two ticks: never seen down.
                    _ => tracing::info!(
                        target: CONNECTION_LOG,
                        "nats reconnected after a brief disconnect: fresh TTL for every instance, probing"
                    ),
                }
            }
        }
    }
}
