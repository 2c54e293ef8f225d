//! One announcer's broadcast state: the token, its sequence, which tokens go in full, when
//! the next is due, and how each reason to publish changes them. The connection's scheduler
//! (`scheduler`) owns every such state of its connection and calls these methods when their
//! turn comes; everything that publishes goes through [`Broadcaster::publish`], so `seq` and
//! the schedule have a single writer and need no lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_nats::{Client, Subject};
use herald_shared::{State, Token, codec, unix_millis};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::DropGuard;

use crate::error::{Error, ErrorKind};
use crate::messages::{StagedMeta, Standing};
use crate::pacer::Pacer;
use crate::probes::ProbeFeed;
use crate::reconnects::Link;
use crate::schedule::{Schedule, Why};
use crate::settings::check_token;
use crate::stats::Counters;

/// Everything one announcer's broadcasting owns.
#[derive(Debug)]
pub(crate) struct Broadcaster {
    pub(crate) subject: Subject,
    /// The token as last sent, and the template of the next one.
    pub(crate) token: Token,
    pub(crate) next_seq: u64,
    /// Current load, from `set_load` or `load_fn`; the next token carries it.
    pub(crate) load: f32,
    /// Which tokens go in full and which as heartbeats.
    pub(crate) fullness: Fullness,
    pub(crate) schedule: Schedule,
    /// Keeps `seq` within the advance subscribers accept.
    pub(crate) pacer: Pacer,
    /// The subscriptions of the probes it answers, shared on the connection.
    pub(crate) probes: ProbeFeed,
    /// Loads set through the handle, read when the scheduler is told of one.
    pub(crate) load_cell: Arc<LoadCell>,
    /// The registration's standing, written by the registration (epoch 0 without etcd).
    /// A new epoch is published at once, so subscribers learn it without waiting a period; a
    /// halt ends the broadcasting without a goodbye.
    pub(crate) standing: watch::Receiver<Standing>,
    /// The connection as the last token saw it.
    pub(crate) link_seen: Link,
    pub(crate) counters: Arc<Counters>,
    pub(crate) last_token: watch::Sender<Token>,
    /// The span of the announcer, entered around everything done for it.
    pub(crate) span: tracing::Span,
    /// Tells the registration (and `stopped()`) that no token can leave any more: it
    /// waits for this before revoking the lease, so that the goodbye goes out first. Handed
    /// to `shutdown()` with the goodbye, which drops it once the goodbye is flushed.
    pub(crate) done: Option<DropGuard>,
    /// Metadata `set_meta` set, waiting for the registration to hold it.
    pub(crate) staged: Option<StagedMeta>,
}

/// What `set_meta()` asks of the broadcasting.
#[derive(Debug)]
pub(crate) enum MetaRequest {
    /// Without etcd: publish this metadata now.
    Publish(BTreeMap<String, String>),
    /// With etcd: check this metadata and keep it until the registration holds it.
    Stage(StagedMeta),
    /// The registration now holds the staged metadata: publish it, unless the new epoch's
    /// token already did.
    Written,
}

/// The load set through the handle: written by `set_load`, read by the scheduler, which is
/// told once per change however many come before it reads.
#[derive(Debug)]
pub(crate) struct LoadCell {
    bits: AtomicU32,
    told: AtomicBool,
}

impl LoadCell {
    pub(crate) fn new(load: f32) -> Self {
        LoadCell {
            bits: AtomicU32::new(load.to_bits()),
            told: AtomicBool::new(false),
        }
    }

    /// Stores `load`; true when the scheduler must be told (it has not been since it last read).
    pub(crate) fn set(&self, load: f32) -> bool {
        self.bits.store(load.to_bits(), Ordering::Release);
        !self.told.swap(true, Ordering::AcqRel)
    }

    /// The load last set; the next `set` tells the scheduler again.
    pub(crate) fn take(&self) -> f32 {
        self.told.store(false, Ordering::Release);
        f32::from_bits(self.bits.load(Ordering::Acquire))
    }
}

/// What `shutdown()` gets back: whether the goodbye was handed to NATS, and the guard that
/// lets the registration revoke once the goodbye is flushed.
#[derive(Debug)]
pub(crate) struct Goodbye {
    pub(crate) sent: Result<(), Error>,
    pub(crate) done: Option<DropGuard>,
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
    /// The next instant at which something of this announcer may be due.
    pub(crate) fn next_wake(&self) -> Instant {
        self.schedule.next_wake()
    }

    /// Sends the token due at `now`, if one is.
    pub(crate) async fn turn(&mut self, client: &Client, now: Instant) {
        if let Some(why) = self.schedule.due(now) {
            // A failure is counted and logged in `publish`; the next token retries.
            let _ = self.publish(client, why).await;
        }
    }

    /// Stamps and publishes the token. Does not flush: the connection writes promptly, and
    /// callers that must know the token left (start, drain, shutdown) flush themselves.
    pub(crate) async fn publish(&mut self, client: &Client, why: Why) -> Result<(), Error> {
        let standing = *self.standing.borrow();
        if standing.halted {
            // etcd ended this incarnation: the key is someone else's, or nobody's.
            return Err(Error::new(ErrorKind::Stopped));
        }
        let mut now = Instant::now();
        let ready = self.pacer.ready_at(now);
        if ready > now {
            // Only a burst of changes gets here; a subscriber would drop a token further
            // ahead than the pace allows.
            tokio::time::sleep_until(ready).await;
            now = ready;
        }
        self.pacer.spend(now);
        self.token.seq = self.next_seq;
        self.next_seq += 1;
        self.token.load = self.load;
        self.token.epoch = standing.epoch;
        self.token.sent_at_ms = unix_millis();
        self.schedule.published(now, self.load);
        // New metadata goes out in full, as any change does.
        let why = if self.adopt_staged_meta(standing.meta_version) {
            Why::Meta
        } else {
            why
        };
        let compact = self.fullness.compact(why);
        let encoded = if compact {
            codec::encode_heartbeat(&self.token)
        } else {
            codec::encode(&self.token)
        };
        let sent = match encoded {
            Ok(bytes) => client
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

    /// `drain()` and `resume()`.
    pub(crate) async fn set_state(&mut self, client: &Client, state: State) -> Result<(), Error> {
        self.token.state = state;
        tracing::info!(%state, "state changed");
        self.publish(client, Why::State).await
    }

    /// `set_meta()`: metadata is checked first, and refused with the token unchanged when it
    /// breaks a bound. With etcd it goes out only once the registration holds it: a
    /// subscriber with etcd drops a token whose identity is not the registration's.
    pub(crate) async fn set_meta(
        &mut self,
        client: &Client,
        request: MetaRequest,
    ) -> Result<(), Error> {
        match request {
            MetaRequest::Publish(meta) => {
                let previous = std::mem::replace(&mut self.token.meta, meta);
                match check_token(&self.token) {
                    Ok(()) => self.publish(client, Why::Meta).await,
                    Err(e) => {
                        self.token.meta = previous;
                        Err(e)
                    }
                }
            }
            MetaRequest::Stage(staged) => {
                let mut next = self.token.clone();
                next.meta = staged.meta.clone();
                check_token(&next)?;
                if self
                    .staged
                    .as_ref()
                    .is_none_or(|s| s.version < staged.version)
                {
                    self.staged = Some(staged);
                }
                Ok(())
            }
            MetaRequest::Written => {
                let held = self.standing.borrow().meta_version;
                if self.staged.as_ref().is_some_and(|s| s.version <= held) {
                    self.publish(client, Why::Meta).await
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Takes the staged metadata into the token once the registration holds it (at
    /// `meta_version` or later); returns whether it did.
    fn adopt_staged_meta(&mut self, meta_version: u64) -> bool {
        match self.staged.take() {
            Some(staged) if staged.version <= meta_version => {
                tracing::info!(version = staged.version, "metadata changed");
                self.token.meta = staged.meta;
                true
            }
            other => {
                self.staged = other;
                false
            }
        }
    }

    /// Takes the load last set through the handle.
    pub(crate) fn load_set(&mut self, now: Instant) {
        let load = self.load_cell.take();
        self.set_load(now, load);
    }

    fn set_load(&mut self, now: Instant, load: f32) {
        self.load = load;
        self.schedule.load(now, load);
    }

    /// The registration's standing changed: a new epoch goes out at once. Returns false
    /// when etcd halted the announcer (it stops without a goodbye).
    pub(crate) async fn standing_changed(&mut self, client: &Client) -> bool {
        let standing = *self.standing.borrow();
        if standing.halted {
            tracing::debug!("halted by etcd; stopped without a leaving token");
            return false;
        }
        if standing.epoch != self.token.epoch {
            let _ = self.publish(client, Why::Epoch).await;
        }
        true
    }

    /// After a reconnect, or once the new connection's INFO names it, the token goes out at
    /// once naming the connection that carries it: a subscriber that follows disconnect
    /// advisories must not take the old connection's close for a crash.
    pub(crate) async fn check_reconnect(&mut self, client: &Client, now: &Link) {
        let new = now.connects.saturating_sub(self.link_seen.connects);
        let moved = now.conn != self.link_seen.conn;
        if new == 0 && !moved {
            return;
        }
        self.counters.reconnects.fetch_add(new, Ordering::Relaxed);
        self.token.conn = now.conn.as_deref().map(str::to_owned);
        self.link_seen = now.clone();
        let sent = self.publish(client, Why::Reconnect).await;
        tracing::info!(
            ok = sent.is_ok(),
            conn = self.token.conn.as_deref().unwrap_or("-"),
            "nats reconnected; token republished"
        );
    }

    /// `shutdown()`: the leaving token, unless etcd halted the announcer. The caller flushes.
    pub(crate) async fn leave(mut self, client: &Client) -> Goodbye {
        let sent = if self.standing.borrow().halted {
            tracing::debug!("halted by etcd; stopped without a leaving token");
            Ok(())
        } else {
            self.token.state = State::Leaving;
            self.publish(client, Why::Leaving).await
        };
        Goodbye {
            sent,
            done: self.done.take(),
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
