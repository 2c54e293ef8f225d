//! Herald's views served as xDS v3, so that gRPC clients in any language (`xds:///service`)
//! and Envoy balance over a Herald subscriber without a Herald library.
//!
//! One aggregated (ADS) stream per client, state of the world. Per service `S`: Listener `S`
//! (gRPC's `api_listener`, routing every call to cluster `S`), Cluster `S` (endpoints over
//! ADS, ring hash without ring sizes, falling back to round robin, so that gRPC clients
//! follow endpoint weights), and ClusterLoadAssignment `S`: available instances HEALTHY,
//! draining ones DRAINING, removed ones absent, one locality per zone, each endpoint weighted
//! by Herald's weight over its broadcast load ([`resources::endpoint_weight`]). A view change
//! reaches the clients as one response per changed service, coalesced over 5 ms. The delta
//! method answers UNIMPLEMENTED (no gRPC client uses it).
//!
//! ```no_run
//! use std::sync::Arc;
//! use herald_subscriber::Subscriber;
//! use herald_shared::NatsConfig;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let subscriber = Arc::new(
//!     Subscriber::builder()
//!         .nats(NatsConfig::new(["nats://127.0.0.1:4222"]))
//!         .start()
//!         .await?,
//! );
//! let xds = herald_xds::XdsServer::new(subscriber);
//! let bound = herald_xds::Bound::bind("127.0.0.1:18000").await?;
//! xds.serve(bound, std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`resources`]: what a service becomes (Listener, Cluster, assignment), pure;
//! - `hub`: the assignments clients asked for, rebuilt when the subscriber's events say so;
//! - `stream`: one ADS stream's subscriptions, versions, nonces and NACKs;
//! - [`server`]: the tonic service and where it listens (TCP or a Unix socket);
//! - [`bootstrap`]: the bootstrap JSON a gRPC client reads to find the server;
//! - [`types`]: the resource types and their URLs;
//! - [`stats`]: the counters.
#![deny(missing_docs)]

pub mod bootstrap;
mod hub;
pub mod resources;
pub mod server;
pub mod stats;
mod stream;
pub mod types;

pub use server::{Bound, XdsServer};
pub use stats::{PUSH_BUCKETS_US, PushLatency, XdsStats};
pub use types::Type;
