//! How a soak runs ([`Settings`]), and the one service it announces ([`SERVICE`]).

use std::path::PathBuf;
use std::time::Duration;

use herald_subscriber::RemovalCause;

/// The one service every announcer of the soak announces.
pub const SERVICE: &str = "churn";

/// How a soak runs. Its fields are the options of `herald-bench churn`, with the soak's
/// defaults ([`Settings::new`]).
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// How long announcers churn (the run then settles and winds down, a few seconds more).
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Seed of the generator that picks actions and targets (default: a random one, printed).
    #[arg(long, default_value_t = fastrand::u64(..1_000_000), hide_default_value = true)]
    pub seed: u64,
    /// Announcers' broadcast interval.
    #[arg(long, default_value = "200ms", value_parser = crate::nonzero_duration)]
    pub interval: Duration,
    /// Announcers' token TTL.
    #[arg(long, default_value = "1s", value_parser = crate::nonzero_duration)]
    pub ttl: Duration,
    /// Announcers' etcd lease TTL: a crashed instance's key goes when it runs out, during
    /// the run, so the subscriber sees those deletions too.
    #[arg(long, default_value = "10s", value_parser = crate::nonzero_duration)]
    pub lease_ttl: Duration,
    /// Fewest live (or joining) announcers: below it the next action is a join.
    #[arg(long, default_value_t = 5)]
    pub min_live: usize,
    /// Most live (or joining) announcers: at it the next action is a crash or a leave.
    #[arg(long, default_value_t = 25, value_parser = crate::at_least_one)]
    pub max_live: usize,
    /// Mean gap between actions (each gap is uniform within 0.5..1.5 of it).
    #[arg(long, default_value = "250ms", value_parser = crate::nonzero_duration)]
    pub mean_gap: Duration,
    /// How often the listing is checked against the truth.
    #[arg(long, default_value = "1s", value_parser = crate::nonzero_duration)]
    pub check_every: Duration,
    /// How long past its TTL a dead instance may stay listed before it counts as a zombie:
    /// the subscriber's sweep, the last token's flight, and this harness's own scheduling.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub sweep_margin: Duration,
    /// How much earlier than its TTL after the last token (as this harness saw the token) an
    /// expiry may come before it counts as early: the subscriber may receive a token before
    /// this harness's observer does.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub expiry_slack: Duration,
    /// A live instance absent from the listing longer than this after its `start()` returned
    /// counts as missing.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub join_margin: Duration,
    /// The subscriber's `event_capacity`. Its event ring holds that many events, each with
    /// its instance, until they are overwritten: RSS grows until the ring is full.
    #[arg(long, default_value_t = 4096, value_parser = crate::at_least_one)]
    pub event_capacity: usize,
    /// With a grace, nats-server delivers disconnect advisories and the subscriber reads
    /// them with this grace: a crash (its connection closed by the dropped handle) is then
    /// expected to be removed as `disconnected` within the grace, not as `expired` after its
    /// TTL (`--advisories` sets the subscriber's default grace).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub disconnect_grace: Option<Duration>,
    /// The `herald-bench` program, which runs the announcers with its `churn-fleet` subcommand.
    #[arg(skip)]
    pub fleet_program: PathBuf,
}

impl Settings {
    /// Defaults for a run of `duration` with `seed`, the fleet run by `fleet_program`.
    pub fn new(fleet_program: impl Into<PathBuf>, duration: Duration, seed: u64) -> Settings {
        Settings {
            duration,
            seed,
            fleet_program: fleet_program.into(),
            ..crate::defaults()
        }
    }

    /// RSS is first sampled this long after the start (connections, runtime and caches warm
    /// up): 5 s, or a quarter of a shorter run.
    pub fn rss_warmup(&self) -> Duration {
        Duration::from_secs(5).min(self.duration / 4)
    }

    /// How a crash must be removed: `disconnected` with advisories, `expired` without.
    pub fn crash_cause(&self) -> RemovalCause {
        if self.disconnect_grace.is_some() {
            RemovalCause::Disconnected
        } else {
            RemovalCause::Expired
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_soak() {
        let s = Settings::new("x", Duration::from_secs(30), 7);
        assert_eq!((s.duration, s.seed), (Duration::from_secs(30), 7));
        assert_eq!(s.interval, Duration::from_millis(200));
        assert_eq!(s.ttl, Duration::from_secs(1));
        assert_eq!((s.min_live, s.max_live), (5, 25));
        assert_eq!(
            s.rss_warmup(),
            Duration::from_millis(7_500).min(Duration::from_secs(5))
        );
        assert_eq!(s.disconnect_grace, None);
        assert_eq!(s.crash_cause(), RemovalCause::Expired);
    }
}
