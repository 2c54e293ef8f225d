//! The counters the benchmarks read from the servers: etcd's Prometheus text (`/metrics`,
//! the few lines of it that matter, read here) and nats-server's `/varz` JSON.

use std::io;

use serde::Deserialize;

use herald_testkit::{EtcdServer, NatsServer, http};

/// etcd's counters and gauges at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EtcdMetrics {
    /// `grpc_server_handled_total`, every method and code: finished unary calls and streams
    /// that ended.
    pub handled: f64,
    /// `grpc_server_msg_received_total` of streaming methods: each keep-alive, each watch
    /// create or cancel is one message on a long-lived stream.
    pub stream_messages: f64,
    /// The `LeaseKeepAlive` part of `stream_messages`.
    pub keep_alives: f64,
    /// `etcd_debugging_lease_renewed_total`: keep-alives that renewed a lease.
    pub leases_renewed: f64,
    /// `etcd_debugging_lease_revoked_total`: leases revoked by a client or by expiry.
    pub leases_revoked: f64,
    /// `grpc_server_started_total` minus `grpc_server_handled_total` of `Watch`: gRPC watch
    /// streams open now.
    pub grpc_watch_streams: f64,
    /// `etcd_debugging_mvcc_watch_stream_total`: watch streams open in the MVCC store.
    pub watch_streams: f64,
    /// `etcd_debugging_mvcc_watcher_total`: watchers on those streams.
    pub watchers: f64,
    /// `etcd_debugging_mvcc_slow_watcher_total`: watchers not caught up yet.
    pub slow_watchers: f64,
    /// `etcd_mvcc_db_total_size_in_bytes`: size of the backend file.
    pub db_size: f64,
    /// `etcd_mvcc_db_total_size_in_use_in_bytes`: the part of it in use.
    pub db_in_use: f64,
    /// `etcd_debugging_mvcc_keys_total`: keys in the store.
    pub keys: f64,
}

impl EtcdMetrics {
    /// Reads the figures from the text of etcd's `/metrics`.
    pub fn parse(text: &str) -> EtcdMetrics {
        let mut m = EtcdMetrics::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name_labels, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = name_labels.split_once('{').unwrap_or((name_labels, ""));
            let watch = labels.contains("grpc_method=\"Watch\"");
            match name {
                "grpc_server_handled_total" => {
                    m.handled += value;
                    if watch {
                        m.grpc_watch_streams -= value;
                    }
                }
                "grpc_server_started_total" if watch => m.grpc_watch_streams += value,
                "grpc_server_msg_received_total" if !labels.contains("grpc_type=\"unary\"") => {
                    m.stream_messages += value;
                    if labels.contains("grpc_method=\"LeaseKeepAlive\"") {
                        m.keep_alives += value;
                    }
                }
                "etcd_debugging_lease_renewed_total" => m.leases_renewed += value,
                "etcd_debugging_lease_revoked_total" => m.leases_revoked += value,
                "etcd_debugging_mvcc_watch_stream_total" => m.watch_streams = value,
                "etcd_debugging_mvcc_watcher_total" => m.watchers = value,
                "etcd_debugging_mvcc_slow_watcher_total" => m.slow_watchers = value,
                "etcd_mvcc_db_total_size_in_bytes" => m.db_size = value,
                "etcd_mvcc_db_total_size_in_use_in_bytes" => m.db_in_use = value,
                "etcd_debugging_mvcc_keys_total" => m.keys = value,
                _ => {}
            }
        }
        m
    }

    /// Requests as the bench counts them: handled calls plus messages on streams.
    pub fn requests(&self) -> f64 {
        self.handled + self.stream_messages
    }

    /// Reads `server`'s `/metrics` now.
    ///
    /// # Errors
    ///
    /// When the endpoint does not answer.
    pub async fn read(server: &EtcdServer) -> io::Result<EtcdMetrics> {
        let port = port_of(&server.metrics_url());
        Ok(EtcdMetrics::parse(&http::get(port, "/metrics").await?.body))
    }
}

/// nats-server's message and byte counters at one moment (`/varz`). Bytes are payload bytes,
/// without the protocol lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NatsVarz {
    /// Messages received from clients.
    pub in_msgs: u64,
    /// Messages delivered to clients.
    pub out_msgs: u64,
    /// Payload bytes received.
    pub in_bytes: u64,
    /// Payload bytes delivered.
    pub out_bytes: u64,
    /// Slow-consumer events so far.
    pub slow_consumers: u64,
    /// Subscriptions on the server now.
    pub subscriptions: u64,
}

impl NatsVarz {
    /// Reads the counters from `/varz`'s JSON.
    ///
    /// # Errors
    ///
    /// When the text is not a JSON object of these counters.
    pub fn parse(json: &str) -> serde_json::Result<NatsVarz> {
        serde_json::from_str(json)
    }

    /// Reads `server`'s `/varz` now.
    ///
    /// # Errors
    ///
    /// When the endpoint does not answer.
    pub async fn read(server: &NatsServer) -> io::Result<NatsVarz> {
        let body = http::get(server.monitor_port(), "/varz").await?.body;
        NatsVarz::parse(&body).map_err(io::Error::other)
    }
}

/// The port of `http://127.0.0.1:PORT`.
fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("a URL ending in :PORT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_etcd_figures() {
        let text = r#"# HELP grpc_server_handled_total Total number of RPCs completed on the server.
grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1.5e+01
grpc_server_handled_total{grpc_code="Canceled",grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 2
grpc_server_started_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 12
grpc_server_msg_received_total{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 15
grpc_server_msg_received_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 40
grpc_server_msg_received_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 3
etcd_debugging_lease_revoked_total 7
etcd_debugging_mvcc_watch_stream_total 10
etcd_debugging_mvcc_watcher_total 5000
etcd_mvcc_db_total_size_in_bytes 2.097152e+06
"#;
        let m = EtcdMetrics::parse(text);
        assert_eq!(m.handled, 17.0);
        assert_eq!(
            m.stream_messages, 43.0,
            "unary messages are not counted twice"
        );
        assert_eq!(m.keep_alives, 40.0);
        assert_eq!(m.requests(), 60.0);
        assert_eq!(m.grpc_watch_streams, 10.0, "12 started, 2 ended");
        assert_eq!((m.watch_streams, m.watchers), (10.0, 5000.0));
        assert_eq!(m.db_size, 2_097_152.0);
        assert_eq!(m.leases_revoked, 7.0);
    }

    #[test]
    fn reads_varz_numbers() {
        let j = r#"{"server_id": "N1", "in_msgs": 1200, "out_msgs":3400, "in_bytes": 9,
            "out_bytes": 10, "subscriptions": 7, "routes": 0}"#;
        let v = NatsVarz::parse(j).expect("a varz object");
        assert_eq!(
            (v.in_msgs, v.out_msgs, v.in_bytes, v.out_bytes),
            (1200, 3400, 9, 10)
        );
        assert_eq!((v.slow_consumers, v.subscriptions), (0, 7));
        assert_eq!(port_of("http://127.0.0.1:8222"), 8222);
        assert!(NatsVarz::parse("not json").is_err());
    }
}
