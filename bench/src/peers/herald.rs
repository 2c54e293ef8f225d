//! Herald as the bench runs it: announcers on this process's shared NATS and etcd clients,
//! and a subscriber of the service (with etcd) as the consumer, read through `events()`.
//!
//! Two variants: each announcer with its own lease (Herald's default), or every announcer of
//! the process on one [`Session`] (one lease, one keep-alive per third of its TTL, one watch
//! stream). The instances are spread over the run's simulated processes (by default one),
//! so the session variant has one lease per process.
//!
//! The consumer ([`consumer`]) may also follow disconnect advisories: then a process that dies
//! is seen when its NATS connection closes, not when the TTL runs out.

use std::fmt;
use std::time::Duration;

use futures::StreamExt;
use herald_announcer::{Announcer, AnnouncerHandle, Session};
use herald_shared::{EtcdConfig, NatsConfig};
use herald_subscriber::{Event, Subscriber};

use crate::peers::observer::Observer;
use crate::peers::processes::Processes;
use crate::peers::servers::{Endpoints, Servers};
use crate::peers::settings::Timing;
use crate::peers::system::{Background, SERVICE, System};

/// Events buffered for the consumer: a whole fleet's `Added` at once must not lag.
const EVENT_CAPACITY: usize = 1 << 16;

/// Herald, with one etcd lease per announcer or one [`Session`] per process.
pub struct Herald {
    processes: Processes<Process>,
    endpoints: Endpoints,
    timing: Timing,
}

/// What the announcers of one process share.
struct Process {
    nats: herald_announcer::Connection,
    etcd: etcd_client::Client,
    session: Option<Session>,
}

impl fmt::Debug for Herald {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Herald")
            .field("processes", &self.processes.all().len())
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl Herald {
    /// Connects each of `processes` processes to the servers at `servers` (one NATS and one
    /// etcd client each); with `shared_lease`, also opens each process's session (its lease
    /// TTL is Herald's default lease TTL).
    pub async fn connect(
        servers: &Endpoints,
        timing: Timing,
        shared_lease: bool,
        processes: usize,
    ) -> Herald {
        let each = Servers::connect_many(processes, || async {
            let etcd = servers.etcd_client().await;
            let session = if shared_lease {
                let session = Session::with_client(etcd.clone(), timing.herald_lease).await;
                Some(session.expect("session lease granted"))
            } else {
                None
            };
            Process {
                nats: herald_announcer::Connection::new(servers.nats_client().await),
                etcd,
                session,
            }
        })
        .await;
        Herald {
            processes: Processes::new(each),
            endpoints: servers.clone(),
            timing,
        }
    }

    /// An announcer of `id` on the next process's clients (and session, if any), tuned to
    /// the run's target.
    pub fn announcer(&self, id: String) -> herald_announcer::AnnouncerBuilder {
        let process = self.processes.next();
        let builder = Announcer::builder(SERVICE, "127.0.0.1:7000")
            .connection(&process.nats)
            .instance(id)
            .interval(self.timing.herald_interval)
            .ttl(self.timing.herald_ttl);
        match &process.session {
            Some(session) => builder.session(session),
            None => builder
                .etcd_client(process.etcd.clone())
                .lease_ttl(self.timing.herald_lease),
        }
    }
}

/// A subscriber of the service with its own connections to `servers` and etcd as the
/// authority, reporting into `observer` until stopped; with `advisories`, it also follows
/// disconnect advisories on [`herald_testkit::ADVISORY_SUBJECT`] with that grace. When
/// stopped, it leaves its removal counters in `observer`.
pub async fn consumer(
    servers: &Endpoints,
    advisories: Option<Duration>,
    observer: Observer,
) -> Background {
    let mut builder = Subscriber::builder()
        .nats(NatsConfig::new([servers.nats.clone()]))
        .etcd(EtcdConfig::new([servers.etcd.clone()]))
        .service(SERVICE)
        .event_capacity(EVENT_CAPACITY);
    if let Some(grace) = advisories {
        builder = builder
            .disconnect_advisories(herald_testkit::ADVISORY_SUBJECT)
            .disconnect_grace(grace);
    }
    let subscriber = builder.start().await.expect("subscriber starts");
    let mut events = subscriber.events();
    Background::spawn(move |mut stop| async move {
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                event = events.next() => match event {
                    Some(Event::Added(i)) => observer.added(i.id()),
                    Some(Event::Removed { instance, cause }) => {
                        observer.removed(instance.id(), cause.as_str());
                    }
                    Some(Event::Lagged { missed }) => observer.lagged(missed),
                    Some(_) => {}
                    None => break,
                },
            }
        }
        let s = subscriber.stats();
        observer.counters(vec![
            ("expirations", s.expirations),
            ("disconnections", s.disconnections),
            ("disconnect advisories", s.disconnect_advisories),
            ("connections closed", s.connections_closed),
        ]);
        subscriber.shutdown().await;
    })
}

impl System for Herald {
    type Instance = AnnouncerHandle;

    async fn start_consumer(&self, observer: Observer) -> Background {
        consumer(&self.endpoints, None, observer).await
    }

    async fn start_instance(&self, id: String) -> Result<AnnouncerHandle, String> {
        self.announcer(id).start().await.map_err(|e| e.to_string())
    }

    async fn leave(&self, instance: AnnouncerHandle) {
        if let Err(e) = instance.shutdown().await {
            eprintln!("herald: shutdown failed: {e}");
        }
    }

    fn crash(&self, instance: AnnouncerHandle) {
        // A dropped handle stops broadcasting without a goodbye and leaves the lease to expire.
        drop(instance);
    }

    fn notes(&self) -> Vec<(&'static str, u64)> {
        let sessions: Vec<_> = self
            .processes
            .all()
            .iter()
            .filter_map(|p| p.session.as_ref().map(Session::stats))
            .collect();
        if sessions.is_empty() {
            return Vec::new();
        }
        let sum = |f: fn(&herald_announcer::SessionStats) -> u64| sessions.iter().map(f).sum();
        vec![
            ("sessions", sessions.len() as u64),
            ("session keep-alives", sum(|s| s.keep_alives)),
            ("session lease losses", sum(|s| s.lease_losses)),
            ("session watch streams", sum(|s| s.watch_streams)),
        ]
    }
}
