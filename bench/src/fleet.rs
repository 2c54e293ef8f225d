//! Typical tokens for a fleet of instances, encoded once and patched per message.
//!
//! Sizes follow what a deployment announces: a service name of about 10 bytes, an instance id
//! of 20, an address like `10.1.2.3:8080`, a zone, and two metadata entries (`version`,
//! `zone`). A [`Template`] is a token encoded once, with the offsets of `seq`, `load` and
//! `sent_at_ms`, so that a publisher can emit millions of valid, distinct tokens without
//! encoding each one.

use std::fmt;

use async_nats::Subject;
use bytes::Bytes;
use herald_shared::{State, Subjects, Token, codec};

/// How many services, and how many instances each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Number of services.
    pub services: usize,
    /// Instances per service.
    pub per_service: usize,
}

impl Layout {
    /// The two layouts of 10,000 instances the benchmarks measure: 100 services of 100, and
    /// one service of 10,000.
    pub const STANDARD: [Layout; 2] = [
        Layout {
            services: 100,
            per_service: 100,
        },
        Layout {
            services: 1,
            per_service: 10_000,
        },
    ];

    /// Total instances.
    pub fn len(&self) -> usize {
        self.services * self.per_service
    }

    /// Whether the layout has no instance.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} svc x {}", self.services, self.per_service)
    }
}

/// Name of service number `s`: `service-07` (10 bytes below 100).
pub fn service_name(s: usize) -> String {
    format!("service-{s:02}")
}

/// Id of instance `i` of `service`: `service-07-0042-8c1f` (20 bytes for the names above).
pub fn instance_id(service: &str, i: usize) -> String {
    let tag = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48;
    format!("{service}-{i:04}-{tag:04x}")
}

/// Zone of instance `i`: three zones in turn.
pub fn zone(i: usize) -> &'static str {
    ["eu-1a", "eu-1b", "eu-1c"][i % 3]
}

/// A typical `up` token for instance `i` of service `s`, with a fresh `seq` run.
pub fn typical_token(s: usize, i: usize, ttl_ms: u32) -> Token {
    let service = service_name(s);
    let mut t = Token::new(
        service.clone(),
        instance_id(&service, i),
        format!("10.{}.{}.{}:8080", s % 250, i / 250 % 250, i % 250),
    );
    t.zone = Some(zone(i).to_owned());
    t.meta.insert("version".to_owned(), "1.2.3".to_owned());
    t.meta.insert("zone".to_owned(), zone(i).to_owned());
    t.load = 0.25;
    t.ttl_ms = ttl_ms;
    t.seq = herald_shared::unix_micros();
    t.sent_at_ms = herald_shared::unix_millis();
    t
}

/// Marker values, chosen to need the 8- or 4-byte MessagePack forms (`0xcf`, `0xca`) that
/// every real `seq`, `sent_at_ms` (after 1970-02) and load also take, and unlikely to occur
/// elsewhere in a token.
const SEQ_MARK: u64 = 0x0123_4567_89AB_CDEF;
const SENT_MARK: u64 = 0x0012_3456_789A_BCDE;
const LOAD_MARK: f32 = 1_234.567_9;

/// One token encoded once, with the offsets of its changing fields.
#[derive(Debug, Clone)]
pub struct Template {
    subject: Subject,
    bytes: Vec<u8>,
    seq_at: usize,
    sent_at: usize,
    load_at: usize,
}

fn find_once(haystack: &[u8], needle: &[u8]) -> usize {
    let mut hits = haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i + 1);
    let first = hits.next().expect("marker present in the encoded token");
    assert!(hits.next().is_none(), "marker must occur once");
    first
}

impl Template {
    /// Encodes `token` (its `seq`, `load` and `sent_at_ms` are placeholders) for the
    /// announce subject of its service.
    pub fn new(token: &Token, subjects: &Subjects) -> Template {
        let mut t = token.clone();
        t.seq = SEQ_MARK;
        t.sent_at_ms = SENT_MARK;
        t.load = LOAD_MARK;
        let bytes = codec::encode(&t).expect("a typical token encodes");
        let mark = |tag: u8, value: &[u8]| [&[tag][..], value].concat();
        Template {
            subject: Subject::from(subjects.announce(&t.service)),
            seq_at: find_once(&bytes, &mark(0xcf, &SEQ_MARK.to_be_bytes())),
            sent_at: find_once(&bytes, &mark(0xcf, &SENT_MARK.to_be_bytes())),
            load_at: find_once(&bytes, &mark(0xca, &LOAD_MARK.to_be_bytes())),
            bytes,
        }
    }

    /// The announce subject.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the encoding is empty (never).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The token with these values. `seq` and `sent_at_ms` must exceed `u32::MAX` (so that
    /// they keep the 8-byte form), and `load` must be finite and `>= 0`.
    pub fn payload(&self, seq: u64, load: f32, sent_at_ms: u64) -> Bytes {
        debug_assert!(seq > u64::from(u32::MAX) && sent_at_ms > u64::from(u32::MAX));
        let mut b = self.bytes.clone();
        b[self.seq_at..self.seq_at + 8].copy_from_slice(&seq.to_be_bytes());
        b[self.sent_at..self.sent_at + 8].copy_from_slice(&sent_at_ms.to_be_bytes());
        b[self.load_at..self.load_at + 4].copy_from_slice(&load.to_be_bytes());
        Bytes::from(b)
    }
}

/// Every instance of a [`Layout`], each with its own `seq` run, published in turn.
#[derive(Debug)]
pub struct Fleet {
    templates: Vec<Template>,
    seq: Vec<u64>,
    next: usize,
}

impl Fleet {
    /// Templates for every instance of `layout`, `ttl_ms` each.
    pub fn new(layout: Layout, ttl_ms: u32, subjects: &Subjects) -> Fleet {
        let mut templates = Vec::with_capacity(layout.len());
        for s in 0..layout.services {
            for i in 0..layout.per_service {
                templates.push(Template::new(&typical_token(s, i, ttl_ms), subjects));
            }
        }
        let start = herald_shared::unix_micros();
        Fleet {
            seq: vec![start; templates.len()],
            templates,
            next: 0,
        }
    }

    /// Templates for these tokens (any mix of services), each with its own `seq` run.
    pub fn from_tokens(tokens: &[Token], subjects: &Subjects) -> Fleet {
        let start = herald_shared::unix_micros();
        Fleet {
            templates: tokens.iter().map(|t| Template::new(t, subjects)).collect(),
            seq: vec![start; tokens.len()],
            next: 0,
        }
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// Whether the fleet is empty.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// Encoded size of the first token.
    pub fn token_len(&self) -> usize {
        self.templates.first().map_or(0, Template::len)
    }

    /// The next instance's next token (instances in turn, `seq` + 1 each time).
    pub fn next_token(&mut self, load: f32, sent_at_ms: u64) -> (Subject, Bytes) {
        let i = self.next;
        self.next = (self.next + 1) % self.templates.len();
        self.seq[i] += 1;
        let t = &self.templates[i];
        (t.subject.clone(), t.payload(self.seq[i], load, sent_at_ms))
    }
}

/// A goodbye (`leaving`) of `token`'s instance, one `seq` later.
pub fn goodbye(token: &Token) -> Token {
    let mut t = token.clone();
    t.state = State::Leaving;
    t.seq += 1;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_typical_sizes() {
        let s = service_name(7);
        assert_eq!(s.len(), 10);
        assert_eq!(instance_id(&s, 42).len(), 20);
    }

    #[test]
    fn patched_templates_decode_to_the_patched_values() {
        let subjects = Subjects::default();
        let mut fleet = Fleet::new(
            Layout {
                services: 2,
                per_service: 3,
            },
            3_000,
            &subjects,
        );
        let mut seen = std::collections::HashSet::new();
        for round in 0..2u64 {
            for k in 0..fleet.len() {
                let (subject, payload) = fleet.next_token(0.5, 1_700_000_000_000 + round);
                let service = subjects.service_of_announce(subject.as_str()).unwrap();
                let t = codec::accept(&payload, service).expect("a patched token is valid");
                assert_eq!(t.load, 0.5);
                assert_eq!(t.sent_at_ms, 1_700_000_000_000 + round);
                assert_eq!(t.meta.len(), 2);
                assert!(
                    seen.insert((t.instance.to_owned(), t.seq)),
                    "token {k} repeats"
                );
            }
        }
    }
}
