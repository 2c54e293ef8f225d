//! `/metrics`: the subscriber's counters, its connections and instances per service, encoded
//! by `prometheus-client` at each scrape from one read of the subscriber's counters.
//!
//! Names follow Prometheus's conventions: base units (`_seconds`), counters end in `_total`.
//! A scraper that asks for OpenMetrics gets it as encoded; any other gets the classic text
//! format (0.0.4), which `promtool check metrics` reads.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::Arc;

use herald_subscriber::{ConnectionState, LATENCY_BUCKETS_MS, Subscriber};
use herald_xds::XdsServer;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// The content type of the classic text format.
pub(crate) const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics text.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The agent's metrics registry: one collector reading the subscriber at each scrape, and
/// one reading the xDS server when it runs.
pub(crate) fn registry(subscriber: Arc<Subscriber>, xds: Option<XdsServer>) -> Registry {
    let mut registry = Registry::with_prefix("herald");
    registry.register_collector(Box::new(Scrape(subscriber)));
    if let Some(xds) = xds {
        registry.register_collector(Box::new(XdsScrape(xds)));
    }
    registry
}

#[derive(Debug)]
struct XdsScrape(XdsServer);

impl Collector for XdsScrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        let e = &mut encoder;
        let clients = ConstGauge::new(s.clients as i64);
        clients.encode(e.encode_descriptor(
            "xds_clients",
            "xDS clients connected (ADS streams open).",
            None,
            clients.metric_type(),
        )?)?;
        counter(e, "xds_streams", "ADS streams opened.", s.streams)?;
        let per_type = |v: &[(herald_xds::Type, u64)]| -> Vec<(&'static str, u64)> {
            v.iter().map(|(t, n)| (t.label(), *n)).collect()
        };
        labelled_counter(
            e,
            "xds_responses",
            "xDS responses sent, by resource type.",
            "type",
            &per_type(&s.responses),
        )?;
        labelled_counter(
            e,
            "xds_nacks",
            "xDS responses a client refused, by resource type.",
            "type",
            &per_type(&s.nacks),
        )?;
        counter(
            e,
            "xds_left_out",
            "Instances left out of an xDS assignment: their address is not an IP literal and port.",
            s.not_ip,
        )?;
        counter(
            e,
            "xds_not_followed",
            "xDS assignments asked for a service the agent does not follow (--services); answered empty.",
            s.not_followed,
        )?;
        let buckets: Vec<(f64, u64)> = s
            .push
            .counts
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let le = herald_xds::PUSH_BUCKETS_US
                    .get(i)
                    .map_or(f64::MAX, |us| *us as f64 / 1e6);
                (le, *n)
            })
            .collect();
        e.encode_descriptor(
            "xds_push",
            "From a change of the view to the xDS response that carries it, per client it reached.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?
        .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            s.push.sum_us as f64 / 1e6,
            s.push.counts.iter().sum(),
            &buckets,
            None,
        )
    }
}

/// Whether an `Accept` header asks for OpenMetrics before the classic text format, by
/// q-value (the first listed wins a tie); without an acceptable OpenMetrics, classic text.
pub(crate) fn prefers_openmetrics(accept: &str) -> bool {
    // Each format's q-value, and where it was first listed.
    let mut open: Option<(f32, usize)> = None;
    let mut text: Option<(f32, usize)> = None;
    let ranges = accept
        .split(',')
        .filter_map(|r| r.trim().parse::<mime::Mime>().ok());
    for (at, range) in ranges.enumerate() {
        let q = range
            .get_param("q")
            .and_then(|q| q.as_str().parse::<f32>().ok())
            .unwrap_or(1.0);
        let slot = match (range.type_().as_str(), range.subtype().as_str()) {
            ("application", "openmetrics-text") => &mut open,
            ("text", "plain" | "*") | ("*", "*") => &mut text,
            _ => continue,
        };
        slot.get_or_insert((q, at));
    }
    match (open, text) {
        (Some((o, _)), _) if o <= 0.0 => false,
        (Some((o, o_at)), Some((t, t_at))) => o > t || (o == t && o_at < t_at),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The metrics as OpenMetrics text when `openmetrics`, else as classic text.
pub(crate) fn encode(registry: &Registry, openmetrics: bool) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail, and the collector only writes.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    if openmetrics { out } else { classic_text(&out) }
}

/// OpenMetrics text as the classic text format: a counter's family is named with its
/// `_total` suffix, and the `# UNIT` and `# EOF` lines go.
fn classic_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?.split_once(' ')?)));
        match comment {
            Some((kind, (name, rest))) if counters.contains(name) => {
                let _ = writeln!(out, "{kind}{name}_total {rest}");
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[derive(Debug)]
struct Scrape(Arc<Subscriber>);

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn labelled_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        ConstCounter::new(*n).encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let sub = &self.0;
        let s = sub.stats();
        let e = &mut encoder;
        counter(
            e,
            "tokens_received",
            "Messages received on announce subjects.",
            s.received,
        )?;
        counter(e, "tokens_accepted", "Tokens accepted.", s.accepted)?;
        let rejected: Vec<(&str, u64)> = s.rejected.iter().map(|(r, n)| (r.label(), *n)).collect();
        labelled_counter(
            e,
            "tokens_rejected",
            "Payloads rejected, by reason.",
            "reason",
            &rejected,
        )?;
        labelled_counter(
            e,
            "tokens_dropped",
            "Well-formed tokens dropped by the merge rules, by reason.",
            "reason",
            &[
                ("stale_epoch", s.stale_epoch_drops),
                ("duplicate", s.duplicate_drops),
                ("seq_jump", s.seq_jump_drops),
                ("goodbye_unknown", s.goodbye_unknown_drops),
                ("unregistered", s.unregistered_drops),
                ("identity_mismatch", s.identity_mismatch_drops),
            ],
        )?;
        labelled_counter(
            e,
            "removals",
            "Instances removed, by cause.",
            "cause",
            &[
                ("expired", s.expirations),
                ("goodbye", s.goodbyes),
                ("deregistered", s.deregistrations),
                ("fenced", s.fenced),
                ("disconnected", s.disconnections),
            ],
        )?;
        counter(e, "instances_added", "Instances added.", s.added)?;
        counter(
            e,
            "instances_updated",
            "Instances updated (load, state or record).",
            s.updated,
        )?;
        counter(
            e,
            "tokens_lost",
            "Tokens lost in transit, from seq gaps.",
            s.tokens_lost,
        )?;
        counter(
            e,
            "seq_rebased",
            "Tokens accepted outside an instance's run after it was quiet for half its TTL (a forged seq within the bound, or a restart without etcd).",
            s.rebased,
        )?;
        counter(
            e,
            "goodbyes_refuted",
            "Goodbyes of registered instances that no deletion followed and a later token refuted (forged goodbyes).",
            s.refuted_goodbyes,
        )?;
        counter(
            e,
            "instance_id_conflicts",
            "Times two processes were heard announcing one instance id at once.",
            s.two_runs,
        )?;
        counter(
            e,
            "slow_consumer_events",
            "Subscription buffer overflows reported by the NATS client.",
            s.slow_consumer_events,
        )?;
        counter(e, "probes_sent", "Probes sent.", s.probes_sent)?;
        counter(
            e,
            "heartbeats",
            "Heartbeats (compact tokens) that refreshed an instance.",
            s.heartbeats,
        )?;
        counter(
            e,
            "heartbeats_unknown",
            "Heartbeats of an instance not listed under their epoch (its service is probed).",
            s.heartbeats_unknown,
        )?;
        counter(e, "nats_reconnects", "NATS reconnects.", s.reconnects)?;
        counter(
            e,
            "disconnect_advisories",
            "NATS disconnect advisories received (--nats-advisories).",
            s.disconnect_advisories,
        )?;
        counter(
            e,
            "connections_closed",
            "Advisories of connections closed by their client's host (a process died).",
            s.connections_closed,
        )?;
        counter(
            e,
            "etcd_registrations",
            "etcd registrations applied.",
            s.registrations,
        )?;
        counter(e, "etcd_resyncs", "Full etcd listings.", s.etcd_resyncs)?;
        counter(
            e,
            "etcd_cluster_changes",
            "Times a different etcd cluster answered.",
            s.etcd_cluster_changes,
        )?;
        let held_now = ConstGauge::new(s.held_now as i64);
        held_now.encode(e.encode_descriptor(
            "tokens_held_now",
            "Tokens held now while the registration they claim is awaited.",
            None,
            MetricType::Gauge,
        )?)?;
        counter(
            e,
            "tokens_held",
            "Tokens that arrived before etcd showed their registration (then applied or dropped).",
            s.held,
        )?;

        let mut family = e.encode_descriptor(
            "instances",
            "Live instances, by service.",
            None,
            MetricType::Gauge,
        )?;
        for service in sub.services() {
            let n = sub.instances(&service).len() as i64;
            ConstGauge::new(n).encode(family.encode_family(&[("service", service.as_str())])?)?;
        }

        let links = sub.connections();
        let mut links: Vec<(&str, ConnectionState)> = vec![("nats", links.nats)];
        if let Some(etcd) = sub.connections().etcd {
            links.push(("etcd", etcd));
        }
        let mut family = e.encode_descriptor(
            "connection_up",
            "Whether the connection is up (1) or down (0); for etcd, the watch of every followed scope.",
            None,
            MetricType::Gauge,
        )?;
        for (name, state) in &links {
            ConstGauge::new(i64::from(state.is_up()))
                .encode(family.encode_family(&[("connection", *name)])?)?;
        }
        let mut family = e.encode_descriptor(
            "connection_state_age",
            "Seconds since the connection last went up or down.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (name, state) in &links {
            ConstGauge::new(state.elapsed().as_secs_f64())
                .encode(family.encode_family(&[("connection", *name)])?)?;
        }

        // The subscriber counts per millisecond bucket (the last one unbounded); Prometheus
        // wants seconds.
        let buckets: Vec<(f64, u64)> = s
            .latency
            .counts
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let le = LATENCY_BUCKETS_MS
                    .get(i)
                    .map_or(f64::MAX, |ms| *ms as f64 / 1000.0);
                (le, *n)
            })
            .collect();
        e.encode_descriptor(
            "announce_visible",
            "Announce-to-visible latency, from the sender's clock (skew included).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?
        .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            s.latency.sum_ms as f64 / 1000.0,
            s.latency.total(),
            &buckets,
            None,
        )?;
        counter(
            e,
            "announce_visible_negative",
            "Tokens that seemed to arrive before they were sent (the sender's clock is ahead), left out of the histogram.",
            s.latency.negative,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_is_read_by_q_value() {
        // What Prometheus sends.
        assert!(prefers_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!prefers_openmetrics(
            "text/plain;q=1.0, application/openmetrics-text;q=0.5"
        ));
        assert!(!prefers_openmetrics("application/openmetrics-text;q=0"));
        assert!(!prefers_openmetrics("text/plain"));
        assert!(!prefers_openmetrics(""));
        assert!(!prefers_openmetrics("*/*"));
        assert!(prefers_openmetrics("application/openmetrics-text"));
        assert!(prefers_openmetrics(
            "application/openmetrics-text, text/plain"
        ));
        assert!(!prefers_openmetrics(
            "text/plain, application/openmetrics-text"
        ));
    }

    #[test]
    fn classic_text_names_counter_families_with_total() {
        let om = "# HELP herald_probes_sent Probes sent.\n# TYPE herald_probes_sent counter\nherald_probes_sent_total 3\n# HELP herald_x_seconds X.\n# TYPE herald_x_seconds gauge\n# UNIT herald_x_seconds seconds\nherald_x_seconds 1.5\n# EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP herald_probes_sent_total Probes sent.\n# TYPE herald_probes_sent_total counter\nherald_probes_sent_total 3\n# HELP herald_x_seconds X.\n# TYPE herald_x_seconds gauge\nherald_x_seconds 1.5\n"
        );
    }
}
