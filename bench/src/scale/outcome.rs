//! What one case measured ([`Outcome`]), and the checks it must pass. It travels from a
//! case's process to the driver as one JSON line.

use serde::{Deserialize, Serialize};

use crate::scale::picks::PickTiming;
use crate::scale::plan::{Case, Leases};
use crate::scale::sample::Window;

/// Durations of the start, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Startup {
    /// From the spawn of the first host to the last host's `ready`: every announcer
    /// registered in etcd and its first token out.
    pub all_ready: f64,
    /// The slowest host, from its first start to its last.
    pub slowest_host: f64,
    /// The subscriber's `start()` (cold: etcd listing, subscription, probe).
    pub subscriber_start: f64,
    /// From the subscriber's `start()` call until it listed every instance.
    pub listed: f64,
    /// A plain paged listing of the same keys with etcd-client, right after.
    pub plain_listing: f64,
    /// CPU burners running from just before the subscriber's start until it listed all.
    pub start_burners: usize,
    /// From the hosts' stop order until every host exited (goodbyes, deletes, session
    /// closes).
    pub stop: f64,
    /// Announcer shutdowns that reported an error (a timeout, mostly: the instance then
    /// expires by TTL and the key goes with the session's lease).
    pub stop_errors: usize,
    /// etcd's CPU while the hosts started every announcer, per announcer (µs).
    #[serde(default)]
    pub etcd_cpu_per_start_us: f64,
    /// etcd's CPU while the hosts stopped, per announcer (µs).
    #[serde(default)]
    pub etcd_cpu_per_stop_us: f64,
}

/// Memory, bytes (RSS from `/proc`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// This process before the subscriber started.
    pub subscriber_base: u64,
    /// This process with every instance listed, after the window.
    pub subscriber: u64,
    /// The hosts before their announcers started, summed.
    pub hosts_base: u64,
    /// The hosts after the window, summed.
    pub hosts: u64,
    /// etcd after the window.
    pub etcd: u64,
    /// nats-server after the window.
    pub nats: u64,
}

/// etcd's state after the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EtcdState {
    /// Leases, from a `LeaseLeases` call.
    pub leases: usize,
    /// Watch streams in the MVCC store (`etcd_debugging_mvcc_watch_stream_total`).
    pub watch_streams: f64,
    /// gRPC watch streams open (`grpc_server_started_total` - `handled` of `Watch`).
    pub grpc_watch_streams: f64,
    /// Watchers on those streams.
    pub watchers: f64,
    /// Keys in the store.
    pub keys: f64,
    /// Size of the backend file, bytes.
    pub db_size: f64,
    /// Part of it in use, bytes.
    pub db_in_use: f64,
    /// Leases left once every host stopped (0 when every session and lease was revoked).
    pub leases_after_stop: usize,
    /// Registrations left once every host stopped.
    pub keys_after_stop: i64,
}

/// The subscriber's signs of overload, counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trouble {
    /// Times async-nats dropped tokens for a full subscription buffer.
    pub slow_consumer_events: u64,
    /// Tokens lost (`seq` gaps).
    pub tokens_lost: u64,
    /// Probes sent (one at start; each further one makes every announcer answer).
    pub probes_sent: u64,
    /// Full etcd listings after the first.
    pub etcd_resyncs: u64,
    /// Instances expired.
    pub expirations: u64,
}

impl Trouble {
    /// The counters of `stats`.
    pub fn of(stats: &herald_subscriber::Stats) -> Trouble {
        Trouble {
            slow_consumer_events: stats.slow_consumer_events,
            tokens_lost: stats.tokens_lost,
            probes_sent: stats.probes_sent,
            etcd_resyncs: stats.etcd_resyncs,
            expirations: stats.expirations,
        }
    }

    /// What grew since `earlier`, as text.
    pub fn since(&self, earlier: &Trouble) -> String {
        format!(
            "+{} slow-consumer events, +{} tokens lost, +{} probes, +{} etcd re-lists, +{} \
             expired",
            self.slow_consumer_events - earlier.slow_consumer_events,
            self.tokens_lost - earlier.tokens_lost,
            self.probes_sent - earlier.probes_sent,
            self.etcd_resyncs - earlier.etcd_resyncs,
            self.expirations - earlier.expirations
        )
    }
}

/// Everything one case measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The case.
    pub case: Case,
    /// Instances the hosts started.
    pub instances: usize,
    /// Fewest and most instances the subscriber listed during the window (once a second).
    pub listed_range: (u64, u64),
    /// How long each phase took.
    pub startup: Startup,
    /// Rates over the steady window.
    pub window: Window,
    /// Memory of each process.
    pub memory: Memory,
    /// etcd's leases, watches and size.
    pub etcd: EtcdState,
    /// Subscriptions on nats-server during the window.
    pub nats_subscriptions: u64,
    /// Key watches on the hosts' sessions, summed (0 with a lease per instance).
    pub host_key_watches: u64,
    /// The subscriber's overload counters from its start to the window (the cold start, the
    /// probe answers, the settling).
    pub warm_up: Trouble,
    /// `pick` latency per strategy.
    pub picks: Vec<PickTiming>,
    /// Cost of the `Instant::now()` pair inside each pick sample, nanoseconds.
    pub clock_overhead_ns: u64,
    /// Problems found (empty when every check passed).
    pub problems: Vec<String>,
}

impl Outcome {
    /// Checks what must hold in every case: every instance listed (exactly) throughout the
    /// window, nothing removed or lost, every token of the window ingested, one lease per
    /// host with sessions (one per instance without), and etcd empty after the stop.
    pub fn check(&mut self) {
        let n = self.instances as u64;
        let mut problems = Vec::new();
        if self.instances != self.case.instances() {
            problems.push(format!(
                "{} instances started, {} expected",
                self.instances,
                self.case.instances()
            ));
        }
        if self.listed_range != (n, n) {
            problems.push(format!(
                "listed {:?} during the window, {n} expected",
                self.listed_range
            ));
        }
        let w = &self.window;
        if w.removed + w.tokens_lost + w.slow_consumer_events + w.host_publish_errors > 0 {
            problems.push(format!(
                "in the window: {} removed, {} tokens lost, {} slow-consumer events, {} \
                 publish errors",
                w.removed, w.tokens_lost, w.slow_consumer_events, w.host_publish_errors
            ));
        }
        if w.accepted < 0.98 * w.host_tokens {
            problems.push(format!(
                "the subscriber accepted {:.0} tokens/s of {:.0} sent",
                w.accepted, w.host_tokens
            ));
        }
        let leases = match self.case.leases {
            Leases::Session => self.case.hosts,
            Leases::PerInstance => self.instances,
        };
        if self.etcd.leases != leases {
            problems.push(format!(
                "{} leases in etcd, {leases} expected",
                self.etcd.leases
            ));
        }
        if self.etcd.leases_after_stop != 0 || self.etcd.keys_after_stop != 0 {
            problems.push(format!(
                "after the stop: {} leases and {} keys left",
                self.etcd.leases_after_stop, self.etcd.keys_after_stop
            ));
        }
        if self.picks.iter().any(|p| p.misses > 0) {
            problems.push("a pick found no instance".to_owned());
        }
        self.problems.extend(problems);
    }
}
