//! How fast a token's `seq` may advance: the bound an announcer keeps and a subscriber holds
//! it to.
//!
//! An announcer sends at most one token per [`TOKEN_GAP`] on average, with bursts of up to
//! [`SEND_BURST`] tokens (its periodic tokens, early load tokens and probe answers together
//! stay well under that; only a burst of state or metadata changes can reach it, and is
//! paced). So between two tokens of one run received `elapsed` apart, `seq` cannot have
//! advanced by more than [`max_seq_advance`]: the pace over that time, plus a slack for the
//! burst and for tokens whose delivery was delayed unevenly. A subscriber drops a token that
//! claims more (`seq_jump`): one forged message with a high `seq` cannot make the real tokens
//! look old.
//!
//! ```
//! use herald_shared::pace::max_seq_advance;
//!
//! // Two tokens received one second apart may be at most this far apart in `seq`.
//! assert_eq!(max_seq_advance(1_000), 264);
//! ```

use std::time::Duration;

/// The average spacing an announcer keeps between its tokens, at the most.
pub const TOKEN_GAP: Duration = Duration::from_millis(5);

/// Tokens an announcer may send at once above [`TOKEN_GAP`]'s pace.
pub const SEND_BURST: u32 = 32;

/// How far beyond the pace a subscriber accepts: the sender's burst, and as much again for
/// tokens that reach it delayed unevenly.
pub const ACCEPT_SLACK: u64 = 2 * SEND_BURST as u64;

/// The largest `seq` advance a subscriber accepts between two tokens of one run received
/// `elapsed_ms` milliseconds apart.
pub fn max_seq_advance(elapsed_ms: u64) -> u64 {
    (elapsed_ms / TOKEN_GAP.as_millis() as u64).saturating_add(ACCEPT_SLACK)
}

/// A `seq` this far from another of the same epoch belongs to another run of the instance (a
/// restart without etcd, or a second process under the same id), not to lost tokens.
pub const NEW_RUN_JUMP: u64 = 10_000;
