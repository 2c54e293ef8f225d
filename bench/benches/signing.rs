//! What signing tokens with ed25519 (`ed25519-dalek` 2) would cost, for a decision on figures:
//! nothing in Herald signs or verifies a token today. It measures, on a realistic full token
//! (`billing-7f9c2`, zone, three metadata entries, encoded with `codec::encode`) and on its
//! heartbeat (`codec::encode_heartbeat`): signing one encoded payload (the announcer's cost),
//! verifying one signature with `verify` and `verify_strict` (the subscriber's cost), and
//! `ed25519_dalek::verify_batch` of 64 signatures by 64 keys (criterion's throughput line is per
//! signature). For context: `codec::encode` and `codec::receive` (the subscriber's admission
//! check) of the same payloads, and parsing a 32-byte public key (`VerifyingKey::from_bytes`),
//! which a subscriber would do once per registration, not per token. The full token is also
//! measured with a `conn` field, as the announcer sends it once connected. Keys come from fixed
//! bytes, so no random number generator is needed. The payload sizes, and the size of a parsed
//! public key, are printed once at start.
//!
//! `cargo bench -p herald-bench --bench signing`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use herald_shared::{Token, codec};

/// Signatures in one batch verification.
const BATCH: usize = 64;

/// The token of instance `i` of `billing`: `billing-7f9c2` for `i` = 0.
fn token(i: u64) -> Token {
    let mut t = Token::new(
        "billing",
        format!("billing-{:05x}", 0x7f9c2 + i),
        format!("10.1.2.{}:8080", 3 + i % 250),
    );
    t.zone = Some("eu-west-1a".to_owned());
    t.meta.insert("version".to_owned(), "1.2.3".to_owned());
    t.meta.insert("zone".to_owned(), "eu-west-1a".to_owned());
    t.meta.insert("commit".to_owned(), "3d6382c".to_owned());
    t.load = 0.25;
    t.epoch = 123_456 + i;
    t.seq = 1_800_000_000_000_000 + i * 1_000_003;
    t.sent_at_ms = 1_800_000_000_000 + i;
    t
}

/// The token as the announcer sends it once connected: with `conn` (a 56-character NATS
/// server id and a client id).
fn token_with_conn(i: u64) -> Token {
    let mut t = token(i);
    t.conn = Some(format!(
        "NCXQ7OZ3K5ZJ4TN2D6PQH2WVAYJIMMBTXKS7FGU4W5S6TNEQEZBTLKCV/{}",
        40 + i
    ));
    t
}

/// The signing key of instance `i`, from fixed bytes.
fn key(i: u64) -> SigningKey {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&(0x5eed_0000 + i).to_le_bytes());
    secret[8..].fill(0xa5);
    SigningKey::from_bytes(&secret)
}

/// One kind of message: its name, the token it carries and how that is encoded.
#[derive(Debug, Clone, Copy)]
struct Kind {
    name: &'static str,
    token: fn(u64) -> Token,
    encode: fn(&Token) -> Result<Vec<u8>, codec::EncodeError>,
}

impl Kind {
    /// The payload of instance `i`.
    fn payload(self, i: u64) -> Vec<u8> {
        (self.encode)(&(self.token)(i)).unwrap()
    }
}

const FULL: Kind = Kind {
    name: "full token",
    token,
    encode: codec::encode,
};
const HEARTBEAT: Kind = Kind {
    name: "heartbeat",
    token,
    encode: codec::encode_heartbeat,
};
const FULL_WITH_CONN: Kind = Kind {
    name: "full token with conn",
    token: token_with_conn,
    encode: codec::encode,
};
const KINDS: [Kind; 3] = [FULL, HEARTBEAT, FULL_WITH_CONN];

/// The name of a kind with its payload size, e.g. `full token (210 B)`.
fn label(kind: &str, payload: &[u8]) -> String {
    format!("{kind} ({} B)", payload.len())
}

fn sizes() {
    eprintln!("payload sizes (a signature adds 64 B to each, a public key 32 B):");
    for kind in KINDS {
        eprintln!("  {}: {} B", kind.name, kind.payload(0).len());
    }
    eprintln!(
        "a parsed public key (VerifyingKey) takes {} B in memory",
        std::mem::size_of::<VerifyingKey>()
    );
}

fn sign(c: &mut Criterion) {
    sizes();
    let key = key(0);
    let mut group = c.benchmark_group("ed25519 sign");
    for kind in KINDS {
        let payload = kind.payload(0);
        group.bench_function(label(kind.name, &payload), |b| {
            b.iter(|| key.sign(black_box(&payload)))
        });
    }
    group.finish();
}

fn verify(c: &mut Criterion) {
    let key = key(0);
    let public = key.verifying_key();
    let mut group = c.benchmark_group("ed25519 verify");
    for kind in KINDS {
        let payload = kind.payload(0);
        let signature = key.sign(&payload);
        group.bench_function(format!("verify, {}", label(kind.name, &payload)), |b| {
            b.iter(|| public.verify(black_box(&payload), black_box(&signature)))
        });
        group.bench_function(
            format!("verify_strict, {}", label(kind.name, &payload)),
            |b| b.iter(|| public.verify_strict(black_box(&payload), black_box(&signature))),
        );
    }
    group.finish();
}

fn batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("ed25519 verify_batch (64 signatures by 64 keys)");
    group.throughput(Throughput::Elements(BATCH as u64));
    // About 1 ms a batch: 100 samples need more than the default 5 s.
    group.measurement_time(Duration::from_secs(10));
    for kind in [FULL, HEARTBEAT] {
        let keys: Vec<SigningKey> = (0..BATCH as u64).map(key).collect();
        let payloads: Vec<Vec<u8>> = (0..BATCH as u64).map(|i| kind.payload(i)).collect();
        let signatures: Vec<Signature> =
            keys.iter().zip(&payloads).map(|(k, p)| k.sign(p)).collect();
        let publics: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
        let messages: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        ed25519_dalek::verify_batch(&messages, &signatures, &publics).unwrap();
        group.bench_function(label(kind.name, &payloads[0]), |b| {
            b.iter(|| {
                ed25519_dalek::verify_batch(
                    black_box(&messages),
                    black_box(&signatures),
                    black_box(&publics),
                )
            })
        });
    }
    group.finish();
}

fn context(c: &mut Criterion) {
    let mut group = c.benchmark_group("context");
    let token = token(0);
    for kind in [FULL, HEARTBEAT] {
        let payload = (kind.encode)(&token).unwrap();
        group.bench_function(format!("encode, {}", label(kind.name, &payload)), |b| {
            b.iter(|| (kind.encode)(black_box(&token)))
        });
        assert!(codec::receive(&payload, "billing").is_ok());
        group.bench_function(
            format!("codec::receive, {}", label(kind.name, &payload)),
            |b| b.iter(|| codec::receive(black_box(&payload), black_box("billing")).is_ok()),
        );
    }
    let public = key(0).verifying_key().to_bytes();
    group.bench_function("VerifyingKey::from_bytes (32 B public key)", |b| {
        b.iter(|| VerifyingKey::from_bytes(black_box(&public)))
    });
    group.finish();
}

criterion_group!(benches, sign, verify, batch, context);
criterion_main!(benches);
