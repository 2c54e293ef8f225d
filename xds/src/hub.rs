//! The assignments clients asked for, kept current: the subscriber's events mark a service
//! changed (the first change after a quiet spell at once, later ones coalesced over
//! [`COALESCE`]), and an assignment is rebuilt from the service's view only when a stream
//! asks for it after a change. Its version moves only when
//! what it says moved, so a load that did not change an endpoint weight sends nothing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use futures::StreamExt;
use herald_subscriber::{Event, Subscriber};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::resources;
use crate::stats::Counters;

/// How long changes that follow a first one are gathered before streams are told again: a
/// burst of changes to one service becomes one response per window, while a lone change goes
/// out at once.
pub(crate) const COALESCE: Duration = Duration::from_millis(5);

/// One service's assignment as last built.
struct Built {
    version: u64,
    /// Compared as a message: metadata maps encode in any order.
    assignment: ClusterLoadAssignment,
    resource: Any,
    /// The view changed since it was built.
    stale: bool,
    /// When the first change not yet built in was told.
    stale_since: Option<Instant>,
    /// When the change this build carries was told (none for a first build).
    changed_at: Option<Instant>,
}

/// A service's assignment as a stream sends it.
pub(crate) struct Assignment {
    pub(crate) version: u64,
    pub(crate) resource: Any,
    /// When the change it carries was told, for the push latency.
    pub(crate) changed_at: Option<Instant>,
}

/// Batches of changes remembered, so that a stream behind by no more than this looks only at
/// the services that changed; one further behind looks at every service it follows.
const LOGGED_BATCHES: usize = 1024;

/// The services each recent batch of changes touched, by generation.
#[derive(Default)]
struct ChangeLog {
    /// The generation of the newest batch (0: none yet).
    newest: u64,
    /// Batches `newest - len + 1 ..= newest`, oldest first; `None` when every service changed.
    batches: VecDeque<Option<HashSet<String>>>,
}

impl ChangeLog {
    /// Records a batch (`None`: every service) and returns its generation.
    fn record(&mut self, services: Option<HashSet<String>>) -> u64 {
        self.newest += 1;
        if self.batches.len() == LOGGED_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back(services);
        self.newest
    }

    /// The newest generation and what changed after generation `seen`.
    fn since(&self, seen: u64) -> (u64, Changed) {
        let behind = (self.newest - seen.min(self.newest)) as usize;
        if behind > self.batches.len() {
            return (self.newest, Changed::All);
        }
        let mut changed = HashSet::new();
        for batch in self.batches.range(self.batches.len() - behind..) {
            match batch {
                Some(services) => changed.extend(services.iter().cloned()),
                None => return (self.newest, Changed::All),
            }
        }
        (self.newest, Changed::Services(changed))
    }
}

/// What changed since a stream last looked.
pub(crate) enum Changed {
    /// Every service may have changed (events were missed, or the stream fell far behind).
    All,
    /// These services did.
    Services(HashSet<String>),
}

pub(crate) struct Hub {
    pub(crate) subscriber: Arc<Subscriber>,
    built: Mutex<HashMap<String, Built>>,
    /// Instances already warned of for an address that is not an IP literal.
    warned: Mutex<HashSet<(String, String)>>,
    /// Moves after each coalesced batch of changes; streams then look again.
    generation: watch::Sender<u64>,
    log: Mutex<ChangeLog>,
    next_version: AtomicU64,
    pub(crate) counters: Arc<Counters>,
    /// Cancelled when the server stops: every stream ends, so that a graceful shutdown does
    /// not wait for clients that never close theirs (they keep their last configuration).
    pub(crate) closing: CancellationToken,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    pub(crate) fn new(subscriber: Arc<Subscriber>, counters: Arc<Counters>) -> Arc<Hub> {
        Arc::new(Hub {
            subscriber,
            built: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashSet::new()),
            generation: watch::Sender::new(0),
            log: Mutex::new(ChangeLog::default()),
            next_version: AtomicU64::new(1),
            counters,
            closing: CancellationToken::new(),
        })
    }

    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Service `service`'s assignment and its version, rebuilt if its view changed.
    pub(crate) fn assignment(&self, service: &str) -> Assignment {
        let mut built = self.built.lock().expect("hub lock");
        if let Some(b) = built.get(service)
            && !b.stale
        {
            return Assignment {
                version: b.version,
                resource: b.resource.clone(),
                changed_at: b.changed_at,
            };
        }
        let changed_at = built.get(service).and_then(|b| b.stale_since);
        let view = self.subscriber.instances(service);
        let (cla, left_out) = resources::assignment(service, &view.to_vec());
        for id in left_out.not_ip {
            self.counters.not_ip.fetch_add(1, Relaxed);
            let mut warned = self.warned.lock().expect("warned lock");
            if warned.insert((service.to_owned(), id.clone())) {
                tracing::warn!(
                    service,
                    instance = %id,
                    "instance left out of xDS: its address is not an IP literal and port"
                );
            }
        }
        let version = match built.get(service) {
            Some(b) if b.assignment == cla => b.version,
            // A service nobody announced keeps no entry, whatever names clients ask for: its
            // empty assignment is version 0 until it has an instance.
            None if cla.endpoints.is_empty() => {
                self.not_followed(service);
                return Assignment {
                    version: 0,
                    resource: pack_any(cla),
                    changed_at: None,
                };
            }
            _ => self.next_version.fetch_add(1, Relaxed),
        };
        let resource = pack_any(cla.clone());
        built.insert(
            service.to_owned(),
            Built {
                version,
                assignment: cla,
                resource: resource.clone(),
                stale: false,
                stale_since: None,
                changed_at,
            },
        );
        Assignment {
            version,
            resource,
            changed_at,
        }
    }

    /// Counts an ask for a service the subscriber does not follow, and warns of the first.
    fn not_followed(&self, service: &str) {
        if self.subscriber.follows(service) {
            return;
        }
        if self.counters.not_followed.fetch_add(1, Relaxed) == 0 {
            tracing::warn!(
                service,
                "an xDS client asked for a service this subscriber does not follow: its \
                 assignment stays empty (further ones are counted, not logged)"
            );
        }
    }

    fn mark_stale(&self, services: &HashSet<String>, all: bool) {
        let now = Instant::now();
        let mut built = self.built.lock().expect("hub lock");
        let mut mark = |b: &mut Built| {
            b.stale = true;
            b.stale_since.get_or_insert(now);
        };
        if all {
            built.values_mut().for_each(&mut mark);
        } else {
            for name in services {
                if let Some(b) = built.get_mut(name) {
                    mark(b);
                }
            }
        }
        drop(built);
        let generation = self
            .log
            .lock()
            .expect("log lock")
            .record((!all).then(|| services.clone()));
        self.generation.send_replace(generation);
    }

    /// The generation now and what changed after generation `seen`.
    pub(crate) fn changed_since(&self, seen: u64) -> (u64, Changed) {
        self.log.lock().expect("log lock").since(seen)
    }

    /// Follows the subscriber's events until `cancel`. The first change after a quiet spell
    /// marks its service's assignment stale and tells the streams at once; the changes that
    /// follow within [`COALESCE`] are told together at its end.
    pub(crate) async fn follow(self: Arc<Hub>, cancel: CancellationToken) {
        let mut events = self.subscriber.events();
        loop {
            let first = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                e = events.next() => e,
            };
            let Some(first) = first else { return };
            let mut services = HashSet::new();
            let mut all = false;
            note(&first, &mut services, &mut all);
            self.mark_stale(&services, all);
            services.clear();
            all = false;
            let window = tokio::time::sleep(COALESCE);
            tokio::pin!(window);
            loop {
                tokio::select! {
                    () = &mut window => break,
                    e = events.next() => match e {
                        Some(e) => note(&e, &mut services, &mut all),
                        None => break,
                    },
                }
            }
            if all || !services.is_empty() {
                self.mark_stale(&services, all);
            }
        }
    }
}

fn note(event: &Event, services: &mut HashSet<String>, all: &mut bool) {
    match event {
        Event::Added(i) | Event::Updated(i) => {
            services.insert(i.service().to_owned());
        }
        Event::Removed { instance, .. } => {
            services.insert(instance.service().to_owned());
        }
        // Events were missed: every assignment is built again.
        _ => *all = true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> HashSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn services(c: Changed) -> Option<HashSet<String>> {
        match c {
            Changed::All => None,
            Changed::Services(s) => Some(s),
        }
    }

    #[test]
    fn a_stream_sees_the_services_changed_since_it_looked() {
        let mut log = ChangeLog::default();
        assert_eq!(log.record(Some(set(&["a"]))), 1);
        assert_eq!(log.record(Some(set(&["b", "c"]))), 2);
        let (now, changed) = log.since(1);
        assert_eq!((now, services(changed)), (2, Some(set(&["b", "c"]))));
        assert_eq!(services(log.since(0).1), Some(set(&["a", "b", "c"])));
        assert_eq!(services(log.since(2).1), Some(set(&[])));
    }

    #[test]
    fn a_batch_of_everything_or_a_stream_too_far_behind_sees_everything() {
        let mut log = ChangeLog::default();
        log.record(Some(set(&["a"])));
        log.record(None);
        log.record(Some(set(&["b"])));
        assert!(services(log.since(0).1).is_none(), "a batch of everything");
        assert_eq!(services(log.since(2).1), Some(set(&["b"])));
        for _ in 0..LOGGED_BATCHES {
            log.record(Some(set(&["c"])));
        }
        assert!(
            services(log.since(2).1).is_none(),
            "batches forgotten: every service is looked at"
        );
        let newest = log.newest;
        assert_eq!(services(log.since(newest - 1).1), Some(set(&["c"])));
    }
}
