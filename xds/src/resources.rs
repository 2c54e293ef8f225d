//! What one service becomes in xDS v3: a Listener (gRPC's `api_listener`, routing everything
//! to the cluster), a Cluster (endpoints over ADS, balanced by weight), and a
//! ClusterLoadAssignment built from the subscriber's view. Pure functions: no I/O.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster, LoadBalancingPolicy, cluster::ClusterDiscoveryType, cluster::DiscoveryType,
    cluster::EdsClusterConfig, load_balancing_policy::Policy,
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, HealthStatus, Http2ProtocolOptions,
    Locality, Metadata, SocketAddress, TypedExtensionConfig, address,
    config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager::RouteSpecifier,
    http_filter::ConfigType,
};
use envoy_types::pb::envoy::extensions::load_balancing_policies::ring_hash::v3::{
    RingHash, ring_hash,
};
use envoy_types::pb::envoy::extensions::load_balancing_policies::round_robin::v3::RoundRobin;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
};
use envoy_types::pb::google::protobuf::{Struct, UInt32Value, Value, value::Kind};
use envoy_types::util::pack_any;
use herald_shared::State;
use herald_subscriber::Instance;

/// The largest endpoint weight: 10,000 endpoints at it still sum below `u32::MAX`, which
/// Envoy requires of a locality.
pub const MAX_ENDPOINT_WEIGHT: u32 = 100_000;

/// An endpoint's xDS weight: Herald's weight over its broadcast load,
/// `clamp(round(weight × 10 / (load + 0.01)), 1, 100,000)`. At equal weight an instance at
/// load 0.9 gets 0.11 / 0.91, about an eighth to a ninth, of the calls of one at 0.1; one
/// at load 0 gets ten times those of one at 0.1.
///
/// ```
/// use herald_xds::resources::endpoint_weight;
///
/// assert_eq!(endpoint_weight(100, 0.1), 9_091);
/// assert_eq!(endpoint_weight(100, 0.9), 1_099);
/// ```
pub fn endpoint_weight(weight: u32, load: f32) -> u32 {
    let raw = f64::from(weight) * 10.0 / (f64::from(load.max(0.0)) + 0.01);
    raw.round().clamp(1.0, f64::from(MAX_ENDPOINT_WEIGHT)) as u32
}

/// Listener `service` for proxyless gRPC: an `api_listener` whose connection manager routes
/// every call to cluster `service`, with the router filter last (grpcio refuses a manager
/// without filters).
pub fn listener(service: &str) -> Listener {
    let route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(String::new())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(service.to_owned())),
            ..Default::default()
        })),
        ..Default::default()
    };
    let manager = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: service.to_owned(),
            virtual_hosts: vec![VirtualHost {
                name: service.to_owned(),
                domains: vec!["*".to_owned()],
                routes: vec![route],
                ..Default::default()
            }],
            ..Default::default()
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_owned(),
            config_type: Some(ConfigType::TypedConfig(pack_any(Router::default()))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: service.to_owned(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(manager)),
        }),
        ..Default::default()
    }
}

/// Cluster `service`: endpoints over ADS, balanced by ring hash without ring sizes (which,
/// with no hash policy, is weighted random and so follows the endpoint weights), falling back
/// to round robin for a client that lacks it.
pub fn cluster(service: &str) -> Cluster {
    let policy = |name: &str, config| Policy {
        typed_extension_config: Some(TypedExtensionConfig {
            name: name.to_owned(),
            typed_config: Some(config),
        }),
    };
    Cluster {
        name: service.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ConfigSource {
                resource_api_version: ApiVersion::V3 as i32,
                config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource::default(),
                )),
                ..Default::default()
            }),
            service_name: String::new(),
        }),
        // Envoy speaks HTTP/1.1 upstream unless told: the backends are gRPC services.
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            pack_any(HttpProtocolOptions {
                upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                    ExplicitHttpConfig {
                        protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        )),
                    },
                )),
                ..Default::default()
            }),
        )]
        .into_iter()
        .collect(),
        load_balancing_policy: Some(LoadBalancingPolicy {
            policies: vec![
                policy(
                    "envoy.load_balancing_policies.ring_hash",
                    // grpc-js refuses the default hash function (and ring sizes).
                    pack_any(RingHash {
                        hash_function: ring_hash::HashFunction::XxHash as i32,
                        ..Default::default()
                    }),
                ),
                policy(
                    "envoy.load_balancing_policies.round_robin",
                    pack_any(RoundRobin::default()),
                ),
            ],
        }),
        ..Default::default()
    }
}

/// What building an assignment left out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LeftOut {
    /// Instances whose address is not an IP literal and port (`host:port` with a name).
    pub not_ip: Vec<String>,
}

/// ClusterLoadAssignment `service` from a view of it: one locality per zone, the available
/// instances HEALTHY and the draining ones DRAINING (removed ones are absent), weighted by
/// [`endpoint_weight`], with Herald's figures in each endpoint's metadata (`herald`: id,
/// load, weight, epoch, zone). Instances known only from etcd appear only when no confirmed
/// one is listed, as with `pick`. An empty view is an empty assignment: calls fail at once,
/// and `wait_for_ready` calls wait for the first instance.
pub fn assignment(service: &str, view: &[Instance]) -> (ClusterLoadAssignment, LeftOut) {
    let any_confirmed = view.iter().any(|i| i.is_confirmed());
    let mut left_out = LeftOut::default();
    let mut localities: Vec<LocalityLbEndpoints> = Vec::new();
    for instance in view {
        if any_confirmed && !instance.is_confirmed() {
            continue;
        }
        let health = match instance.state() {
            State::Up => HealthStatus::Healthy,
            State::Draining => HealthStatus::Draining,
            _ => continue,
        };
        let Some(endpoint) = lb_endpoint(instance, health) else {
            left_out.not_ip.push(instance.id().to_owned());
            continue;
        };
        let zone = instance.zone().unwrap_or("");
        let same_zone =
            |l: &&mut LocalityLbEndpoints| l.locality.as_ref().is_some_and(|x| x.zone == zone);
        match localities.iter_mut().find(same_zone) {
            Some(l) => l.lb_endpoints.push(endpoint),
            None => localities.push(LocalityLbEndpoints {
                locality: Some(Locality {
                    zone: zone.to_owned(),
                    ..Default::default()
                }),
                lb_endpoints: vec![endpoint],
                // Unset or zero skips the whole locality.
                load_balancing_weight: Some(UInt32Value { value: 1 }),
                ..Default::default()
            }),
        }
    }
    let assignment = ClusterLoadAssignment {
        cluster_name: service.to_owned(),
        endpoints: localities,
        ..Default::default()
    };
    (assignment, left_out)
}

fn lb_endpoint(instance: &Instance, health: HealthStatus) -> Option<LbEndpoint> {
    let addr = instance.socket_addr()?;
    let ip = match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => ip.to_string(),
    };
    let socket = SocketAddress {
        address: ip,
        port_specifier: Some(PortSpecifier::PortValue(u32::from(addr.port()))),
        ..Default::default()
    };
    let text = |s: String| Value {
        kind: Some(Kind::StringValue(s)),
    };
    let number = |n: f64| Value {
        kind: Some(Kind::NumberValue(n)),
    };
    let figures = Struct {
        fields: [
            ("instance".to_owned(), text(instance.id().to_owned())),
            ("load".to_owned(), number(f64::from(instance.load()))),
            ("weight".to_owned(), number(f64::from(instance.weight()))),
            ("epoch".to_owned(), number(instance.epoch() as f64)),
            (
                "zone".to_owned(),
                text(instance.zone().unwrap_or("").to_owned()),
            ),
        ]
        .into_iter()
        .collect(),
    };
    Some(LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(socket)),
            }),
            ..Default::default()
        })),
        health_status: health as i32,
        metadata: Some(Metadata {
            filter_metadata: [("herald".to_owned(), figures)].into_iter().collect(),
            ..Default::default()
        }),
        load_balancing_weight: Some(UInt32Value {
            value: endpoint_weight(instance.weight(), instance.load()),
        }),
    })
}

#[cfg(test)]
mod tests {
    use herald_shared::Token;

    use super::*;

    #[test]
    fn a_ninth_of_the_calls_at_load_0_9_against_0_1() {
        let ratio = f64::from(endpoint_weight(100, 0.9)) / f64::from(endpoint_weight(100, 0.1));
        assert!(
            (0.11..0.13).contains(&ratio),
            "about an eighth to a ninth: {ratio}"
        );
        assert_eq!(endpoint_weight(100, 1e9), 1, "never zero (NACKed)");
        assert_eq!(endpoint_weight(10_000, 0.0), MAX_ENDPOINT_WEIGHT);
        assert_eq!(endpoint_weight(200, 0.5), 2 * endpoint_weight(100, 0.5));
    }

    fn view(tokens: &[Token]) -> Vec<Instance> {
        tokens.iter().map(Instance::from_token).collect()
    }

    fn token(id: &str, addr: &str, zone: Option<&str>, load: f32) -> Token {
        let mut t = Token::new("db", id, addr);
        t.zone = zone.map(str::to_owned);
        t.load = load;
        t
    }

    #[test]
    fn an_assignment_groups_by_zone_and_leaves_out_names() {
        let mut draining = token("d", "10.0.0.4:80", Some("b"), 0.2);
        draining.state = State::Draining;
        let (cla, left_out) = assignment(
            "db",
            &view(&[
                token("a1", "10.0.0.1:80", Some("a"), 0.1),
                token("a2", "[::1]:81", Some("a"), 0.9),
                token("b1", "10.0.0.3:80", Some("b"), 0.1),
                draining,
                token("n", "db.example:80", Some("b"), 0.1),
            ]),
        );
        assert_eq!(cla.cluster_name, "db");
        assert_eq!(left_out.not_ip, vec!["n".to_owned()]);
        let zones: Vec<(&str, usize)> = cla
            .endpoints
            .iter()
            .map(|l| {
                (
                    l.locality.as_ref().unwrap().zone.as_str(),
                    l.lb_endpoints.len(),
                )
            })
            .collect();
        assert_eq!(zones, vec![("a", 2), ("b", 2)]);
        let health: Vec<i32> = cla.endpoints[1]
            .lb_endpoints
            .iter()
            .map(|e| e.health_status)
            .collect();
        assert_eq!(
            health,
            vec![HealthStatus::Healthy as i32, HealthStatus::Draining as i32]
        );
        assert!(
            cla.endpoints
                .iter()
                .all(|l| l.load_balancing_weight.is_some_and(|w| w.value > 0)),
            "a locality without weight would be skipped"
        );
    }

    #[test]
    fn a_listener_routes_to_its_cluster_through_the_router() {
        let l = listener("db");
        let any = l.api_listener.unwrap().api_listener.unwrap();
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        );
        let c = cluster("db");
        let names: Vec<&str> = c
            .load_balancing_policy
            .as_ref()
            .unwrap()
            .policies
            .iter()
            .map(|p| p.typed_extension_config.as_ref().unwrap().name.as_str())
            .collect();
        assert_eq!(
            names,
            vec![
                "envoy.load_balancing_policies.ring_hash",
                "envoy.load_balancing_policies.round_robin"
            ]
        );
    }
}
