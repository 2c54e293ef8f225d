//! What one scale case runs: how many host processes, how many announcers each, how many
//! services they spread over, the broadcast interval, and whether a host's announcers share
//! one etcd lease ([`Leases::Session`]) or hold one each ([`Leases::PerInstance`]).
//!
//! Names follow [`crate::fleet`]: instance `g` of the whole fleet (host `g / per_host`) belongs
//! to service `g % services` and is instance `g / services` of it, so every service gets the
//! same number of instances and ids look like `service-07-0042-8c1f`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fleet;

/// How the announcers of one host hold their etcd registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Leases {
    /// One `Session` per host: one lease, one keep-alive timer and one watch stream for all
    /// its announcers.
    Session,
    /// One lease per announcer (`.etcd_client(shared_client)`): each keeps its own lease
    /// alive and watches its key on its own stream.
    PerInstance,
}

impl Leases {
    /// The name used in case specs and tables: `session` or `instance`.
    pub fn name(self) -> &'static str {
        match self {
            Leases::Session => "session",
            Leases::PerInstance => "instance",
        }
    }

    /// Parses [`Leases::name`].
    pub fn parse(s: &str) -> Option<Leases> {
        match s {
            "session" => Some(Leases::Session),
            "instance" | "per-instance" => Some(Leases::PerInstance),
            _ => None,
        }
    }
}

/// One case: the fleet's shape and how it announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// Host processes.
    pub hosts: usize,
    /// Announcers per host.
    pub per_host: usize,
    /// Services the instances spread over (evenly).
    pub services: usize,
    /// Broadcast interval of every announcer.
    pub interval: Duration,
    /// One lease per host, or one per instance.
    pub leases: Leases,
    /// Announcers a host starts (and stops) at once.
    pub concurrency: usize,
    /// TTL of the etcd leases: the session's, or each announcer's (kept alive every third).
    pub lease_ttl: Duration,
}

/// Services unless a case says otherwise, as in the other benchmarks.
pub const DEFAULT_SERVICES: usize = 100;
/// Starts in flight per host unless a case says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 100;
/// The lease TTL of a session, and the announcers' default for their own leases.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

impl Case {
    /// `hosts` x `per_host` on a session per host, 100 services, 1 s interval.
    pub fn new(hosts: usize, per_host: usize) -> Case {
        Case {
            hosts,
            per_host,
            services: DEFAULT_SERVICES,
            interval: Duration::from_secs(1),
            leases: Leases::Session,
            concurrency: DEFAULT_CONCURRENCY,
            lease_ttl: LEASE_TTL,
        }
    }

    /// Total instances.
    pub fn instances(&self) -> usize {
        self.hosts * self.per_host
    }

    /// Parses `HOSTSxPER_HOST[:session|:instance][@INTERVAL][/SERVICES][~LEASE_TTL]`, e.g.
    /// `10x5000`, `10x1000:instance`, `10x5000@5s`, `2x20/4~2s`. Durations take `ms` or `s`.
    pub fn parse(spec: &str) -> Option<Case> {
        let (spec, lease_ttl) = match spec.split_once('~') {
            Some((r, t)) => (r, Some(humantime::parse_duration(t).ok()?)),
            None => (spec, None),
        };
        let (rest, services) = match spec.split_once('/') {
            Some((r, s)) => (r, Some(s.parse().ok()?)),
            None => (spec, None),
        };
        let (rest, interval) = match rest.split_once('@') {
            Some((r, i)) => (r, Some(humantime::parse_duration(i).ok()?)),
            None => (rest, None),
        };
        let (shape, leases) = match rest.split_once(':') {
            Some((s, l)) => (s, Some(Leases::parse(l)?)),
            None => (rest, None),
        };
        let (hosts, per_host) = shape.split_once('x')?;
        let mut case = Case::new(hosts.parse().ok()?, per_host.parse().ok()?);
        if let Some(s) = services {
            case.services = s;
        }
        if let Some(i) = interval {
            case.interval = i;
        }
        if let Some(l) = leases {
            case.leases = l;
        }
        if let Some(t) = lease_ttl {
            case.lease_ttl = t;
        }
        (case.hosts > 0 && case.per_host > 0 && case.services > 0).then_some(case)
    }

    /// The spec [`Case::parse`] reads back.
    pub fn spec(&self) -> String {
        format!(
            "{}x{}:{}@{}ms/{}~{}ms",
            self.hosts,
            self.per_host,
            self.leases.name(),
            self.interval.as_millis(),
            self.services,
            self.lease_ttl.as_millis()
        )
    }

    /// Service index, service name and instance id of fleet instance `g`.
    pub fn instance(&self, g: usize) -> (usize, String, String) {
        let s = g % self.services;
        let service = fleet::service_name(s);
        let id = fleet::instance_id(&service, g / self.services);
        (s, service, id)
    }

    /// Every instance id of service `s`, sorted.
    pub fn expected_ids(&self, s: usize) -> Vec<String> {
        let mut ids: Vec<String> = (s..self.instances())
            .step_by(self.services)
            .map(|g| self.instance(g).2)
            .collect();
        ids.sort();
        ids
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} x {} ({}), lease per {} ({} s), interval {} ms",
            self.hosts,
            self.per_host,
            self.instances(),
            match self.leases {
                Leases::Session => "host",
                Leases::PerInstance => "instance",
            },
            self.lease_ttl.as_secs(),
            self.interval.as_millis()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip() {
        let c = Case::parse("10x5000:instance@5s/50~10s").expect("valid spec");
        assert_eq!(c.lease_ttl, Duration::from_secs(10));
        assert_eq!((c.hosts, c.per_host, c.services), (10, 5000, 50));
        assert_eq!(c.leases, Leases::PerInstance);
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(Case::parse(&c.spec()), Some(c), "spec() reads back");
        let d = Case::parse("2x20").unwrap();
        assert_eq!((d.leases, d.services), (Leases::Session, DEFAULT_SERVICES));
        assert_eq!(d.lease_ttl, LEASE_TTL);
        assert_eq!(Case::parse("0x20"), None, "an empty fleet is refused");
        assert_eq!(Case::parse("2x20:lots"), None);
    }

    #[test]
    fn instances_are_unique_and_spread_evenly() {
        let c = Case::parse("3x7/4").unwrap();
        let mut all: Vec<String> = (0..c.instances()).map(|g| c.instance(g).2).collect();
        let per_service: Vec<usize> = (0..4).map(|s| c.expected_ids(s).len()).collect();
        assert_eq!(per_service.iter().sum::<usize>(), 21);
        assert!(per_service.iter().all(|n| (5..=6).contains(n)));
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 21, "ids are unique");
    }
}
