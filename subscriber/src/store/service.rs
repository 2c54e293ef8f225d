//! One service's keys: the live entry and the registration of each instance, and the live
//! entries in snapshot order.

use std::sync::Arc;

use crate::instance::{Entry, Instance};
use crate::view::ServiceView;

/// A registration as last seen through etcd.
#[derive(Debug, Clone)]
pub(super) struct Registration {
    pub(super) epoch: u64,
    pub(super) lease: i64,
    /// The registered identity (address, zone, weight, metadata, TTL) that tokens must carry.
    pub(super) record: Arc<Entry>,
}

/// Everything the store holds for one instance key besides tombstones and held tokens.
#[derive(Debug, Default)]
pub(super) struct Slot {
    pub(super) live: Option<Arc<Entry>>,
    pub(super) registration: Option<Registration>,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.live.is_none() && self.registration.is_none()
    }
}

pub(super) struct ServiceState {
    pub(super) name: Arc<str>,
    pub(super) slots: super::FastMap<Arc<str>, Slot>,
    /// The live entries in snapshot order (zone, then id), kept sorted as they come and go,
    /// so that publishing a snapshot is a copy, not a sort.
    pub(super) sorted: Vec<Instance>,
    pub(super) view: Arc<ServiceView>,
    pub(super) dirty: bool,
    /// The zone names seen in this service, shared by its records (up to [`ZONES_SHARED`]).
    zones: Vec<Arc<str>>,
}

/// Distinct zone names a service shares among its records; past them, a record holds its
/// own copy (a deployment has a handful of zones, a stranger could announce thousands).
const ZONES_SHARED: usize = 64;

fn snapshot_order(e: &Entry) -> (Option<&str>, &str) {
    (e.zone.as_deref(), &e.id)
}

impl ServiceState {
    pub(super) fn new(name: Arc<str>, view: Arc<ServiceView>) -> Self {
        ServiceState {
            name,
            slots: super::FastMap::default(),
            sorted: Vec::new(),
            view,
            dirty: false,
            zones: Vec::new(),
        }
    }

    /// The shared name of `zone`.
    pub(super) fn zone(&mut self, zone: Option<&str>) -> Option<Arc<str>> {
        let zone = zone?;
        if let Some(shared) = self.zones.iter().find(|z| ***z == *zone) {
            return Some(shared.clone());
        }
        let name: Arc<str> = Arc::from(zone);
        if self.zones.len() < ZONES_SHARED {
            self.zones.push(name.clone());
        }
        Some(name)
    }

    pub(super) fn live(&self, id: &str) -> Option<&Arc<Entry>> {
        self.slots.get(id)?.live.as_ref()
    }

    /// The slot of `id`, created when missing.
    pub(super) fn slot(&mut self, id: &Arc<str>) -> &mut Slot {
        self.slots.entry(id.clone()).or_default()
    }

    /// Lists `entry`, replacing the live entry with its id, if any.
    pub(super) fn put(&mut self, entry: Arc<Entry>) {
        let id = entry.id.clone();
        if let Some(old) = self.slot(&id).live.replace(entry.clone()) {
            self.unsort(&old);
        }
        let pos = self
            .sorted
            .binary_search_by(|i| snapshot_order(&i.0).cmp(&snapshot_order(&entry)))
            .unwrap_or_else(|p| p);
        self.sorted.insert(pos, Instance(entry));
    }

    /// Unlists the live entry with this id.
    pub(super) fn take(&mut self, id: &str) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if let Some(old) = slot.live.take() {
            self.unsort(&old);
        }
        self.forget_if_empty(id);
    }

    /// Drops the slot of `id` once it holds nothing.
    pub(super) fn forget_if_empty(&mut self, id: &str) {
        if self.slots.get(id).is_some_and(Slot::is_empty) {
            self.slots.remove(id);
        }
    }

    fn unsort(&mut self, e: &Entry) {
        if let Ok(pos) = self
            .sorted
            .binary_search_by(|i| snapshot_order(&i.0).cmp(&snapshot_order(e)))
        {
            self.sorted.remove(pos);
        }
    }
}
