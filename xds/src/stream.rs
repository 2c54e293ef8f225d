//! One ADS stream, state of the world: per resource type, what the client subscribed to,
//! the version and nonce of the last response, and what each resource was when last sent.
//!
//! Responses are built when the client reads them, not queued: a client that does not read
//! its stream holds nothing but this state, and slows no other. A subscription (a new name,
//! or the same names with no nonce: the client subscribes again) is answered at once, an
//! unknown service too (a Listener and a Cluster, and an empty assignment). A NACK is
//! recognised by its `error_detail`, logged once with the node and the reason, counted, and
//! the refused content is never sent again: only a change of it goes out.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use futures::StreamExt;
use tokio::sync::watch;
use tonic::Streaming;

use crate::hub::{Changed, Hub};
use crate::resources;
use crate::types::{TYPES, Type};

/// What one stream knows of one resource type.
#[derive(Debug, Default)]
struct Subscription {
    /// The client asked for this type at least once.
    asked: bool,
    /// Subscribed by wildcard (Envoy's LDS and CDS): every service.
    wildcard: bool,
    names: BTreeSet<String>,
    /// Per resource, the version last sent (Listeners and Clusters never change: 0).
    sent: HashMap<String, u64>,
    /// Names last sent in full (Listeners and Clusters go out as the whole set).
    sent_names: BTreeSet<String>,
    /// The whole set must go out again (a new subscription).
    resend: bool,
    version: u64,
    nonce: u64,
}

pub(crate) struct Stream {
    hub: Arc<Hub>,
    requests: Streaming<DiscoveryRequest>,
    changes: watch::Receiver<u64>,
    subs: [Subscription; 3],
    node: String,
    /// The view changed since endpoints were last compared with what was sent.
    look_again: bool,
    /// The hub's generation when endpoints were last compared: only services changed after
    /// it are compared again.
    seen: u64,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.hub.counters.clients.fetch_sub(1, Relaxed);
        tracing::debug!(node = %self.node, "xds client gone");
    }
}

impl Stream {
    pub(crate) fn new(hub: Arc<Hub>, requests: Streaming<DiscoveryRequest>) -> Stream {
        hub.counters.clients.fetch_add(1, Relaxed);
        hub.counters.streams.fetch_add(1, Relaxed);
        let changes = hub.changes();
        let seen = *changes.borrow();
        Stream {
            changes,
            seen,
            hub,
            requests,
            subs: Default::default(),
            node: String::new(),
            look_again: false,
        }
    }

    /// The next response, once there is one to send; `None` when the client ends the stream.
    pub(crate) async fn next(&mut self) -> Option<Result<DiscoveryResponse, tonic::Status>> {
        loop {
            if let Some(response) = self.due() {
                return Some(Ok(response));
            }
            tokio::select! {
                () = self.hub.closing.cancelled() => return None,
                request = self.requests.next() => match request {
                    Some(Ok(request)) => self.on_request(request),
                    Some(Err(status)) => {
                        tracing::debug!(node = %self.node, %status, "xds stream failed");
                        return None;
                    }
                    None => return None,
                },
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    self.look_again = true;
                }
            }
        }
    }

    fn on_request(&mut self, request: DiscoveryRequest) {
        if self.node.is_empty()
            && let Some(node) = &request.node
        {
            self.node = node.id.clone();
            tracing::info!(node = %self.node, "xds client connected");
        }
        let Some(t) = Type::of_url(&request.type_url) else {
            tracing::debug!(node = %self.node, type_url = %request.type_url, "xds type not served");
            return;
        };
        let sub = &mut self.subs[t as usize];
        if let Some(error) = &request.error_detail {
            self.hub.counters.nacks[t as usize].fetch_add(1, Relaxed);
            // Once per refused response: the client repeats its NACK until content changes.
            if request.response_nonce == sub.nonce.to_string() {
                tracing::warn!(
                    node = %self.node,
                    r#type = t.label(),
                    nonce = %request.response_nonce,
                    reason = %error.message,
                    "xds client refused a response; it is not sent again"
                );
            }
        }
        let first = !sub.asked;
        sub.asked = true;
        // Envoy subscribes to Listeners and Clusters with no name: all of them.
        let wildcard =
            request.resource_names.is_empty() && t != Type::Endpoints && (first || sub.wildcard);
        // An ACK repeats the names it subscribed to: compared in place, not collected again
        // (a list with repeated names takes the long way).
        let same_names = (request.resource_names.len() == sub.names.len()
            && request.resource_names.iter().all(|n| sub.names.contains(n)))
            || request.resource_names.iter().collect::<BTreeSet<_>>()
                == sub.names.iter().collect::<BTreeSet<_>>();
        if !same_names || wildcard != sub.wildcard || request.response_nonce.is_empty() {
            // A new subscription, a change of names (whatever the nonce), or the client
            // subscribing again after a reconnect: answer with everything it asks for.
            sub.names = request.resource_names.into_iter().collect();
            sub.wildcard = wildcard;
            sub.resend = true;
            sub.sent
                .retain(|name, _| sub.names.contains(name) || wildcard);
        }
    }

    /// A response that is due, if any, in the order LDS, CDS, EDS.
    fn due(&mut self) -> Option<DiscoveryResponse> {
        let look_again = std::mem::take(&mut self.look_again);
        for t in TYPES {
            if !self.subs[t as usize].asked {
                continue;
            }
            let response = match t {
                Type::Listener | Type::Cluster => self.whole_set(t, look_again),
                Type::Endpoints => self.changed_endpoints(look_again),
            };
            if let Some(response) = response {
                // The other types are looked at again on the next call.
                self.look_again |= look_again;
                return Some(response);
            }
        }
        None
    }

    /// The names a type's response covers: the subscribed ones, or with a wildcard every
    /// service the subscriber knows.
    fn names(&self, t: Type) -> BTreeSet<String> {
        let sub = &self.subs[t as usize];
        if sub.wildcard {
            // Envoy: clusters for every service; socket listeners are not Herald's to make.
            match t {
                Type::Cluster => self.hub.subscriber.services().into_iter().collect(),
                _ => BTreeSet::new(),
            }
        } else {
            sub.names.clone()
        }
    }

    /// Listeners and Clusters go out as the whole subscribed set, when it changed.
    fn whole_set(&mut self, t: Type, look_again: bool) -> Option<DiscoveryResponse> {
        let names = if self.subs[t as usize].wildcard && look_again || self.subs[t as usize].resend
        {
            self.names(t)
        } else {
            return None;
        };
        let sub = &mut self.subs[t as usize];
        if !sub.resend && names == sub.sent_names {
            return None;
        }
        sub.resend = false;
        let resources: Vec<Any> = names
            .iter()
            .map(|name| match t {
                Type::Listener => pack_any(resources::listener(name)),
                _ => pack_any(resources::cluster(name)),
            })
            .collect();
        sub.sent_names = names;
        Some(self.respond(t, resources))
    }

    /// Endpoints go out per resource: those whose assignment changed since last sent (all of
    /// them for a new subscription). Only the services changed since the stream last looked
    /// are compared, so a change costs each stream what it touched, not what it follows.
    fn changed_endpoints(&mut self, look_again: bool) -> Option<DiscoveryResponse> {
        let sub = &self.subs[Type::Endpoints as usize];
        if !sub.resend && !look_again {
            return None;
        }
        let resend = sub.resend;
        let (generation, changed) = self.hub.changed_since(self.seen);
        self.seen = generation;
        let names: Vec<&String> = match &changed {
            Changed::Services(changed) if !resend => {
                changed.iter().filter(|n| sub.names.contains(*n)).collect()
            }
            _ => sub.names.iter().collect(),
        };
        let mut resources = Vec::new();
        let mut sent = Vec::new();
        let now = std::time::Instant::now();
        for name in names {
            let a = self.hub.assignment(name);
            let known = sub.sent.get(name).copied();
            if resend || known != Some(a.version) {
                // A change pushed to a client that held the previous content.
                if known.is_some()
                    && let Some(at) = a.changed_at
                {
                    self.hub
                        .counters
                        .push
                        .record(now.saturating_duration_since(at));
                }
                resources.push(a.resource);
                sent.push((name.clone(), a.version));
            }
        }
        let sub = &mut self.subs[Type::Endpoints as usize];
        sub.resend = false;
        sub.sent.extend(sent);
        if resources.is_empty() {
            return None;
        }
        Some(self.respond(Type::Endpoints, resources))
    }

    fn respond(&mut self, t: Type, resources: Vec<Any>) -> DiscoveryResponse {
        let sub = &mut self.subs[t as usize];
        sub.version += 1;
        sub.nonce += 1;
        self.hub.counters.responses[t as usize].fetch_add(1, Relaxed);
        tracing::trace!(node = %self.node, r#type = t.label(), resources = resources.len(), "xds response");
        DiscoveryResponse {
            version_info: sub.version.to_string(),
            resources,
            type_url: t.url().to_owned(),
            nonce: sub.nonce.to_string(),
            ..Default::default()
        }
    }
}
