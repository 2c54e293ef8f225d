//! How a soak runs ([`Settings`]), and the one service it announces ([`SERVICE`]).

use std::path::PathBuf;
use std::time::Duration;

use herald_subscriber::RemovalCause;

/// The one service every announcer of the soak announces.
pub const SERVICE: &str = "churn";

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long announcers churn (the run then settles and winds down, a few seconds more).
    pub duration: Duration,
    /// Seed of the generator that picks actions and targets.
    pub seed: u64,
    /// Announcers' broadcast interval.
    pub interval: Duration,
    /// Announcers' token TTL.
    pub ttl: Duration,
    /// Announcers' etcd lease TTL: a crashed instance's key goes when it runs out, during
    /// the run, so the subscriber sees those deletions too.
    pub lease_ttl: Duration,
    /// Fewest live (or joining) announcers: below it the next action is a join.
    pub min_live: usize,
    /// Most live (or joining) announcers: at it the next action is a crash or a leave.
    pub max_live: usize,
    /// Mean gap between actions (each gap is uniform within 0.5..1.5 of it).
    pub mean_gap: Duration,
    /// How often the listing is checked against the truth.
    pub check_every: Duration,
    /// How long past its TTL a dead instance may stay listed before it counts as a zombie:
    /// the subscriber's sweep, the last token's flight, and this harness's own scheduling.
    pub sweep_margin: Duration,
    /// How much earlier than its TTL after the last token (as this harness saw the token) an
    /// expiry may come before it counts as early: the subscriber may receive a token before
    /// this harness's observer does.
    pub expiry_slack: Duration,
    /// A live instance absent from the listing longer than this after its `start()` returned
    /// counts as missing.
    pub join_margin: Duration,
    /// RSS is first sampled this long after the start (connections, runtime and caches warm up).
    pub rss_warmup: Duration,
    /// The subscriber's `event_capacity`. Its event ring holds that many events, each with
    /// its instance, until they are overwritten: RSS grows until the ring is full.
    pub event_capacity: usize,
    /// The `herald-bench` program, which runs the announcers with its `churn-fleet` subcommand.
    pub fleet_program: PathBuf,
    /// With `Some(grace)`, nats-server delivers disconnect advisories and the subscriber
    /// reads them with this grace: a crash (its connection closed by the dropped handle) is
    /// then expected to be removed as `disconnected` within the grace, not as `expired`
    /// after its TTL.
    pub disconnect_grace: Option<Duration>,
}

impl Settings {
    /// Defaults for a run of `duration` with `seed`, the fleet run by `fleet_program`.
    pub fn new(fleet_program: impl Into<PathBuf>, duration: Duration, seed: u64) -> Settings {
        Settings {
            duration,
            seed,
            interval: Duration::from_millis(200),
            ttl: Duration::from_millis(1_000),
            lease_ttl: Duration::from_secs(10),
            min_live: 5,
            max_live: 25,
            mean_gap: Duration::from_millis(250),
            check_every: Duration::from_secs(1),
            sweep_margin: Duration::from_millis(500),
            expiry_slack: Duration::from_millis(250),
            join_margin: Duration::from_secs(1),
            rss_warmup: Duration::from_secs(5).min(duration / 4),
            event_capacity: 4096,
            fleet_program: fleet_program.into(),
            disconnect_grace: None,
        }
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
