//! What a host process says on stdout, one line each, and what the parent reads back.
//!
//! The parent writes `stats` on the host's stdin to ask for its counters, and closes stdin
//! to stop it.

use std::fmt;

/// The host's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Tokens its announcers handed to NATS, summed.
    pub tokens: u64,
    /// Keep-alives etcd answered: the session's, or the announcers' summed.
    pub keep_alives: u64,
    /// Key watches open on the session's shared stream (0 without a session).
    pub key_watches: u64,
    /// Times the session's watch stream was opened (0 without a session).
    pub watch_streams: u64,
    /// Tokens that could not be published, summed.
    pub publish_errors: u64,
    /// Leases lost (the session's, or the announcers' summed).
    pub lease_losses: u64,
}

/// One line of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportLine {
    /// Every announcer started.
    Ready {
        /// Announcers started.
        started: usize,
        /// Time from the first start to the last, milliseconds.
        millis: u64,
        /// The process's RSS before any announcer started, bytes.
        base_rss: u64,
    },
    /// The answer to `stats`.
    Stats(HostStats),
    /// Every announcer shut down and the session closed.
    Stopped {
        /// Time the shutdown took, milliseconds.
        millis: u64,
        /// Announcers whose shutdown (or the session's close) reported an error.
        errors: usize,
    },
    /// The host cannot go on.
    Failed(String),
}

impl fmt::Display for ReportLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportLine::Ready {
                started,
                millis,
                base_rss,
            } => write!(f, "ready {started} {millis} {base_rss}"),
            ReportLine::Stats(s) => write!(
                f,
                "stats {} {} {} {} {} {}",
                s.tokens,
                s.keep_alives,
                s.key_watches,
                s.watch_streams,
                s.publish_errors,
                s.lease_losses
            ),
            ReportLine::Stopped { millis, errors } => write!(f, "stopped {millis} {errors}"),
            ReportLine::Failed(why) => write!(f, "failed {}", why.replace('\n', " ")),
        }
    }
}

impl ReportLine {
    /// Reads a line written by [`fmt::Display`]; `None` for anything else (log output).
    pub fn parse(line: &str) -> Option<ReportLine> {
        let (word, rest) = line.trim_end().split_once(' ').unwrap_or((line, ""));
        if word == "failed" {
            return Some(ReportLine::Failed(rest.to_owned()));
        }
        let n: Vec<u64> = rest
            .split(' ')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        Some(match (word, n.as_slice()) {
            ("ready", [started, millis, base_rss]) => ReportLine::Ready {
                started: *started as usize,
                millis: *millis,
                base_rss: *base_rss,
            },
            (
                "stats",
                [
                    tokens,
                    keep_alives,
                    key_watches,
                    watch_streams,
                    errors,
                    losses,
                ],
            ) => ReportLine::Stats(HostStats {
                tokens: *tokens,
                keep_alives: *keep_alives,
                key_watches: *key_watches,
                watch_streams: *watch_streams,
                publish_errors: *errors,
                lease_losses: *losses,
            }),
            ("stopped", [millis, errors]) => ReportLine::Stopped {
                millis: *millis,
                errors: *errors as usize,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let lines = [
            ReportLine::Ready {
                started: 5000,
                millis: 1234,
                base_rss: 8 << 20,
            },
            ReportLine::Stats(HostStats {
                tokens: 1,
                keep_alives: 2,
                key_watches: 3,
                watch_streams: 4,
                publish_errors: 5,
                lease_losses: 6,
            }),
            ReportLine::Stopped {
                millis: 10,
                errors: 0,
            },
            ReportLine::Failed("etcd unreachable: no answer".to_owned()),
        ];
        for line in lines {
            assert_eq!(ReportLine::parse(&line.to_string()), Some(line));
        }
        assert_eq!(
            ReportLine::parse("ready soon"),
            None,
            "log lines are ignored"
        );
    }
}
