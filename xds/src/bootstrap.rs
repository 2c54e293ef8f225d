//! The bootstrap a gRPC client reads (`GRPC_XDS_BOOTSTRAP` names a file holding it, or
//! `GRPC_XDS_BOOTSTRAP_CONFIG` holds it) to find Herald's xDS server. grpcio, grpc-js-xds and
//! grpc-go take it as it is: `ignore_resource_deletion` keeps a client's last configuration
//! while the agent restarts, and grpc-js-xds fails every call without `node.locality`.

/// The bootstrap JSON for a server at `server_uri` (`host:port` or `unix:/path`), with this
/// node id and, when given, zone.
///
/// ```
/// let json = herald_xds::bootstrap::json("127.0.0.1:18000", "billing-client", Some("eu-1"));
/// assert!(json.contains("\"ignore_resource_deletion\""));
/// assert!(json.contains("\"zone\":\"eu-1\""));
/// ```
pub fn json(server_uri: &str, node_id: &str, zone: Option<&str>) -> String {
    let locality = match zone {
        Some(zone) => serde_json::json!({ "zone": zone }),
        None => serde_json::json!({}),
    };
    serde_json::json!({
        "xds_servers": [{
            "server_uri": server_uri,
            "channel_creds": [{ "type": "insecure" }],
            "server_features": ["xds_v3", "ignore_resource_deletion"],
        }],
        "node": { "id": node_id, "locality": locality },
    })
    .to_string()
}
