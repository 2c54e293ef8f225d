//! Herald's announcer: one running instance telling its consumers, over NATS, that it is
//! alive, where it serves and how loaded it is.
//!
//! `start()` publishes a first token before it returns, then one every `interval` (+-10 %
//! jitter); the announcer answers probes at once (coalesced), republishes right after a NATS
//! reconnect, and publishes early when the load moves by more than a delta. `drain()` keeps
//! the instance listed but unpicked; `shutdown()` sends a `leaving` token so subscribers drop
//! it at once. Dropping the handle stops the announcer silently, like a crash: subscribers
//! drop the instance when its TTL runs out.
//!
//! With etcd, `start()` registers the instance first (a lease, and one create-if-absent
//! transaction on its key) and every token carries the registration's epoch. The announcer
//! keeps the lease alive, registers again if it is lost, and stops on its own when etcd's
//! authority ends its incarnation: [`AnnouncerHandle::stopped`] says why ([`Stopped`]).
//! `shutdown()` also revokes the lease, so the key disappears at once.
//!
//! ```no_run
//! use std::time::Duration;
//! use herald_announcer::Announcer;
//! use herald_shared::{EtcdConfig, NatsConfig};
//!
//! # fn current_load() -> f32 { 0.3 }
//! # async fn run() -> Result<(), herald_announcer::Error> {
//! let announcer = Announcer::builder("billing", "10.0.0.7:8080")
//!     .nats(NatsConfig::new(["nats://127.0.0.1:4222"]))
//!     .etcd(EtcdConfig::new(["http://127.0.0.1:2379"]))
//!     .instance("billing-1")
//!     .zone("eu-1")
//!     .meta("version", "1.4.2")
//!     .interval(Duration::from_secs(1))
//!     .load_fn(current_load)
//!     .start()
//!     .await?;
//!
//! // ... serve, until told to stop or until etcd ends this incarnation ...
//! let stopped = announcer.stopped();
//! # let serve = std::future::pending::<()>();
//! tokio::select! {
//!     () = serve => {}
//!     reason = stopped => {
//!         eprintln!("announcer stopped: {reason}");
//!         return Ok(());
//!     }
//! }
//!
//! announcer.drain().await?;
//! // ... let in-flight requests finish ...
//! announcer.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`builder`]: [`Announcer::builder`] and its settings; validates them into a `Plan`
//!   before connecting;
//! - `plan`: what `start()` works from: the settings validated, the first token;
//! - `settings`: defaults and bounds of the settings, and the first token's checks;
//! - `start`: connect, subscribe and confirm probes, register, publish the first token, hand
//!   the broadcasting to the connection's scheduler;
//! - `messages`: the messages between the handle, the broadcasting, the registration and a
//!   session (a leaf: every side imports it, it imports none of them);
//! - `probes`: probe subscriptions shared by the announcers of a NATS connection;
//! - `reconnects`: one poller per NATS connection that tells its announcers of a reconnect;
//! - `task`: the broadcast task, sole owner of the token, timer, probes and reconnects;
//! - [`Connection`]: one NATS connection shared by the announcers of a process, owner of the
//!   scheduler that sends all their tokens;
//! - [`Session`]: one lease shared by the announcers of a process, kept alive by one task, one
//!   watch stream for all their keys, and their registrations kept as records by one task
//!   (its registry): registering again, rewrites, the news of each key that fence or
//!   deregister, and the removal at shutdown;
//! - `registrar`: `start()`'s registration: the session to register on (the caller's, or
//!   one of the announcer alone), the first claim, and the record handed to the session;
//! - `etcd_calls`: the registration's etcd calls, bounded, their answers sorted;
//! - [`status`]: the reason an announcer stopped ([`Stopped`]);
//! - `schedule`: the timing rules (jitter, probe coalescing, early-token rate limit), pure;
//! - `pacer`: the bound on how fast `seq` advances, which subscribers hold tokens to;
//! - [`handle`]: [`AnnouncerHandle`], the running announcer: load, drain, metadata, shutdown;
//! - [`stats`]: the counters;
//! - [`error`]: [`Error`] and [`ErrorKind`];
//! - `instance_id`: the default instance id.
#![deny(missing_docs)]

pub mod builder;
mod connection;
pub mod error;
mod etcd_calls;
#[cfg(feature = "faults")]
pub mod faults;
pub mod handle;
mod instance_id;
mod load_sampler;
mod messages;
mod namesake;
mod pacer;
mod plan;
mod predecessor;
mod probes;
mod reconnects;
mod registrar;
mod schedule;
mod scheduler;
mod session;
mod settings;
mod start;
pub mod stats;
pub mod status;
mod task;

pub use builder::{Announcer, AnnouncerBuilder};
pub use connection::Connection;
pub use error::{Error, ErrorKind};
pub use handle::AnnouncerHandle;
pub use session::{Session, SessionStats};
pub use stats::Stats;
pub use status::Stopped;
