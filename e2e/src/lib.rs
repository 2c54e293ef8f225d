//! Shared pieces of Herald's end-to-end tests: a raw token publisher (a stand-in for a
//! misbehaving or hostile sender), event waits with deadlines, and the child-process
//! announcer used by crash tests.
#![deny(missing_docs)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_shared::{NatsConfig, Subjects, Token, codec};
use herald_subscriber::{Event, EventStream, RemovalCause, Subscriber};

/// Installs a test log subscriber once (`RUST_LOG` filters it).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A unique subject prefix per test, so that tests never see each other's tokens.
pub fn prefix(test: &str) -> String {
    format!(
        "t{}_{}",
        test.replace(|c: char| !c.is_ascii_alphanumeric(), ""),
        fastrand::u32(..)
    )
}

/// Publishes hand-made tokens and raw bytes, as any NATS client could.
#[derive(Debug, Clone)]
pub struct RawPublisher {
    /// The connection.
    pub client: async_nats::Client,
    /// Subject names under the test's prefix.
    pub subjects: Subjects,
}

impl RawPublisher {
    /// Connects to `url`.
    pub async fn connect(url: &str, prefix: &str) -> RawPublisher {
        let client = async_nats::connect(url)
            .await
            .expect("raw publisher connects");
        RawPublisher {
            client,
            subjects: Subjects::new(prefix).expect("valid prefix"),
        }
    }

    /// Publishes an encoded token on its service's announce subject.
    pub async fn token(&self, token: &Token) {
        let bytes = codec::encode(token).expect("test token is valid");
        self.bytes(&token.service, bytes).await;
    }

    /// Publishes arbitrary bytes on `service`'s announce subject.
    pub async fn bytes(&self, service: &str, bytes: impl Into<bytes::Bytes>) {
        self.client
            .publish(self.subjects.announce(service), bytes.into())
            .await
            .expect("publish");
    }

    /// Waits until everything published so far reached the server.
    pub async fn flush(&self) {
        self.client.flush().await.expect("flush");
    }
}

/// A token for `service`/`id` at `addr` with this seq and TTL.
pub fn token(service: &str, id: &str, seq: u64, ttl: Duration) -> Token {
    let mut t = Token::new(service, id, "127.0.0.1:9000");
    t.seq = seq;
    t.ttl_ms = ttl.as_millis() as u32;
    t.sent_at_ms = herald_shared::unix_millis();
    t
}

/// NATS settings for a test server.
pub fn nats(url: &str) -> NatsConfig {
    NatsConfig::new([url.to_owned()])
}

/// A subscriber of every service under `prefix`.
pub async fn subscriber(url: &str, prefix: &str) -> Subscriber {
    Subscriber::builder()
        .nats(nats(url))
        .prefix(prefix)
        .start()
        .await
        .expect("subscriber starts")
}

/// A subscriber of every service under `prefix`, with etcd as the authority.
pub async fn subscriber_with_etcd(
    url: &str,
    etcd_endpoints: &[String],
    prefix: &str,
) -> Subscriber {
    Subscriber::builder()
        .nats(nats(url))
        .etcd(etcd(etcd_endpoints))
        .prefix(prefix)
        .start()
        .await
        .expect("subscriber starts")
}

/// The next event matching `pred`, or a panic naming `what` after `timeout`.
pub async fn wait_event(
    events: &mut EventStream,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.next()).await {
            Ok(Some(e)) if pred(&e) => return e,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event stream ended while waiting for {what}"),
            Err(_) => panic!("no {what} within {timeout:?}"),
        }
    }
}

/// Whether `e` is `Added` for instance `id`.
pub fn is_added(e: &Event, id: &str) -> bool {
    matches!(e, Event::Added(i) if i.id() == id)
}

/// Whether `e` is `Removed` for instance `id` with `cause`.
pub fn is_removed(e: &Event, id: &str, cause: RemovalCause) -> bool {
    matches!(e, Event::Removed { instance, cause: c } if instance.id() == id && *c == cause)
}

/// Polls `cond` every 5 ms until it holds, or panics naming `what` after `timeout`. For
/// conditions that have no event of their own (counters).
pub async fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} did not hold within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An error and its causes, `a: b: c`, as the CLI and the logs print them.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// etcd settings for test endpoints.
pub fn etcd(endpoints: &[String]) -> herald_shared::EtcdConfig {
    herald_shared::EtcdConfig::new(endpoints.iter().cloned())
}

/// A plain etcd client, standing in for announcers and operators.
pub async fn etcd_client(endpoints: &[String]) -> etcd_client::Client {
    etcd_client::Client::connect(endpoints, None)
        .await
        .expect("etcd client connects")
}

/// Writes `token`'s registration under `lease` as an announcer would, returning the
/// revision of the write (the registration's epoch).
pub async fn register(
    client: &mut etcd_client::Client,
    prefix: &str,
    token: &Token,
    lease: i64,
) -> u64 {
    let key = Subjects::new(prefix)
        .expect("valid prefix")
        .key(&token.service, &token.instance);
    let value = codec::encode(token).expect("valid token");
    let opts = (lease != 0).then(|| etcd_client::PutOptions::new().with_lease(lease));
    let resp = client.put(key, value, opts).await.expect("put");
    resp.header().expect("header").revision() as u64
}

/// Grants a lease of `ttl_s` seconds.
pub async fn lease(client: &mut etcd_client::Client, ttl_s: i64) -> i64 {
    client
        .lease_grant(ttl_s, None)
        .await
        .expect("lease grant")
        .id()
}
