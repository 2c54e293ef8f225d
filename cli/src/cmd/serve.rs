//! `herald serve`: the per-host agent. One subscriber, shared by every program on the host
//! through HTTP: instance lists, picks, Prometheus service discovery, an event stream as
//! Server-Sent Events, and the subscriber's metrics.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};
use herald_subscriber::{ConnectionState, Connections, Strategy, Subscriber};
use herald_xds::{Bound, XdsServer};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::args::{Global, ServeArgs};
use crate::json::{EventJson, InstanceJson};

/// What every handler shares: the subscriber, and the shutdown signal that ends open event
/// streams (graceful shutdown waits for open connections, and an SSE stream never ends by
/// itself).
#[derive(Clone)]
struct Agent {
    subscriber: Arc<Subscriber>,
    metrics: Arc<Registry>,
    shutdown: CancellationToken,
    /// The xDS server and where it listens, with `--xds`.
    xds: Option<(XdsServer, String)>,
    /// The services followed, with `--services` (empty: every one).
    follows: Vec<String>,
}

type Shared = Agent;

pub(crate) async fn run(global: &Global, args: &ServeArgs) -> anyhow::Result<()> {
    // Bind first: a port in use fails before anything connects.
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let xds_bound = match &args.xds {
        Some(addr) => Some(
            Bound::bind(addr)
                .await
                .with_context(|| format!("cannot serve xDS on {addr} (--xds)"))?,
        ),
        None => None,
    };
    let services: Vec<String> = args
        .services
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    // A signal while it connects (an etcd that does not answer) stops it at once.
    let subscriber = tokio::select! {
        subscriber = global.subscriber(&services, args.zone.as_deref()) => Arc::new(subscriber?),
        () = crate::shutdown_signal() => return Err(crate::exit::Interrupted.into()),
    };
    if !services.is_empty() {
        eprintln!("herald agent following {} only", services.join(", "));
    }
    let shutdown = CancellationToken::new();
    let xds = xds_bound.map(|bound| {
        let server = XdsServer::new(subscriber.clone());
        let uri = bound.uri();
        eprintln!("herald agent serving xDS on {uri}");
        let serving = server.clone();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(bound, async move { stop.cancelled().await })
                .await
        });
        (server, uri, task)
    });
    let app = router(Agent {
        metrics: Arc::new(crate::metrics::registry(
            subscriber.clone(),
            xds.as_ref().map(|(server, _, _)| server.clone()),
        )),
        subscriber,
        shutdown: shutdown.clone(),
        xds: xds
            .as_ref()
            .map(|(server, uri, _)| (server.clone(), uri.clone())),
        follows: services,
    });
    eprintln!(
        "herald agent listening on http://{}",
        listener.local_addr()?
    );
    let stop = shutdown.clone();
    let http = axum::serve(crate::refusals::Listener(listener), app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = crate::shutdown_signal() => {}
                () = stop.cancelled() => {}
            }
            stop.cancel();
        })
        .into_future();
    let Some((_, _, mut xds_task)) = xds else {
        return Ok(http.await?);
    };
    tokio::pin!(http);
    // The xDS server ends only when told to; ending before that is a failure the agent
    // reports at once, stopping the HTTP side too, rather than serving on half blind.
    let (xds_ended, told) = tokio::select! {
        served = &mut http => {
            served?;
            shutdown.cancel();
            ((&mut xds_task).await, true)
        }
        ended = &mut xds_task => {
            let told = shutdown.is_cancelled();
            shutdown.cancel();
            http.await?;
            (ended, told)
        }
    };
    match xds_ended {
        Ok(Ok(())) if told => Ok(()),
        Ok(Ok(())) => anyhow::bail!("the xDS server stopped on its own"),
        Ok(Err(e)) => Err(e).context("the xDS server failed"),
        Err(e) => Err(e).context("the xDS server failed"),
    }
}

/// Every endpoint, as the answer to an unknown path lists them.
const ENDPOINTS: [&str; 8] = [
    "/healthz",
    "/v1/services",
    "/v1/services/{service}",
    "/v1/pick/{service}",
    "/v1/sd/prometheus",
    "/v1/watch",
    "/v1/watch/{service}",
    "/metrics",
];

fn router(agent: Agent) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/services", get(services))
        .route("/v1/services/{service}", get(instances))
        .route("/v1/pick/{service}", get(pick))
        .route("/v1/sd/prometheus", get(prometheus_sd))
        .route("/v1/watch", get(watch_all))
        .route("/v1/watch/{service}", get(watch_service))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            let body = serde_json::json!({ "error": "no such endpoint", "endpoints": ENDPOINTS });
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET is served".to_owned(),
            )
        })
        .layer(axum::middleware::map_response(json_errors))
        .with_state(agent)
}

/// Every error the router answers is JSON, also those axum's extractors write as text (a
/// repeated query field, a path that is not UTF-8): their text becomes the `error`.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_owned(),
        text => text.to_owned(),
    };
    error(status, message)
}

/// An error answer: `{"error": message}` with `status`.
fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// A 400 answer when `service` is not a valid service name.
fn invalid_service(service: &str) -> Option<Response> {
    herald_shared::validate::service_name(service)
        .err()
        .map(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("`{service}` is not a service name: it {}", e.bound),
            )
        })
}

/// Prometheus asks for OpenMetrics and gets it; anyone else gets the classic text format.
async fn metrics(State(agent): State<Agent>, headers: HeaderMap) -> impl IntoResponse {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let openmetrics = crate::metrics::prefers_openmetrics(&accept.join(","));
    let content_type = if openmetrics {
        crate::metrics::OPENMETRICS
    } else {
        crate::metrics::TEXT
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        crate::metrics::encode(&agent.metrics, openmetrics),
    )
}

/// Readiness: 200 while NATS and the etcd watch are up, 503 naming what is down and since
/// when. The agent keeps answering either way, from the last view it knows.
async fn healthz(State(agent): State<Agent>) -> Response {
    let (status, mut body) = readiness(&agent.subscriber.connections());
    if let Some((server, uri)) = &agent.xds {
        body["xds"] = serde_json::json!({ "listen": uri, "clients": server.stats().clients });
    }
    if !agent.follows.is_empty() {
        body["follows"] = serde_json::json!(agent.follows);
    }
    (status, Json(body)).into_response()
}

fn readiness(links: &Connections) -> (StatusCode, serde_json::Value) {
    let mut body = serde_json::json!({
        "status": if links.all_up() { "ok" } else { "degraded" },
        "nats": link_json(&links.nats),
    });
    if let Some(etcd) = &links.etcd {
        body["etcd"] = link_json(etcd);
    }
    if !links.nats.is_up() {
        body["note"] = "serving the last known view (self-preservation)".into();
    } else if !links.all_up() {
        body["note"] =
            "serving the NATS view; registrations and deletions wait for the etcd watch".into();
    }
    let status = if links.all_up() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

/// `{"up": true, "up_since": RFC 3339, "up_for_seconds": 12.1}`, or the same with `down_`.
fn link_json(state: &ConnectionState) -> serde_json::Value {
    let word = if state.is_up() { "up" } else { "down" };
    let since = humantime::format_rfc3339_millis(state.since()).to_string();
    let seconds = (state.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    serde_json::json!({
        "up": state.is_up(),
        format!("{word}_since"): since,
        format!("{word}_for_seconds"): seconds,
    })
}

async fn services(
    State(Agent {
        subscriber: sub, ..
    }): State<Shared>,
) -> Json<BTreeMap<String, usize>> {
    Json(
        sub.services()
            .into_iter()
            .map(|s| {
                let n = sub.instances(&s).len();
                (s, n)
            })
            .collect(),
    )
}

async fn instances(
    State(Agent {
        subscriber: sub, ..
    }): State<Shared>,
    Path(service): Path<String>,
) -> Response {
    if let Some(bad) = invalid_service(&service) {
        return bad;
    }
    let snap = sub.instances(&service);
    let list: Vec<InstanceJson<'_>> = snap.iter().map(InstanceJson::from).collect();
    Json(list).into_response()
}

#[derive(Debug, Deserialize)]
struct PickQuery {
    strategy: Option<String>,
    key: Option<String>,
}

async fn pick(
    State(Agent {
        subscriber: sub, ..
    }): State<Shared>,
    Path(service): Path<String>,
    Query(q): Query<PickQuery>,
) -> Response {
    if let Some(bad) = invalid_service(&service) {
        return bad;
    }
    let strategy = match (q.strategy.as_deref(), q.key.as_deref()) {
        (Some("affinity"), Some(key)) => Strategy::Affinity(key),
        (Some("affinity"), None) => {
            return error(StatusCode::BAD_REQUEST, "affinity needs ?key=".to_owned());
        }
        (None, _) => Strategy::PowerOfTwoChoices,
        (Some(name), _) => match Strategy::parse(name) {
            Some(s) => s,
            None => {
                let msg = format!(
                    "unknown strategy `{name}`: round_robin, random, least_load, p2c, weighted_random, affinity"
                );
                return error(StatusCode::BAD_REQUEST, msg);
            }
        },
    };
    match sub.pick(&service, strategy) {
        Some(i) => Json(InstanceJson::from(&i)).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no available instance of `{service}`"),
        ),
    }
}

/// Prometheus `http_sd_configs`: one target group per instance, so that each target keeps
/// its own labels (a group's labels apply to all of its targets).
async fn prometheus_sd(
    State(Agent {
        subscriber: sub, ..
    }): State<Shared>,
) -> Response {
    let mut groups = Vec::new();
    for service in sub.services() {
        for i in sub.instances(&service).iter() {
            let mut labels = BTreeMap::new();
            labels.insert("service".to_owned(), service.clone());
            labels.insert("__meta_herald_service".to_owned(), service.clone());
            labels.insert("__meta_herald_instance".to_owned(), i.id().to_owned());
            labels.insert(
                "__meta_herald_state".to_owned(),
                i.state().as_str().to_owned(),
            );
            if let Some(z) = i.zone() {
                labels.insert("__meta_herald_zone".to_owned(), z.to_owned());
            }
            for (k, v) in i.meta() {
                labels.insert(
                    format!("__meta_herald_meta_{}", label_name(k)),
                    v.to_owned(),
                );
            }
            groups.push(serde_json::json!({ "targets": [i.addr()], "labels": labels }));
        }
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&groups).unwrap_or_default(),
    )
        .into_response()
}

/// A metadata key as a Prometheus label name, one to one: letters and digits stay, `_`
/// becomes `__`, and any other byte `_` and its two hex digits (`a-b` is `a_2db`, `a_b` is
/// `a__b`). Two keys never share a label, so no value is lost.
fn label_name(key: &str) -> String {
    use std::fmt::Write as _;
    let mut name = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'_' => name.push_str("__"),
            b if b.is_ascii_alphanumeric() => name.push(char::from(b)),
            b => {
                let _ = write!(name, "_{b:02x}");
            }
        }
    }
    name
}

async fn watch_all(
    State(agent): State<Shared>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    sse(&agent, None)
}

async fn watch_service(State(agent): State<Shared>, Path(service): Path<String>) -> Response {
    match invalid_service(&service) {
        Some(bad) => bad,
        None => sse(&agent, Some(service)).into_response(),
    }
}

fn sse(
    agent: &Agent,
    service: Option<String>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<>> {
    let shutdown = agent.shutdown.clone().cancelled_owned();
    let stream = agent
        .subscriber
        .events()
        .take_until(shutdown)
        .filter_map(move |e| {
            let j = EventJson::from(&e);
            let keep = match (&service, j.service()) {
                (None, _) => true,
                (Some(want), Some(got)) => want == got,
                (Some(_), None) => true, // lagged: every reader must know
            };
            let out = keep.then(|| {
                Ok(SseEvent::default()
                    .event(j.event)
                    .data(serde_json::to_string(&j).unwrap_or_default()))
            });
            async move { out }
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::label_name;

    #[test]
    fn metadata_keys_map_to_distinct_label_names() {
        assert_eq!(label_name("team"), "team");
        assert_eq!(label_name("a-b"), "a_2db");
        assert_eq!(label_name("a_b"), "a__b");
        assert_eq!(label_name("a.b"), "a_2eb");
        assert_eq!(label_name("é"), "_c3_a9");
        let keys = ["a-b", "a_b", "a__b", "a_2db", "a.b", "a b", "ab"];
        let names: std::collections::HashSet<String> = keys.iter().map(|k| label_name(k)).collect();
        assert_eq!(names.len(), keys.len(), "one label per key");
    }
}
