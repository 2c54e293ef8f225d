//! Helpers of the announcer's integration tests: a real nats-server per test, and an
//! observer that watches the wire with a raw async-nats subscription.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use herald_announcer::{Announcer, AnnouncerBuilder};
use herald_shared::{NatsConfig, Received, Subjects, Token, codec, round_trip};
use herald_testkit::NatsServer;
use tokio::time::Instant;

pub const SERVICE: &str = "billing";

/// The subject tokens of [`SERVICE`] travel on.
pub fn announce_subject() -> String {
    Subjects::default().announce(SERVICE)
}

/// A builder for [`SERVICE`] on `server`, with a fixed instance id, every token in full: the
/// tests of timing read each token's send time (`heartbeats.rs` tests the compact ones).
pub fn announcer(server: &NatsServer) -> AnnouncerBuilder {
    Announcer::builder(SERVICE, "10.0.0.7:8080")
        .nats(NatsConfig::new([server.url()]))
        .instance("billing-1")
        .full_token_every(1)
}

/// A message seen on the wire: when it arrived, on which subject, and the token it holds (a
/// heartbeat as the last full token of its instance with its `seq`, epoch and load, and no
/// send time).
#[derive(Debug)]
pub struct Seen {
    pub at: Instant,
    pub subject: String,
    pub token: Token,
    pub heartbeat: bool,
    pub bytes: usize,
}

/// A raw subscriber on its own connection, active on the server once `new` returns.
pub struct Observer {
    pub client: async_nats::Client,
    sub: async_nats::Subscriber,
    last_full: HashMap<String, Token>,
}

impl Observer {
    /// Subscribes to `subject` on a new connection to `url` and confirms the subscription.
    pub async fn new(url: &str, subject: &str) -> Observer {
        let client = async_nats::connect(url).await.expect("observer connects");
        Observer::on(client, subject).await
    }

    /// Subscribes to `subject` on `client` and confirms the subscription.
    pub async fn on(client: async_nats::Client, subject: &str) -> Observer {
        let sub = client
            .subscribe(subject.to_owned())
            .await
            .expect("observer subscribes");
        round_trip::confirm_subscriptions(&client, Duration::from_secs(5))
            .await
            .expect("observer subscription confirmed");
        Observer {
            client,
            sub,
            last_full: HashMap::new(),
        }
    }

    /// The next message within `within`, decoded as a token.
    pub async fn next(&mut self, within: Duration) -> Option<Seen> {
        let msg = tokio::time::timeout(within, self.sub.next()).await.ok()??;
        let at = Instant::now();
        let received = codec::decode_received(&msg.payload)
            .unwrap_or_else(|e| panic!("payload on {} is not a token: {e}", msg.subject));
        let (token, heartbeat) = match received {
            Received::Token(t) => {
                let t = t.to_owned();
                self.last_full.insert(t.instance.clone(), t.clone());
                (t, false)
            }
            Received::Heartbeat(h) => {
                let mut t = self
                    .last_full
                    .get(h.instance)
                    .unwrap_or_else(|| {
                        panic!("a heartbeat of {} before its full token", h.instance)
                    })
                    .clone();
                (t.epoch, t.seq, t.load, t.sent_at_ms) = (h.epoch, h.seq, h.load, 0);
                (t, true)
            }
        };
        Some(Seen {
            at,
            subject: msg.subject.to_string(),
            token,
            heartbeat,
            bytes: msg.payload.len(),
        })
    }

    /// The next message within `within`; panics saying `what` was expected.
    pub async fn expect(&mut self, within: Duration, what: &str) -> Seen {
        match self.next(within).await {
            Some(seen) => seen,
            None => panic!("expected {what} within {within:?}, saw nothing"),
        }
    }

    /// Panics if any message arrives within `window`.
    pub async fn expect_silence(&mut self, window: Duration, why: &str) {
        if let Some(seen) = self.next(window).await {
            panic!(
                "{why}: expected nothing for {window:?}, saw {} (state {}, seq {})",
                seen.subject, seen.token.state, seen.token.seq
            );
        }
    }

    /// Every message until one satisfies `last` (included) or `within` passes, timestamped
    /// by a task of its own so that the caller can act on the announcer meanwhile.
    pub fn collect_in_background(
        mut self,
        within: Duration,
        last: impl Fn(&Seen) -> bool + Send + 'static,
    ) -> tokio::task::JoinHandle<(Observer, Vec<Seen>)> {
        tokio::spawn(async move {
            let end = Instant::now() + within;
            let mut seen = Vec::new();
            while let Some(s) = self
                .next(end.saturating_duration_since(Instant::now()))
                .await
            {
                let done = last(&s);
                seen.push(s);
                if done {
                    break;
                }
            }
            (self, seen)
        })
    }

    /// Every message arriving within `window`.
    pub async fn collect(&mut self, window: Duration) -> Vec<Seen> {
        let end = Instant::now() + window;
        let mut seen = Vec::new();
        while let Some(s) = self
            .next(end.saturating_duration_since(Instant::now()))
            .await
        {
            seen.push(s);
        }
        seen
    }
}

/// Milliseconds between two instants, as a float for readable assertion messages.
pub fn ms_between(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64() * 1e3
}
