//! etcd-only discovery, the common pattern: each instance grants its own lease, puts its
//! key under it and keeps the lease alive every third of its TTL as its heartbeat, as etcd's
//! clients do; a consumer reads the prefix at one revision, then watches from the next.
//! A graceful leave revokes the lease (the key goes at once); a crash stops the keep-alives
//! and etcd deletes the key when the lease expires (etcd checks expiry every 500 ms).
//!
//! An instance whose lease was lost (etcd too slow to renew it in time) grants a new one
//! and puts its key again, as a real registration loop would; the losses are counted.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::peers::observer::Observer;
use crate::peers::processes::Processes;
use crate::peers::servers::{Endpoints, Servers};
use crate::peers::settings::Timing;
use crate::peers::system::{Background, SERVICE, System};

/// Pause before registering again after a failed attempt.
const RETRY: Duration = Duration::from_millis(200);

/// etcd-only discovery, the instances of each process on one etcd client.
pub struct EtcdOnly {
    etcd: Processes<Client>,
    consumer_etcd: Client,
    requested: Duration,
    counters: Arc<Counters>,
}

impl fmt::Debug for EtcdOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdOnly")
            .field("requested", &self.requested)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Counters {
    granted_ttl: AtomicI64,
    lease_losses: AtomicU64,
    stream_breaks: AtomicU64,
}

/// A running instance: its heartbeat task and its current lease.
#[derive(Debug)]
pub struct EtcdInstance {
    lease: Arc<AtomicI64>,
    task: JoinHandle<()>,
}

fn prefix() -> String {
    format!("/peers/services/{SERVICE}/")
}

/// What an instance writes, and how it asks for its lease.
#[derive(Debug)]
struct Registration {
    key: String,
    value: String,
    requested: Duration,
    counters: Arc<Counters>,
}

impl Registration {
    /// Grants a lease and puts the key under it; returns the lease and its granted TTL.
    async fn register(&self, etcd: &mut Client) -> Result<(i64, i64), String> {
        let grant = etcd
            .lease_grant(self.requested.as_secs() as i64, None)
            .await
            .map_err(|e| format!("lease grant: {e}"))?;
        let options = PutOptions::new().with_lease(grant.id());
        etcd.put(self.key.as_str(), self.value.as_str(), Some(options))
            .await
            .map_err(|e| format!("put: {e}"))?;
        self.counters
            .granted_ttl
            .store(grant.ttl(), Ordering::Relaxed);
        Ok((grant.id(), grant.ttl()))
    }

    /// The heartbeat: keeps the lease alive, and registers again whenever it is lost.
    async fn heartbeat(self, mut etcd: Client, lease: Arc<AtomicI64>, mut ttl: i64) {
        loop {
            let current = lease.load(Ordering::Relaxed);
            if !keep_alive(&mut etcd, current, ttl).await {
                self.counters.stream_breaks.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RETRY).await;
                continue;
            }
            self.counters.lease_losses.fetch_add(1, Ordering::Relaxed);
            let (renewed, granted) = loop {
                match self.register(&mut etcd).await {
                    Ok(granted) => break granted,
                    Err(_) => tokio::time::sleep(RETRY).await,
                }
            };
            lease.store(renewed, Ordering::Relaxed);
            ttl = granted;
        }
    }
}

impl EtcdOnly {
    /// Connects one client per process, and the consumer's own, to the servers at `servers`.
    pub async fn connect(servers: &Endpoints, timing: Timing, processes: usize) -> EtcdOnly {
        let each = Servers::connect_many(processes, || servers.etcd_client()).await;
        EtcdOnly {
            etcd: Processes::new(each),
            consumer_etcd: servers.etcd_client().await,
            requested: timing.etcd_lease,
            counters: Arc::default(),
        }
    }
}

/// Keeps `lease` alive every third of `ttl` until the stream breaks or etcd says the lease
/// is gone; returns whether it is gone.
async fn keep_alive(etcd: &mut Client, lease: i64, ttl: i64) -> bool {
    let Ok((mut keeper, mut responses)) = etcd.lease_keep_alive(lease).await else {
        // No stream, or etcd answered the first keep-alive with "not found".
        return true;
    };
    let period = Duration::from_millis((ttl.max(1) as u64) * 1000 / 3);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if keeper.keep_alive().await.is_err() {
                    return false;
                }
            }
            answer = responses.message() => match answer {
                Ok(Some(r)) if r.ttl() > 0 => {}
                Ok(Some(_)) => return true,
                Ok(None) | Err(_) => return false,
            },
        }
    }
}

impl System for EtcdOnly {
    type Instance = EtcdInstance;

    async fn start_consumer(&self, observer: Observer) -> Background {
        let mut etcd = self.consumer_etcd.clone();
        let prefix = prefix();
        let listed = etcd
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .expect("prefix read");
        let revision = listed.header().expect("response header").revision();
        for kv in listed.kvs() {
            observer.added(&String::from_utf8_lossy(&kv.key()[prefix.len()..]));
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut watch = etcd
            .watch(prefix.as_str(), Some(options))
            .await
            .expect("watch opens");
        Background::spawn(move |mut stop| async move {
            loop {
                let answer = tokio::select! {
                    biased;
                    _ = &mut stop => break,
                    answer = watch.message() => answer,
                };
                let response = match answer {
                    Ok(Some(r)) if !r.canceled() => r,
                    other => {
                        eprintln!("etcd-only consumer: watch ended: {other:?}");
                        break;
                    }
                };
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let id = String::from_utf8_lossy(&kv.key()[prefix.len()..]);
                    match event.event_type() {
                        EventType::Put => observer.added(&id),
                        EventType::Delete => observer.removed(&id, "deleted"),
                    }
                }
            }
        })
    }

    async fn start_instance(&self, id: String) -> Result<EtcdInstance, String> {
        let mut etcd = self.etcd.next().clone();
        let registration = Registration {
            key: format!("{}{id}", prefix()),
            value: format!(r#"{{"id":"{id}","addr":"127.0.0.1:7000"}}"#),
            requested: self.requested,
            counters: self.counters.clone(),
        };
        let (first, ttl) = registration.register(&mut etcd).await?;
        let lease = Arc::new(AtomicI64::new(first));
        let task = tokio::spawn(registration.heartbeat(etcd, lease.clone(), ttl));
        Ok(EtcdInstance { lease, task })
    }

    async fn leave(&self, instance: EtcdInstance) {
        instance.task.abort();
        let lease = instance.lease.load(Ordering::Relaxed);
        if let Err(e) = self.etcd.next().clone().lease_revoke(lease).await {
            eprintln!("etcd-only: revoke failed: {e}");
        }
    }

    fn crash(&self, instance: EtcdInstance) {
        // Dropping the keep-alive stream does not revoke: the lease runs out on its own.
        instance.task.abort();
    }

    fn notes(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        vec![
            (
                "granted lease TTL s",
                c.granted_ttl.load(Ordering::Relaxed) as u64,
            ),
            ("lease losses", c.lease_losses.load(Ordering::Relaxed)),
            (
                "keep-alive stream breaks",
                c.stream_breaks.load(Ordering::Relaxed),
            ),
        ]
    }
}
