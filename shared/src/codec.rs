//! The MessagePack wire format of tokens (rmp-serde's named-map form).
//!
//! A token is a map keyed by field names, so any MessagePack library reads it, and unknown
//! keys are skipped so that newer senders stay readable. [`encode`] writes it with
//! rmp-serde; [`decode`] reads it in one pass with `rmp`'s markers (`read.rs`), borrowing
//! strings from the payload; [`accept`] is the subscriber's whole admission check: size,
//! decode, bounds, and agreement with the subject the token arrived on.

use std::fmt;

mod read;

pub use read::DecodeError;

use crate::token::{Token, TokenRef};
use crate::validate::{self, Field, Invalid, MAX_TOKEN_BYTES};

/// Why a received payload was not accepted as a token. Each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Larger than [`MAX_TOKEN_BYTES`].
    Oversized,
    /// Not a MessagePack token map: garbage, truncated, or a field of the wrong type.
    Malformed,
    /// The token's `service` is not the one its subject names (spoofed or misrouted).
    SubjectMismatch,
    /// A field broke its bound.
    Invalid(Field),
}

impl Reject {
    /// Number of distinct reasons (for counter arrays).
    pub const COUNT: usize = 3 + Field::ALL.len();

    /// A dense index in `0..Reject::COUNT`.
    pub fn index(self) -> usize {
        match self {
            Reject::Oversized => 0,
            Reject::Malformed => 1,
            Reject::SubjectMismatch => 2,
            Reject::Invalid(f) => 3 + Field::ALL.iter().position(|x| *x == f).unwrap_or(0),
        }
    }

    /// Every reason, ordered by [`Reject::index`].
    pub fn all() -> impl Iterator<Item = Reject> {
        [
            Reject::Oversized,
            Reject::Malformed,
            Reject::SubjectMismatch,
        ]
        .into_iter()
        .chain(Field::ALL.into_iter().map(Reject::Invalid))
    }

    /// A short label, e.g. `oversized` or `invalid_load`.
    pub fn label(self) -> &'static str {
        match self {
            Reject::Oversized => "oversized",
            Reject::Malformed => "malformed",
            Reject::SubjectMismatch => "subject_mismatch",
            Reject::Invalid(Field::Version) => "invalid_version",
            Reject::Invalid(Field::Service) => "invalid_service",
            Reject::Invalid(Field::Instance) => "invalid_instance",
            Reject::Invalid(Field::Addr) => "invalid_addr",
            Reject::Invalid(Field::Load) => "invalid_load",
            Reject::Invalid(Field::Zone) => "invalid_zone",
            Reject::Invalid(Field::Meta) => "invalid_meta",
            Reject::Invalid(Field::Ttl) => "invalid_ttl",
            Reject::Invalid(Field::Conn) => "invalid_conn",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl From<Invalid> for Reject {
    fn from(e: Invalid) -> Self {
        Reject::Invalid(e.field)
    }
}

/// Why a token could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A field broke its bound; nothing was encoded.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The encoded token is larger than [`MAX_TOKEN_BYTES`].
    #[error("encoded token is {0} bytes, more than the 4096 allowed")]
    Oversized(usize),
    /// The serializer failed.
    #[error("cannot encode token: {0}")]
    Serialize(#[from] rmp_serde::encode::Error),
}

/// Validates and encodes a token.
///
/// # Errors
///
/// [`EncodeError::Invalid`] when a field breaks its bound, [`EncodeError::Oversized`] when the
/// result would exceed 4 KiB.
pub fn encode(token: &Token) -> Result<Vec<u8>, EncodeError> {
    validate::token(&token.as_ref())?;
    let bytes = rmp_serde::to_vec_named(token)?;
    if bytes.len() > MAX_TOKEN_BYTES {
        return Err(EncodeError::Oversized(bytes.len()));
    }
    Ok(bytes)
}

/// Decodes a token without validating its bounds; strings borrow from `bytes`.
///
/// # Errors
///
/// [`DecodeError`] when `bytes` is not exactly one token map.
///
/// # Examples
///
/// ```
/// use herald_shared::{Token, codec};
///
/// let bytes = codec::encode(&Token::new("billing", "b-1", "10.0.0.7:80")).unwrap();
/// assert_eq!(codec::decode(&bytes).unwrap().instance, "b-1");
/// assert!(codec::decode(&bytes[..10]).is_err());
/// ```
pub fn decode(bytes: &[u8]) -> Result<TokenRef<'_>, DecodeError> {
    read::token(bytes)
}

/// The subscriber's admission check for a payload received on the announce subject of
/// `subject_service`: size, decoding, every bound, and subject agreement.
///
/// # Errors
///
/// The [`Reject`] reason; the caller counts it and drops the payload.
pub fn accept<'a>(bytes: &'a [u8], subject_service: &str) -> Result<TokenRef<'a>, Reject> {
    if bytes.len() > MAX_TOKEN_BYTES {
        return Err(Reject::Oversized);
    }
    let token = decode(bytes).map_err(|_| Reject::Malformed)?;
    validate::token(&token)?;
    if token.service != subject_service {
        return Err(Reject::SubjectMismatch);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_indexes_are_dense_and_distinct() {
        let idx: Vec<usize> = Reject::all().map(Reject::index).collect();
        assert_eq!(idx, (0..Reject::COUNT).collect::<Vec<_>>());
    }

    #[test]
    fn accept_checks_size_then_shape_then_bounds_then_subject() {
        let t = Token::new("svc", "i", "h:1");
        let bytes = encode(&t).unwrap();
        assert!(accept(&bytes, "svc").is_ok());
        assert_eq!(accept(&bytes, "other"), Err(Reject::SubjectMismatch));
        assert_eq!(accept(&[0xc1, 0x00], "svc"), Err(Reject::Malformed));
        assert_eq!(
            accept(&bytes[..bytes.len() - 3], "svc"),
            Err(Reject::Malformed)
        );
        assert_eq!(accept(&vec![0u8; 4097], "svc"), Err(Reject::Oversized));
    }

    #[test]
    fn encode_refuses_invalid_tokens() {
        let mut t = Token::new("svc", "i", "h:1");
        t.load = f32::NAN;
        assert!(matches!(encode(&t), Err(EncodeError::Invalid(e)) if e.field == Field::Load));
    }
}
