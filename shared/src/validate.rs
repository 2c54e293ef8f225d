//! The bounds of DESIGN.md, checked in one place for tokens, names and configuration.
//!
//! Every failure is an [`Invalid`] that names the field and the bound it broke, so the same
//! check yields a counted reject reason on the wire and a readable error at build time.

use std::fmt;

use crate::token::{MAX_META_ENTRIES, TOKEN_VERSION, TokenRef};

/// Largest encoded token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest service name, in bytes.
pub const MAX_SERVICE_LEN: usize = 64;
/// Longest instance id, in bytes.
pub const MAX_INSTANCE_LEN: usize = 128;
/// Longest `host:port` address, in bytes.
pub const MAX_ADDR_LEN: usize = 255;
/// Longest zone name, in bytes.
pub const MAX_ZONE_LEN: usize = 64;
/// Longest metadata key, in bytes.
pub const MAX_META_KEY_LEN: usize = 64;
/// Longest metadata value, in bytes.
pub const MAX_META_VALUE_LEN: usize = 256;
/// Shortest token TTL, in milliseconds.
pub const MIN_TTL_MS: u32 = 100;
/// Longest token TTL, in milliseconds.
pub const MAX_TTL_MS: u32 = 3_600_000;
/// Longest connection name (`conn`), in bytes.
pub const MAX_CONN_LEN: usize = 128;

/// Which field of a token broke its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// `v`
    Version,
    /// `service`
    Service,
    /// `instance`
    Instance,
    /// `addr`
    Addr,
    /// `load`
    Load,
    /// `zone`
    Zone,
    /// `meta`
    Meta,
    /// `ttl_ms`
    Ttl,
    /// `conn`
    Conn,
}

impl Field {
    /// Every field, in declaration order (for per-reason counters).
    pub const ALL: [Field; 9] = [
        Field::Version,
        Field::Service,
        Field::Instance,
        Field::Addr,
        Field::Load,
        Field::Zone,
        Field::Meta,
        Field::Ttl,
        Field::Conn,
    ];

    /// The field's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Version => "v",
            Field::Service => "service",
            Field::Instance => "instance",
            Field::Addr => "addr",
            Field::Load => "load",
            Field::Zone => "zone",
            Field::Meta => "meta",
            Field::Ttl => "ttl_ms",
            Field::Conn => "conn",
        }
    }
}

/// A value outside its bound: names the field and the bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The offending field.
    pub field: Field,
    /// The bound it broke, as a short phrase.
    pub bound: &'static str,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field.as_str(), self.bound)
    }
}

impl std::error::Error for Invalid {}

fn invalid(field: Field, bound: &'static str) -> Invalid {
    Invalid { field, bound }
}

/// The bytes a name may hold: ASCII letters, digits, `_`, `-` and the given extras, as a
/// table looked up once per byte.
struct Charset([bool; 256]);

impl Charset {
    const fn new(extra: &[u8]) -> Charset {
        let mut allowed = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            allowed[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
            b += 1;
        }
        let mut i = 0;
        while i < extra.len() {
            allowed[extra[i] as usize] = true;
            i += 1;
        }
        Charset(allowed)
    }

    fn holds(&self, s: &str, max: usize) -> bool {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| self.0[usize::from(b)])
    }
}

const SERVICE_CHARS: Charset = Charset::new(b"");
const INSTANCE_CHARS: Charset = Charset::new(b".:");
const ZONE_CHARS: Charset = Charset::new(b".");
const CONN_CHARS: Charset = Charset::new(b"/");

/// Checks a service name: `[A-Za-z0-9_-]{1,64}`.
pub fn service_name(s: &str) -> Result<(), Invalid> {
    if SERVICE_CHARS.holds(s, MAX_SERVICE_LEN) {
        Ok(())
    } else {
        Err(invalid(Field::Service, "must match [A-Za-z0-9_-]{1,64}"))
    }
}

/// Checks an instance id: `[A-Za-z0-9_.:-]{1,128}`.
pub fn instance_id(s: &str) -> Result<(), Invalid> {
    if INSTANCE_CHARS.holds(s, MAX_INSTANCE_LEN) {
        Ok(())
    } else {
        Err(invalid(
            Field::Instance,
            "must match [A-Za-z0-9_.:-]{1,128}",
        ))
    }
}

/// Checks a zone name: `[A-Za-z0-9_.-]{1,64}`.
pub fn zone(s: &str) -> Result<(), Invalid> {
    if ZONE_CHARS.holds(s, MAX_ZONE_LEN) {
        Ok(())
    } else {
        Err(invalid(Field::Zone, "must match [A-Za-z0-9_.-]{1,64}"))
    }
}

/// Checks an address: `host:port` (IPv6 hosts in brackets), at most 255 bytes, port 1..=65535.
pub fn addr(s: &str) -> Result<(), Invalid> {
    const BOUND: &str = "must be host:port with a port in 1..=65535, at most 255 bytes";
    if s.len() > MAX_ADDR_LEN {
        return Err(invalid(Field::Addr, BOUND));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(invalid(Field::Addr, BOUND));
    };
    let port_ok = matches!(port.parse::<u16>(), Ok(p) if p > 0);
    let host_ok = !host.is_empty()
        && !host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        && (host.starts_with('[') == host.ends_with(']'))
        && (host.starts_with('[') || !host.contains(':'));
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(invalid(Field::Addr, BOUND))
    }
}

/// Checks a load: finite and `>= 0`.
pub fn load(x: f32) -> Result<(), Invalid> {
    if x.is_finite() && x >= 0.0 {
        Ok(())
    } else {
        Err(invalid(Field::Load, "must be finite and >= 0"))
    }
}

/// Checks a TTL in milliseconds: `100 ..= 3_600_000`.
pub fn ttl_ms(ms: u32) -> Result<(), Invalid> {
    if (MIN_TTL_MS..=MAX_TTL_MS).contains(&ms) {
        Ok(())
    } else {
        Err(invalid(Field::Ttl, "must be within 100 ms ..= 1 h"))
    }
}

/// Checks a connection name (`{server_id}/{client_id}`): `[A-Za-z0-9_/-]{1,128}`.
pub fn conn(s: &str) -> Result<(), Invalid> {
    if CONN_CHARS.holds(s, MAX_CONN_LEN) {
        Ok(())
    } else {
        Err(invalid(Field::Conn, "must match [A-Za-z0-9_/-]{1,128}"))
    }
}

/// Checks metadata: at most 32 entries, keys 1..=64 bytes, values up to 256 bytes.
pub fn meta<'a>(entries: impl ExactSizeIterator<Item = (&'a str, &'a str)>) -> Result<(), Invalid> {
    if entries.len() > MAX_META_ENTRIES {
        return Err(invalid(Field::Meta, "at most 32 entries"));
    }
    for (k, v) in entries {
        if k.is_empty() || k.len() > MAX_META_KEY_LEN {
            return Err(invalid(Field::Meta, "keys must be 1..=64 bytes"));
        }
        if v.len() > MAX_META_VALUE_LEN {
            return Err(invalid(Field::Meta, "values must be at most 256 bytes"));
        }
    }
    Ok(())
}

/// Checks every bound of a token.
pub fn token(t: &TokenRef<'_>) -> Result<(), Invalid> {
    if t.v < TOKEN_VERSION {
        return Err(invalid(Field::Version, "must be >= 1"));
    }
    service_name(t.service)?;
    instance_id(t.instance)?;
    addr(t.addr)?;
    load(t.load)?;
    if let Some(z) = t.zone {
        zone(z)?;
    }
    if t.meta.len() > MAX_META_ENTRIES {
        return Err(invalid(Field::Meta, "at most 32 entries"));
    }
    meta(t.meta.iter())?;
    if let Some(c) = t.conn {
        conn(c)?;
    }
    ttl_ms(t.ttl_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Token;

    #[test]
    fn names_follow_their_patterns() {
        assert!(service_name("billing-api_2").is_ok());
        assert!(service_name("").is_err(), "empty service must be rejected");
        assert!(
            service_name("a.b").is_err(),
            "dots would split the NATS subject"
        );
        assert!(service_name(&"x".repeat(65)).is_err());
        assert!(instance_id("host-1.example:8080").is_ok());
        assert!(instance_id("a b").is_err());
        assert!(instance_id(&"x".repeat(129)).is_err());
    }

    #[test]
    fn each_name_allows_exactly_its_pattern_s_bytes() {
        let base = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        for b in 0..=255u8 {
            let c = char::from(b);
            let s = format!("a{c}");
            let s = s.as_str();
            assert_eq!(service_name(s).is_ok(), base(c), "service {b:#x}");
            assert_eq!(
                instance_id(s).is_ok(),
                base(c) || c == '.' || c == ':',
                "instance {b:#x}"
            );
            assert_eq!(zone(s).is_ok(), base(c) || c == '.', "zone {b:#x}");
            assert_eq!(conn(s).is_ok(), base(c) || c == '/', "conn {b:#x}");
        }
    }

    #[test]
    fn addresses_need_host_and_port() {
        for ok in ["10.0.0.1:80", "svc.local:65535", "[::1]:8080"] {
            assert!(addr(ok).is_ok(), "{ok} is a valid address");
        }
        for bad in [
            "10.0.0.1", ":80", "h:0", "h:70000", "::1:80", "h o:1", "h:x",
        ] {
            assert!(addr(bad).is_err(), "{bad} is not a valid address");
        }
    }

    #[test]
    fn load_and_ttl_bounds() {
        assert!(load(0.0).is_ok());
        assert!(load(f32::NAN).is_err());
        assert!(load(-0.1).is_err());
        assert!(load(f32::INFINITY).is_err());
        assert!(ttl_ms(99).is_err());
        assert!(ttl_ms(100).is_ok());
        assert!(ttl_ms(3_600_000).is_ok());
        assert!(ttl_ms(3_600_001).is_err());
    }

    #[test]
    fn errors_name_field_and_bound() {
        let mut t = Token::new("svc", "i1", "h:1");
        t.meta = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        let err = token(&t.as_ref()).unwrap_err();
        assert_eq!(err.field, Field::Meta);
        assert_eq!(err.to_string(), "invalid `meta`: at most 32 entries");
    }
}
