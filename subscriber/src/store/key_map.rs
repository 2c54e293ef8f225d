//! A map by (service, instance) that is read with two `&str`, so that a lookup on the ingest
//! path allocates nothing.

use std::collections::HashMap;
use std::sync::Arc;

use super::Key;

#[derive(Debug)]
pub(super) struct KeyMap<V> {
    services: HashMap<Arc<str>, HashMap<Arc<str>, V>>,
    len: usize,
}

impl<V> Default for KeyMap<V> {
    fn default() -> Self {
        KeyMap {
            services: HashMap::new(),
            len: 0,
        }
    }
}

impl<V> KeyMap<V> {
    pub(super) fn get(&self, service: &str, instance: &str) -> Option<&V> {
        if self.len == 0 {
            return None;
        }
        self.services.get(service)?.get(instance)
    }

    pub(super) fn insert(&mut self, key: &Key, value: V) -> Option<V> {
        let old = self
            .services
            .entry(key.0.clone())
            .or_default()
            .insert(key.1.clone(), value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub(super) fn remove(&mut self, service: &str, instance: &str) -> Option<V> {
        let instances = self.services.get_mut(service)?;
        let old = instances.remove(instance)?;
        if instances.is_empty() {
            self.services.remove(service);
        }
        self.len -= 1;
        Some(old)
    }

    /// Keeps the entries for which `keep(service, instance, value)` holds.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&str, &str, &V) -> bool) {
        let mut removed = 0;
        self.services.retain(|service, instances| {
            instances.retain(|instance, v| {
                let kept = keep(service, instance, v);
                removed += usize::from(!kept);
                kept
            });
            !instances.is_empty()
        });
        self.len -= removed;
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}
