//! Encoding then decoding any valid token gives the token back.

use herald_shared::{State, Token, codec, validate};
use proptest::prelude::*;

fn name(max: usize, extra: &'static str) -> impl Strategy<Value = String> {
    let chars = format!("[A-Za-z0-9_\\-{extra}]{{1,{max}}}");
    proptest::string::string_regex(&chars).unwrap()
}

fn token() -> impl Strategy<Value = Token> {
    (
        (name(64, ""), name(128, ".:"), "[a-z0-9.]{1,40}", 1u16..),
        (
            0f32..1e6,
            any::<u32>(),
            proptest::option::of(name(64, ".")),
            prop_oneof![Just(State::Up), Just(State::Draining), Just(State::Leaving)],
        ),
        proptest::collection::btree_map("[a-z]{1,64}", "[ -~]{0,64}", 0..8),
        (
            any::<u64>(),
            any::<u64>(),
            validate::MIN_TTL_MS..=validate::MAX_TTL_MS,
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (service, instance, host, port),
                (load, weight, zone, state),
                meta,
                (epoch, seq, ttl_ms, sent_at_ms),
            )| {
                let mut t = Token::new(service, instance, format!("{host}:{port}"));
                t.load = load;
                t.weight = weight;
                t.zone = zone;
                t.state = state;
                t.meta = meta;
                t.epoch = epoch;
                t.seq = seq;
                t.ttl_ms = ttl_ms;
                t.sent_at_ms = sent_at_ms;
                t
            },
        )
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(t in token()) {
        let bytes = codec::encode(&t).unwrap();
        let back = codec::accept(&bytes, &t.service).unwrap().to_owned();
        prop_assert_eq!(back, t);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = codec::accept(&bytes, "svc");
    }
}
