//! What a kill comparison runs: the systems ([`Detector`]), each at a crash-detection target
//! ([`Cell`]), and the settings every cell shares ([`KillSettings`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::peers::settings::Timing;

/// How a consumer finds a dead process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    /// Herald's subscriber following disconnect advisories.
    HeraldAdvisories,
    /// Herald's subscriber without advisories: the token TTL alone.
    Herald,
    /// The NATS PING poller.
    Polling,
}

impl Detector {
    /// Every system.
    pub const ALL: [Detector; 3] = [
        Detector::HeraldAdvisories,
        Detector::Herald,
        Detector::Polling,
    ];

    /// The name on the command line: `herald-advisories`, `herald`, `polling`.
    pub fn name(self) -> &'static str {
        match self {
            Detector::HeraldAdvisories => "herald-advisories",
            Detector::Herald => "herald",
            Detector::Polling => "polling",
        }
    }

    /// The system named `name` (see [`Detector::name`]).
    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The cause its consumer gives for a crash.
    pub fn crash_cause(self) -> &'static str {
        match self {
            Detector::HeraldAdvisories => "disconnected",
            Detector::Herald => "expired",
            Detector::Polling => "missed poll",
        }
    }
}

/// One system at one crash-detection target, written `system@target` (`herald@3s`,
/// `polling@500ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// The system.
    pub detector: Detector,
    /// The target its knobs are derived from ([`Timing::for_target`]).
    pub target: Duration,
}

impl Cell {
    /// Reads `system@target`.
    pub fn parse(spec: &str) -> Option<Cell> {
        let (name, target) = spec.split_once('@')?;
        Some(Cell {
            detector: Detector::from_name(name)?,
            target: humantime::parse_duration(target)
                .ok()
                .filter(|t| !t.is_zero())?,
        })
    }

    /// `system@target`, as [`Cell::parse`] reads it.
    pub fn spec(&self) -> String {
        format!("{}@{}ms", self.detector.name(), self.target.as_millis())
    }

    /// The knobs of this cell, Herald's lease at `herald_lease`.
    pub fn timing(&self, herald_lease: Duration) -> Timing {
        Timing {
            herald_lease,
            ..Timing::for_target(self.target)
        }
    }

    /// The row label, with the knobs that decide a crash's detection.
    pub fn label(&self, grace: Duration) -> String {
        let t = Timing::for_target(self.target);
        let s = |d: Duration| format!("{} s", d.as_secs_f64());
        match self.detector {
            Detector::HeraldAdvisories => format!(
                "herald + advisories (grace {} ms; TTL {})",
                grace.as_millis(),
                s(t.herald_ttl)
            ),
            Detector::Herald => format!(
                "herald, TTL alone (TTL {}, interval {})",
                s(t.herald_ttl),
                s(t.herald_interval)
            ),
            Detector::Polling => format!(
                "nats polling (every {}, window {} ms)",
                s(t.poll_period),
                t.poll_window.as_millis()
            ),
        }
    }

    /// The latest its mechanism may see a crash: the grace after the advisory, the TTL after
    /// the last token (plus the sweep), or the end of the next poll window.
    pub fn bound(&self, grace: Duration) -> Duration {
        let t = Timing::for_target(self.target);
        match self.detector {
            Detector::HeraldAdvisories => grace,
            Detector::Herald => t.herald_ttl,
            Detector::Polling => t.poll_period + t.poll_window,
        }
    }
}

/// The cells the bench runs unless told otherwise: advisories at Herald's defaults (interval
/// 1 s, TTL 3 s), the TTL alone at the defaults and at the peer bench's 2 s, and polling at
/// the peer bench's 2 s and at faster settings.
pub const DEFAULT_CELLS: &str =
    "herald-advisories@3s,herald@3s,herald@2s,polling@2s,polling@1s,polling@500ms";

/// What every cell of a kill comparison shares. Its fields are the options of
/// `herald-bench peers-kill`, with the bench's defaults ([`KillSettings::bench`]).
#[derive(Debug, Clone, clap::Args)]
pub struct KillSettings {
    /// Instances kept up throughout each cell (not killed), in hosts of `--per-process`.
    #[arg(long, default_value_t = 1_000)]
    pub size: usize,
    /// The cells, in this order: `SYSTEM@TARGET`, SYSTEM one of herald-advisories, herald,
    /// polling.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_CELLS, value_parser = cell)]
    pub cells: Vec<Cell>,
    /// Hosts killed per cell, each holding one instance of its own.
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// Instances per host of the `size` kept up.
    #[arg(long, default_value_t = 10, value_parser = crate::at_least_one)]
    pub per_process: usize,
    /// Consumers, each on its own connections, each timed.
    #[arg(long, default_value_t = 2, value_parser = crate::at_least_one)]
    pub consumers: usize,
    /// The advisory grace of the `herald-advisories` cells (the subscriber's default).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Herald's etcd lease TTL (the authority only; Herald's default).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub herald_lease: Duration,
    /// Pause after every instance is listed and before the steady window.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// The window over which NATS, etcd and CPU load are read.
    #[arg(long, default_value = "10s", value_parser = crate::nonzero_duration)]
    pub steady: Duration,
    /// The kills happen at uniformly random offsets within this span.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    pub spread: Duration,
    /// How long hosts may take to start and every consumer to list every instance.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub listing_timeout: Duration,
    /// Seed of the kill order and offsets.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// The `herald-bench` program, which runs a host with its `kill-host` subcommand.
    #[arg(skip)]
    pub host_program: PathBuf,
}

fn cell(spec: &str) -> Result<Cell, String> {
    Cell::parse(spec).ok_or_else(|| {
        "expected herald-advisories|herald|polling@TARGET, e.g. herald@3s".to_owned()
    })
}

impl KillSettings {
    /// The bench's defaults, hosts run by `host_program`: 1,000 instances in hosts of 10, 100
    /// kills, 2 consumers, the subscriber's default grace, [`DEFAULT_CELLS`].
    pub fn bench(host_program: impl Into<PathBuf>) -> KillSettings {
        KillSettings {
            host_program: host_program.into(),
            ..crate::defaults()
        }
    }

    /// How long the kill phase waits, after the last kill, for every consumer to see every
    /// crash: the cell's mechanism with room for a loaded machine.
    pub fn phase_timeout(&self, cell: &Cell) -> Duration {
        cell.bound(self.grace) * 2 + Duration::from_secs(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_read_back() {
        let c = Cell::parse("polling@500ms").unwrap();
        assert_eq!(c.detector, Detector::Polling);
        assert_eq!(c.target, Duration::from_millis(500));
        assert_eq!(Cell::parse(&c.spec()), Some(c));
        assert_eq!(
            Cell::parse("herald@3s").map(|c| c.target),
            Some(Duration::from_secs(3))
        );
        assert!(Cell::parse("etcd@2s").is_none(), "not a kill system");
        assert!(
            Cell::parse("herald@0s").is_none(),
            "a zero target is refused"
        );
        let s = KillSettings::bench("x");
        assert_eq!(s.cells.len(), 6);
        assert_eq!(s.grace, herald_subscriber::DEFAULT_DISCONNECT_GRACE);
        assert_eq!(s.herald_lease, crate::peers::settings::HERALD_DEFAULT_LEASE);
    }

    #[test]
    fn bounds_follow_each_mechanism() {
        let grace = Duration::from_millis(200);
        let at = |s: &str| Cell::parse(s).unwrap().bound(grace);
        assert_eq!(at("herald-advisories@3s"), grace);
        assert_eq!(at("herald@3s"), Duration::from_secs(3));
        assert_eq!(at("polling@2s"), Duration::from_secs(2));
    }
}
