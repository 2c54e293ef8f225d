//! The one-pass decoder against the serde reader it replaced (`Token`'s derived
//! `Deserialize`, still what `rmp-serde` gives any Rust reader): over token maps written with
//! every encoding a MessagePack writer may choose (integer widths and signs, `f32`, `f64` or
//! integer loads, `str` or `bin` strings, invalid UTF-8, `nil`, unknown keys holding any
//! value, keys twice, fields missing or of the wrong type), both accept the same payloads and
//! read the same token.

use herald_shared::{Token, codec};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// One MessagePack value, with the encoding to write it in.
#[derive(Debug, Clone)]
enum Val {
    /// An integer and a selector among the markers that can hold it.
    Int(i128, u8),
    F32(f32),
    F64(f64),
    /// A string, as `str` (false) or `bin` (true), and a selector of the length's width.
    Str(String, bool, u8),
    BadUtf8,
    Nil,
    Bool(bool),
    Map(Vec<(Val, Val)>),
    Array(Vec<Val>),
}

fn write(out: &mut Vec<u8>, v: &Val) {
    match v {
        Val::Int(n, pick) => write_int(out, *n, *pick),
        Val::F32(x) => {
            out.push(0xca);
            out.extend_from_slice(&x.to_be_bytes());
        }
        Val::F64(x) => {
            out.push(0xcb);
            out.extend_from_slice(&x.to_be_bytes());
        }
        Val::Str(s, bin, width) => write_str(out, s.as_bytes(), *bin, *width),
        Val::BadUtf8 => write_str(out, b"\xff\xfe", false, 0),
        Val::Nil => out.push(0xc0),
        Val::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Val::Map(entries) => {
            out.push(0xde);
            out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
            for (k, v) in entries {
                write(out, k);
                write(out, v);
            }
        }
        Val::Array(items) => {
            out.push(0x90 | items.len() as u8);
            for v in items {
                write(out, v);
            }
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &[u8], bin: bool, width: u8) {
    match (bin, width % 4) {
        (false, 0) if s.len() < 32 => out.push(0xa0 | s.len() as u8),
        (false, 0 | 1) => out.extend_from_slice(&[0xd9, s.len() as u8]),
        (false, 2) => {
            out.push(0xda);
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        }
        (false, _) => {
            out.push(0xdb);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        }
        (true, 0 | 1) => out.extend_from_slice(&[0xc4, s.len() as u8]),
        (true, 2) => {
            out.push(0xc5);
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        }
        (true, _) => {
            out.push(0xc6);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(s);
}

fn write_int(out: &mut Vec<u8>, n: i128, pick: u8) {
    let mut forms: Vec<Vec<u8>> = Vec::new();
    if (0..=127).contains(&n) {
        forms.push(vec![n as u8]);
    }
    if (-32..0).contains(&n) {
        forms.push(vec![n as i8 as u8]);
    }
    if let Ok(x) = u8::try_from(n) {
        forms.push([&[0xcc][..], &x.to_be_bytes()].concat());
    }
    if let Ok(x) = u16::try_from(n) {
        forms.push([&[0xcd][..], &x.to_be_bytes()].concat());
    }
    if let Ok(x) = u32::try_from(n) {
        forms.push([&[0xce][..], &x.to_be_bytes()].concat());
    }
    if let Ok(x) = u64::try_from(n) {
        forms.push([&[0xcf][..], &x.to_be_bytes()].concat());
    }
    if let Ok(x) = i8::try_from(n) {
        forms.push([&[0xd0][..], &x.to_be_bytes()].concat());
    }
    if let Ok(x) = i16::try_from(n) {
        forms.push([&[0xd1][..], &x.to_be_bytes()].concat());
    }
    if let Ok(x) = i32::try_from(n) {
        forms.push([&[0xd2][..], &x.to_be_bytes()].concat());
    }
    if let Ok(x) = i64::try_from(n) {
        forms.push([&[0xd3][..], &x.to_be_bytes()].concat());
    }
    match forms.len() {
        // Beyond what MessagePack holds: a nil in its place.
        0 => out.push(0xc0),
        n => out.extend_from_slice(&forms[usize::from(pick) % n]),
    }
}

fn int(range: std::ops::Range<i128>) -> impl Strategy<Value = Val> {
    (range, any::<u8>()).prop_map(|(n, p)| Val::Int(n, p))
}

/// Mostly within `range`, now and then just outside it or far off.
fn int_around(range: std::ops::Range<i128>) -> impl Strategy<Value = Val> {
    let (low, high) = (range.start, range.end);
    prop_oneof![
        12 => int(range),
        1 => int(low - 3..low),
        1 => int(high..high + 3),
        1 => int(-(1 << 63)..(1 << 64)),
    ]
}

fn string(s: impl Strategy<Value = String>) -> impl Strategy<Value = Val> {
    (s, prop::bool::weighted(0.2), any::<u8>()).prop_map(|(s, bin, w)| Val::Str(s, bin, w))
}

fn any_val() -> impl Strategy<Value = Val> {
    let leaf = prop_oneof![
        int(-(1 << 63)..(1 << 64)),
        any::<f32>()
            .prop_filter("NaN is never equal", |x| !x.is_nan())
            .prop_map(Val::F32),
        any::<f64>()
            .prop_filter("NaN is never equal", |x| !x.is_nan())
            .prop_map(Val::F64),
        string("[a-z:.0-9]{0,12}"),
        Just(Val::BadUtf8),
        Just(Val::Nil),
        any::<bool>().prop_map(Val::Bool),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Val::Array),
            prop::collection::vec((inner.clone(), inner), 0..3).prop_map(Val::Map),
        ]
    })
}

/// A value meant for `key`, or now and then any value at all.
fn value_for(key: &'static str) -> BoxedStrategy<Val> {
    let fitting: BoxedStrategy<Val> = match key {
        "v" => int_around(0..256).boxed(),
        "service" | "instance" => string("[a-z0-9-]{1,8}").boxed(),
        "addr" => string("[a-z0-9.]{1,8}:[0-9]{1,5}").boxed(),
        "zone" | "conn" => prop_oneof![Just(Val::Nil), string("[a-z0-9/-]{1,8}")].boxed(),
        "load" => prop_oneof![
            (0.0f32..1e6).prop_map(Val::F32),
            (0.0f64..1e40).prop_map(Val::F64),
            int(0..1 << 40),
        ]
        .boxed(),
        "weight" => int_around(0..1 << 32).boxed(),
        "ttl_ms" => int_around(100..3_600_001).boxed(),
        "epoch" | "seq" | "sent_at_ms" => int_around(0..1 << 64).boxed(),
        "state" => prop_oneof![
            string(Just("up".to_owned())),
            string(Just("draining".to_owned())),
            string(Just("leaving".to_owned())),
            string(Just("gone".to_owned())),
        ]
        .boxed(),
        "meta" => prop::collection::vec(
            (
                string("[a-z]{1,6}"),
                prop_oneof![4 => string("[ -~]{0,8}"), 1 => any_val()],
            ),
            0..5,
        )
        .prop_map(Val::Map)
        .boxed(),
        _ => any_val().boxed(),
    };
    prop_oneof![30 => fitting, 1 => any_val()].boxed()
}

const KEYS: [&str; 16] = [
    "v",
    "service",
    "instance",
    "addr",
    "load",
    "weight",
    "zone",
    "state",
    "meta",
    "epoch",
    "seq",
    "ttl_ms",
    "sent_at_ms",
    "conn",
    "region",
    "capacity",
];

/// A token map: each key present with probability 0.95 (0.4 for unknown ones), in a
/// shuffled order, now and then one key twice.
fn token_map() -> impl Strategy<Value = Vec<u8>> {
    let entries: Vec<_> = KEYS
        .iter()
        .map(|&k| {
            let p = if k == "region" || k == "capacity" {
                0.4
            } else {
                0.95
            };
            prop::option::weighted(p, value_for(k)).prop_map(move |v| v.map(|v| (k, v)))
        })
        .collect();
    (
        entries,
        any::<u64>(),
        prop::option::weighted(0.05, 0..KEYS.len()),
    )
        .prop_map(|(entries, shuffle, twice)| {
            let mut entries: Vec<(&str, Val)> = entries.into_iter().flatten().collect();
            let mut rng = shuffle;
            for i in (1..entries.len()).rev() {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                entries.swap(i, (rng >> 33) as usize % (i + 1));
            }
            if let Some(t) = twice.filter(|&t| t < entries.len()) {
                entries.push(entries[t].clone());
            }
            let mut out = vec![0xde];
            out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
            for (k, v) in &entries {
                write_str(&mut out, k.as_bytes(), false, 0);
                write(&mut out, v);
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_decoder_reads_what_serde_reads(bytes in token_map()) {
        let serde = rmp_serde::from_slice::<Token>(&bytes).ok();
        let ours = codec::decode(&bytes).ok().map(|t| t.to_owned());
        prop_assert_eq!(ours, serde);
    }
}

#[test]
fn both_readers_accept_a_good_share_of_the_generated_maps() {
    // The comparison above means something only if many maps are tokens: count them.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = token_map();
    let mut accepted = 0;
    for _ in 0..1000 {
        let bytes = strategy.new_tree(&mut runner).unwrap().current();
        accepted += usize::from(codec::decode(&bytes).is_ok());
    }
    assert!(accepted > 80, "only {accepted} of 1000 maps decode");
}

#[test]
fn what_serde_let_through_by_accident_is_refused() {
    let mut token = Token::new("s", "i", "h:1");
    token.zone = Some("z".to_owned());
    token.conn = Some("c".to_owned());
    let positional = rmp_serde::to_vec(&token).unwrap();
    assert!(rmp_serde::from_slice::<Token>(&positional).is_ok());
    assert_eq!(
        codec::decode(&positional).unwrap_err().what(),
        "expected a map"
    );
    let mut trailing = codec::encode(&token).unwrap();
    trailing.push(0xc0);
    assert!(rmp_serde::from_slice::<Token>(&trailing).is_ok());
    assert_eq!(
        codec::decode(&trailing).unwrap_err().what(),
        "bytes after the token map"
    );
}
