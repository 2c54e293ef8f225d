//! The cost per instance derived from the measured figures, one column per case: CPU and
//! bytes per second on the subscriber, NATS, etcd and the host; memory per instance; etcd
//! keep-alives per process and per instance; and, when a case with a lease per instance has
//! a twin with a lease per host, etcd's CPU per keep-alive.

use crate::scale::outcome::Outcome;
use crate::scale::plan::Leases;
use crate::scale::table::{Table, growth_per_instance, num, per_instance, per_token};

/// CPU in cores, as µs per second per instance.
fn us(o: &Outcome, cores: f64) -> String {
    num(per_instance(o, cores * 1e6), 1)
}

/// CPU in cores, as µs per token ingested.
fn us_per_token(o: &Outcome, cores: f64) -> String {
    num(per_token(o, cores * 1e6), 2)
}

/// The cost model, one column per case, and etcd's CPU per keep-alive when it can be told.
pub fn cost_model(outcomes: &[Outcome]) -> String {
    let mut t = Table::new(outcomes);
    t.section("CPU, µs per second per instance");
    t.row("subscriber (of everything)", |o| {
        us(o, o.window.subscriber_cpu)
    });
    t.row("NATS", |o| us(o, o.window.nats_cpu));
    t.row("etcd", |o| us(o, o.window.etcd_cpu));
    t.row("host (the announcer)", |o| us(o, o.window.hosts_cpu));
    t.row("all four", |o| {
        let w = &o.window;
        us(o, w.subscriber_cpu + w.nats_cpu + w.etcd_cpu + w.hosts_cpu)
    });
    t.section("CPU, µs per token");
    t.row("subscriber", |o| us_per_token(o, o.window.subscriber_cpu));
    t.row("NATS (in and out)", |o| us_per_token(o, o.window.nats_cpu));
    t.row("host", |o| us_per_token(o, o.window.hosts_cpu));
    t.section("network, payload bytes per second per instance");
    t.row("host → NATS", |o| {
        num(per_instance(o, o.window.nats_in_bytes), 0)
    });
    t.row("NATS → subscriber", |o| {
        num(per_instance(o, o.window.nats_out_bytes), 0)
    });
    t.section("memory, bytes per instance");
    t.row("subscriber (RSS growth)", |o| {
        growth_per_instance(o, o.memory.subscriber_base, o.memory.subscriber)
    });
    t.row("host (RSS growth)", |o| {
        growth_per_instance(o, o.memory.hosts_base, o.memory.hosts)
    });
    t.row("etcd (whole RSS / instances)", |o| {
        num(per_instance(o, o.memory.etcd as f64), 0)
    });
    t.section("etcd keep-alives per second");
    t.row("per host process", |o| {
        num(o.window.keep_alives / o.case.hosts as f64, 3)
    });
    t.row("per instance", |o| {
        num(per_instance(o, o.window.keep_alives), 4)
    });
    t.row("etcd requests/s per instance", |o| {
        num(per_instance(o, o.window.etcd_requests), 4)
    });
    let mut out = t.render();
    if let Some(line) = keep_alive_cost(outcomes) {
        out.push('\n');
        out.push_str(&line);
    }
    out
}

/// etcd's CPU per keep-alive, from a lease-per-instance case and a lease-per-host case of
/// the same size and interval.
fn keep_alive_cost(outcomes: &[Outcome]) -> Option<String> {
    let per_instance = outcomes
        .iter()
        .find(|o| o.case.leases == Leases::PerInstance)?;
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
             etcd CPU: {:.3} ms of etcd CPU per keep-alive; {:.0} MiB more etcd RSS.\n",
            per_instance.instances,
            extra_ka,
            extra_cpu,
            extra_cpu * 1e3 / extra_ka,
            (per_instance.memory.etcd as f64 - session.memory.etcd as f64) / (1024.0 * 1024.0)
        )
    })
}
