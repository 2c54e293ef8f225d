//! The rules as tables: one row per case of DESIGN.md's merge and authority sections.

use super::*;

const REGISTRY: Mode = Mode {
    registry: true,
    allow_unregistered: false,
};
const REGISTRY_OPEN: Mode = Mode {
    registry: true,
    allow_unregistered: true,
};

fn live(epoch: u64, seq: u64) -> Option<Live> {
    Some(Live {
        epoch,
        seq,
        confirmed: true,
        quiet_ms: 1_000,
        ttl_ms: 3_000,
        goodbye_ms: None,
    })
}

fn reg(epoch: u64, lease: i64) -> Option<Registered> {
    Some(Registered { epoch, lease })
}

fn known(epoch: u64, seq: u64) -> Option<Known> {
    Some(Known::token(epoch, seq))
}

fn tok(epoch: u64, seq: u64) -> Input {
    Input::Token(TokenFacts::same(epoch, seq, false))
}

fn bye(epoch: u64, seq: u64) -> Input {
    Input::Token(TokenFacts::same(epoch, seq, true))
}

fn other_identity(epoch: u64, seq: u64) -> Input {
    Input::Token(TokenFacts {
        epoch,
        seq,
        leaving: false,
        matches_registration: false,
        matches_live: false,
    })
}

fn effect(o: Outcome) -> Effect {
    o.effect
}

fn dropped(o: Outcome) -> Option<DropReason> {
    o.dropped
}

/// One row: what it shows, the mode, what is known, the input, and the expected outcome.
type Row<'a> = (&'a str, Mode, Facts, Input, &'a dyn Fn(Outcome) -> bool);

/// Runs every row.
fn table(rows: &[Row<'_>]) {
    for (what, mode, facts, input, check) in rows {
        let outcome = merge(*mode, facts, *input);
        assert!(check(outcome), "{what}: got {outcome:?}");
    }
}

#[test]
fn bus_mode_orders_tokens_by_epoch_then_seq() {
    let f = Facts {
        live: live(7, 10),
        ..Facts::default()
    };
    let none = Facts::default();
    table(&[
        (
            "unknown instance is added",
            Mode::BUS,
            none,
            tok(0, 5),
            &|o| effect(o) == Effect::Add { confirmed: true } && o.accepted(),
        ),
        (
            "lower epoch is stale whatever its seq",
            Mode::BUS,
            f,
            tok(6, 99),
            &|o| dropped(o) == Some(DropReason::StaleEpoch),
        ),
        (
            "an old incarnation's goodbye is stale",
            Mode::BUS,
            f,
            bye(6, 99),
            &|o| dropped(o) == Some(DropReason::StaleEpoch) && effect(o) == Effect::None,
        ),
        ("same seq is a duplicate", Mode::BUS, f, tok(7, 10), &|o| {
            dropped(o) == Some(DropReason::Duplicate)
        }),
        ("older seq is a duplicate", Mode::BUS, f, tok(7, 9), &|o| {
            dropped(o) == Some(DropReason::Duplicate)
        }),
        ("newer seq refreshes", Mode::BUS, f, tok(7, 11), &|o| {
            effect(o) == Effect::Refresh
        }),
        (
            "newer seq with another identity replaces",
            Mode::BUS,
            f,
            other_identity(7, 11),
            &|o| effect(o) == Effect::Replace,
        ),
        (
            "higher epoch wins even with a lower seq",
            Mode::BUS,
            f,
            tok(8, 1),
            &|o| effect(o) == Effect::Replace,
        ),
        (
            "goodbye removes the live entry and leaves a tombstone",
            Mode::BUS,
            f,
            bye(7, 11),
            &|o| {
                effect(o) == Effect::Remove(RemovalCause::Goodbye)
                    && o.tombstone == TombstoneChange::Set(Known::token(7, 11))
            },
        ),
        (
            "goodbye of an unknown instance is dropped, remembered",
            Mode::BUS,
            none,
            bye(0, 3),
            &|o| {
                dropped(o) == Some(DropReason::GoodbyeUnknown)
                    && o.tombstone == TombstoneChange::Set(Known::token(0, 3))
            },
        ),
    ]);
}

#[test]
fn tombstones_stop_late_tokens_of_a_departed_run() {
    let f = Facts {
        tombstone: known(0, 20),
        ..Facts::default()
    };
    table(&[
        (
            "a token sent before the goodbye",
            Mode::BUS,
            f,
            tok(0, 19),
            &|o| dropped(o) == Some(DropReason::Duplicate),
        ),
        (
            "a restarted run has a larger seq",
            Mode::BUS,
            f,
            tok(0, 5_000_000),
            &|o| effect(o) == Effect::Add { confirmed: true },
        ),
    ]);
}

#[test]
fn registry_mode_applies_only_the_registered_epoch_and_identity() {
    let f = Facts {
        live: live(10, 5),
        registration: reg(10, 1),
        ..Facts::default()
    };
    let unheard = Facts {
        registration: reg(10, 1),
        ..Facts::default()
    };
    table(&[
        (
            "registered epoch and identity refresh",
            REGISTRY,
            f,
            tok(10, 6),
            &|o| effect(o) == Effect::Refresh,
        ),
        (
            "another address is an identity mismatch",
            REGISTRY,
            f,
            other_identity(10, 6),
            &|o| dropped(o) == Some(DropReason::IdentityMismatch) && effect(o) == Effect::None,
        ),
        (
            "a mismatch does not count as a duplicate first",
            REGISTRY,
            f,
            other_identity(10, 1),
            &|o| dropped(o) == Some(DropReason::IdentityMismatch),
        ),
        ("epoch 0 is unregistered", REGISTRY, f, tok(0, 99), &|o| {
            dropped(o) == Some(DropReason::Unregistered)
        }),
        (
            "epoch 0 is unregistered even when allowed, for a registered key",
            REGISTRY_OPEN,
            f,
            tok(0, 99),
            &|o| dropped(o) == Some(DropReason::Unregistered),
        ),
        ("an older epoch is stale", REGISTRY, f, tok(9, 99), &|o| {
            dropped(o) == Some(DropReason::StaleEpoch)
        }),
        (
            "an epoch ahead of the registration is held",
            REGISTRY,
            f,
            tok(1_000_000_000_000, 1),
            &|o| {
                o.held == HeldChange::Hold { superseded: false }
                    && effect(o) == Effect::None
                    && !o.accepted()
            },
        ),
        (
            "a registered, unheard instance is added by its token",
            REGISTRY,
            unheard,
            tok(10, 1),
            &|o| effect(o) == Effect::Add { confirmed: true },
        ),
        (
            "a goodbye of the registered epoch stops picks, and waits for the deletion",
            REGISTRY,
            f,
            bye(10, 6),
            &|o| effect(o) == Effect::Leave && o.accepted() && o.tombstone == TombstoneChange::Keep,
        ),
        (
            "a goodbye with another address is a mismatch",
            REGISTRY,
            f,
            Input::Token(TokenFacts {
                epoch: 10,
                seq: 6,
                leaving: true,
                matches_registration: false,
                matches_live: false,
            }),
            &|o| dropped(o) == Some(DropReason::IdentityMismatch) && effect(o) == Effect::None,
        ),
    ]);
}

#[test]
fn registry_mode_holds_tokens_ahead_of_their_registration() {
    let none = Facts::default();
    let holding = Facts {
        held: known(12, 5),
        ..Facts::default()
    };
    let full = Facts {
        hold_full: true,
        ..Facts::default()
    };
    let deleted = Facts {
        tombstone: Some(Known::fence(12)),
        ..Facts::default()
    };
    table(&[
        ("unknown key: held", REGISTRY, none, tok(12, 1), &|o| {
            o.held == HeldChange::Hold { superseded: false }
        }),
        (
            "a newer token supersedes the held one",
            REGISTRY,
            holding,
            tok(12, 6),
            &|o| o.held == HeldChange::Hold { superseded: true },
        ),
        (
            "an older token than the held one is a duplicate",
            REGISTRY,
            holding,
            tok(12, 4),
            &|o| dropped(o) == Some(DropReason::Duplicate) && o.held == HeldChange::Keep,
        ),
        (
            "no room to hold: unregistered",
            REGISTRY,
            full,
            tok(12, 1),
            &|o| dropped(o) == Some(DropReason::Unregistered),
        ),
        (
            "an epoch fenced by a deletion is stale, not held",
            REGISTRY,
            deleted,
            tok(11, 3),
            &|o| dropped(o) == Some(DropReason::StaleEpoch),
        ),
        (
            "an epoch after the deletion is held",
            REGISTRY,
            deleted,
            tok(12, 3),
            &|o| o.held == HeldChange::Hold { superseded: false },
        ),
        (
            "the bound passes: unregistered",
            REGISTRY,
            holding,
            Input::HeldTimeout,
            &|o| o.held == HeldChange::Drop(DropReason::Unregistered),
        ),
        (
            "epoch 0 of an unknown key, not allowed",
            REGISTRY,
            none,
            tok(0, 1),
            &|o| dropped(o) == Some(DropReason::Unregistered) && o.held == HeldChange::Keep,
        ),
        (
            "epoch 0 of an unknown key, allowed",
            REGISTRY_OPEN,
            none,
            tok(0, 1),
            &|o| effect(o) == Effect::Add { confirmed: true },
        ),
    ]);
}

#[test]
fn a_put_records_the_registration_and_lists_it_unconfirmed() {
    let none = Facts::default();
    let f = Facts {
        live: live(10, 5),
        registration: reg(10, 1),
        ..Facts::default()
    };
    let held = Facts {
        held: known(12, 5),
        ..Facts::default()
    };
    let said_goodbye = Facts {
        registration: reg(10, 1),
        tombstone: known(10, 9),
        ..Facts::default()
    };
    let set = |epoch, lease| RegistrationChange::Set(Registered { epoch, lease });
    table(&[
        (
            "a new key is listed unconfirmed",
            REGISTRY,
            none,
            Input::Put {
                revision: 10,
                lease: 1,
            },
            &|o| effect(o) == Effect::Add { confirmed: false } && o.registration == set(10, 1),
        ),
        (
            "the same write again changes nothing",
            REGISTRY,
            f,
            Input::Put {
                revision: 10,
                lease: 1,
            },
            &|o| o == Outcome::NOTHING,
        ),
        (
            "an older write changes nothing",
            REGISTRY,
            f,
            Input::Put {
                revision: 9,
                lease: 1,
            },
            &|o| o == Outcome::NOTHING,
        ),
        (
            "a rewrite under the same lease replaces the record",
            REGISTRY,
            f,
            Input::Put {
                revision: 14,
                lease: 1,
            },
            &|o| effect(o) == Effect::Replace && o.registration == set(14, 1),
        ),
        (
            "another lease takes over: fenced",
            REGISTRY,
            f,
            Input::Put {
                revision: 14,
                lease: 2,
            },
            &|o| effect(o) == Effect::Fence && o.registration == set(14, 2),
        ),
        (
            "the held token of this epoch is released",
            REGISTRY,
            held,
            Input::Put {
                revision: 12,
                lease: 1,
            },
            &|o| o.held == HeldChange::Release && effect(o) == Effect::Add { confirmed: false },
        ),
        (
            "a held token of an older epoch is stale",
            REGISTRY,
            held,
            Input::Put {
                revision: 13,
                lease: 1,
            },
            &|o| o.held == HeldChange::Drop(DropReason::StaleEpoch),
        ),
        (
            "a held token of a newer epoch stays held",
            REGISTRY,
            held,
            Input::Put {
                revision: 11,
                lease: 1,
            },
            &|o| o.held == HeldChange::Keep,
        ),
        (
            "a re-listed key that said goodbye is not listed again",
            REGISTRY,
            said_goodbye,
            Input::Put {
                revision: 10,
                lease: 1,
            },
            &|o| o == Outcome::NOTHING,
        ),
    ]);
}

#[test]
fn a_delete_removes_and_fences_older_epochs() {
    let f = Facts {
        live: live(10, 5),
        registration: reg(10, 1),
        held: known(11, 1),
        ..Facts::default()
    };
    let newer = Facts {
        live: live(20, 5),
        registration: reg(20, 1),
        ..Facts::default()
    };
    let fenced = Facts {
        tombstone: known(30, u64::MAX),
        ..Facts::default()
    };
    table(&[
        (
            "the live entry is deregistered",
            REGISTRY,
            f,
            Input::Delete { revision: 15 },
            &|o| {
                effect(o) == Effect::Remove(RemovalCause::Deregistered)
                    && o.registration == RegistrationChange::Clear
                    && o.tombstone == TombstoneChange::Set(Known::fence(15))
                    && o.held == HeldChange::Drop(DropReason::StaleEpoch)
            },
        ),
        (
            "a newer registration survives an older delete",
            REGISTRY,
            newer,
            Input::Delete { revision: 15 },
            &|o| o == Outcome::NOTHING,
        ),
        (
            "a later fence is kept",
            REGISTRY,
            fenced,
            Input::Delete { revision: 15 },
            &|o| o.tombstone == TombstoneChange::Keep && effect(o) == Effect::None,
        ),
    ]);
}

#[test]
fn deadlines_expire_unless_our_own_link_is_down() {
    let f = Facts {
        live: live(10, 5),
        ..Facts::default()
    };
    table(&[
        (
            "a passed deadline expires",
            REGISTRY,
            f,
            Input::Deadline { preserving: false },
            &|o| {
                effect(o) == Effect::Remove(RemovalCause::Expired)
                    && o.tombstone == TombstoneChange::Set(Known::token(10, 5))
            },
        ),
        (
            "while preserving, a fresh TTL",
            REGISTRY,
            f,
            Input::Deadline { preserving: true },
            &|o| effect(o) == Effect::Extend,
        ),
    ]);
}

#[test]
fn a_closed_connection_removes_at_once_and_a_later_token_lists_again() {
    let f = Facts {
        live: live(10, 5),
        registration: reg(10, 7),
        ..Facts::default()
    };
    let gone = Facts {
        live: None,
        tombstone: known(10, 5),
        ..f
    };
    table(&[
        (
            "its connection closed: removed as disconnected, late tokens fenced",
            REGISTRY,
            f,
            Input::ConnectionClosed,
            &|o| {
                effect(o) == Effect::Remove(RemovalCause::Disconnected)
                    && o.tombstone == TombstoneChange::Set(Known::token(10, 5))
                    && o.registration == RegistrationChange::Keep
            },
        ),
        (
            "the same without etcd",
            Mode::BUS,
            Facts {
                registration: None,
                ..f
            },
            Input::ConnectionClosed,
            &|o| effect(o) == Effect::Remove(RemovalCause::Disconnected),
        ),
        (
            "nothing listed: nothing to do",
            REGISTRY,
            gone,
            Input::ConnectionClosed,
            &|o| o == Outcome::NOTHING,
        ),
        (
            "a token it sent before dying arrives late: dropped",
            REGISTRY,
            gone,
            tok(10, 5),
            &|o| dropped(o) == Some(DropReason::Duplicate),
        ),
        (
            "a false alarm: its next token (newer seq, same epoch) lists it again",
            REGISTRY,
            gone,
            tok(10, 6),
            &|o| effect(o) == Effect::Add { confirmed: true },
        ),
    ]);
}

#[test]
fn a_cluster_change_forgets_epochs_and_keeps_live_entries() {
    let f = Facts {
        live: live(32, 100),
        registration: reg(32, 7),
        tombstone: None,
        ..Facts::default()
    };
    let retired = Facts {
        live: live(0, 100),
        retired: Some(32),
        ..Facts::default()
    };
    table(&[
        (
            "the live entry is kept under epoch 0",
            REGISTRY,
            f,
            Input::ClusterChange,
            &|o| {
                effect(o) == Effect::Retire
                    && o.retired == RetiredChange::Set(32)
                    && o.registration == RegistrationChange::Clear
                    && o.tombstone == TombstoneChange::Clear
            },
        ),
        (
            "a late old-cluster token only refreshes",
            REGISTRY,
            retired,
            tok(32, 101),
            &|o| effect(o) == Effect::Refresh,
        ),
        (
            "a late old-cluster token cannot change the identity",
            REGISTRY,
            retired,
            other_identity(32, 101),
            &|o| dropped(o) == Some(DropReason::IdentityMismatch),
        ),
        (
            "the new cluster's registration replaces it",
            REGISTRY,
            retired,
            Input::Put {
                revision: 2,
                lease: 9,
            },
            &|o| effect(o) == Effect::Replace && o.retired == RetiredChange::Clear,
        ),
    ]);
    let after_put = Facts {
        live: live(2, 100),
        registration: reg(2, 9),
        retired: None,
        ..Facts::default()
    };
    table(&[(
        "an old-cluster token after the new registration is held, not applied",
        REGISTRY,
        after_put,
        tok(32, 102),
        &|o| o.held == HeldChange::Hold { superseded: false } && effect(o) == Effect::None,
    )]);
}

#[test]
fn loss_is_counted_from_gaps_within_a_run() {
    assert_eq!(lost_between(10, 11), 0);
    assert_eq!(lost_between(10, 14), 3);
    assert_eq!(lost_between(10, 10 + NEW_RUN_JUMP + 1), NEW_RUN_JUMP);
    assert_eq!(
        lost_between(10, 10 + NEW_RUN_JUMP + 2),
        0,
        "a new run is not loss"
    );
    assert_eq!(lost_between(10, 9), 0);
}

/// A confirmed entry of epoch 7 at seq 1000, last heard `quiet_ms` ago, TTL 3 s.
fn heard(quiet_ms: u64) -> Facts {
    Facts {
        live: Some(Live {
            epoch: 7,
            seq: 1_000,
            confirmed: true,
            quiet_ms,
            ttl_ms: 3_000,
            goodbye_ms: None,
        }),
        ..Facts::default()
    }
}

#[test]
fn seq_advances_only_as_far_as_its_sender_could_have_sent() {
    use herald_shared::pace::max_seq_advance;
    let bound = max_seq_advance(1_000);
    table(&[
        (
            "the next seq continues the run",
            Mode::BUS,
            heard(1_000),
            tok(7, 1_001),
            &|o| effect(o) == Effect::Refresh && !o.rebased,
        ),
        (
            "a gap within the pace continues the run (the gap is loss)",
            Mode::BUS,
            heard(1_000),
            tok(7, 1_000 + bound),
            &|o| effect(o) == Effect::Refresh && !o.rebased,
        ),
        (
            "one past the pace is a jump, dropped",
            Mode::BUS,
            heard(1_000),
            tok(7, 1_001 + bound),
            &|o| dropped(o) == Some(DropReason::SeqJump) && effect(o) == Effect::None,
        ),
        (
            "seq + 5000 a second after the last token is a jump",
            Mode::BUS,
            heard(1_000),
            tok(7, 6_000),
            &|o| dropped(o) == Some(DropReason::SeqJump),
        ),
        (
            "the largest seq is a jump",
            Mode::BUS,
            heard(1_000),
            tok(7, u64::MAX),
            &|o| dropped(o) == Some(DropReason::SeqJump),
        ),
        (
            "in registry mode too",
            REGISTRY,
            Facts {
                registration: reg(7, 1),
                ..heard(1_000)
            },
            tok(7, u64::MAX),
            &|o| dropped(o) == Some(DropReason::SeqJump),
        ),
        (
            "a forged goodbye far ahead is a jump: nothing is removed",
            Mode::BUS,
            heard(1_000),
            bye(7, u64::MAX),
            &|o| dropped(o) == Some(DropReason::SeqJump) && effect(o) == Effect::None,
        ),
        (
            "a registered entry not yet heard takes its first token whatever its seq",
            REGISTRY,
            Facts {
                live: Some(Live {
                    confirmed: false,
                    seq: 0,
                    ..heard(1_000).live.unwrap()
                }),
                registration: reg(7, 1),
                ..Facts::default()
            },
            tok(7, 1_765_000_000_000_000),
            &|o| effect(o) == Effect::Refresh && !o.rebased,
        ),
        (
            "a jump of a new epoch is no jump: epochs order first",
            Mode::BUS,
            heard(0),
            tok(8, u64::MAX),
            &|o| effect(o) == Effect::Replace,
        ),
    ]);
}

#[test]
fn a_quiet_entry_is_rebased_by_the_next_token_whatever_its_seq() {
    table(&[
        (
            "behind the run, before half the TTL: a duplicate",
            Mode::BUS,
            heard(1_499),
            tok(7, 900),
            &|o| dropped(o) == Some(DropReason::Duplicate),
        ),
        (
            "behind the run after half the TTL: the run is re-based on it",
            Mode::BUS,
            heard(1_500),
            tok(7, 900),
            &|o| effect(o) == Effect::Refresh && o.rebased && o.accepted(),
        ),
        (
            "far ahead before half the TTL: a jump",
            Mode::BUS,
            heard(1_499),
            tok(7, 50_000),
            &|o| dropped(o) == Some(DropReason::SeqJump),
        ),
        (
            "far ahead after half the TTL (a restart without etcd): re-based",
            Mode::BUS,
            heard(1_500),
            other_identity(7, 1_765_000_000_000_000),
            &|o| effect(o) == Effect::Replace && o.rebased,
        ),
        (
            "a re-basing goodbye still removes (bus mode)",
            Mode::BUS,
            heard(2_000),
            bye(7, 900),
            &|o| effect(o) == Effect::Remove(RemovalCause::Goodbye) && o.rebased,
        ),
    ]);
}

#[test]
fn a_registered_goodbye_is_believed_as_far_as_its_deletion_goes() {
    let registered = |quiet_ms: u64, goodbye: bool| Facts {
        live: Some(Live {
            goodbye_ms: goodbye.then_some(quiet_ms),
            ..heard(quiet_ms).live.unwrap()
        }),
        registration: reg(7, 1),
        ..Facts::default()
    };
    table(&[
        (
            "a goodbye marks the entry leaving, it stays listed",
            REGISTRY,
            registered(1_000, false),
            bye(7, 1_001),
            &|o| effect(o) == Effect::Leave && !o.refuted_goodbye,
        ),
        (
            "without a registration (allowed epoch 0) a goodbye removes at once",
            REGISTRY_OPEN,
            Facts {
                live: Some(Live {
                    epoch: 0,
                    ..heard(1_000).live.unwrap()
                }),
                ..Facts::default()
            },
            bye(0, 1_001),
            &|o| effect(o) == Effect::Remove(RemovalCause::Goodbye),
        ),
        (
            "the deletion that follows removes it as a goodbye",
            REGISTRY,
            registered(3, true),
            Input::Delete { revision: 9 },
            &|o| {
                effect(o) == Effect::Remove(RemovalCause::Goodbye)
                    && o.registration == RegistrationChange::Clear
                    && o.tombstone == TombstoneChange::Set(Known::fence(9))
            },
        ),
        (
            "a deletion without a goodbye is a deregistration",
            REGISTRY,
            registered(3, false),
            Input::Delete { revision: 9 },
            &|o| effect(o) == Effect::Remove(RemovalCause::Deregistered),
        ),
        (
            "its connection closing after a goodbye is the graceful stop's",
            REGISTRY,
            registered(3, true),
            Input::ConnectionClosed,
            &|o| effect(o) == Effect::Remove(RemovalCause::Goodbye),
        ),
        (
            "a token sent before the goodbye, arriving after it, is a duplicate",
            REGISTRY,
            registered(GOODBYE_PROOF_MS - 1, true),
            tok(7, 999),
            &|o| dropped(o) == Some(DropReason::Duplicate),
        ),
        (
            "a later token of the run refutes the goodbye at once",
            REGISTRY,
            registered(10, true),
            tok(7, 1_001),
            &|o| effect(o) == Effect::Refresh && o.refuted_goodbye && !o.rebased,
        ),
        (
            "once the deletion is overdue, the run's own older tokens refute it",
            REGISTRY,
            registered(GOODBYE_PROOF_MS, true),
            tok(7, 990),
            &|o| effect(o) == Effect::Refresh && o.refuted_goodbye && o.rebased,
        ),
        (
            "a heartbeat refutes it too (the same input)",
            REGISTRY,
            registered(GOODBYE_PROOF_MS + 200, true),
            tok(7, 995),
            &|o| o.accepted() && o.refuted_goodbye,
        ),
        (
            "a second goodbye refutes nothing",
            REGISTRY,
            registered(10, true),
            bye(7, 1_002),
            &|o| effect(o) == Effect::Leave && !o.refuted_goodbye,
        ),
        (
            "a TTL of silence after a goodbye (etcd out of reach) agrees with it",
            REGISTRY,
            registered(3_000, true),
            Input::Deadline { preserving: false },
            &|o| effect(o) == Effect::Remove(RemovalCause::Goodbye),
        ),
    ]);
}

#[test]
fn a_token_may_carry_the_largest_seq_without_reading_as_a_fence() {
    let removed_at_max = Facts {
        tombstone: known(7, u64::MAX),
        ..Facts::default()
    };
    table(&[
        (
            "a newer epoch is no older than a removed entry's last token",
            Mode::BUS,
            removed_at_max,
            tok(8, 1),
            &|o| effect(o) == Effect::Add { confirmed: true },
        ),
        (
            "the same epoch is a duplicate of it, not stale",
            Mode::BUS,
            removed_at_max,
            tok(7, 5),
            &|o| dropped(o) == Some(DropReason::Duplicate),
        ),
    ]);
}

#[test]
fn heartbeats() {
    let beat = |epoch, seq| Input::Heartbeat { epoch, seq };
    let listed = Facts {
        live: live(7, 5),
        registration: reg(7, 1),
        ..Facts::default()
    };
    let unheard = Facts {
        connection_unknown: true,
        ..listed
    };
    /// (mode, facts, input) -> (effect, dropped, probe), and the case.
    type Row<'a> = (
        Mode,
        &'a Facts,
        Input,
        Effect,
        Option<DropReason>,
        bool,
        &'a str,
    );
    let rows: [Row<'_>; 8] = [
        (
            REGISTRY,
            &listed,
            beat(7, 6),
            Effect::Refresh,
            None,
            false,
            "the listed epoch: a refresh",
        ),
        (
            Mode::BUS,
            &listed,
            beat(7, 6),
            Effect::Refresh,
            None,
            false,
            "the same without etcd",
        ),
        (
            REGISTRY,
            &listed,
            beat(7, 5),
            Effect::None,
            Some(DropReason::Duplicate),
            false,
            "an old seq: dropped, no probe",
        ),
        (
            REGISTRY,
            &listed,
            beat(8, 1),
            Effect::None,
            None,
            true,
            "another epoch: nothing to build from, probed",
        ),
        (
            REGISTRY,
            &Facts::default(),
            beat(7, 1),
            Effect::None,
            None,
            true,
            "nothing listed: probed",
        ),
        (
            REGISTRY,
            &unheard,
            beat(7, 6),
            Effect::Refresh,
            None,
            true,
            "connection unknown: refreshed and probed",
        ),
        (
            REGISTRY,
            &listed,
            beat(7, 6 + 100_000),
            Effect::None,
            Some(DropReason::SeqJump),
            false,
            "a seq far ahead: dropped as a jump",
        ),
        (
            REGISTRY,
            &unheard,
            beat(7, 4),
            Effect::None,
            Some(DropReason::Duplicate),
            false,
            "a drop asks for no probe",
        ),
    ];
    for (mode, facts, input, want_effect, want_drop, want_probe, case) in rows {
        let o = merge(mode, facts, input);
        assert_eq!(
            (o.effect, o.dropped, o.probe),
            (want_effect, want_drop, want_probe),
            "{case}"
        );
    }
}

#[test]
fn advisory_reasons() {
    for (reason, crash) in [
        ("Client Closed", true),
        ("Read Error", true),
        ("Write Error", true),
        ("Server Shutdown", false),
        ("Stale Connection", false),
        ("Slow Consumer", false),
        ("client closed", false),
        ("", false),
    ] {
        assert_eq!(closed_by_host(reason), crash, "{reason:?}");
    }
}

#[test]
fn tombstone_lifetimes() {
    assert_eq!(
        tombstone_lifetime(Known::token(3, 9), 1_500),
        std::time::Duration::from_millis(1_500),
        "a removal's tombstone holds one TTL"
    );
    assert_eq!(
        tombstone_lifetime(Known::fence(10), 1_500),
        DEREGISTERED_TOMBSTONE,
        "a deletion's fence holds far longer"
    );
}

#[test]
fn liveness_between_sweeps() {
    assert!(live_at(1_001, 1_000, false), "before its deadline");
    assert!(!live_at(1_000, 1_000, false), "at its deadline it is gone");
    assert!(
        live_at(500, 1_000, true),
        "preserved while our own link is down"
    );
}

#[test]
fn deadlines_after_our_own_reconnect() {
    assert_eq!(
        deadline_after_reconnect(1_200, 1_000, 3_000),
        4_000,
        "one fresh TTL from now"
    );
    assert_eq!(
        deadline_after_reconnect(9_000, 1_000, 3_000),
        9_000,
        "a later deadline stays"
    );
}

#[test]
fn keys_a_full_listing_leaves_out() {
    let unlisted = Input::Unlisted { revision: 50 };
    let registered = Facts {
        live: live(7, 5),
        registration: reg(7, 1),
        ..Facts::default()
    };
    assert_eq!(
        merge(REGISTRY, &registered, unlisted).effect,
        merge(REGISTRY, &registered, Input::Delete { revision: 50 }).effect,
        "a registered key that vanished is deregistered as of the listing"
    );
    let unregistered = Facts {
        live: live(0, 5),
        ..Facts::default()
    };
    assert_eq!(
        merge(REGISTRY_OPEN, &unregistered, unlisted),
        Outcome::NOTHING,
        "an unregistered instance was never listed: nothing vanished"
    );
    let registered_epoch_only = Facts {
        live: live(9, 5),
        ..Facts::default()
    };
    assert!(
        matches!(
            merge(REGISTRY, &registered_epoch_only, unlisted).effect,
            Effect::Remove(RemovalCause::Deregistered)
        ),
        "an entry of a registered epoch whose registration the store lost goes too"
    );
}

fn token_matching(epoch: u64, registration: bool, live: bool) -> Input {
    Input::Token(TokenFacts {
        matches_registration: registration,
        matches_live: live,
        ..TokenFacts::same(epoch, 11, false)
    })
}

#[test]
fn a_token_keeps_the_identity_of_its_registration_else_of_its_entry() {
    let registered = Facts {
        live: live(7, 10),
        registration: reg(7, 1),
        ..Facts::default()
    };
    let bus = Facts {
        live: live(7, 10),
        ..Facts::default()
    };
    table(&[
        (
            "the registration's identity decides, even when the entry's matches",
            REGISTRY,
            registered,
            token_matching(7, false, true),
            &|o| dropped(o) == Some(DropReason::IdentityMismatch),
        ),
        (
            "matching the registration refreshes, whatever the entry's fingerprint",
            REGISTRY,
            registered,
            token_matching(7, true, false),
            &|o| effect(o) == Effect::Refresh,
        ),
        (
            "a registration of another epoch leaves the identity to the epoch rules",
            REGISTRY,
            Facts {
                registration: reg(9, 1),
                ..registered
            },
            token_matching(7, false, false),
            &|o| dropped(o) == Some(DropReason::StaleEpoch),
        ),
        (
            "without etcd the entry's fingerprint decides: another one replaces",
            Mode::BUS,
            bus,
            token_matching(7, true, false),
            &|o| effect(o) == Effect::Replace,
        ),
        (
            "without etcd a matching fingerprint refreshes",
            Mode::BUS,
            bus,
            token_matching(7, false, true),
            &|o| effect(o) == Effect::Refresh,
        ),
    ]);
}

#[test]
fn our_own_link_preserves_the_view_while_down_and_refreshes_it_once_back() {
    let link = |connected, preserving, reconnected| Link {
        connected,
        preserving,
        reconnected,
    };
    for (what, now, action) in [
        (
            "down: preserve",
            link(false, false, false),
            LinkAction::Preserve,
        ),
        (
            "still down: preserve",
            link(false, true, true),
            LinkAction::Preserve,
        ),
        (
            "back after being seen down",
            link(true, true, false),
            LinkAction::Resume,
        ),
        (
            "down and back between two looks",
            link(true, false, true),
            LinkAction::Resume,
        ),
        ("up all along", link(true, false, false), LinkAction::None),
    ] {
        assert_eq!(own_link(now), action, "{what}");
    }
}
