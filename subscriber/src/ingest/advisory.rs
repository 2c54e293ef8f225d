//! Disconnect advisories: a connection closed by its client's host takes its instances with
//! it; the start-up check that advisories arrive at all.

use std::sync::atomic::Ordering::Relaxed;

use tokio::time::Instant;

use crate::advisories::Disconnect;
use crate::connections::{CONNECTION_LOG, seconds};

use super::Ingest;

impl Ingest {
    /// A disconnect advisory: a connection closed by its client's host takes its instances
    /// with it (after the grace); any other ending leaves them to their TTL.
    pub(super) fn on_advisory(&mut self, msg: Option<async_nats::Message>) {
        let Some(msg) = msg else {
            tracing::warn!(
                "disconnect advisory subscription closed; crashes are found by TTL only"
            );
            self.advisories = None;
            return;
        };
        let Some(d) = Disconnect::parse(&msg.payload) else {
            tracing::debug!(subject = %msg.subject, "not a disconnect advisory; ignored");
            return;
        };
        self.counters.disconnect_advisories.fetch_add(1, Relaxed);
        if self
            .advisory_check
            .as_ref()
            .is_some_and(|c| c.conn == d.conn)
        {
            let check = self.advisory_check.take().expect("checked above");
            tracing::info!(
                target: CONNECTION_LOG,
                subject = check.subject,
                "disconnect advisories arrive: a killed process is removed when its connection closes"
            );
        }
        let name = d.name.as_deref().unwrap_or("-");
        if d.closed_by_host() {
            self.counters.connections_closed.fetch_add(1, Relaxed);
            if self.store.connection_closed(&d.conn) {
                tracing::debug!(
                    conn = d.conn,
                    name,
                    reason = d.reason,
                    "connection closed by its host: its instances go unless they reconnect within the grace"
                );
            }
        } else {
            self.store.connection_ended(&d.conn);
            tracing::debug!(
                conn = d.conn,
                name,
                reason = d.reason,
                "connection ended; its instances keep their TTL"
            );
        }
    }

    pub(super) fn give_up_advisory_check(&mut self) {
        if self
            .advisory_check
            .as_ref()
            .is_some_and(|c| Instant::now() >= c.give_up)
        {
            let check = self.advisory_check.take().expect("checked above");
            tracing::warn!(
                target: CONNECTION_LOG,
                subject = check.subject,
                "no disconnect advisory arrived for a test connection within {}: crashes are found by TTL only. Does the account import $SYS.ACCOUNT.<account>.DISCONNECT to this subject, and may this user subscribe to it?",
                seconds(crate::advisories::CHECK_WITHIN)
            );
        }
    }
}
