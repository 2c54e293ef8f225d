//! Defaults and bounds of an announcer's settings, and the validation of its first token: all
//! checked before anything connects, each failure naming the setting and its bound.

use std::time::Duration;

use herald_shared::codec::{self, EncodeError};
use herald_shared::{ConfigError, State, Token};

use crate::error::{Error, ErrorKind};
use crate::schedule::Timing;

/// Shortest broadcast interval.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// Longest broadcast interval.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(20 * 60);
/// Shortest token TTL (the wire bound).
const MIN_TTL: Duration = Duration::from_millis(100);
/// Longest token TTL (the wire bound).
const MAX_TTL: Duration = Duration::from_secs(3600);
/// Shortest spacing of `load_fn` samples.
pub(crate) const MIN_LOAD_SAMPLE: Duration = Duration::from_millis(25);
/// Shortest spacing of early tokens.
const MIN_EARLY_GAP: Duration = Duration::from_millis(10);

/// Shortest lease TTL: etcd raises shorter TTLs to its own minimum (1.5 election timeouts,
/// 2 s with etcd's default timing), so a shorter request would not mean what it says.
pub(crate) const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// Longest lease TTL.
pub(crate) const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);
/// Default lease TTL: liveness travels on NATS, so a long lease costs no detection speed and
/// keeps etcd's keep-alive load low.
pub(crate) const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Default broadcast interval.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default load change that sends an early token (suits a load expressed as utilisation).
pub(crate) const DEFAULT_LOAD_DELTA: f32 = 0.1;
/// Default spacing of early tokens (capped by the interval).
pub(crate) const DEFAULT_MIN_EARLY_GAP: Duration = Duration::from_millis(100);
/// Default spacing of full tokens among periodic ones: every tenth at the latest.
pub(crate) const DEFAULT_FULL_TOKEN_EVERY: u32 = 10;
/// Largest spacing of full tokens.
const MAX_FULL_TOKEN_EVERY: u32 = 1000;

/// Default bound of `shutdown()`.
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings as the builder received them; `None` means "derive the default".
#[derive(Debug, Clone)]
pub(crate) struct Requested {
    pub(crate) interval: Duration,
    pub(crate) ttl: Option<Duration>,
    pub(crate) load_delta: f32,
    pub(crate) min_early_gap: Option<Duration>,
    pub(crate) load_sample_interval: Option<Duration>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) lease_ttl: Duration,
    pub(crate) full_token_every: u32,
}

impl Default for Requested {
    fn default() -> Self {
        Requested {
            interval: DEFAULT_INTERVAL,
            ttl: None,
            load_delta: DEFAULT_LOAD_DELTA,
            min_early_gap: None,
            load_sample_interval: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            lease_ttl: DEFAULT_LEASE_TTL,
            full_token_every: DEFAULT_FULL_TOKEN_EVERY,
        }
    }
}

/// Settings after defaults and bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) timing: Timing,
    pub(crate) ttl: Duration,
    pub(crate) load_sample_interval: Duration,
    pub(crate) shutdown_timeout: Duration,
    /// The etcd lease TTL, in whole seconds (etcd's unit).
    pub(crate) lease_ttl: Duration,
    /// At most this many tokens in a row go out without a full one (1: no heartbeats).
    pub(crate) full_token_every: u32,
}

impl Settings {
    /// The TTL as the token carries it.
    pub(crate) fn ttl_ms(&self) -> u32 {
        // Bounded by MAX_TTL, so it fits.
        self.ttl.as_millis() as u32
    }
}

impl Requested {
    /// Applies defaults and checks every bound.
    pub(crate) fn resolve(&self) -> Result<Settings, Error> {
        let interval = self.interval;
        if interval < MIN_INTERVAL {
            return Err(Error::config("interval", "must be >= 50 ms"));
        }
        if interval > MAX_INTERVAL {
            return Err(Error::config("interval", "must be <= 20 min"));
        }
        let ttl = self.ttl.unwrap_or(interval * 3);
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(Error::config("ttl", "must be within 100 ms ..= 1 h"));
        }
        if ttl <= interval {
            return Err(Error::config("ttl", "must be > interval"));
        }
        if !(self.load_delta.is_finite() && self.load_delta >= 0.0) {
            return Err(Error::config("load_delta", "must be finite and >= 0"));
        }
        let min_early_gap = self
            .min_early_gap
            .unwrap_or(DEFAULT_MIN_EARLY_GAP.min(interval));
        if !(MIN_EARLY_GAP..=interval).contains(&min_early_gap) {
            return Err(Error::config(
                "min_early_gap",
                "must be within 10 ms ..= interval",
            ));
        }
        let load_sample_interval = self
            .load_sample_interval
            .unwrap_or((interval / 4).max(MIN_LOAD_SAMPLE));
        if load_sample_interval < MIN_LOAD_SAMPLE {
            return Err(Error::config("load_sample_interval", "must be >= 25 ms"));
        }
        if self.shutdown_timeout.is_zero() {
            return Err(Error::config("shutdown_timeout", "must be > 0"));
        }
        if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&self.lease_ttl) {
            return Err(Error::config("lease_ttl", "must be within 2 s ..= 1 h"));
        }
        if !(1..=MAX_FULL_TOKEN_EVERY).contains(&self.full_token_every) {
            return Err(Error::config(
                "full_token_every",
                "must be within 1 ..= 1000",
            ));
        }
        // etcd counts whole seconds: round up, never below what was asked.
        let lease_ttl = Duration::from_secs(self.lease_ttl.as_secs_f64().ceil() as u64);
        Ok(Settings {
            timing: Timing {
                interval,
                min_early_gap,
                load_delta: self.load_delta,
            },
            ttl,
            load_sample_interval,
            shutdown_timeout: self.shutdown_timeout,
            lease_ttl,
            full_token_every: self.full_token_every,
        })
    }
}

/// Checks that `token` may go on the wire for the rest of its run: every field bound, a
/// non-zero weight, and an encoded size within 4 KiB (which, past the other bounds, only
/// metadata can break) even once `seq`, `epoch`, `sent_at_ms` and `state` take their widest
/// values.
pub(crate) fn check_token(token: &Token) -> Result<(), Error> {
    if token.weight == 0 {
        return Err(Error::config(
            "weight",
            "must be >= 1 (an instance that must not be picked is drained instead)",
        ));
    }
    let mut widest = token.clone();
    widest.seq = u64::MAX;
    widest.epoch = u64::MAX;
    widest.sent_at_ms = u64::MAX;
    widest.state = State::Draining;
    match codec::encode(&widest) {
        Ok(_) => Ok(()),
        Err(EncodeError::Invalid(e)) => Err(ConfigError::from(e).into()),
        Err(EncodeError::Oversized(_)) => Err(Error::config(
            "meta",
            "the encoded token must fit in 4096 bytes",
        )),
        Err(e) => Err(Error::with_source(ErrorKind::Config, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Requested) -> Option<&'static str> {
        r.resolve().err().and_then(|e| e.field())
    }

    #[test]
    fn defaults_follow_the_interval() {
        let s = Requested::default().resolve().unwrap();
        assert_eq!(s.timing.interval, Duration::from_secs(1));
        assert_eq!(
            s.ttl,
            Duration::from_secs(3),
            "ttl defaults to 3 x interval"
        );
        assert_eq!(s.load_sample_interval, Duration::from_millis(250));
        assert_eq!(s.timing.min_early_gap, Duration::from_millis(100));
        let fast = Requested {
            interval: MIN_INTERVAL,
            ..Requested::default()
        };
        let s = fast.resolve().unwrap();
        assert_eq!(s.load_sample_interval, MIN_LOAD_SAMPLE, "sampling floor");
        assert_eq!(
            s.timing.min_early_gap, MIN_INTERVAL,
            "gap capped by interval"
        );
        let slow = Requested {
            interval: MAX_INTERVAL,
            ..Requested::default()
        };
        assert_eq!(slow.resolve().unwrap().ttl_ms(), 3_600_000);
    }

    #[test]
    fn every_bound_names_its_setting() {
        fn ms(n: u64) -> Duration {
            Duration::from_millis(n)
        }
        let with = |f: fn(&mut Requested)| {
            let mut r = Requested::default();
            f(&mut r);
            field_of(r)
        };
        assert_eq!(with(|r| r.interval = Duration::ZERO), Some("interval"));
        assert_eq!(with(|r| r.interval = ms(49)), Some("interval"));
        assert_eq!(
            with(|r| r.interval = MAX_INTERVAL + ms(1)),
            Some("interval")
        );
        assert_eq!(with(|r| r.ttl = Some(ms(1_000))), Some("ttl"));
        assert_eq!(with(|r| r.ttl = Some(ms(99))), Some("ttl"));
        assert_eq!(with(|r| r.ttl = Some(MAX_TTL + ms(1))), Some("ttl"));
        assert_eq!(with(|r| r.load_delta = f32::NAN), Some("load_delta"));
        assert_eq!(with(|r| r.load_delta = -1.0), Some("load_delta"));
        assert_eq!(
            with(|r| r.min_early_gap = Some(ms(5))),
            Some("min_early_gap")
        );
        assert_eq!(
            with(|r| r.min_early_gap = Some(ms(1_001))),
            Some("min_early_gap")
        );
        assert_eq!(
            with(|r| r.load_sample_interval = Some(ms(10))),
            Some("load_sample_interval")
        );
        assert_eq!(
            with(|r| r.shutdown_timeout = Duration::ZERO),
            Some("shutdown_timeout")
        );
        assert_eq!(with(|r| r.lease_ttl = ms(1_999)), Some("lease_ttl"));
        assert_eq!(
            with(|r| r.lease_ttl = MAX_LEASE_TTL + ms(1)),
            Some("lease_ttl")
        );
    }

    #[test]
    fn lease_ttls_round_up_to_whole_seconds() {
        let r = Requested {
            lease_ttl: Duration::from_millis(2_500),
            ..Requested::default()
        };
        assert_eq!(r.resolve().unwrap().lease_ttl, Duration::from_secs(3));
        assert_eq!(
            Requested::default().resolve().unwrap().lease_ttl,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn token_checks_name_the_field() {
        let ok = Token::new("svc", "i-1", "h:1");
        assert!(check_token(&ok).is_ok());
        let field = |f: fn(&mut Token)| {
            let mut t = ok.clone();
            f(&mut t);
            check_token(&t).unwrap_err().field()
        };
        assert_eq!(field(|t| t.service = "a.b".into()), Some("service"));
        assert_eq!(field(|t| t.instance = "a b".into()), Some("instance"));
        assert_eq!(field(|t| t.addr = "nohost".into()), Some("addr"));
        assert_eq!(field(|t| t.load = f32::NAN), Some("load"));
        assert_eq!(field(|t| t.weight = 0), Some("weight"));
        assert_eq!(field(|t| t.zone = Some("eu 1".into())), Some("zone"));
        assert_eq!(
            field(|t| t.meta = (0..33).map(|i| (format!("k{i}"), String::new())).collect()),
            Some("meta")
        );
        assert_eq!(
            field(|t| t.meta = (0..32)
                .map(|i| (format!("k{i}"), "v".repeat(256)))
                .collect()),
            Some("meta"),
            "32 maximal entries overflow the 4 KiB token"
        );
    }

    #[test]
    fn the_size_check_leaves_room_for_the_widest_stamps() {
        // Grow the metadata until the token, as first built (seq 1, epoch 0), is as large as
        // the wire allows: stamped with a real seq and epoch it would no longer fit.
        let mut token = Token::new("svc", "i-1", "h:1");
        token.meta = (0..15)
            .map(|i| (format!("k{i:02}"), "v".repeat(256)))
            .collect();
        let mut largest = None;
        for len in 0..=256 {
            token.meta.insert("last".into(), "v".repeat(len));
            if codec::encode(&token).is_ok() {
                largest = Some(len);
            }
        }
        let len = largest.expect("some size fits");
        token.meta.insert("last".into(), "v".repeat(len));
        assert!(
            check_token(&token).is_err(),
            "a token that fits only with a small seq must be refused up front"
        );
    }
}
