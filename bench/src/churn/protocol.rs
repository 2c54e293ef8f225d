//! The line protocol between the harness and the fleet process: an [`Order`] per line on
//! the fleet's stdin, an [`Answer`] per line on its stdout, and the fleet's command line
//! ([`FleetArgs`]). Each type prints with `Display` and reads back with `parse`.

use std::fmt;
use std::time::Duration;

/// What the harness asks the fleet, one per line.
#[derive(Debug, Clone, PartialEq)]
pub enum Order {
    /// Start an announcer of this id (`start()`).
    Join(String),
    /// Drop its handle: no goodbye, no revoke.
    Crash(String),
    /// `shutdown()`: a goodbye, then the lease revoked.
    Leave(String),
    /// `set_load`.
    Load(String, f32),
}

/// What the fleet answers, one per order, once the order is carried out.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `start()` returned with this epoch.
    Joined(String, u64),
    /// `start()` failed.
    Failed(String, String),
    /// The handle is dropped and its broadcast task has ended: nothing more goes out.
    Crashed(String),
    /// `shutdown()` returned, with its error if any.
    Left(String, Option<String>),
    /// The load is set.
    Loaded(String),
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Order::Join(id) => write!(f, "join {id}"),
            Order::Crash(id) => write!(f, "crash {id}"),
            Order::Leave(id) => write!(f, "leave {id}"),
            Order::Load(id, load) => write!(f, "load {id} {load}"),
        }
    }
}

impl Order {
    /// Parses a line written by `Display`.
    pub fn parse(line: &str) -> Option<Order> {
        let mut words = line.split_whitespace();
        let (verb, id) = (words.next()?, words.next()?.to_owned());
        Some(match verb {
            "join" => Order::Join(id),
            "crash" => Order::Crash(id),
            "leave" => Order::Leave(id),
            "load" => Order::Load(id, words.next()?.parse().ok()?),
            _ => return None,
        })
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Errors go last on the line, spaces and all; newlines would break the framing.
        let line = |s: &str| s.replace('\n', " ");
        match self {
            Answer::Joined(id, epoch) => write!(f, "joined {id} {epoch}"),
            Answer::Failed(id, e) => write!(f, "failed {id} {}", line(e)),
            Answer::Crashed(id) => write!(f, "crashed {id}"),
            Answer::Left(id, None) => write!(f, "left {id}"),
            Answer::Left(id, Some(e)) => write!(f, "left {id} {}", line(e)),
            Answer::Loaded(id) => write!(f, "loaded {id}"),
        }
    }
}

impl Answer {
    /// Parses a line written by `Display`.
    pub fn parse(line: &str) -> Option<Answer> {
        let mut parts = line.splitn(3, ' ');
        let (verb, id) = (parts.next()?, parts.next()?.to_owned());
        let rest = parts.next().map(str::to_owned);
        Some(match verb {
            "joined" => Answer::Joined(id, rest?.parse().ok()?),
            "failed" => Answer::Failed(id, rest.unwrap_or_default()),
            "crashed" => Answer::Crashed(id),
            "left" => Answer::Left(id, rest),
            "loaded" => Answer::Loaded(id),
            _ => return None,
        })
    }
}

/// Where the fleet's announcers connect, and how they announce: the fleet's command line.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetArgs {
    /// NATS URL.
    pub nats: String,
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// Subject and key prefix.
    pub prefix: String,
    /// Broadcast interval.
    pub interval: Duration,
    /// Token TTL.
    pub ttl: Duration,
    /// Lease TTL.
    pub lease_ttl: Duration,
}

impl FleetArgs {
    /// The arguments after `churn-fleet`.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            self.nats.clone(),
            self.etcd.join(","),
            self.prefix.clone(),
            self.interval.as_millis().to_string(),
            self.ttl.as_millis().to_string(),
            self.lease_ttl.as_millis().to_string(),
        ]
    }

    /// Reads what [`FleetArgs::to_args`] wrote.
    pub fn from_args(args: &[String]) -> Option<FleetArgs> {
        let millis = |s: &String| s.parse().ok().map(Duration::from_millis);
        match args {
            [nats, etcd, prefix, interval, ttl, lease] => Some(FleetArgs {
                nats: nats.clone(),
                etcd: etcd.split(',').map(str::to_owned).collect(),
                prefix: prefix.clone(),
                interval: millis(interval)?,
                ttl: millis(ttl)?,
                lease_ttl: millis(lease)?,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_answers_read_back() {
        for o in [
            Order::Join("i000001".into()),
            Order::Crash("a".into()),
            Order::Leave("b".into()),
            Order::Load("c".into(), 0.25),
        ] {
            assert_eq!(Order::parse(&o.to_string()), Some(o));
        }
        for a in [
            Answer::Joined("i1".into(), 42),
            Answer::Failed("i1".into(), "cannot connect: timed out".into()),
            Answer::Crashed("i2".into()),
            Answer::Left("i3".into(), None),
            Answer::Left("i3".into(), Some("timed out".into())),
            Answer::Loaded("i4".into()),
        ] {
            assert_eq!(Answer::parse(&a.to_string()), Some(a));
        }
        let args = FleetArgs {
            nats: "nats://127.0.0.1:1".into(),
            etcd: vec!["http://127.0.0.1:2".into(), "http://127.0.0.1:3".into()],
            prefix: "p".into(),
            interval: Duration::from_millis(200),
            ttl: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(10),
        };
        assert_eq!(FleetArgs::from_args(&args.to_args()), Some(args));
    }
}
