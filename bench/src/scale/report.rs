//! The figures of several cases as Markdown tables, one column per case: what was measured
//! ([`figures`]), and the cost per instance derived from it ([`cost_model`]).

use crate::scale::outcome::Outcome;
use crate::scale::plan::Leases;

/// Rows under a header of one column per case.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(outcomes: &[Outcome]) -> Table {
        let mut header = vec![String::new()];
        header.extend(outcomes.iter().map(label));
        Table {
            header,
            rows: Vec::new(),
        }
    }

    fn section(&mut self, title: &str) {
        let mut row = vec![format!("**{title}**")];
        row.resize(self.header.len(), String::new());
        self.rows.push(row);
    }

    fn row(&mut self, name: &str, outcomes: &[Outcome], cell: impl Fn(&Outcome) -> String) {
        let mut row = vec![name.to_owned()];
        row.extend(outcomes.iter().map(cell));
        self.rows.push(row);
    }

    fn render(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = line(&self.header);
        let rule: Vec<String> = (0..self.header.len())
            .map(|i| if i == 0 { "---" } else { "---:" }.to_owned())
            .collect();
        out.push_str(&line(&rule));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// `10k, lease per host, 1 s`.
fn label(o: &Outcome) -> String {
    let n = o.case.instances();
    let size = if n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    };
    let leases = match o.case.leases {
        Leases::Session => "lease per host",
        Leases::PerInstance => "lease per instance",
    };
    format!(
        "{size} ({} x {}), {leases}, {} s",
        o.case.hosts,
        o.case.per_host,
        o.case.interval.as_secs_f64()
    )
}

fn mib(bytes: f64) -> String {
    format!("{:.1}", bytes / (1024.0 * 1024.0))
}

fn per_instance(o: &Outcome, x: f64) -> f64 {
    x / o.instances.max(1) as f64
}

/// The measured figures, one column per case.
pub fn figures(outcomes: &[Outcome]) -> String {
    let o = outcomes;
    let mut t = Table::new(o);
    t.section("start and stop");
    t.row("all announcers started (s)", o, |o| {
        format!("{:.1}", o.startup.all_ready)
    });
    t.row("slowest host, first to last start (s)", o, |o| {
        format!("{:.1}", o.startup.slowest_host)
    });
    t.row("subscriber `start()`, cold, etcd listing (s)", o, |o| {
        format!("{:.2}", o.startup.subscriber_start)
    });
    t.row("subscriber lists all (s from `start()`)", o, |o| {
        format!("{:.2}", o.startup.listed)
    });
    t.row("stop all: goodbyes, deletes, revokes (s)", o, |o| {
        format!("{:.1}", o.startup.stop)
    });
    t.section(&format!(
        "subscriber ({:.0} s window)",
        o.first().map_or(0.0, |o| o.window.seconds)
    ));
    t.row("instances listed (min..max in window)", o, |o| {
        format!("{}..{}", o.listed_range.0, o.listed_range.1)
    });
    t.row("ingest CPU (cores)", o, |o| {
        format!("{:.3}", o.window.subscriber_cpu)
    });
    t.row("tokens/s ingested", o, |o| {
        format!("{:.0}", o.window.accepted)
    });
    t.row("CPU per token (µs)", o, |o| {
        format!("{:.2}", o.window.subscriber_cpu * 1e6 / o.window.accepted)
    });
    t.row("RSS (MiB), before the subscriber", o, |o| {
        mib(o.memory.subscriber_base as f64)
    });
    t.row("RSS (MiB), all listed", o, |o| {
        mib(o.memory.subscriber as f64)
    });
    t.row("RSS growth per instance (B)", o, |o| {
        format!(
            "{:.0}",
            per_instance(
                o,
                o.memory.subscriber as f64 - o.memory.subscriber_base as f64
            )
        )
    });
    for (i, name) in crate::scale::picks::STRATEGIES.iter().enumerate() {
        t.row(&format!("pick `{name}` p50 / p99 (ns)"), o, |o| {
            o.picks
                .get(i)
                .map_or("-".to_owned(), |p| format!("{} / {}", p.p50_ns, p.p99_ns))
        });
    }
    t.section("etcd");
    t.row("CPU (cores)", o, |o| format!("{:.3}", o.window.etcd_cpu));
    t.row("keep-alives/s", o, |o| {
        format!("{:.1}", o.window.keep_alives)
    });
    t.row("gRPC requests/s (calls + stream messages)", o, |o| {
        format!("{:.1}", o.window.etcd_requests)
    });
    t.row("leases", o, |o| o.etcd.leases.to_string());
    t.row("watch streams (MVCC / gRPC)", o, |o| {
        format!(
            "{:.0} / {:.0}",
            o.etcd.watch_streams, o.etcd.grpc_watch_streams
        )
    });
    t.row("watchers", o, |o| format!("{:.0}", o.etcd.watchers));
    t.row("keys", o, |o| format!("{:.0}", o.etcd.keys));
    t.row("DB size / in use (MiB)", o, |o| {
        format!("{} / {}", mib(o.etcd.db_size), mib(o.etcd.db_in_use))
    });
    t.row("RSS (MiB)", o, |o| mib(o.memory.etcd as f64));
    t.section("NATS");
    t.row("CPU (cores)", o, |o| format!("{:.3}", o.window.nats_cpu));
    t.row("msgs/s in / out", o, |o| {
        format!(
            "{:.0} / {:.0}",
            o.window.nats_in_msgs, o.window.nats_out_msgs
        )
    });
    t.row("payload MB/s in / out", o, |o| {
        format!(
            "{:.2} / {:.2}",
            o.window.nats_in_bytes / 1e6,
            o.window.nats_out_bytes / 1e6
        )
    });
    t.row("payload bytes per token", o, |o| {
        format!("{:.0}", o.window.nats_in_bytes / o.window.nats_in_msgs)
    });
    t.row("subscriptions", o, |o| o.nats_subscriptions.to_string());
    t.row("RSS (MiB)", o, |o| mib(o.memory.nats as f64));
    t.section("hosts (summed)");
    t.row("CPU (cores)", o, |o| format!("{:.3}", o.window.hosts_cpu));
    t.row("tokens/s sent", o, |o| {
        format!("{:.0}", o.window.host_tokens)
    });
    t.row("RSS (MiB), before / with announcers", o, |o| {
        format!(
            "{} / {}",
            mib(o.memory.hosts_base as f64),
            mib(o.memory.hosts as f64)
        )
    });
    t.row("RSS per instance (KiB)", o, |o| {
        format!(
            "{:.1}",
            per_instance(o, o.memory.hosts as f64 - o.memory.hosts_base as f64) / 1024.0
        )
    });
    t.section("checks");
    t.row("problems", o, |o| {
        if o.problems.is_empty() {
            "none".to_owned()
        } else {
            o.problems.join("; ")
        }
    });
    t.render()
}

/// Cost per instance derived from the figures, one column per case.
pub fn cost_model(outcomes: &[Outcome]) -> String {
    let o = outcomes;
    let mut t = Table::new(o);
    let us = |o: &Outcome, cores: f64| format!("{:.1}", per_instance(o, cores * 1e6));
    t.section("CPU, µs per second per instance");
    t.row("subscriber (of everything)", o, |o| {
        us(o, o.window.subscriber_cpu)
    });
    t.row("NATS", o, |o| us(o, o.window.nats_cpu));
    t.row("etcd", o, |o| us(o, o.window.etcd_cpu));
    t.row("host (the announcer)", o, |o| us(o, o.window.hosts_cpu));
    t.row("all four", o, |o| {
        let w = &o.window;
        us(o, w.subscriber_cpu + w.nats_cpu + w.etcd_cpu + w.hosts_cpu)
    });
    t.section("network, payload bytes per second per instance");
    t.row("host → NATS", o, |o| {
        format!("{:.0}", per_instance(o, o.window.nats_in_bytes))
    });
    t.row("NATS → subscriber", o, |o| {
        format!("{:.0}", per_instance(o, o.window.nats_out_bytes))
    });
    t.section("memory, bytes per instance (RSS growth)");
    t.row("subscriber", o, |o| {
        format!(
            "{:.0}",
            per_instance(
                o,
                o.memory.subscriber as f64 - o.memory.subscriber_base as f64
            )
        )
    });
    t.row("host", o, |o| {
        format!(
            "{:.0}",
            per_instance(o, o.memory.hosts as f64 - o.memory.hosts_base as f64)
        )
    });
    t.row("etcd (whole RSS / instances)", o, |o| {
        format!("{:.0}", per_instance(o, o.memory.etcd as f64))
    });
    t.section("etcd keep-alives per second");
    t.row("per instance", o, |o| {
        format!("{:.4}", per_instance(o, o.window.keep_alives))
    });
    t.row("per host process", o, |o| {
        format!("{:.3}", o.window.keep_alives / o.case.hosts as f64)
    });
    t.row("etcd requests/s per instance", o, |o| {
        format!("{:.4}", per_instance(o, o.window.etcd_requests))
    });
    let mut out = t.render();
    if let Some(line) = keep_alive_cost(outcomes) {
        out.push('\n');
        out.push_str(&line);
    }
    out
}

/// etcd's CPU per keep-alive, from a lease-per-host and a lease-per-instance case of the
/// same size and interval.
fn keep_alive_cost(outcomes: &[Outcome]) -> Option<String> {
    let find = |l: Leases| outcomes.iter().find(|o| o.case.leases == l);
    let per_instance = find(Leases::PerInstance)?;
    let session = outcomes.iter().find(|o| {
        o.case.leases == Leases::Session
            && o.instances == per_instance.instances
            && o.case.interval == per_instance.case.interval
    })?;
    let extra_ka = per_instance.window.keep_alives - session.window.keep_alives;
    let extra_cpu = per_instance.window.etcd_cpu - session.window.etcd_cpu;
    (extra_ka > 0.0).then(|| {
        format!(
            "A lease per instance at {} instances adds {:.0} keep-alives/s and {:.3} cores of \
             etcd CPU: {:.3} ms of etcd CPU per keep-alive.\n",
            per_instance.instances,
            extra_ka,
            extra_cpu,
            extra_cpu * 1e3 / extra_ka
        )
    })
}
