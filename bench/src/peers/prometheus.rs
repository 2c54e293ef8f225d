//! The few counters read from etcd's Prometheus text (`/metrics`) and from nats-server's
//! `/varz`, without a parser library.

/// etcd's request counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EtcdCounters {
    /// `grpc_server_handled_total`, every method and code: finished unary calls, and
    /// streams that ended.
    pub handled: f64,
    /// `grpc_server_msg_received_total` of streaming methods: each keep-alive, each watch
    /// create or cancel is one message on a long-lived stream, not a handled call.
    pub stream_messages: f64,
    /// The `LeaseKeepAlive` part of `stream_messages`.
    pub keep_alives: f64,
    /// `etcd_debugging_lease_revoked_total`: leases revoked by a client or by expiry.
    pub leases_revoked: f64,
}

impl EtcdCounters {
    /// Reads the counters from the text of etcd's `/metrics`.
    pub fn parse(text: &str) -> EtcdCounters {
        let mut c = EtcdCounters::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name_labels, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = name_labels.split_once('{').unwrap_or((name_labels, ""));
            match name {
                "grpc_server_handled_total" => c.handled += value,
                "grpc_server_msg_received_total" if !labels.contains("grpc_type=\"unary\"") => {
                    c.stream_messages += value;
                    if labels.contains("grpc_method=\"LeaseKeepAlive\"") {
                        c.keep_alives += value;
                    }
                }
                "etcd_debugging_lease_revoked_total" => c.leases_revoked += value,
                _ => {}
            }
        }
        c
    }

    /// Requests as the bench counts them: handled calls plus messages on streams.
    pub fn requests(&self) -> f64 {
        self.handled + self.stream_messages
    }
}

/// The numeric value of `"key": 123` in nats-server's `/varz` JSON (first occurrence).
pub fn varz_u64(json: &str, key: &str) -> Option<u64> {
    let pattern = format!("\"{key}\"");
    let at = json.find(&pattern)? + pattern.len();
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_unary_calls_and_stream_messages() {
        let text = r#"# HELP grpc_server_handled_total Total number of RPCs completed on the server.
grpc_server_handled_total{grpc_code="OK",grpc_method="LeaseGrant",grpc_service="etcdserverpb.Lease",grpc_type="unary"} 3
grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1.5e+01
grpc_server_msg_received_total{grpc_method="LeaseGrant",grpc_service="etcdserverpb.Lease",grpc_type="unary"} 3
grpc_server_msg_received_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 40
grpc_server_msg_received_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 2
etcd_debugging_lease_revoked_total 7
"#;
        let c = EtcdCounters::parse(text);
        assert_eq!(c.handled, 18.0);
        assert_eq!(
            c.stream_messages, 42.0,
            "unary messages are not counted twice"
        );
        assert_eq!(c.keep_alives, 40.0);
        assert_eq!(c.leases_revoked, 7.0);
        assert_eq!(c.requests(), 60.0);
    }

    #[test]
    fn reads_varz_numbers() {
        let j = r#"{"in_msgs": 1200, "out_msgs":3400, "in_bytes": 9}"#;
        assert_eq!(varz_u64(j, "in_msgs"), Some(1200));
        assert_eq!(varz_u64(j, "out_msgs"), Some(3400));
        assert_eq!(varz_u64(j, "slow_consumers"), None);
    }
}
