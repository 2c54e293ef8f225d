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

use crate::token::{Heartbeat, Token, TokenRef};
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

/// What arrived on an announce subject: a full token or a heartbeat.
// A value on the stack of the ingest path, never stored: boxing the token would allocate
// for each one.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Received<'a> {
    /// A full token.
    Token(TokenRef<'a>),
    /// A compact token ([`Heartbeat`]).
    Heartbeat(Heartbeat<'a>),
}

/// Encodes the heartbeat of `token`: its `instance`, `epoch`, `seq` and `load` only.
///
/// # Errors
///
/// [`EncodeError::Invalid`] when the instance id or the load breaks its bound.
///
/// # Examples
///
/// ```
/// use herald_shared::{Received, Token, codec};
///
/// let token = Token::new("billing", "billing-1", "10.0.0.7:8080");
/// let beat = codec::encode_heartbeat(&token).unwrap();
/// assert!(beat.len() < codec::encode(&token).unwrap().len() / 2);
/// let Ok(Received::Heartbeat(h)) = codec::receive(&beat, "billing") else { panic!() };
/// assert_eq!((h.instance, h.seq), ("billing-1", token.seq));
/// ```
pub fn encode_heartbeat(token: &Token) -> Result<Vec<u8>, EncodeError> {
    validate::instance_id(&token.instance)?;
    validate::load(token.load)?;
    let mut out = Vec::with_capacity(48 + token.instance.len());
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_map_len(&mut out, 4);
    let _ = rmp::encode::write_str(&mut out, "instance");
    let _ = rmp::encode::write_str(&mut out, &token.instance);
    let _ = rmp::encode::write_str(&mut out, "epoch");
    let _ = rmp::encode::write_uint(&mut out, token.epoch);
    let _ = rmp::encode::write_str(&mut out, "seq");
    let _ = rmp::encode::write_uint(&mut out, token.seq);
    let _ = rmp::encode::write_str(&mut out, "load");
    let _ = rmp::encode::write_f32(&mut out, token.load);
    Ok(out)
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

/// Decodes a full token or a heartbeat without validating bounds; strings borrow from
/// `bytes`.
///
/// # Errors
///
/// [`DecodeError`] when `bytes` is not exactly one token map.
pub fn decode_received(bytes: &[u8]) -> Result<Received<'_>, DecodeError> {
    read::message(bytes)
}

/// The admission check of a full token received on the announce subject of
/// `subject_service`: size, decoding, every bound, and subject agreement. A heartbeat is
/// refused as malformed, as a reader older than heartbeats refuses it; [`receive`] takes both.
///
/// # Errors
///
/// The [`Reject`] reason; the caller counts it and drops the payload.
#[inline]
pub fn accept<'a>(bytes: &'a [u8], subject_service: &str) -> Result<TokenRef<'a>, Reject> {
    match receive(bytes, subject_service)? {
        Received::Token(t) => Ok(t),
        Received::Heartbeat(_) => Err(Reject::Malformed),
    }
}

/// The subscriber's admission check for a payload received on the announce subject of
/// `subject_service`: size, decoding, every bound, and, for a full token, subject
/// agreement (a heartbeat's service is the subject's).
///
/// # Errors
///
/// The [`Reject`] reason; the caller counts it and drops the payload.
#[inline]
pub fn receive<'a>(bytes: &'a [u8], subject_service: &str) -> Result<Received<'a>, Reject> {
    if bytes.len() > MAX_TOKEN_BYTES {
        return Err(Reject::Oversized);
    }
    match read::message(bytes).map_err(|_| Reject::Malformed)? {
        Received::Token(token) => {
            validate::token(&token)?;
            if token.service != subject_service {
                return Err(Reject::SubjectMismatch);
            }
            Ok(Received::Token(token))
        }
        Received::Heartbeat(h) => {
            validate::instance_id(h.instance)?;
            validate::load(h.load)?;
            Ok(Received::Heartbeat(h))
        }
    }
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
    fn a_heartbeat_is_received_with_its_bounds_checked_and_refused_as_a_token() {
        let mut t = Token::new("svc", "i-1", "h:1");
        t.epoch = 70_000;
        t.seq = 1_764_000_000_000_042;
        t.load = 0.5;
        let beat = encode_heartbeat(&t).unwrap();
        let Ok(Received::Heartbeat(h)) = receive(&beat, "any") else {
            panic!("not a heartbeat");
        };
        assert_eq!(
            (h.instance, h.epoch, h.seq, h.load),
            ("i-1", 70_000, t.seq, 0.5)
        );
        assert_eq!(accept(&beat, "svc"), Err(Reject::Malformed));
        assert!(decode(&beat).is_err());
        let mut bad = beat.clone();
        let at = bad.windows(3).position(|w| w == b"i-1").unwrap();
        bad[at + 1] = b' ';
        assert_eq!(receive(&bad, "svc"), Err(Reject::Invalid(Field::Instance)));
    }

    #[test]
    fn encode_refuses_invalid_tokens() {
        let mut t = Token::new("svc", "i", "h:1");
        t.load = f32::NAN;
        assert!(matches!(encode(&t), Err(EncodeError::Invalid(e)) if e.field == Field::Load));
    }
}
