//! The measured figures of several cases as one Markdown table, one column per case (the
//! cost per instance derived from them is in [`crate::scale::cost`]).

use crate::scale::outcome::{Outcome, Trouble};
use crate::scale::picks::STRATEGIES;
use crate::scale::table::{Table, growth_per_instance, mib, num, per_token};

fn trouble(t: &Trouble) -> String {
    format!(
        "{} / {} / {} / {} / {}",
        t.slow_consumer_events, t.tokens_lost, t.probes_sent, t.etcd_resyncs, t.expirations
    )
}

fn bucket(ms: Option<u64>) -> String {
    ms.map_or("-".to_owned(), |ms| format!("≤{ms}"))
}

/// The measured figures, one column per case.
pub fn figures(outcomes: &[Outcome]) -> String {
    let mut t = Table::new(outcomes);
    t.section("start and stop");
    t.row("all announcers started (s)", |o| {
        num(o.startup.all_ready, 1)
    });
    t.row("slowest host, first to last start (s)", |o| {
        num(o.startup.slowest_host, 1)
    });
    t.row(
        "subscriber `start()`, cold, with the etcd listing (s)",
        |o| num(o.startup.subscriber_start, 2),
    );
    t.row("subscriber lists all (s after `start()` was called)", |o| {
        num(o.startup.listed, 2)
    });
    t.row(
        "plain paged etcd listing of the same keys, same page size (s)",
        |o| num(o.startup.plain_listing, 2),
    );
    t.row("`start()` / plain listing", |o| {
        num(o.startup.subscriber_start / o.startup.plain_listing, 1)
    });
    t.row("CPU burners during the start", |o| {
        o.startup.start_burners.to_string()
    });
    t.row("stop all: goodbyes, deletes, session closes (s)", |o| {
        num(o.startup.stop, 1)
    });
    t.row("announcer shutdowns that reported an error", |o| {
        o.startup.stop_errors.to_string()
    });
    t.row("etcd CPU per announcer: start / stop (µs)", |o| {
        format!(
            "{} / {}",
            num(o.startup.etcd_cpu_per_start_us, 0),
            num(o.startup.etcd_cpu_per_stop_us, 0)
        )
    });
    subscriber(&mut t, outcomes);
    servers(&mut t);
    t.section("checks");
    t.row("problems", |o| {
        if o.problems.is_empty() {
            "none".to_owned()
        } else {
            o.problems.join("; ")
        }
    });
    t.render()
}

fn subscriber(t: &mut Table<'_>, outcomes: &[Outcome]) {
    let window = outcomes.first().map_or(0.0, |o| o.window.seconds);
    t.section(&format!("subscriber ({window:.0} s window)"));
    t.row("instances listed (min..max, once a second)", |o| {
        format!("{}..{}", o.listed_range.0, o.listed_range.1)
    });
    t.row(
        "before the window: slow-consumer events / tokens lost / probes / re-lists / expired",
        |o| trouble(&o.warm_up),
    );
    t.row("ingest CPU (cores)", |o| num(o.window.subscriber_cpu, 3));
    t.row("tokens/s ingested", |o| num(o.window.accepted, 0));
    t.row("CPU per token (µs)", |o| {
        num(per_token(o, o.window.subscriber_cpu * 1e6), 2)
    });
    t.row("received/s, of which accepted (%)", |o| {
        let w = &o.window;
        format!("{:.0}, {:.1}", w.received, 100.0 * w.accepted / w.received)
    });
    t.row(
        "in window: expired / removed / probes / re-lists / reconnects",
        |o| {
            let w = &o.window;
            format!(
                "{} / {} / {} / {} / {}",
                w.expirations, w.removed, w.probes_sent, w.etcd_resyncs, w.reconnects
            )
        },
    );
    t.row("in window: slow-consumer events / tokens lost", |o| {
        format!(
            "{} / {}",
            o.window.slow_consumer_events, o.window.tokens_lost
        )
    });
    t.row("announce-to-visible p50 / p99 (ms, bucket bound)", |o| {
        format!(
            "{} / {}",
            bucket(o.window.visible_p50_ms),
            bucket(o.window.visible_p99_ms)
        )
    });
    t.row("RSS (MiB): before the subscriber / all listed", |o| {
        format!(
            "{} / {}",
            mib(o.memory.subscriber_base),
            mib(o.memory.subscriber)
        )
    });
    t.row("RSS growth per instance (B)", |o| {
        growth_per_instance(o, o.memory.subscriber_base, o.memory.subscriber)
    });
    for (i, name) in STRATEGIES.iter().enumerate() {
        t.row(&format!("pick `{name}` p50 / p99 (ns)"), |o| {
            o.picks
                .get(i)
                .map_or("-".to_owned(), |p| format!("{} / {}", p.p50_ns, p.p99_ns))
        });
    }
    t.row(
        "(each pick sample includes an `Instant::now()` pair of, ns)",
        |o| o.clock_overhead_ns.to_string(),
    );
}

fn servers(t: &mut Table<'_>) {
    t.section("etcd");
    t.row("CPU (cores)", |o| num(o.window.etcd_cpu, 3));
    t.row("keep-alives/s", |o| num(o.window.keep_alives, 1));
    t.row("gRPC requests/s (calls + stream messages)", |o| {
        num(o.window.etcd_requests, 1)
    });
    t.row("leases", |o| o.etcd.leases.to_string());
    t.row("watch streams (MVCC / gRPC)", |o| {
        format!(
            "{:.0} / {:.0}",
            o.etcd.watch_streams, o.etcd.grpc_watch_streams
        )
    });
    t.row("watchers", |o| num(o.etcd.watchers, 0));
    t.row("keys", |o| num(o.etcd.keys, 0));
    t.row("DB size / in use (MiB)", |o| {
        format!(
            "{} / {}",
            mib(o.etcd.db_size as u64),
            mib(o.etcd.db_in_use as u64)
        )
    });
    t.row("RSS (MiB)", |o| mib(o.memory.etcd));
    t.row("after the stop: leases / keys", |o| {
        format!("{} / {}", o.etcd.leases_after_stop, o.etcd.keys_after_stop)
    });
    t.section("NATS");
    t.row("CPU (cores)", |o| num(o.window.nats_cpu, 3));
    t.row("msgs/s in / out", |o| {
        format!(
            "{:.0} / {:.0}",
            o.window.nats_in_msgs, o.window.nats_out_msgs
        )
    });
    t.row("payload MB/s in / out", |o| {
        let w = &o.window;
        format!(
            "{:.2} / {:.2}",
            w.nats_in_bytes / 1e6,
            w.nats_out_bytes / 1e6
        )
    });
    t.row("payload bytes per token", |o| {
        num(o.window.nats_in_bytes / o.window.nats_in_msgs, 0)
    });
    t.row("read / write calls per token", |o| {
        let w = &o.window;
        format!(
            "{:.2} / {:.2}",
            w.nats_reads / w.nats_in_msgs,
            w.nats_writes / w.nats_in_msgs
        )
    });
    t.row("subscriptions", |o| o.nats_subscriptions.to_string());
    t.row("slow consumers (server) in window", |o| {
        o.window.nats_slow_consumers.to_string()
    });
    t.row("RSS (MiB)", |o| mib(o.memory.nats));
    t.section("hosts (summed)");
    t.row("CPU (cores)", |o| num(o.window.hosts_cpu, 3));
    t.row("tokens/s sent", |o| num(o.window.host_tokens, 0));
    t.row("RSS (MiB): before the announcers / with them", |o| {
        format!("{} / {}", mib(o.memory.hosts_base), mib(o.memory.hosts))
    });
    t.row("RSS growth per instance (KiB)", |o| {
        let per = o.memory.hosts.saturating_sub(o.memory.hosts_base) as f64;
        num(per / o.instances.max(1) as f64 / 1024.0, 1)
    });
}
