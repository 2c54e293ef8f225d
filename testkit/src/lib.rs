//! Test-only kit for Herald: real `nats-server` and `etcd` processes, single or clustered, on
//! free loopback ports, each in its own temp dir and torn down with the test, including when
//! the test panics or the test binary is killed.
//!
//! ```no_run
//! # async fn demo() {
//! use herald_testkit::{EtcdServer, NatsServer};
//!
//! let mut nats = NatsServer::start().await;
//! let etcd = EtcdServer::start().await;
//! println!("{} {}", nats.url(), etcd.endpoint());
//! nats.kill(); // clients now see the connection drop
//! nats.restart().await; // same port, same configuration
//! # }
//! ```
//!
//! Binaries are looked up on `PATH`, then in Debian's locations (`/usr/sbin/nats-server`,
//! `/usr/bin/etcd`); `HERALD_NATS_SERVER`, `HERALD_ETCD` and `HERALD_ETCDCTL` override them.
//! Each server runs in a process group of its own, so a terminal's Ctrl-C reaches only the
//! program that started it, which can then shut down before stopping its servers.
//! Every start waits for real readiness and panics with the tail of the server's log when it
//! does not come.
//!
//! # Layout
//! - [`ports`]: free loopback ports, never handed out twice in one process;
//! - [`process`]: [`ChildGuard`], the child that is SIGKILLed and reaped on drop, and
//!   [`spawn_guarded`] for any other process a test starts;
//! - [`nats`]: one `nats-server` ([`NatsServer`], [`NatsBuilder`]), with its generated config
//!   file in `nats::conf`;
//! - [`nats_cluster`]: routed `nats-server`s ([`NatsCluster`]);
//! - [`etcd`]: one `etcd` member ([`EtcdServer`], [`EtcdBuilder`]), with `etcdctl`, auth and
//!   status calls in `etcd::ctl`;
//! - [`etcd_cluster`]: a multi-member `etcd` cluster ([`EtcdCluster`]);
//! - [`http`]: GET and POST to health and monitoring endpoints, JSON answers decoded;
//! - `launch` (private): binary lookup, log files, readiness loop;
//! - `sys` (private): the parent-death signal and `kill(2)`, through rustix.
#![deny(missing_docs)]

pub mod etcd;
pub mod etcd_cluster;
pub mod http;
mod launch;
pub mod nats;
pub mod nats_cluster;
pub mod ports;
pub mod process;
mod sys;

pub use etcd::{EtcdBuilder, EtcdServer, EtcdStatus, EtcdTls};
pub use etcd_cluster::EtcdCluster;
pub use nats::{ADVISORY_SUBJECT, NatsBuilder, NatsRoutes, NatsServer, NatsTls};
pub use nats_cluster::NatsCluster;
pub use ports::free_port;
pub use process::{ChildGuard, bin_exe, pid_alive, signal_pid, spawn_guarded, try_spawn_guarded};
