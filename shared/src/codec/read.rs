//! Reading a token map in one pass over the payload, strings borrowed from it.
//!
//! The reader takes what any MessagePack writer produces for the token's map: keys as `str`
//! (or `bin`), integers in any width and sign marker that fit the field, `load` as `f32`,
//! `f64` or an integer, strings as `str` or `bin` holding UTF-8, `nil` for an absent `zone`
//! or `conn`; a key it does not know is skipped whatever its value holds. It refuses what
//! the serde reader before it let through by accident: the positional array form, integer
//! keys and variant indexes, and bytes after the map.

use rmp::Marker;

use super::Received;
use crate::token::{DEFAULT_WEIGHT, Heartbeat, MetaRef, State, TOKEN_VERSION, TokenRef};

/// Why a payload is not a token map: what was wrong, and at which byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a token: {what} at byte {at}")]
pub struct DecodeError {
    what: &'static str,
    at: usize,
}

impl DecodeError {
    /// What was wrong, e.g. `missing field` or `value out of range`.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The offset of the byte where reading stopped.
    pub fn offset(&self) -> usize {
        self.at
    }
}

/// The token's fields, a bit each, to refuse a key given twice and to find a missing one.
mod bit {
    pub(super) const V: u16 = 1;
    pub(super) const SERVICE: u16 = 1 << 1;
    pub(super) const INSTANCE: u16 = 1 << 2;
    pub(super) const ADDR: u16 = 1 << 3;
    pub(super) const LOAD: u16 = 1 << 4;
    pub(super) const WEIGHT: u16 = 1 << 5;
    pub(super) const ZONE: u16 = 1 << 6;
    pub(super) const STATE: u16 = 1 << 7;
    pub(super) const META: u16 = 1 << 8;
    pub(super) const EPOCH: u16 = 1 << 9;
    pub(super) const SEQ: u16 = 1 << 10;
    pub(super) const TTL: u16 = 1 << 11;
    pub(super) const SENT_AT: u16 = 1 << 12;
    pub(super) const CONN: u16 = 1 << 13;
    /// The fields without a default.
    pub(super) const REQUIRED: u16 = SERVICE | INSTANCE | ADDR | LOAD | SEQ | TTL;
    /// What a heartbeat must hold.
    pub(super) const HEARTBEAT: u16 = INSTANCE | LOAD | SEQ;
    /// What a heartbeat may hold besides.
    pub(super) const HEARTBEAT_OPTIONAL: u16 = V | EPOCH | SENT_AT;
}

/// Reads one full token map that fills `bytes` exactly (a heartbeat is refused).
pub(super) fn token(bytes: &[u8]) -> Result<TokenRef<'_>, DecodeError> {
    match message(bytes)? {
        Received::Token(t) => Ok(t),
        Received::Heartbeat(_) => Err(DecodeError {
            what: "a heartbeat, not a full token",
            at: 0,
        }),
    }
}

/// Reads one token map that fills `bytes` exactly: a full token, or a heartbeat (the map
/// without `service`, holding only what [`Heartbeat`] does).
// Inline, so that the token is read into its caller's frame rather than copied out.
#[inline]
pub(super) fn message(bytes: &[u8]) -> Result<Received<'_>, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let fields = r.map_len()?;
    let mut t = TokenRef {
        v: TOKEN_VERSION,
        service: "",
        instance: "",
        addr: "",
        load: 0.0,
        weight: DEFAULT_WEIGHT,
        zone: None,
        state: State::Up,
        meta: MetaRef::default(),
        epoch: 0,
        seq: 0,
        ttl_ms: 0,
        sent_at_ms: 0,
        conn: None,
    };
    let mut seen = 0u16;
    for _ in 0..fields {
        let key_at = r.at;
        // Keys are matched as bytes: a known key is ASCII, so only an unknown one needs
        // the UTF-8 check that every string gets.
        let field = match r.string_bytes()? {
            b"v" => {
                t.v = r.uint()?;
                bit::V
            }
            b"service" => {
                t.service = r.str()?;
                bit::SERVICE
            }
            b"instance" => {
                t.instance = r.str()?;
                bit::INSTANCE
            }
            b"addr" => {
                t.addr = r.str()?;
                bit::ADDR
            }
            b"load" => {
                t.load = r.float()?;
                bit::LOAD
            }
            b"weight" => {
                t.weight = r.uint()?;
                bit::WEIGHT
            }
            b"zone" => {
                t.zone = r.optional_str()?;
                bit::ZONE
            }
            b"state" => {
                t.state = r.state()?;
                bit::STATE
            }
            b"meta" => {
                t.meta = r.meta()?;
                bit::META
            }
            b"epoch" => {
                t.epoch = r.uint()?;
                bit::EPOCH
            }
            b"seq" => {
                t.seq = r.uint()?;
                bit::SEQ
            }
            b"ttl_ms" => {
                t.ttl_ms = r.uint()?;
                bit::TTL
            }
            b"sent_at_ms" => {
                t.sent_at_ms = r.uint()?;
                bit::SENT_AT
            }
            b"conn" => {
                t.conn = r.optional_str()?;
                bit::CONN
            }
            unknown => {
                if std::str::from_utf8(unknown).is_err() {
                    return Err(DecodeError {
                        what: "string is not UTF-8",
                        at: key_at,
                    });
                }
                r.skip()?;
                continue;
            }
        };
        if seen & field != 0 {
            return Err(DecodeError {
                what: "field given twice",
                at: key_at,
            });
        }
        seen |= field;
    }
    if r.at != bytes.len() {
        return r.fail("bytes after the token map");
    }
    if seen & bit::REQUIRED == bit::REQUIRED {
        return Ok(Received::Token(t));
    }
    let heartbeat = seen & bit::HEARTBEAT == bit::HEARTBEAT
        && seen & !(bit::HEARTBEAT | bit::HEARTBEAT_OPTIONAL) == 0;
    if heartbeat {
        return Ok(Received::Heartbeat(Heartbeat {
            instance: t.instance,
            epoch: t.epoch,
            seq: t.seq,
            load: t.load,
        }));
    }
    r.fail("missing field")
}

/// A cursor over the payload.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn fail<T>(&self, what: &'static str) -> Result<T, DecodeError> {
        Err(DecodeError { what, at: self.at })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        match self.bytes.get(self.at..self.at.saturating_add(n)) {
            Some(s) => {
                self.at += n;
                Ok(s)
            }
            None => self.fail("payload ends inside a value"),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn marker(&mut self) -> Result<Marker, DecodeError> {
        Ok(Marker::from_u8(self.array::<1>()?[0]))
    }

    fn len8(&mut self) -> Result<usize, DecodeError> {
        Ok(usize::from(self.array::<1>()?[0]))
    }

    fn len16(&mut self) -> Result<usize, DecodeError> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn len32(&mut self) -> Result<usize, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?) as usize)
    }

    fn map_len(&mut self) -> Result<usize, DecodeError> {
        match self.marker()? {
            Marker::FixMap(n) => Ok(usize::from(n)),
            Marker::Map16 => self.len16(),
            Marker::Map32 => self.len32(),
            _ => self.fail("expected a map"),
        }
    }

    /// The length of a string that starts with `marker`, or `None` when it is not one.
    fn str_len(&mut self, marker: Marker) -> Result<Option<usize>, DecodeError> {
        Ok(Some(match marker {
            Marker::FixStr(n) => usize::from(n),
            Marker::Str8 | Marker::Bin8 => self.len8()?,
            Marker::Str16 | Marker::Bin16 => self.len16()?,
            Marker::Str32 | Marker::Bin32 => self.len32()?,
            _ => return Ok(None),
        }))
    }

    /// The bytes of a string (`str` or `bin`), not checked for UTF-8.
    #[inline]
    fn string_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        // Nearly every string of a token is a fixstr: its length is in the marker byte.
        if let Some(&b) = self.bytes.get(self.at)
            && b & 0xe0 == 0xa0
        {
            self.at += 1;
            return self.take(usize::from(b & 0x1f));
        }
        let marker = self.marker()?;
        match self.str_len(marker)? {
            Some(len) => self.take(len),
            None => self.fail("expected a string"),
        }
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.at;
        let raw = self.string_bytes()?;
        std::str::from_utf8(raw).map_err(|_| DecodeError {
            what: "string is not UTF-8",
            at,
        })
    }

    fn optional_str(&mut self) -> Result<Option<&'a str>, DecodeError> {
        if self.bytes.get(self.at) == Some(&0xc0) {
            self.at += 1;
            return Ok(None);
        }
        self.str().map(Some)
    }

    /// An integer of any encoding, widened so that every one fits.
    fn int(&mut self) -> Result<i128, DecodeError> {
        Ok(match self.marker()? {
            Marker::FixPos(n) => i128::from(n),
            Marker::FixNeg(n) => i128::from(n),
            Marker::U8 => i128::from(u8::from_be_bytes(self.array()?)),
            Marker::U16 => i128::from(u16::from_be_bytes(self.array()?)),
            Marker::U32 => i128::from(u32::from_be_bytes(self.array()?)),
            Marker::U64 => i128::from(u64::from_be_bytes(self.array()?)),
            Marker::I8 => i128::from(i8::from_be_bytes(self.array()?)),
            Marker::I16 => i128::from(i16::from_be_bytes(self.array()?)),
            Marker::I32 => i128::from(i32::from_be_bytes(self.array()?)),
            Marker::I64 => i128::from(i64::from_be_bytes(self.array()?)),
            _ => return self.fail("expected an integer"),
        })
    }

    fn uint<T: TryFrom<i128>>(&mut self) -> Result<T, DecodeError> {
        let at = self.at;
        T::try_from(self.int()?).map_err(|_| DecodeError {
            what: "integer out of range",
            at,
        })
    }

    /// A number of any encoding, as `f32` (a wider one rounds, as `as` does).
    fn float(&mut self) -> Result<f32, DecodeError> {
        let at = self.at;
        match self.marker()? {
            Marker::F32 => Ok(f32::from_be_bytes(self.array()?)),
            Marker::F64 => Ok(f64::from_be_bytes(self.array()?) as f32),
            _ => {
                self.at = at;
                self.int().map(|i| i as f32)
            }
        }
    }

    fn state(&mut self) -> Result<State, DecodeError> {
        let at = self.at;
        match self.string_bytes()? {
            b"up" => Ok(State::Up),
            b"draining" => Ok(State::Draining),
            b"leaving" => Ok(State::Leaving),
            _ => Err(DecodeError {
                what: "unknown state",
                at,
            }),
        }
    }

    fn meta(&mut self) -> Result<MetaRef<'a>, DecodeError> {
        let entries = self.map_len()?;
        let mut meta = MetaRef::default();
        for _ in 0..entries {
            let key = self.str()?;
            meta.push(key, self.str()?);
        }
        Ok(meta)
    }

    /// Steps over one value of any type, containers included, without recursion: `pending`
    /// counts the values still to step over, and each takes at least a byte.
    fn skip(&mut self) -> Result<(), DecodeError> {
        let mut pending: usize = 1;
        while pending > 0 {
            pending -= 1;
            let marker = self.marker()?;
            let (values, bytes) = match marker {
                Marker::FixPos(_)
                | Marker::FixNeg(_)
                | Marker::Null
                | Marker::True
                | Marker::False => (0, 0),
                Marker::U8 | Marker::I8 => (0, 1),
                Marker::U16 | Marker::I16 => (0, 2),
                Marker::U32 | Marker::I32 | Marker::F32 => (0, 4),
                Marker::U64 | Marker::I64 | Marker::F64 => (0, 8),
                Marker::FixStr(n) => (0, usize::from(n)),
                Marker::Str8 | Marker::Bin8 => (0, self.len8()?),
                Marker::Str16 | Marker::Bin16 => (0, self.len16()?),
                Marker::Str32 | Marker::Bin32 => (0, self.len32()?),
                // An extension's type byte, then its data.
                Marker::FixExt1 => (0, 2),
                Marker::FixExt2 => (0, 3),
                Marker::FixExt4 => (0, 5),
                Marker::FixExt8 => (0, 9),
                Marker::FixExt16 => (0, 17),
                Marker::Ext8 => (0, 1 + self.len8()?),
                Marker::Ext16 => (0, 1 + self.len16()?),
                Marker::Ext32 => (0, 1 + self.len32()?),
                Marker::FixArray(n) => (usize::from(n), 0),
                Marker::Array16 => (self.len16()?, 0),
                Marker::Array32 => (self.len32()?, 0),
                Marker::FixMap(n) => (2 * usize::from(n), 0),
                Marker::Map16 => (2 * self.len16()?, 0),
                Marker::Map32 => (2 * self.len32()?, 0),
                Marker::Reserved => return self.fail("reserved marker 0xc1"),
            };
            self.take(bytes)?;
            pending = pending.saturating_add(values);
            if pending > self.bytes.len() - self.at {
                return self.fail("payload ends inside a value");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = vec![0x80 | entries.len() as u8];
        for (k, v) in entries {
            out.push(0xa0 | k.len() as u8);
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    const REQUIRED: [(&str, &[u8]); 6] = [
        ("service", b"\xa1s"),
        ("instance", b"\xa1i"),
        ("addr", b"\xa3h:1"),
        ("load", b"\x00"),
        ("seq", b"\x01"),
        ("ttl_ms", b"\xcd\x01\xf4"),
    ];

    #[test]
    fn the_required_fields_alone_take_the_defaults() {
        let bytes = map(&REQUIRED);
        let t = token(&bytes).unwrap();
        assert_eq!(
            (t.service, t.instance, t.addr, t.ttl_ms),
            ("s", "i", "h:1", 500)
        );
        assert_eq!((t.v, t.weight, t.state, t.epoch), (1, 100, State::Up, 0));
    }

    #[test]
    fn instance_seq_and_load_without_service_are_a_heartbeat() {
        let fields = [REQUIRED[1], REQUIRED[3], REQUIRED[4], ("epoch", b"\x07")];
        let bytes = map(&fields);
        let Ok(Received::Heartbeat(h)) = message(&bytes) else {
            panic!("not read as a heartbeat");
        };
        assert_eq!((h.instance, h.epoch, h.seq, h.load), ("i", 7, 1, 0.0));
        // Anything a heartbeat does not carry makes it an incomplete token.
        for extra in [REQUIRED[0], REQUIRED[2], REQUIRED[5], ("meta", b"\x80")] {
            let mut more = fields.to_vec();
            more.push(extra);
            assert_eq!(message(&map(&more)).unwrap_err().what(), "missing field");
        }
        assert!(message(&map(&fields[..2])).is_err(), "no seq");
    }

    #[test]
    fn each_missing_required_field_is_refused() {
        for skip in 0..REQUIRED.len() {
            let fields: Vec<_> = (0..REQUIRED.len())
                .filter(|&i| i != skip)
                .map(|i| REQUIRED[i])
                .collect();
            assert_eq!(token(&map(&fields)).unwrap_err().what(), "missing field");
        }
    }

    #[test]
    fn unknown_values_of_every_type_are_skipped() {
        let mut fields = REQUIRED.to_vec();
        let nested: &[u8] = b"\x92\x81\xa1k\xc4\x02ab\xd6\x01abcd";
        fields.push(("x", nested));
        fields.push(("y", b"\xcb\x3f\xf0\0\0\0\0\0\0"));
        assert!(token(&map(&fields)).is_ok());
    }

    #[test]
    fn strings_in_every_encoding_are_read_and_invalid_utf8_is_refused_in_keys_and_values() {
        // A known key and a value as str8 and as bin8 rather than fixstr; `zone` as nil.
        let mut bytes = map(&REQUIRED[1..]);
        bytes[0] += 2;
        bytes.extend_from_slice(b"\xd9\x07service\xc4\x03abc\xa4zone\xc0");
        let t = token(&bytes).unwrap();
        assert_eq!((t.service, t.zone), ("abc", None));

        let mut unknown_key = map(&REQUIRED);
        unknown_key[0] += 1;
        unknown_key.extend_from_slice(b"\xa2\xff\xfe\x01");
        let e = token(&unknown_key).unwrap_err();
        assert_eq!(
            (e.what(), e.offset()),
            ("string is not UTF-8", map(&REQUIRED).len())
        );

        let mut bad_value = REQUIRED.to_vec();
        bad_value[2] = ("addr", b"\xa3\xff:1");
        assert_eq!(
            token(&map(&bad_value)).unwrap_err().what(),
            "string is not UTF-8"
        );
        let mut bad_state = REQUIRED.to_vec();
        bad_state.push(("state", b"\xa2\xff\xfe"));
        assert_eq!(token(&map(&bad_state)).unwrap_err().what(), "unknown state");
        bad_state.pop();
        bad_state.push(("state", b"\xa8draining"));
        assert_eq!(token(&map(&bad_state)).unwrap().state, State::Draining);
    }

    #[test]
    fn a_key_twice_trailing_bytes_and_a_huge_claimed_length_are_refused() {
        let mut twice = REQUIRED.to_vec();
        twice.push(("seq", b"\x02"));
        assert_eq!(token(&map(&twice)).unwrap_err().what(), "field given twice");
        let mut trailing = map(&REQUIRED);
        trailing.push(0xc0);
        assert_eq!(
            token(&trailing).unwrap_err().what(),
            "bytes after the token map"
        );
        let mut huge = REQUIRED.to_vec();
        huge.push(("x", b"\xdd\xff\xff\xff\xff"));
        assert_eq!(
            token(&map(&huge)).unwrap_err().what(),
            "payload ends inside a value"
        );
    }

    #[test]
    fn integers_must_fit_their_field() {
        let mut fields = REQUIRED.to_vec();
        fields[5] = ("ttl_ms", b"\xcf\0\0\0\x01\0\0\0\0");
        assert_eq!(
            token(&map(&fields)).unwrap_err().what(),
            "integer out of range"
        );
        fields[5] = ("ttl_ms", b"\xd0\x64");
        assert_eq!(token(&map(&fields)).unwrap().ttl_ms, 100);
        fields[5] = ("ttl_ms", b"\xff");
        assert!(token(&map(&fields)).is_err());
    }
}
