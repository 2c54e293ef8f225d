//! The broadcast task: the one owner of the token, its timer, probe answers and reconnect
//! republish. Everything that publishes goes through [`Broadcaster::publish`], so `seq` and
//! the schedule have a single writer and need no lock.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::{Client, Subject};
use herald_shared::{State, Token, codec, unix_millis};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::{Error, ErrorKind};
use crate::messages::{Command, Standing};
use crate::plan::LoadFn;
use crate::probes::ProbeFeed;
use crate::reconnects::{Link, Poller};
use crate::schedule::{Schedule, Why};
use crate::settings::check_token;
use crate::stats::Counters;

/// Everything the broadcast task owns.
#[derive(Debug)]
pub(crate) struct Broadcaster {
    pub(crate) client: Client,
    pub(crate) subject: Subject,
    /// The token as last sent, and the template of the next one.
    pub(crate) token: Token,
    pub(crate) next_seq: u64,
    /// Current load, from `set_load` or `load_fn`; the next token carries it.
    pub(crate) load: f32,
    /// Which tokens go in full and which as heartbeats.
    pub(crate) fullness: Fullness,
    pub(crate) schedule: Schedule,
    /// Probes of the service and of every service, from the connection's shared subscriptions.
    pub(crate) probes: ProbeFeed,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) load_rx: watch::Receiver<f32>,
    pub(crate) load_fn: Option<LoadFn>,
    pub(crate) load_sample_interval: Duration,
    /// The registration's standing, written by the registration task (epoch 0 without etcd).
    /// A new epoch is published at once, so subscribers learn it without waiting a period; a
    /// halt stops the task without a goodbye.
    pub(crate) standing: watch::Receiver<Standing>,
    /// The connection as the last token saw it.
    pub(crate) link_seen: Link,
    /// The connection's reconnect poller, shared with every announcer on the connection.
    pub(crate) reconnects: Arc<Poller>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) last_token: watch::Sender<Token>,
    pub(crate) cancel: CancellationToken,
    /// Carries `shutdown()`'s deadline; closed without a value when the handle is dropped,
    /// which stops the task without a goodbye (subscribers expire the instance by TTL).
    pub(crate) goodbye: oneshot::Receiver<Instant>,
    /// Tells the registration task (and `stopped()`) that no token can leave any more: it
    /// waits for this before revoking the lease, so that the goodbye goes out first.
    pub(crate) _done: DropGuard,
}

/// Which tokens go in full: the changes, the periodic token after each (should the change be
/// lost), probe answers, and at least every `every`th token; the others go as heartbeats.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fullness {
    every: u32,
    /// Tokens sent since the last full one.
    since_full: u32,
    /// Full tokens still owed after a change.
    owed: u8,
}

impl Fullness {
    pub(crate) fn new(every: u32) -> Self {
        Fullness {
            every,
            since_full: 0,
            owed: 0,
        }
    }

    /// Whether the token sent for `why` goes as a heartbeat.
    pub(crate) fn compact(&mut self, why: Why) -> bool {
        if why.is_change() {
            // This one and the next.
            self.owed = 2;
        }
        why.may_be_compact() && self.owed == 0 && self.since_full + 1 < self.every
    }

    /// Records a token handed to NATS; one that failed changes nothing, so the next is full
    /// again if this one had to be.
    pub(crate) fn sent(&mut self, compact: bool) {
        if compact {
            self.since_full += 1;
        } else {
            self.since_full = 0;
            self.owed = self.owed.saturating_sub(1);
        }
    }
}

impl Broadcaster {
    /// Runs until cancelled; sends the leaving token when `shutdown()` asked for it.
    pub(crate) async fn run(mut self) -> Result<(), Error> {
        let mut load_tick = tokio::time::interval(self.load_sample_interval);
        load_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut link = self.reconnects.link();
        let wake = tokio::time::sleep_until(self.schedule.next_wake());
        tokio::pin!(wake);
        let (mut probes_open, mut commands_open, mut load_open, mut standing_open) =
            (true, true, true, true);
        let mut link_open = true;
        let sampling = self.load_fn.is_some();

        loop {
            wake.as_mut().reset(self.schedule.next_wake());
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.command(command).await,
                    None => commands_open = false,
                },
                probed = self.probes.next(), if probes_open => {
                    if probed {
                        self.schedule.probe(Instant::now());
                    } else {
                        probes_open = false;
                    }
                }
                changed = self.load_rx.changed(), if load_open => match changed {
                    Ok(()) => {
                        let load = *self.load_rx.borrow_and_update();
                        self.set_load(load);
                    }
                    Err(_) => load_open = false,
                },
                _ = load_tick.tick(), if sampling => self.sample_load(),
                changed = link.changed(), if link_open => match changed {
                    Ok(()) => {
                        let now = link.borrow_and_update().clone();
                        self.check_reconnect(now).await;
                    }
                    Err(_) => link_open = false,
                },
                changed = self.standing.changed(), if standing_open => match changed {
                    Ok(()) => {
                        let standing = *self.standing.borrow_and_update();
                        if standing.halted {
                            break;
                        }
                        if standing.epoch != self.token.epoch {
                            let _ = self.publish(Why::Epoch).await;
                        }
                    }
                    Err(_) => standing_open = false,
                },
                () = &mut wake => {}
            }
            if let Some(why) = self.schedule.due(Instant::now()) {
                // A failure is counted and logged in `publish`; the next token retries.
                let _ = self.publish(why).await;
            }
        }
        self.finish().await
    }

    /// Stamps and publishes the token. Does not flush: the connection writes promptly, and
    /// callers that must know the token left (start, drain, shutdown) flush themselves.
    pub(crate) async fn publish(&mut self, why: Why) -> Result<(), Error> {
        let standing = *self.standing.borrow();
        if standing.halted {
            // etcd ended this incarnation: the key is someone else's, or nobody's.
            return Err(Error::new(ErrorKind::Stopped));
        }
        let now = Instant::now();
        self.token.seq = self.next_seq;
        self.next_seq += 1;
        self.token.load = self.load;
        self.token.epoch = standing.epoch;
        self.token.sent_at_ms = unix_millis();
        self.schedule.published(now, self.load);
        let compact = self.fullness.compact(why);
        let encoded = if compact {
            codec::encode_heartbeat(&self.token)
        } else {
            codec::encode(&self.token)
        };
        let sent = match encoded {
            Ok(bytes) => self
                .client
                .publish(self.subject.clone(), bytes.into())
                .await
                .map_err(|e| Error::with_source(ErrorKind::Publish, e)),
            Err(e) => Err(Error::with_source(ErrorKind::Publish, e)),
        };
        match &sent {
            Ok(()) => {
                let c = &self.counters;
                Counters::bump(&c.tokens_sent);
                self.fullness.sent(compact);
                if compact {
                    Counters::bump(&c.heartbeats_sent);
                }
                match why {
                    Why::Probe => {
                        Counters::bump(&c.probe_answers);
                        tracing::debug!(seq = self.token.seq, "answered probe");
                    }
                    Why::Early => Counters::bump(&c.early_tokens),
                    _ => {}
                }
                tracing::trace!(seq = self.token.seq, reason = ?why, load = self.load, compact, "token sent");
                self.last_token.send_replace(self.token.clone());
            }
            Err(e) => {
                Counters::bump(&self.counters.publish_errors);
                tracing::warn!(error = e as &dyn std::error::Error, reason = ?why, "token not published");
            }
        }
        sent
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::SetState(state, reply) => {
                self.token.state = state;
                tracing::info!(%state, "state changed");
                let _ = reply.send(self.publish(Why::State).await);
            }
            Command::SetMeta(meta, reply) => {
                let previous = std::mem::replace(&mut self.token.meta, meta);
                let result = match check_token(&self.token) {
                    Ok(()) => self.publish(Why::Meta).await,
                    Err(e) => {
                        self.token.meta = previous;
                        Err(e)
                    }
                };
                let _ = reply.send(result);
            }
        }
    }

    fn set_load(&mut self, load: f32) {
        self.load = load;
        self.schedule.load(Instant::now(), load);
    }

    fn sample_load(&mut self) {
        let Some(load_fn) = &self.load_fn else {
            return;
        };
        let load = load_fn.sample();
        if herald_shared::validate::load(load).is_ok() {
            self.set_load(load);
        } else {
            tracing::debug!(load, "load_fn returned an invalid load; sample ignored");
        }
    }

    /// After a reconnect, or once the new connection's INFO names it, the token goes out at
    /// once naming the connection that carries it: a subscriber that follows disconnect
    /// advisories must not take the old connection's close for a crash.
    async fn check_reconnect(&mut self, now: Link) {
        let new = now.connects.saturating_sub(self.link_seen.connects);
        let moved = now.conn != self.link_seen.conn;
        if new == 0 && !moved {
            return;
        }
        self.counters.reconnects.fetch_add(new, Ordering::Relaxed);
        self.token.conn = now.conn.as_deref().map(str::to_owned);
        self.link_seen = now;
        let sent = self.publish(Why::Reconnect).await;
        tracing::info!(
            ok = sent.is_ok(),
            conn = self.token.conn.as_deref().unwrap_or("-"),
            "nats reconnected; token republished"
        );
    }

    /// After cancellation or a halt: the goodbye when `shutdown()` asked, else nothing.
    async fn finish(mut self) -> Result<(), Error> {
        if self.standing.borrow().halted {
            tracing::debug!("halted by etcd; stopped without a leaving token");
            return Ok(());
        }
        let Ok(deadline) = self.goodbye.try_recv() else {
            tracing::debug!("handle dropped without shutdown; stopped without a leaving token");
            return Ok(());
        };
        self.token.state = State::Leaving;
        let goodbye = async {
            self.publish(Why::Leaving).await?;
            self.client
                .flush()
                .await
                .map_err(|e| Error::with_source(ErrorKind::Publish, e))
        };
        match tokio::time::timeout_at(deadline, goodbye).await {
            Ok(Ok(())) => {
                tracing::info!("shut down; leaving token sent");
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "shut down; leaving token not sent"
                );
                Err(e)
            }
            Err(_) => {
                tracing::warn!("shut down; leaving token not flushed before the deadline");
                Err(Error::new(ErrorKind::TimedOut))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds of the tokens sent for `whys`, `F` full and `h` heartbeat, each sent.
    fn kinds(fullness: &mut Fullness, whys: &[Why]) -> String {
        whys.iter()
            .map(|&why| {
                let compact = fullness.compact(why);
                fullness.sent(compact);
                if compact { 'h' } else { 'F' }
            })
            .collect()
    }

    #[test]
    fn a_change_goes_in_full_with_the_token_after_it_and_every_tenth_at_the_latest() {
        let mut f = Fullness::new(10);
        let mut whys = vec![Why::Start];
        whys.extend([Why::Periodic; 21]);
        assert_eq!(kinds(&mut f, &whys), "FFhhhhhhhhhFhhhhhhhhhF");
        assert_eq!(
            kinds(&mut f, &[Why::Early, Why::Probe, Why::Periodic]),
            "hFh"
        );
        assert_eq!(
            kinds(&mut f, &[Why::State, Why::Early, Why::Periodic]),
            "FFh",
            "drain, then its repeat"
        );
        for change in [Why::Meta, Why::Epoch, Why::Reconnect, Why::Leaving] {
            assert_eq!(
                kinds(&mut f, &[change, Why::Periodic, Why::Periodic]),
                "FFh"
            );
        }
    }

    #[test]
    fn a_failed_full_token_leaves_the_next_one_full() {
        let mut f = Fullness::new(10);
        kinds(&mut f, &[Why::Start, Why::Periodic, Why::Periodic]);
        assert!(!f.compact(Why::Meta));
        // Not sent: the owed full tokens stay owed.
        assert_eq!(
            kinds(&mut f, &[Why::Periodic, Why::Periodic, Why::Periodic]),
            "FFh"
        );
    }

    #[test]
    fn every_token_is_full_when_asked() {
        let mut f = Fullness::new(1);
        assert_eq!(
            kinds(
                &mut f,
                &[Why::Start, Why::Periodic, Why::Early, Why::Periodic]
            ),
            "FFFF"
        );
    }
}
