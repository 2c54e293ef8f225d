//! Faults a test can inject into the announcer's etcd calls (feature `faults` only, absent
//! from production builds).
//!
//! The faults are process-wide: a test that injects one runs in a process of its own
//! (cargo-nextest runs each test so).

use std::sync::atomic::{AtomicU32, Ordering};

static LOST_CLAIM_ANSWERS: AtomicU32 = AtomicU32::new(0);

/// The next `n` registration transactions are carried out by etcd, but their answers are
/// lost: the call fails as if etcd had not answered. `u32::MAX` loses every answer.
///
/// # Examples
///
/// ```
/// herald_announcer::faults::lose_claim_answers(1);
/// ```
pub fn lose_claim_answers(n: u32) {
    LOST_CLAIM_ANSWERS.store(n, Ordering::SeqCst);
}

/// Whether the answer of the registration transaction that just ran is to be lost.
pub(crate) fn claim_answer_lost() -> bool {
    LOST_CLAIM_ANSWERS
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            0 => None,
            u32::MAX => Some(u32::MAX),
            n => Some(n - 1),
        })
        .is_ok()
}
