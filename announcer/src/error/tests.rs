//! The error's words and kinds.

use super::*;

#[test]
fn config_errors_name_field_and_bound() {
    let e = Error::config("interval", "must be >= 50 ms");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert_eq!(e.field(), Some("interval"));
    assert_eq!(
        e.to_string(),
        "invalid configuration: `interval`: must be >= 50 ms"
    );
    assert!(
        std::error::Error::source(&e).is_none(),
        "the field and bound are this layer's words, not a cause"
    );
}

#[test]
fn duplicates_name_the_instance_and_the_holder() {
    let e = Error::duplicate(Duplicate {
        instance: "b-1".into(),
        key: "/herald/services/billing/b-1".into(),
        epoch: 42,
    });
    assert_eq!(e.holder_epoch(), Some(42));
    let text = e.to_string();
    assert!(
        text.contains("`b-1`") && text.contains("epoch 42"),
        "the message names the id and the holder's epoch: {text}"
    );
}

#[test]
fn etcd_errors_say_which() {
    let e = Error::from(EtcdError::Config(
        "etcd.endpoints: must list at least one endpoint",
    ));
    assert_eq!(e.field(), Some("etcd.endpoints"));
    let e = Error::from(EtcdError::unreachable("no answer"));
    assert_eq!(e.kind(), ErrorKind::EtcdUnreachable);
    assert_eq!(e.to_string(), "cannot reach etcd");
    let source = std::error::Error::source(&e).expect("the cause is kept");
    assert_eq!(
        source.to_string(),
        "no answer",
        "each layer says its own words once"
    );
}

#[test]
fn other_kinds_have_no_field() {
    let e = Error::new(ErrorKind::TimedOut);
    assert_eq!(e.to_string(), "timed out");
    assert_eq!(e.field(), None);
}
