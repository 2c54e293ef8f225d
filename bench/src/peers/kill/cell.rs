//! What a kill comparison runs: the systems ([`Detector`]), each at a crash-detection target
//! ([`Cell`]), and the settings every cell shares ([`KillSettings`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::peers::settings::{HERALD_DEFAULT_LEASE, Timing};

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

/// What every cell of a kill comparison shares.
#[derive(Debug, Clone)]
pub struct KillSettings {
    /// Instances kept up throughout each cell (not killed).
    pub size: usize,
    /// The cells, in this order.
    pub cells: Vec<Cell>,
    /// Hosts killed per cell, each holding one instance of its own.
    pub samples: usize,
    /// Instances per host of the `size` kept up.
    pub per_process: usize,
    /// Consumers, each on its own connections, each timed.
    pub consumers: usize,
    /// The advisory grace of the `herald-advisories` cells.
    pub grace: Duration,
    /// Herald's etcd lease TTL (the authority only).
    pub herald_lease: Duration,
    /// Pause after every instance is listed and before the steady window.
    pub settle: Duration,
    /// The window over which NATS, etcd and CPU load are read.
    pub steady: Duration,
    /// The kills happen at uniformly random offsets within this span.
    pub spread: Duration,
    /// How long hosts may take to start and every consumer to list every instance.
    pub listing_timeout: Duration,
    /// Seed of the kill order and offsets.
    pub seed: u64,
    /// The `herald-bench` program, which runs a host with its `kill-host` subcommand.
    pub host_program: PathBuf,
}

impl KillSettings {
    /// The bench's defaults: 1,000 instances in hosts of 10, 100 kills, 2 consumers, the
    /// subscriber's default grace, [`DEFAULT_CELLS`].
    pub fn bench(host_program: impl Into<PathBuf>) -> KillSettings {
        KillSettings {
            size: 1_000,
            cells: DEFAULT_CELLS
                .split(',')
                .map(|c| Cell::parse(c).expect("default cells parse"))
                .collect(),
            samples: 100,
            per_process: 10,
            consumers: 2,
            grace: herald_subscriber::DEFAULT_DISCONNECT_GRACE,
            herald_lease: HERALD_DEFAULT_LEASE,
            settle: Duration::from_secs(3),
            steady: Duration::from_secs(10),
            spread: Duration::from_secs(4),
            listing_timeout: Duration::from_secs(120),
            seed: 2026,
            host_program: host_program.into(),
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
        assert_eq!(KillSettings::bench("x").cells.len(), 6);
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
