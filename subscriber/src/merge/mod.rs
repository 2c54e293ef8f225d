//! The rules of DESIGN.md ("Authority" and "Subscriber behaviour"), written once.
//!
//! Every input the subscriber receives for one instance key — a token, an etcd PUT or DELETE,
//! a cluster change, a passed deadline, a held token's timeout — goes through [`merge`],
//! together with what is known of that key ([`Facts`]). The answer ([`Outcome`]) says what
//! becomes of the live entry, the registration, the tombstone and the held token, and why a
//! token was dropped. The store only carries outcomes out; no rule is written anywhere else.
//! The function is pure, so the rules are tested as tables (`tests`) and against a reference
//! model (`store::model_tests`).

#[cfg(test)]
mod tests;

use herald_shared::pace::max_seq_advance;

use crate::event::RemovalCause;

/// How the subscriber judges tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mode {
    /// etcd is configured: the registration is the identity (registry mode).
    pub(crate) registry: bool,
    /// In registry mode, unregistered (epoch 0) tokens are applied under the bus rules.
    pub(crate) allow_unregistered: bool,
}

#[cfg(test)]
impl Mode {
    /// Without etcd: tokens are applied as they arrive.
    pub(crate) const BUS: Mode = Mode {
        registry: false,
        allow_unregistered: true,
    };
}

/// An `(epoch, seq)` pair: a live entry's, a tombstone's or a held token's; or a deletion's
/// fence, older than which every token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Known {
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    /// A deletion's fence `(revision - 1, any seq)`: every token of an epoch below the
    /// deletion is older than it. A flag, not a reserved `seq`: a token may carry any `seq`.
    pub(crate) fence: bool,
}

impl Known {
    /// The last token of an entry, or a held token.
    pub(crate) fn token(epoch: u64, seq: u64) -> Known {
        Known {
            epoch,
            seq,
            fence: false,
        }
    }

    /// The fence a deletion at `revision` leaves.
    fn fence(revision: u64) -> Known {
        Known {
            epoch: revision.saturating_sub(1),
            seq: u64::MAX,
            fence: true,
        }
    }

    /// Why a token `(epoch, seq)` is not newer than this, if it is not.
    fn outranks(self, epoch: u64, seq: u64) -> Option<DropReason> {
        if epoch < self.epoch || (epoch == self.epoch && self.fence) {
            Some(DropReason::StaleEpoch)
        } else if epoch == self.epoch && seq <= self.seq {
            Some(DropReason::Duplicate)
        } else {
            None
        }
    }
}

/// The live entry of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Live {
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    /// A token of it was heard since the subscriber started (not only its registration).
    pub(crate) confirmed: bool,
    /// Milliseconds since its last accepted token (or since it was listed).
    pub(crate) quiet_ms: u64,
    pub(crate) ttl_ms: u32,
    /// A goodbye that awaits its registration's deletion: milliseconds since it was heard.
    pub(crate) goodbye_ms: Option<u64>,
}

impl Live {
    fn known(self) -> Known {
        Known::token(self.epoch, self.seq)
    }

    /// Quiet for half its TTL, or a goodbye of it waited [`GOODBYE_PROOF_MS`] for its
    /// deletion: a token outside its run may re-base it.
    fn quiet(self) -> bool {
        self.quiet_ms >= u64::from(self.ttl_ms) / 2
            || self.goodbye_ms.is_some_and(|ms| ms >= GOODBYE_PROOF_MS)
    }

    /// Whether a token of this entry's epoch with `seq` continues its run, and if it does
    /// not, whether it re-bases the run (`Ok(true)`) or is dropped.
    ///
    /// A run advances by at most [`max_seq_advance`] over the time since its last accepted
    /// token, so one forged token cannot push `seq` out of the real tokens' reach. A token
    /// that neither continues the run nor is newer than it is accepted all the same once
    /// the entry has been quiet for half its TTL (or a goodbye of it has waited
    /// [`GOODBYE_PROOF_MS`] for its deletion): whatever a forged token did to `seq`, the
    /// instance's own tokens re-base it before its deadline, and a restarted process
    /// without etcd takes its place.
    fn run_order(self, seq: u64) -> Result<bool, DropReason> {
        let newer = seq > self.seq;
        // An entry only registered so far has no run yet: its first token starts one.
        if newer && (!self.confirmed || seq - self.seq <= max_seq_advance(self.quiet_ms)) {
            return Ok(false);
        }
        match (self.quiet(), newer) {
            (true, _) => Ok(true),
            (false, false) => Err(DropReason::Duplicate),
            (false, true) => Err(DropReason::SeqJump),
        }
    }
}

/// How long a goodbye of a registered instance waits for its registration's deletion before
/// a token of the instance's run may refute it. Tokens sent before a goodbye arrive within
/// milliseconds of it; an announcer deletes its registration right after it.
pub(crate) const GOODBYE_PROOF_MS: u64 = 500;

/// The registration of a key as last seen through etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Registered {
    pub(crate) epoch: u64,
    pub(crate) lease: i64,
}

/// What is known of one key when an input arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    pub(crate) live: Option<Live>,
    pub(crate) registration: Option<Registered>,
    /// The last removal's `(epoch, seq)`; only consulted when there is no live entry.
    pub(crate) tombstone: Option<Known>,
    /// The token held while its registration is awaited.
    pub(crate) held: Option<Known>,
    /// The epoch the key had in an etcd cluster that has since been replaced.
    pub(crate) retired: Option<u64>,
    /// No room to hold one more token (the bound on held tokens is reached).
    pub(crate) hold_full: bool,
    /// With disconnect advisories: no full token of the live entry named its connection yet
    /// (heartbeats alone confirmed it), so a closed connection would not find it.
    pub(crate) connection_unknown: bool,
}

/// A valid token, as far as the rules need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenFacts {
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    pub(crate) leaving: bool,
    /// Its identity fields (address, zone, weight, metadata, TTL) equal the registration's,
    /// compared exactly (true when there is no registration).
    pub(crate) matches_registration: bool,
    /// Its identity fields equal the live entry's, by fingerprint (true when there is no
    /// live entry).
    pub(crate) matches_live: bool,
}

impl TokenFacts {
    /// A token that changes no identity field.
    #[cfg(test)]
    pub(crate) fn same(epoch: u64, seq: u64, leaving: bool) -> TokenFacts {
        TokenFacts {
            epoch,
            seq,
            leaving,
            matches_registration: true,
            matches_live: true,
        }
    }

    /// Whether the token keeps the identity it is judged against: the registration's when
    /// it is of the registration's epoch (exactly: a publisher on the bus must not redirect
    /// an instance), else the live entry's when there is no registration (a change of record
    /// without etcd, not a security boundary). A token of another epoch than a registration
    /// has nothing to keep: the epoch rules judge it.
    fn same_identity(self, facts: &Facts) -> bool {
        match facts.registration {
            Some(r) if r.epoch == self.epoch => self.matches_registration,
            Some(_) => true,
            None => self.matches_live,
        }
    }
}

/// One input for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// A token from NATS (or a held one, released).
    Token(TokenFacts),
    /// A heartbeat from NATS: the listed entry's full token of `epoch` again, with a new
    /// `seq` (and load).
    Heartbeat { epoch: u64, seq: u64 },
    /// etcd wrote the key at `revision` under `lease`.
    Put { revision: u64, lease: i64 },
    /// etcd deleted the key at `revision`.
    Delete { revision: u64 },
    /// A full listing at `revision - 1` left the key out.
    Unlisted { revision: u64 },
    /// A different etcd cluster answers: its revisions mean nothing against the old ones.
    ClusterChange,
    /// The live entry's deadline passed; `preserving` while our own NATS link is down.
    Deadline { preserving: bool },
    /// The held token waited its whole bound without a registration.
    HeldTimeout,
    /// The NATS connection that carried the live entry's latest token closed (a disconnect
    /// advisory said its client's host closed it), and the grace passed without a token over
    /// another connection.
    ConnectionClosed,
}

/// What becomes of the live entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing visible changes.
    None,
    /// List a new entry: from the token, or (a PUT) unconfirmed from the registration.
    Add { confirmed: bool },
    /// Update the live entry in place from the token (seq, load, state, deadline) and mark it
    /// confirmed.
    Refresh,
    /// A goodbye of a registered instance: refresh the entry from it, so that it is no longer
    /// picked, but keep it listed until its registration's deletion confirms the goodbye.
    Leave,
    /// Replace the live entry with a new record: the token's (bus mode), or the registration's
    /// (a PUT of the same lease, or of a key listed unregistered), keeping the live fields.
    Replace,
    /// Replace the live entry with a copy under epoch 0 (its cluster was replaced).
    Retire,
    /// Another lease took the key over: remove the live entry as fenced, then list the new
    /// registration, unconfirmed.
    Fence,
    /// Remove the live entry.
    Remove(RemovalCause),
    /// Give the live entry one fresh TTL from now.
    Extend,
}

/// What becomes of the key's registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegistrationChange {
    Keep,
    Set(Registered),
    Clear,
}

/// What becomes of the key's tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TombstoneChange {
    Keep,
    Set(Known),
    Clear,
}

/// What becomes of the key's held token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeldChange {
    Keep,
    /// Hold this token instead; a token it supersedes counts as a duplicate.
    Hold {
        superseded: bool,
    },
    /// Forget the held token, counting it as dropped for this reason.
    Drop(DropReason),
    /// Its registration arrived: apply the held token now, as a token.
    Release,
}

/// What becomes of the key's retired epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetiredChange {
    Keep,
    Set(u64),
    Clear,
}

/// The answer of [`merge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) effect: Effect,
    /// Why the input token was dropped, if it was.
    pub(crate) dropped: Option<DropReason>,
    pub(crate) registration: RegistrationChange,
    pub(crate) tombstone: TombstoneChange,
    pub(crate) held: HeldChange,
    pub(crate) retired: RetiredChange,
    /// The accepted token did not continue the entry's run but re-based it (see
    /// [`Live::run_order`]): no loss is counted from its `seq`.
    pub(crate) rebased: bool,
    /// The accepted token showed the entry's pending goodbye false: the instance goes on.
    pub(crate) refuted_goodbye: bool,
    /// Probe the key's service: its instances answer with full tokens.
    pub(crate) probe: bool,
}

impl Outcome {
    const NOTHING: Outcome = Outcome {
        effect: Effect::None,
        dropped: None,
        registration: RegistrationChange::Keep,
        tombstone: TombstoneChange::Keep,
        held: HeldChange::Keep,
        retired: RetiredChange::Keep,
        rebased: false,
        refuted_goodbye: false,
        probe: false,
    };

    fn effect(effect: Effect) -> Outcome {
        Outcome {
            effect,
            ..Outcome::NOTHING
        }
    }

    fn drop(reason: DropReason) -> Outcome {
        Outcome {
            dropped: Some(reason),
            ..Outcome::NOTHING
        }
    }

    fn tombstone(self, t: TombstoneChange) -> Outcome {
        Outcome {
            tombstone: t,
            ..self
        }
    }

    /// Whether a token was accepted (it changed or refreshed the view).
    pub(crate) fn accepted(&self) -> bool {
        self.dropped.is_none() && !matches!(self.held, HeldChange::Hold { .. })
    }
}

/// Why a well-formed token was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Its epoch is lower than the known one: an older incarnation.
    StaleEpoch,
    /// Same epoch, `seq` not newer: a duplicate or a reordered token.
    Duplicate,
    /// Same epoch, `seq` further ahead than its sender could have gone since the last
    /// accepted token (see [`herald_shared::pace`]): a forgery.
    SeqJump,
    /// A `leaving` token for an instance that is not listed (already gone or never seen).
    GoodbyeUnknown,
    /// Not registered in etcd: epoch 0 in registry mode (unless allowed), or an epoch etcd
    /// did not show within the hold bound.
    Unregistered,
    /// Its address, zone, weight, metadata or TTL differ from the registration's.
    IdentityMismatch,
}

/// What `input` means for a key of which `facts` are known, under `mode`.
pub(crate) fn merge(mode: Mode, facts: &Facts, input: Input) -> Outcome {
    match input {
        Input::Token(t) if mode.registry => registered_token(mode, facts, t),
        Input::Token(t) => bus_token(mode, facts, t),
        Input::Heartbeat { epoch, seq } => heartbeat(mode, facts, epoch, seq),
        Input::Put { revision, lease } => put(facts, revision, lease),
        Input::Delete { revision } => delete(facts, revision),
        // Only what etcd said exists can have vanished from it: a registration, or an entry
        // of a registered epoch. An unregistered instance (epoch 0) was never listed.
        Input::Unlisted { revision } => {
            let registered =
                facts.registration.is_some() || facts.live.is_some_and(|l| l.epoch > 0);
            if registered {
                delete(facts, revision)
            } else {
                Outcome::NOTHING
            }
        }
        Input::ClusterChange => cluster_change(facts),
        Input::Deadline { preserving } => match facts.live {
            None => Outcome::NOTHING,
            Some(_) if preserving => Outcome::effect(Effect::Extend),
            // A whole TTL of silence after a goodbye agrees with it (etcd could not confirm
            // it: down, or out of our reach); a forged one is refuted long before.
            Some(l) if l.goodbye_ms.is_some() => {
                Outcome::effect(Effect::Remove(RemovalCause::Goodbye))
                    .tombstone(TombstoneChange::Set(l.known()))
            }
            Some(l) => Outcome::effect(Effect::Remove(RemovalCause::Expired))
                .tombstone(TombstoneChange::Set(l.known())),
        },
        // The process died: as final as a missed deadline, only sooner. A token of a later
        // seq (a false alarm) lists it again. After a goodbye it was a graceful stop.
        Input::ConnectionClosed => match facts.live {
            None => Outcome::NOTHING,
            Some(l) => {
                let cause = match l.goodbye_ms {
                    Some(_) => RemovalCause::Goodbye,
                    None => RemovalCause::Disconnected,
                };
                Outcome::effect(Effect::Remove(cause)).tombstone(TombstoneChange::Set(l.known()))
            }
        },
        Input::HeldTimeout => match facts.held {
            None => Outcome::NOTHING,
            Some(_) => Outcome {
                held: HeldChange::Drop(DropReason::Unregistered),
                ..Outcome::NOTHING
            },
        },
    }
}

/// A token ordered against the live entry's run (or, without one, the tombstone): stale,
/// duplicate and jumping tokens drop; a goodbye removes, or with a registration marks the
/// entry leaving until the deletion confirms it; anything else adds, refreshes or replaces.
fn bus_token(mode: Mode, facts: &Facts, t: TokenFacts) -> Outcome {
    let rebased = match facts.live {
        Some(l) if l.epoch == t.epoch => match l.run_order(t.seq) {
            Ok(rebased) => rebased,
            Err(reason) => return Outcome::drop(reason),
        },
        // Without etcd an epoch is only a claim: one forged higher epoch must not fence the
        // real instance out for good.
        Some(l) if t.epoch < l.epoch && !mode.registry && l.quiet() => true,
        _ => {
            let latest = facts.live.map(Live::known).or(facts.tombstone);
            if let Some(reason) = latest.and_then(|k| k.outranks(t.epoch, t.seq)) {
                return Outcome::drop(reason);
            }
            false
        }
    };
    let after = TombstoneChange::Set(Known::token(t.epoch, t.seq));
    let outcome = match facts.live {
        // Only the registration's owner can delete it: a goodbye anyone could forge waits
        // for that proof, while picks already pass the instance by.
        Some(_) if t.leaving && facts.registration.is_some() => Outcome::effect(Effect::Leave),
        Some(_) if t.leaving => {
            Outcome::effect(Effect::Remove(RemovalCause::Goodbye)).tombstone(after)
        }
        None if t.leaving => Outcome::drop(DropReason::GoodbyeUnknown).tombstone(after),
        Some(l) if l.epoch == t.epoch && t.same_identity(facts) => Outcome::effect(Effect::Refresh),
        Some(_) => Outcome::effect(Effect::Replace),
        None => Outcome::effect(Effect::Add { confirmed: true }),
    };
    Outcome {
        rebased,
        refuted_goodbye: !t.leaving && facts.live.is_some_and(|l| l.goodbye_ms.is_some()),
        ..outcome
    }
}

/// Registry mode: a token applies only with its registration's epoch and identity.
fn registered_token(mode: Mode, facts: &Facts, t: TokenFacts) -> Outcome {
    match facts.registration {
        Some(r) if t.epoch == r.epoch && t.epoch > 0 => {
            if t.same_identity(facts) {
                bus_token(mode, facts, t)
            } else {
                Outcome::drop(DropReason::IdentityMismatch)
            }
        }
        Some(_) if t.epoch == 0 => Outcome::drop(DropReason::Unregistered),
        Some(r) if t.epoch < r.epoch => Outcome::drop(DropReason::StaleEpoch),
        None if t.epoch == 0 || facts.retired == Some(t.epoch) => {
            unregistered_token(mode, facts, t)
        }
        // No registration yet, or one older than the token: its PUT may be on its way.
        _ => hold(facts, t),
    }
}

/// Registry mode, a key without registration: an epoch-0 token applies under the bus rules
/// only when allowed; a token of a replaced cluster keeps refreshing the entry it listed.
fn unregistered_token(mode: Mode, facts: &Facts, t: TokenFacts) -> Outcome {
    let grandfathered = t.epoch > 0 && facts.live.is_some_and(|l| l.epoch == 0);
    if t.epoch > 0 && !grandfathered {
        return hold(facts, t);
    }
    if !grandfathered && !mode.allow_unregistered {
        return Outcome::drop(DropReason::Unregistered);
    }
    // A replaced cluster's token may refresh what it listed, never change its identity.
    if grandfathered && !t.same_identity(facts) {
        return Outcome::drop(DropReason::IdentityMismatch);
    }
    bus_token(mode, facts, TokenFacts { epoch: 0, ..t })
}

/// Holds a token until its registration arrives, unless a deletion already fenced its epoch.
fn hold(facts: &Facts, t: TokenFacts) -> Outcome {
    if facts.live.is_none()
        && let Some(reason) = facts.tombstone.and_then(|k| k.outranks(t.epoch, t.seq))
    {
        return Outcome::drop(reason);
    }
    match facts.held {
        Some(h) if h.outranks(t.epoch, t.seq).is_some() => Outcome::drop(DropReason::Duplicate),
        None if facts.hold_full => Outcome::drop(DropReason::Unregistered),
        held => Outcome {
            held: HeldChange::Hold {
                superseded: held.is_some(),
            },
            ..Outcome::NOTHING
        },
    }
}

fn put(facts: &Facts, revision: u64, lease: i64) -> Outcome {
    let seen = facts.registration.is_some_and(|r| r.epoch >= revision)
        || (facts.live.is_none() && facts.tombstone.is_some_and(|k| k.epoch >= revision))
        || facts.live.is_some_and(|l| l.epoch >= revision);
    if seen {
        // This write, or a newer one or a deletion after it, was applied already.
        return Outcome::NOTHING;
    }
    let effect = match facts.live {
        None => Effect::Add { confirmed: false },
        Some(l) => match facts.registration {
            Some(old) if old.lease != lease && l.epoch > 0 => Effect::Fence,
            _ => Effect::Replace,
        },
    };
    let held = match facts.held {
        Some(h) if h.epoch == revision => HeldChange::Release,
        Some(h) if h.epoch < revision => HeldChange::Drop(DropReason::StaleEpoch),
        _ => HeldChange::Keep,
    };
    Outcome {
        effect,
        registration: RegistrationChange::Set(Registered {
            epoch: revision,
            lease,
        }),
        held,
        retired: if facts.retired.is_some() {
            RetiredChange::Clear
        } else {
            RetiredChange::Keep
        },
        ..Outcome::NOTHING
    }
}

fn delete(facts: &Facts, revision: u64) -> Outcome {
    let newer = facts.registration.is_some_and(|r| r.epoch >= revision)
        || facts.live.is_some_and(|l| l.epoch >= revision);
    if newer {
        return Outcome::NOTHING;
    }
    // Every token of an epoch below the deletion is fenced out from now on.
    let fence = Known::fence(revision);
    let fenced_more = facts
        .tombstone
        .is_some_and(|k| k.epoch > fence.epoch || (k.epoch == fence.epoch && k.fence));
    Outcome {
        effect: match facts.live {
            // The deletion its goodbye waited for.
            Some(l) if l.goodbye_ms.is_some() => Effect::Remove(RemovalCause::Goodbye),
            Some(_) => Effect::Remove(RemovalCause::Deregistered),
            None => Effect::None,
        },
        registration: if facts.registration.is_some() {
            RegistrationChange::Clear
        } else {
            RegistrationChange::Keep
        },
        tombstone: if fenced_more {
            TombstoneChange::Keep
        } else {
            TombstoneChange::Set(fence)
        },
        held: match facts.held {
            Some(h) if h.epoch < revision => HeldChange::Drop(DropReason::StaleEpoch),
            _ => HeldChange::Keep,
        },
        ..Outcome::NOTHING
    }
}

/// Epochs and tombstones of the old cluster are forgotten; live entries stay (their
/// broadcasts are as good as ever) under epoch 0 until their announcers register again.
fn cluster_change(facts: &Facts) -> Outcome {
    let (effect, retired) = match facts.live {
        Some(l) if l.epoch > 0 => (Effect::Retire, RetiredChange::Set(l.epoch)),
        // Listed under epoch 0 since an earlier change: its tokens still carry that epoch.
        Some(_) => (Effect::None, RetiredChange::Keep),
        None => (Effect::None, RetiredChange::Clear),
    };
    Outcome {
        effect,
        registration: RegistrationChange::Clear,
        tombstone: TombstoneChange::Clear,
        retired,
        ..Outcome::NOTHING
    }
}

/// Whether an entry with `deadline` is live at `now`: until its deadline, and whatever its
/// deadline while the subscriber preserves its view (its own NATS link is down: the silence
/// is ours, not the instances'). Reads ask this between sweeps, so that no snapshot lists an
/// instance whose TTL passed; the sweep's [`Input::Deadline`] then removes it.
pub(crate) fn live_at(deadline: u64, now: u64, preserving: bool) -> bool {
    preserving || deadline > now
}

/// The subscriber's own NATS link, as the self-preservation rule needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    /// The link is up now.
    pub(crate) connected: bool,
    /// The view is preserved (the link was down when last looked at).
    pub(crate) preserving: bool,
    /// The client connected again since last looked at, whether or not it was seen down.
    pub(crate) reconnected: bool,
}

/// What the subscriber does about its own link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkAction {
    /// Nothing changed.
    None,
    /// The link is down: nothing expires until it is back (the silence is ours).
    Preserve,
    /// The link is back: every live entry gets [`deadline_after_reconnect`], preservation
    /// is lifted after that (no reader sees a gap), and every announcer is probed.
    Resume,
}

/// Self-preservation (DESIGN.md, "Failure behaviour"): while the subscriber's own NATS link
/// is down nothing expires; once it is back, after any disconnect however brief, every
/// instance gets one fresh TTL and a probe asks everyone to answer now.
pub(crate) fn own_link(link: Link) -> LinkAction {
    match link {
        Link {
            connected: false, ..
        } => LinkAction::Preserve,
        Link {
            preserving: true, ..
        }
        | Link {
            reconnected: true, ..
        } => LinkAction::Resume,
        _ => LinkAction::None,
    }
}

/// A live entry's deadline once the subscriber's own NATS link is back: one fresh TTL from
/// `now` at least. The silence was ours; each instance gets a whole TTL to be heard again.
pub(crate) fn deadline_after_reconnect(deadline: u64, now: u64, ttl_ms: u32) -> u64 {
    deadline.max(now + u64::from(ttl_ms))
}

/// How long a deregistration's tombstone holds. An announcer cut off from etcd keeps
/// broadcasting its old epoch until it can register again; for this long its tokens are
/// dropped instead of resurrecting the deleted registration.
pub(crate) const DEREGISTERED_TOMBSTONE: std::time::Duration = std::time::Duration::from_secs(600);

/// How long the tombstone of a removal holds: a deletion's fence [`DEREGISTERED_TOMBSTONE`];
/// any other removal one TTL of the instance (`ttl_ms`), as long as its late tokens may still
/// be on their way.
pub(crate) fn tombstone_lifetime(known: Known, ttl_ms: u32) -> std::time::Duration {
    if known.fence {
        DEREGISTERED_TOMBSTONE
    } else {
        std::time::Duration::from_millis(u64::from(ttl_ms))
    }
}

/// The disconnect-advisory reasons that mean the client's host closed the connection, so
/// that its process is gone (nats-server 2.9, measured with `kill -9`): `Client Closed` (the
/// kernel closes a dead process's sockets), `Read Error` (a reset: it died with unread data in
/// its socket) and `Write Error` (a reset while the server was writing to it). A client that
/// reconnects also closes its old connection (`Client Closed`); the grace covers its
/// republish over the new one. Other reasons (server shutdown, lame duck, stale connection)
/// say nothing of the process: its instances keep their TTL.
const CLOSED_BY_HOST: [&str; 3] = ["Client Closed", "Read Error", "Write Error"];

/// Whether a disconnect advisory's `reason` means the client's process is gone: its
/// instances go after the grace ([`Input::ConnectionClosed`]).
pub(crate) fn closed_by_host(reason: &str) -> bool {
    CLOSED_BY_HOST.contains(&reason)
}

/// A heartbeat is judged as the listed entry's full token would be, when an entry of its
/// epoch is listed; it can only refresh it. For any other key nothing can be built from it,
/// and the service is probed: every instance answers in full (a subscriber that missed the
/// full token, or a new incarnation not heard of yet). An entry confirmed by heartbeats alone
/// has no known connection: its service is probed too, so that a full token names it.
fn heartbeat(mode: Mode, facts: &Facts, epoch: u64, seq: u64) -> Outcome {
    if facts.live.is_none_or(|l| l.epoch != epoch) {
        return Outcome {
            probe: true,
            ..Outcome::NOTHING
        };
    }
    let token = TokenFacts {
        epoch,
        seq,
        leaving: false,
        // It carries no identity: the listed entry's is its own.
        matches_registration: true,
        matches_live: true,
    };
    let outcome = merge(mode, facts, Input::Token(token));
    match (outcome.effect, outcome.dropped) {
        (_, Some(_)) => outcome,
        (Effect::Refresh, None) => Outcome {
            probe: facts.connection_unknown,
            ..outcome
        },
        _ => Outcome {
            probe: true,
            ..Outcome::NOTHING
        },
    }
}

/// Tokens lost between two accepted `seq` values of one run; a jump larger than
/// [`NEW_RUN_JUMP`] is a new run, not loss.
pub(crate) fn lost_between(previous: u64, next: u64) -> u64 {
    match next.checked_sub(previous) {
        Some(d) if (2..=NEW_RUN_JUMP + 1).contains(&d) => d - 1,
        _ => 0,
    }
}

pub(crate) use herald_shared::pace::NEW_RUN_JUMP;
