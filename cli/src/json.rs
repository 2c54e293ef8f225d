//! The JSON shapes the CLI and the agent print: one for an instance, one for an event.

use std::collections::BTreeMap;

use herald_subscriber::{Event, Instance};
use serde::Serialize;

/// An instance as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct InstanceJson<'a> {
    pub(crate) service: &'a str,
    pub(crate) instance: &'a str,
    pub(crate) addr: &'a str,
    pub(crate) load: f32,
    pub(crate) state: &'static str,
    pub(crate) weight: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) zone: Option<&'a str>,
    pub(crate) epoch: u64,
    /// Heard on NATS since the subscriber started (false: known only from etcd).
    pub(crate) confirmed: bool,
    pub(crate) meta: BTreeMap<&'a str, &'a str>,
}

impl<'a> From<&'a Instance> for InstanceJson<'a> {
    fn from(i: &'a Instance) -> Self {
        InstanceJson {
            service: i.service(),
            instance: i.id(),
            addr: i.addr(),
            load: i.load(),
            state: i.state().as_str(),
            weight: i.weight(),
            zone: i.zone(),
            epoch: i.epoch(),
            confirmed: i.is_confirmed(),
            meta: i.meta().collect(),
        }
    }
}

/// An event as JSON: `event` is `added`, `updated`, `removed` or `lagged`.
#[derive(Debug, Serialize)]
pub(crate) struct EventJson<'a> {
    pub(crate) event: &'static str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub(crate) instance: Option<InstanceJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cause: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) missed: Option<u64>,
}

impl<'a> From<&'a Event> for EventJson<'a> {
    fn from(e: &'a Event) -> Self {
        let (event, instance, cause, missed) = match e {
            Event::Added(i) => ("added", Some(i), None, None),
            Event::Updated(i) => ("updated", Some(i), None, None),
            Event::Removed { instance, cause } => {
                ("removed", Some(instance), Some(cause.as_str()), None)
            }
            Event::Lagged { missed } => ("lagged", None, None, Some(*missed)),
            _ => ("unknown", None, None, None),
        };
        EventJson {
            event,
            instance: instance.map(InstanceJson::from),
            cause,
            missed,
        }
    }
}

impl EventJson<'_> {
    /// The service the event concerns, if any.
    pub(crate) fn service(&self) -> Option<&str> {
        self.instance.as_ref().map(|i| i.service)
    }
}
