//! What Herald's announcers and subscribers share: the discovery token, its wire codec and
//! bounds, the names of subjects and keys, and NATS client configuration.
//!
//! ```
//! use herald_shared::{Subjects, Token, codec};
//!
//! let subjects = Subjects::default();
//! let mut token = Token::new("billing", "billing-1", "10.0.0.7:8080");
//! token.load = 0.25;
//! let payload = codec::encode(&token).unwrap();
//! // What a subscriber does with a payload received on `herald.announce.billing`:
//! let service = subjects.service_of_announce("herald.announce.billing").unwrap();
//! let seen = codec::accept(&payload, service).unwrap();
//! assert_eq!(seen.load, 0.25);
//! ```
//!
//! # Layout
//! - [`token`]: the token type (owned and borrowed forms) and instance states;
//! - [`codec`]: MessagePack encoding, decoding, and the admission check with reject reasons;
//! - [`validate`]: every bound of the design, with errors that name the field;
//! - [`pace`]: how fast a token's `seq` may advance (announcers keep it, subscribers hold to it);
//! - [`subject`]: NATS subjects and etcd keys, formatted only here;
//! - [`config`]: NATS settings and the connection helper (fast, jittered reconnects);
//! - [`etcd`]: etcd settings and the connection helper (fails fast: unreachable or refused);
//! - [`round_trip`]: proof that subscriptions are active on the server;
//! - [`backoff`]: the pause before trying again (exponential, capped, jittered).
#![deny(missing_docs)]

pub mod backoff;
pub mod codec;
pub mod config;
pub mod etcd;
pub mod pace;
pub mod round_trip;
pub mod subject;
pub mod token;
pub mod validate;

pub use codec::{Received, Reject};

/// The `tracing` target of the lines that say a link (NATS, an etcd watch or lease) was lost
/// or is back, one each per outage, in announcers and subscribers alike, so that a program
/// can show them while keeping the rest of its logs quiet:
/// `RUST_LOG=warn,herald::connection=info`.
pub const CONNECTION_LOG: &str = "herald::connection";

/// The `tracing` target of the warning that etcd stopped an announcer (deregistered, fenced,
/// its session closed). A program that reports the stop in its own words (the CLI's one
/// line, with its exit code) can leave it out: `RUST_LOG=warn,herald::stopped=off`.
pub const STOPPED_LOG: &str = "herald::stopped";
pub use config::{
    ConfigError, ConnectionEvents, NatsAuth, NatsConfig, NatsConnectError, NatsEvent, NatsTls,
};
pub use etcd::{EtcdConfig, EtcdError, EtcdTls};
pub use subject::Subjects;
pub use token::{Heartbeat, State, Token, TokenRef};
pub use validate::{Field, Invalid};

/// Current wall-clock time in Unix milliseconds (0 if the clock is before 1970).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Current wall-clock time in Unix microseconds: the first `seq` of a run.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
