//! `/metrics`: the subscriber's counters and instances per service in Prometheus text format.

use std::fmt::Write;

use herald_subscriber::{LATENCY_BUCKETS_MS, Subscriber};

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

pub(crate) fn text(sub: &Subscriber) -> String {
    let s = sub.stats();
    let mut out = String::new();
    counter(
        &mut out,
        "herald_tokens_received_total",
        "Messages received on announce subjects.",
        s.received,
    );
    counter(
        &mut out,
        "herald_tokens_accepted_total",
        "Tokens accepted.",
        s.accepted,
    );
    let _ = writeln!(
        out,
        "# HELP herald_tokens_rejected_total Payloads rejected, by reason.\n# TYPE herald_tokens_rejected_total counter"
    );
    for (reason, n) in &s.rejected {
        let _ = writeln!(
            out,
            "herald_tokens_rejected_total{{reason=\"{}\"}} {n}",
            reason.label()
        );
    }
    let _ = writeln!(
        out,
        "# HELP herald_tokens_dropped_total Well-formed tokens dropped by the merge rules, by reason.\n# TYPE herald_tokens_dropped_total counter"
    );
    for (reason, n) in [
        ("stale_epoch", s.stale_epoch_drops),
        ("duplicate", s.duplicate_drops),
        ("goodbye_unknown", s.goodbye_unknown_drops),
        ("unregistered", s.unregistered_drops),
        ("identity_mismatch", s.identity_mismatch_drops),
    ] {
        let _ = writeln!(
            out,
            "herald_tokens_dropped_total{{reason=\"{reason}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP herald_removals_total Instances removed, by cause.\n# TYPE herald_removals_total counter"
    );
    for (cause, n) in [
        ("expired", s.expirations),
        ("goodbye", s.goodbyes),
        ("deregistered", s.deregistrations),
        ("fenced", s.fenced),
    ] {
        let _ = writeln!(out, "herald_removals_total{{cause=\"{cause}\"}} {n}");
    }
    counter(
        &mut out,
        "herald_instances_added_total",
        "Instances added.",
        s.added,
    );
    counter(
        &mut out,
        "herald_tokens_lost_total",
        "Tokens lost in transit, from seq gaps.",
        s.tokens_lost,
    );
    counter(
        &mut out,
        "herald_slow_consumer_events_total",
        "Subscription buffer overflows reported by the NATS client.",
        s.slow_consumer_events,
    );
    counter(
        &mut out,
        "herald_probes_sent_total",
        "Probes sent.",
        s.probes_sent,
    );
    counter(
        &mut out,
        "herald_nats_reconnects_total",
        "NATS reconnects.",
        s.reconnects,
    );
    counter(
        &mut out,
        "herald_etcd_registrations_total",
        "etcd registrations applied.",
        s.registrations,
    );
    counter(
        &mut out,
        "herald_etcd_resyncs_total",
        "Full etcd listings.",
        s.etcd_resyncs,
    );
    let _ = writeln!(
        out,
        "# HELP herald_tokens_held Tokens held now while the registration they claim is awaited.\n# TYPE herald_tokens_held gauge\nherald_tokens_held {}",
        s.held_now
    );
    counter(
        &mut out,
        "herald_tokens_held_total",
        "Tokens that arrived before etcd showed their registration (then applied or dropped).",
        s.held,
    );
    let _ = writeln!(
        out,
        "# HELP herald_instances Live instances, by service.\n# TYPE herald_instances gauge"
    );
    for service in sub.services() {
        let _ = writeln!(
            out,
            "herald_instances{{service=\"{service}\"}} {}",
            sub.instances(&service).len()
        );
    }
    let _ = writeln!(
        out,
        "# HELP herald_announce_visible_ms Announce-to-visible latency (sender clock).\n# TYPE herald_announce_visible_ms histogram"
    );
    let mut cumulative = 0;
    for (i, n) in s.latency.counts.iter().enumerate() {
        cumulative += n;
        match LATENCY_BUCKETS_MS.get(i) {
            Some(le) => {
                let _ = writeln!(
                    out,
                    "herald_announce_visible_ms_bucket{{le=\"{le}\"}} {cumulative}"
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "herald_announce_visible_ms_bucket{{le=\"+Inf\"}} {cumulative}"
                );
            }
        }
    }
    let _ = writeln!(out, "herald_announce_visible_ms_count {cumulative}");
    out
}
