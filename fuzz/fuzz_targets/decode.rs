//! Decode and admission of arbitrary bytes: must never panic, whatever the decoder reads the
//! serde reader (what any Rust reader of the map gets) reads the same, and whatever admission
//! accepts must be a valid token that re-encodes and decodes to itself.
#![no_main]

use herald_shared::{Token, codec, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The service named by the subject is taken from the first byte so that both the
    // matching and the mismatching paths are explored.
    let subject_service = if data.first().is_some_and(|b| b % 2 == 0) { "svc" } else { "other" };
    if let Ok(token) = codec::decode(data) {
        match rmp_serde::from_slice::<Token>(data) {
            // Past 32 metadata entries the decoder only counts them (validation refuses).
            Ok(serde) => assert!(
                token.load.is_nan() || token.meta.len() > 32 || serde == token.to_owned()
            ),
            // Nesting deeper than serde's limit, inside an unknown key: skipped here.
            Err(rmp_serde::decode::Error::DepthLimitExceeded) => {}
            Err(e) => panic!("the decoder read a token that serde refuses: {e}"),
        }
    }
    if let Ok(token) = codec::accept(data, subject_service) {
        assert!(validate::token(&token).is_ok());
        assert_eq!(token.service, subject_service);
        let owned = token.to_owned();
        let bytes = codec::encode(&owned).expect("an accepted token re-encodes");
        let again = codec::decode(&bytes).expect("re-encoded token decodes").to_owned();
        assert_eq!(again, owned);
    }
});
