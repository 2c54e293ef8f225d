//! Herald's subscriber: a live, TTL-expiring view of announced instances, with client-side
//! load balancing.
//!
//! It listens to announcers' tokens on NATS, keeps each instance until its TTL passes
//! without a newer token (a crash) or it says goodbye (a graceful stop), and lets consumers
//! pick an instance by announced load without a registry read on the hot path.
//!
//! With etcd ([`SubscriberBuilder::etcd`]) the registration is the identity: a token applies
//! only with its registration's epoch, address, zone, weight, metadata and TTL, so a
//! publisher on the bus can neither list an unregistered instance nor redirect a registered
//! one. Instances known from etcd but not yet heard on NATS are listed as unconfirmed
//! ([`Instance::is_confirmed`]) and picked only when no confirmed one is available.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use futures::StreamExt;
//! use herald_shared::NatsConfig;
//! use herald_subscriber::{Event, Strategy, Subscriber};
//!
//! let subscriber = Subscriber::builder()
//!     .nats(NatsConfig::new(["nats://127.0.0.1:4222"]))
//!     .start()
//!     .await?;
//! let instance = subscriber
//!     .pick_wait("billing", Strategy::PowerOfTwoChoices, Duration::from_secs(2))
//!     .await?;
//! println!("call {}", instance.addr());
//!
//! let mut events = subscriber.events();
//! while let Some(event) = events.next().await {
//!     if let Event::Removed { instance, cause } = event {
//!         println!("{} left: {}", instance.id(), cause.as_str());
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`builder`](SubscriberBuilder): settings, validation, and `start()`;
//! - `ingest`: the task that owns the store: batches tokens, sweeps, watches the connection;
//! - `connections`: whether NATS and the etcd watch are up, and since when;
//! - `advisories`: NATS disconnect advisories (a crash seen as a closed connection) and the
//!   start-up check that they arrive;
//! - `probe_pacing`: when a probe may go, thinned out while the subscription keeps overflowing;
//! - `etcd_sync`: the etcd source: per followed service (or for everything), a paged
//!   listing at one revision, then a resuming watch;
//! - `merge`: every rule of the design (tokens, etcd writes and deletes, cluster changes,
//!   deadlines, held tokens), as one pure function;
//! - `store`: carries the merge's outcomes out: live entries and registrations, tombstones
//!   (moka), held tokens, the expiry schedule, snapshot publishing;
//! - `view`: per-service snapshots readers share, lock-free;
//! - `pick`: pick strategies, pure functions over a snapshot (confirmed instances first);
//! - `hash`: the stable string hash of affinity picks;
//! - `discover` (feature `tower`): a service's instances as a `tower::discover::Discover`;
//! - `event`: the change stream and removal causes;
//! - `stats`: counters and the announce-to-visible latency histogram;
//! - `instance`: the instance handle.
#![deny(missing_docs)]

mod advisories;
mod builder;
mod connections;
#[cfg(feature = "tower")]
mod discover;
mod error;
mod etcd_sync;
mod event;
mod hash;
mod ingest;
mod instance;
#[cfg(feature = "internals")]
pub mod internals;
mod merge;
mod packed;
mod pick;
mod probe_pacing;
mod stats;
mod store;
mod subscriber;
mod view;

pub use builder::{DEFAULT_DISCONNECT_GRACE, SubscriberBuilder};
pub use connections::{CONNECTION_LOG, ConnectionState, Connections};
#[cfg(feature = "tower")]
pub use discover::Discover;
pub use error::{Error, ErrorKind};
pub use event::{Event, EventStream, RemovalCause};
pub use instance::Instance;
pub use merge::DropReason;
pub use pick::Strategy;
pub use stats::{LATENCY_BUCKETS_MS, LatencyHistogram, Stats};
pub use subscriber::Subscriber;
pub use view::ServiceSnapshot;
