//! What a run measures ([`Settings`]) and how each system is tuned to the common
//! crash-detection target ([`Timing`]).

use std::time::Duration;

/// The systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Kind {
    /// Herald, each announcer with its own etcd lease (the default).
    Herald,
    /// Herald, the announcers of the process on one shared etcd lease (`Session`).
    HeraldShared,
    /// Leases as heartbeats: grant, put under the lease, keep it alive; consumers watch.
    #[value(name = "etcd")]
    EtcdOnly,
    /// NATS Services-API style: consumers publish a PING and collect the replies.
    Polling,
}

impl Kind {
    /// Every system, in the order of the table.
    pub const ALL: [Kind; 4] = [
        Kind::Herald,
        Kind::HeraldShared,
        Kind::EtcdOnly,
        Kind::Polling,
    ];

    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Herald => "herald (lease per instance)",
            Kind::HeraldShared => "herald (one lease per process)",
            Kind::EtcdOnly => "etcd-only (lease heartbeat)",
            Kind::Polling => "nats polling ($SRV.PING)",
        }
    }

    /// The name on the command line: `herald`, `herald-shared`, `etcd`, `polling`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Herald => "herald",
            Kind::HeraldShared => "herald-shared",
            Kind::EtcdOnly => "etcd",
            Kind::Polling => "polling",
        }
    }
}

/// One run: which systems, at which sizes, with how many samples. Its fields are the
/// options of `herald-bench peers`, with the bench's defaults ([`Settings::bench`]).
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Instances kept up throughout each run, one run per size.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000", value_parser = crate::at_least_one)]
    pub sizes: Vec<usize>,
    /// Systems, in this order for each size.
    #[arg(
        long = "only",
        value_delimiter = ',',
        default_value = "herald,herald-shared,etcd,polling"
    )]
    pub kinds: Vec<Kind>,
    /// Joins measured per run; as many leaves and as many crashes follow, taken from the
    /// joined instances, so that the `size` instances stay up.
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// The crash-detection target every system is tuned to (see `Timing::for_target`).
    #[arg(long, default_value = "2s", value_parser = crate::nonzero_duration)]
    pub target: Duration,
    /// The steady window over which etcd, NATS and CPU load are read.
    #[arg(long, default_value = "10s", value_parser = crate::nonzero_duration)]
    pub steady: Duration,
    /// Pause after every instance is listed and before the steady window, so that the
    /// start-up's writes and first keep-alives are behind.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// The joins (then the leaves, then the crashes) start at uniformly random offsets within
    /// this span, so that they fall at every phase of the broadcast and poll cycles.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    pub spread: Duration,
    /// Instances started at once while the `size` instances come up.
    #[arg(long, default_value_t = 64, value_parser = crate::at_least_one)]
    pub start_concurrency: usize,
    /// How long to wait for all `size` instances to be listed before measuring anyway.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub listing_timeout: Duration,
    /// Instances per simulated process, each process with its own NATS and etcd
    /// connections (and its own session for Herald's shared lease); none: every instance
    /// in one process, on one NATS and one etcd connection.
    #[arg(long, value_parser = crate::at_least_one)]
    pub per_process: Option<usize>,
    /// Herald's etcd lease TTL (the authority only; Herald's default 30 s).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub herald_lease: Duration,
    /// Seed of the offsets.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
}

impl Settings {
    /// The bench's defaults: 1,000 and 5,000 instances, 100 samples of each kind, a 2 s
    /// target, a 10 s steady window.
    pub fn bench() -> Settings {
        crate::defaults()
    }

    /// How long a phase may wait for the consumer to see its last change, after the last
    /// action: the slowest system's worst case (a crash seen at lease expiry, after etcd's
    /// 500 ms expiry check) with room for a loaded machine.
    pub fn phase_timeout(&self) -> Duration {
        self.target * 3 + Duration::from_secs(5)
    }

    /// Each system's knobs for this run.
    pub fn timing(&self) -> Timing {
        Timing {
            herald_lease: self.herald_lease,
            ..Timing::for_target(self.target)
        }
    }
}

/// Each system's knobs for one crash-detection target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The target the rest is derived from.
    pub target: Duration,
    /// Herald's broadcast interval: a third of the TTL (Herald's default ratio).
    pub herald_interval: Duration,
    /// Herald's token TTL: the target.
    pub herald_ttl: Duration,
    /// Herald's etcd lease (the authority, not the liveness signal): Herald's default.
    pub herald_lease: Duration,
    /// The lease TTL etcd-only asks for: the target in whole seconds. etcd may grant more
    /// (its minimum is 1.5 election timeouts, rounded up to whole seconds); the instances
    /// keep alive every third of what was granted.
    pub etcd_lease: Duration,
    /// How long a poller collects replies after each PING.
    pub poll_window: Duration,
    /// Time between PINGs: target - window, so that a crash is seen within the target.
    pub poll_period: Duration,
}

/// Herald's default lease TTL (`AnnouncerBuilder::lease_ttl`).
pub const HERALD_DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The longest reply window of a poll.
const MAX_POLL_WINDOW: Duration = Duration::from_millis(250);

impl Timing {
    /// Tunes every system so that a crashed instance is dropped within about `target`:
    /// Herald's TTL and etcd-only's lease TTL are `target`, each renewed every third of it;
    /// a poll's period plus its reply window is `target`.
    pub fn for_target(target: Duration) -> Timing {
        let poll_window = MAX_POLL_WINDOW.min(target / 4);
        Timing {
            target,
            herald_interval: target / 3,
            herald_ttl: target,
            herald_lease: HERALD_DEFAULT_LEASE,
            etcd_lease: Duration::from_secs(target.as_secs_f64().ceil().max(1.0) as u64),
            poll_window,
            poll_period: target - poll_window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_second_target() {
        let t = Timing::for_target(Duration::from_secs(2));
        assert_eq!(t.herald_ttl, Duration::from_secs(2));
        assert_eq!(t.etcd_lease, Duration::from_secs(2));
        assert_eq!(
            t.poll_period + t.poll_window,
            Duration::from_secs(2),
            "a poll sees a crash within the target"
        );
        assert!(t.herald_interval * 3 <= t.herald_ttl);
    }

    #[test]
    fn the_defaults_are_the_bench() {
        let s = Settings::bench();
        assert_eq!(s.sizes, [1_000, 5_000]);
        assert_eq!(s.kinds, Kind::ALL);
        assert_eq!(s.target, Duration::from_secs(2));
        assert_eq!(s.herald_lease, HERALD_DEFAULT_LEASE);
        assert_eq!(s.per_process, None);
        for k in Kind::ALL {
            assert_eq!(clap::ValueEnum::from_str(k.name(), false), Ok(k));
        }
    }
}
