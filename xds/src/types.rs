//! The resource types Herald serves, and their type URLs.

/// A resource type of the xDS API that Herald serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    /// Listeners (LDS).
    Listener = 0,
    /// Clusters (CDS).
    Cluster = 1,
    /// Cluster load assignments (EDS).
    Endpoints = 2,
}

/// Every type, in the order responses go out (Envoy waits for EDS after a CDS change).
pub const TYPES: [Type; 3] = [Type::Listener, Type::Cluster, Type::Endpoints];

impl Type {
    /// The type URL of the resources of this type.
    pub fn url(self) -> &'static str {
        match self {
            Type::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Type::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Type::Endpoints => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        }
    }

    /// The type with this URL, if Herald serves it.
    pub fn of_url(url: &str) -> Option<Type> {
        TYPES.into_iter().find(|t| t.url() == url)
    }

    /// A short name, for logs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Type::Listener => "listener",
            Type::Cluster => "cluster",
            Type::Endpoints => "endpoints",
        }
    }
}
