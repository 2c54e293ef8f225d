//! The command line of a host process (`herald-bench scale-host`), written by the parent and read by the
//! host, so that both sides agree on it.

use crate::scale::plan::Case;

/// What a host needs to know: where the servers are, which host of the case it is, and the
/// case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostArgs {
    /// NATS URL.
    pub nats: String,
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// Index of this host (0-based): it runs fleet instances `host * per_host ..`.
    pub host: usize,
    /// The case.
    pub case: Case,
}

impl HostArgs {
    /// The arguments of `herald-bench scale-host` (after the subcommand).
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--nats".to_owned(),
            self.nats.clone(),
            "--etcd".to_owned(),
            self.etcd.join(","),
            "--host".to_owned(),
            self.host.to_string(),
            "--case".to_owned(),
            self.case.spec(),
            "--concurrency".to_owned(),
            self.case.concurrency.to_string(),
        ]
    }

    /// Reads what [`HostArgs::to_args`] wrote.
    ///
    /// # Errors
    ///
    /// A message naming the missing or unreadable argument.
    pub fn parse(args: &[String]) -> Result<HostArgs, String> {
        let mut nats = None;
        let mut etcd = None;
        let mut host = None;
        let mut case = None;
        let mut concurrency = None;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--nats" => nats = Some(value.clone()),
                "--etcd" => etcd = Some(value.split(',').map(str::to_owned).collect()),
                "--host" => host = Some(value.parse().map_err(|_| "bad --host".to_owned())?),
                "--case" => case = Some(Case::parse(value).ok_or("bad --case")?),
                "--concurrency" => {
                    concurrency = Some(value.parse().map_err(|_| "bad --concurrency")?);
                }
                other => return Err(format!("unknown argument {other}")),
            }
        }
        let mut case: Case = case.ok_or("--case is required")?;
        if let Some(c) = concurrency {
            case.concurrency = c;
        }
        let host = host.ok_or("--host is required")?;
        if host >= case.hosts {
            return Err(format!("--host {host} is not below {}", case.hosts));
        }
        Ok(HostArgs {
            nats: nats.ok_or("--nats is required")?,
            etcd: etcd.ok_or("--etcd is required")?,
            host,
            case,
        })
    }

    /// The fleet instances this host runs.
    pub fn instances(&self) -> std::ops::Range<usize> {
        let first = self.host * self.case.per_host;
        first..first + self.case.per_host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let mut case = Case::parse("4x250:instance@500ms/10").unwrap();
        case.concurrency = 32;
        let args = HostArgs {
            nats: "nats://127.0.0.1:40001".to_owned(),
            etcd: vec![
                "http://127.0.0.1:40002".to_owned(),
                "http://127.0.0.1:40003".to_owned(),
            ],
            host: 3,
            case,
        };
        assert_eq!(HostArgs::parse(&args.to_args()), Ok(args.clone()));
        assert_eq!(args.instances(), 750..1000);
        let mut bad = args.to_args();
        bad[5] = "4".to_owned();
        assert!(HostArgs::parse(&bad).is_err(), "host 4 of 4 is refused");
    }
}
