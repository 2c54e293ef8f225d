//! NATS disconnect advisories: what one says, and the check at start that they arrive at all.
//!
//! nats-server publishes `$SYS.ACCOUNT.{account}.DISCONNECT` in the system account when a
//! client connection ends; an application account can import it under a subject of its own
//! (see the README). An advisory names the server (`server.id`), the client's connection
//! number on it (`client.id`) and the reason. `{server.id}/{client.id}` is what announcers
//! put in their tokens' `conn`, so the store can tell whose connection ended.
//!
//! Only a connection its client's host closed says the process is gone (DESIGN.md, "Crash
//! seen as a closed connection"). A server that shuts down or enters lame-duck mode, a stale
//! connection (a hung process, or a partition), a slow consumer or an authentication
//! failure end connections too, but say nothing of the process: its TTL still decides.
//!
//! An import that is missing, or a subscription the server does not permit, fails silently:
//! nothing arrives. So a subscriber that can open a connection of its own closes one at start
//! and waits for its advisory ([`Check`]); if none comes, it says so.

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// How long the start-up check waits for the advisory of its own test connection.
pub(crate) const CHECK_WITHIN: Duration = Duration::from_secs(5);

/// Largest advisory read; real ones are about 1 KiB.
const MAX_ADVISORY_BYTES: usize = 64 * 1024;

/// What one advisory says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Disconnect {
    /// `{server_id}/{client_id}`, as in tokens' `conn`.
    pub(crate) conn: String,
    /// The server's reason, e.g. `Client Closed`.
    pub(crate) reason: String,
    /// The client's connection name, if it gave one.
    pub(crate) name: Option<String>,
}

impl Disconnect {
    /// Reads an advisory; `None` when the payload is not one.
    pub(crate) fn parse(payload: &[u8]) -> Option<Disconnect> {
        if payload.len() > MAX_ADVISORY_BYTES {
            return None;
        }
        let a: Advisory<'_> = serde_json::from_slice(payload).ok()?;
        if a.server.id.is_empty() {
            return None;
        }
        Some(Disconnect {
            conn: herald_shared::token::connection_name(&a.server.id, a.client.id),
            reason: a.reason.into_owned(),
            name: a.client.name.map(Cow::into_owned),
        })
    }

    /// Whether the client's host closed the connection: its process is gone (the rule is
    /// [`crate::merge::closed_by_host`]).
    pub(crate) fn closed_by_host(&self) -> bool {
        crate::merge::closed_by_host(&self.reason)
    }
}

#[derive(Deserialize)]
struct Advisory<'a> {
    #[serde(borrow)]
    server: Server<'a>,
    #[serde(borrow)]
    client: Client<'a>,
    #[serde(borrow, default)]
    reason: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Server<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Client<'a> {
    id: u64,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

/// The start-up check: the advisory of a test connection the subscriber closed itself.
#[derive(Debug)]
pub(crate) struct Check {
    /// The test connection, `{server_id}/{client_id}`.
    pub(crate) conn: String,
    pub(crate) subject: String,
    pub(crate) give_up: Instant,
}

impl Check {
    /// Opens a connection with the subscriber's own settings and closes it: its advisory
    /// should follow within milliseconds.
    pub(crate) async fn start(
        config: &herald_shared::NatsConfig,
        subject: &str,
    ) -> Result<Check, herald_shared::ConfigError> {
        let mut config = config.clone();
        config.name = Some("herald advisory check".into());
        let (client, _events) = config.connect().await?;
        let info = client.server_info();
        let conn = herald_shared::token::connection_name(&info.server_id, info.client_id);
        // Dropping the last handle closes the socket: the server sees `Client Closed`.
        drop(client);
        Ok(Check {
            conn,
            subject: subject.to_owned(),
            give_up: Instant::now() + CHECK_WITHIN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An advisory as nats-server 2.9 publishes it (trimmed of fields not read).
    const ADVISORY: &str = r#"{"type":"io.nats.server.advisory.v1.client_disconnect","id":"x","timestamp":"2026-12-03T21:00:00Z","server":{"name":"n0","host":"0.0.0.0","id":"NDAB","ver":"2.9.10","seq":7,"jetstream":false,"time":"2026-12-03T21:00:00Z"},"client":{"start":"2026-12-03T21:00:00Z","host":"127.0.0.1","id":12,"acc":"APP","name":"herald billing/b1","lang":"rust","ver":"0.51.0","rtt":"1ms","server":"n0","kind":"Client","client_type":"nats"},"sent":{"msgs":3,"bytes":300},"received":{"msgs":1,"bytes":10},"reason":"Client Closed"}"#;

    #[test]
    fn an_advisory_names_the_connection_as_tokens_do() {
        let d = Disconnect::parse(ADVISORY.as_bytes()).expect("an advisory");
        assert_eq!(d.conn, "NDAB/12");
        assert_eq!(d.name.as_deref(), Some("herald billing/b1"));
        assert!(d.closed_by_host());
    }

    #[test]
    fn only_a_host_closing_its_socket_means_the_process_is_gone() {
        for (reason, gone) in [
            ("Client Closed", true),
            ("Read Error", true),
            ("Server Shutdown", false),
            ("Stale Connection", false),
            ("Slow Consumer (Write Deadline)", false),
            ("Slow Consumer (Pending Bytes)", false),
            ("Authentication Timeout", false),
            ("Write Error", true),
            ("", false),
        ] {
            let text = ADVISORY.replace("Client Closed", reason);
            let d = Disconnect::parse(text.as_bytes()).expect("an advisory");
            assert_eq!(d.closed_by_host(), gone, "{reason:?}");
        }
    }

    #[test]
    fn anything_else_is_not_an_advisory() {
        for payload in [
            &b""[..],
            b"not json",
            br#"{"server":{"id":""},"client":{"id":1},"reason":"Client Closed"}"#,
            br#"{"client":{"id":1},"reason":"Client Closed"}"#,
            br#"{"server":{"id":"N"},"client":{"id":-1}}"#,
        ] {
            assert_eq!(Disconnect::parse(payload), None, "{payload:?}");
        }
        let huge = format!(
            r#"{{"server":{{"id":"N"}},"client":{{"id":1}},"reason":"{}"}}"#,
            "x".repeat(MAX_ADVISORY_BYTES)
        );
        assert_eq!(Disconnect::parse(huge.as_bytes()), None);
    }
}
