//! A rolling restart fails no call. Three gRPC backends (grpcio servers, `tests/grpc/backend.py`,
//! whose calls take 20 ms and which exit at once on SIGTERM, cutting the calls in flight: a
//! service that knows nothing of draining) each get SIGTERM, are started again with the
//! same id, and serve again before the next one goes, while two clients call at a steady
//! 200 calls a second each: tonic through `Subscriber::discover` and its balancer, and grpcio
//! through `xds:///` against `herald serve --xds`. The backends are announced either by
//! `herald announce` beside the server (the operator stops announce first, which drains and
//! leaves, then the server), or by `herald announce -- CMD` (one SIGTERM does it all).
//!
//! With `--drain-for 0` the same restart is run and its failed calls printed: what the drain
//! buys.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut};
use common::{Env, agent, eventually};
use futures::StreamExt;
use herald_shared::{EtcdConfig, NatsConfig, State};
use herald_subscriber::Subscriber;
use herald_testkit::{ChildGuard, free_port, spawn_guarded};
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

const SERVICE: &str = "echo";
/// Calls a second, per client.
const RATE: u64 = 200;
/// `backend.py`'s options: calls that take a while, and no drain of its own.
const BACKEND: [&str; 3] = ["--delay-ms", "20", "--abrupt"];

/// How the backends are announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backends {
    /// `herald announce` beside the server, stopped first.
    Beside,
    /// `herald announce -- python backend.py`.
    Supervised,
}

struct Backend {
    announce: ChildGuard,
    server: Option<ChildGuard>,
}

fn start(env: &Env, kind: Backends, id: &str, port: u16, drain: &str) -> Backend {
    let addr = format!("127.0.0.1:{port}");
    match kind {
        Backends::Beside => {
            let server = common::backend_with(id, port, &BACKEND);
            let announce = env.announce_at(SERVICE, id, &addr, &["--drain-for", drain]);
            Backend {
                announce,
                server: Some(server),
            }
        }
        Backends::Supervised => {
            let python = common::python().display().to_string();
            let script = common::script("backend.py").display().to_string();
            let port = port.to_string();
            let mut args = vec!["--drain-for", drain, "--", &python, &script, id, &port];
            args.extend(BACKEND);
            let announce = env.announce_at(SERVICE, id, &addr, &args);
            Backend {
                announce,
                server: None,
            }
        }
    }
}

/// Stops a backend as an operator does: SIGTERM to announce, and once it has left, to the
/// server beside it.
fn stop(backend: &mut Backend) {
    backend.announce.signal(common::libc_sigterm()).unwrap();
    let status = common::exit_within(&mut backend.announce, Duration::from_secs(20), "SIGTERM");
    assert_eq!(status.code(), Some(0), "announce stops cleanly");
    if let Some(server) = &mut backend.server {
        server.signal(common::libc_sigterm()).unwrap();
        common::exit_within(server, Duration::from_secs(10), "SIGTERM");
    }
}

/// Calls served per backend, and failed.
#[derive(Debug, Default)]
struct Tally {
    served: Mutex<HashMap<String, u64>>,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

/// Raw bytes in and out: `test.Echo/Who` takes nothing and answers the backend's name.
#[derive(Debug, Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// The tonic client: a balanced channel over the subscriber's view, calling at [`RATE`]
/// until `stop`.
async fn tonic_client(sub: Arc<Subscriber>, tally: Arc<Tally>, stop: CancellationToken) {
    let (channel, tx) = Channel::balance_channel::<String>(16);
    let mut discover = sub.discover(SERVICE, |i| {
        Endpoint::from_shared(format!("http://{}", i.addr())).expect("valid endpoint")
    });
    tokio::spawn(async move {
        use tonic::transport::channel::Change as TonicChange;
        while let Some(Ok(change)) = discover.next().await {
            let change = match change {
                tower::discover::Change::Insert(k, e) => TonicChange::Insert(k, e),
                tower::discover::Change::Remove(k) => TonicChange::Remove(k),
            };
            if tx.send(change).await.is_err() {
                break;
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut calls = Vec::new();
    while !stop.is_cancelled() {
        tick.tick().await;
        let channel = channel.clone();
        let tally = tally.clone();
        calls.push(tokio::spawn(async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            let call = async {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let path = tonic::codegen::http::uri::PathAndQuery::from_static("/test.Echo/Who");
                grpc.unary(tonic::Request::new(Vec::new()), path, Raw).await
            };
            match tokio::time::timeout(Duration::from_secs(2), call).await {
                Ok(Ok(response)) => {
                    let who = String::from_utf8_lossy(response.get_ref()).into_owned();
                    *tally.served.lock().unwrap().entry(who).or_default() += 1;
                }
                Ok(Err(status)) => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    tally.errors.lock().unwrap().push(status.to_string());
                }
                Err(_) => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    tally.errors.lock().unwrap().push("timed out".into());
                }
            }
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
}

/// The grpcio client (`tests/grpc/steady.py`), calling once it has been served.
struct Grpcio(ChildGuard, BufReader<std::process::ChildStdout>);

impl Grpcio {
    fn start(bootstrap: &str) -> Grpcio {
        let mut cmd = Command::new(common::python());
        cmd.arg(common::script("steady.py"))
            .arg(SERVICE)
            .arg(RATE.to_string())
            .env("GRPC_XDS_BOOTSTRAP_CONFIG", bootstrap)
            .env_remove("GRPC_XDS_BOOTSTRAP")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = spawn_guarded(cmd);
        let mut out = BufReader::new(child.child_mut().stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the grpcio client said {line:?}");
        Grpcio(child, out)
    }

    /// Stops calling; what it counted.
    fn finish(mut self) -> serde_json::Value {
        let mut stdin = self.0.child_mut().stdin.take().unwrap();
        stdin.flush().unwrap();
        drop(stdin);
        let mut line = String::new();
        self.1.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

/// What a restart cost each client.
#[derive(Debug)]
struct Outcome {
    tonic_failed: u64,
    tonic_served: HashMap<String, u64>,
    #[allow(dead_code, reason = "printed")]
    tonic_errors: Vec<String>,
    grpcio_failed: u64,
    grpcio_served: serde_json::Value,
    #[allow(dead_code, reason = "printed")]
    grpcio_errors: serde_json::Value,
}

/// Three backends, both clients calling, each backend restarted in turn.
async fn rolling_restart(name: &str, kind: Backends, drain: &str) -> Outcome {
    let env = Env::start(name).await;
    let ids = ["b1", "b2", "b3"];
    let ports: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let mut backends: Vec<Backend> = ids
        .iter()
        .zip(&ports)
        .map(|(id, port)| start(&env, kind, id, *port, drain))
        .collect();
    let (http_port, xds) = (free_port(), format!("127.0.0.1:{}", free_port()));
    let _agent = agent(&env, http_port, &xds);
    let bootstrap = String::from_utf8(
        env.output(&["xds-bootstrap", "--server", &xds])
            .await
            .stdout,
    )
    .unwrap();
    let sub = Arc::new(
        Subscriber::builder()
            .nats(NatsConfig::new([env.nats.url()]))
            .etcd(EtcdConfig::new([env.etcd.endpoint()]))
            .prefix(&env.prefix)
            .start()
            .await
            .expect("subscriber starts"),
    );
    let up = |id: &str| {
        sub.instances(SERVICE)
            .iter()
            .any(|i| i.id() == id && i.state() == State::Up && i.is_confirmed())
    };
    eventually(
        Duration::from_secs(10),
        "three backends listed",
        async || ids.iter().all(|id| up(id)),
    )
    .await;

    let grpcio = Grpcio::start(&bootstrap);
    let tally = Arc::new(Tally::default());
    let stop_calls = CancellationToken::new();
    let tonic = tokio::spawn(tonic_client(sub.clone(), tally.clone(), stop_calls.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, id) in ids.iter().enumerate() {
        let backend = &mut backends[i];
        tokio::task::block_in_place(|| stop(backend));
        backends[i] = tokio::task::block_in_place(|| start(&env, kind, id, ports[i], drain));
        eventually(
            Duration::from_secs(10),
            "the backend listed again",
            async || up(id),
        )
        .await;
        // Serving again: the clients have it back before the next one goes.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_calls.cancel();
    tonic.await.unwrap();
    let grpcio = tokio::task::block_in_place(|| grpcio.finish());
    let outcome = Outcome {
        tonic_failed: tally.failed.load(Ordering::Relaxed),
        tonic_served: tally.served.lock().unwrap().clone(),
        tonic_errors: tally
            .errors
            .lock()
            .unwrap()
            .iter()
            .take(5)
            .cloned()
            .collect(),
        grpcio_failed: grpcio["failed"].as_u64().unwrap(),
        grpcio_served: grpcio["served"].clone(),
        grpcio_errors: grpcio["errors"].clone(),
    };
    eprintln!("rolling restart, {kind:?} backends, --drain-for {drain}: {outcome:?}");
    for id in ids {
        assert!(
            outcome.tonic_served.get(id).copied().unwrap_or(0) > 0,
            "tonic reached {id}: {outcome:?}"
        );
        assert!(
            outcome.grpcio_served[id].as_u64().unwrap_or(0) > 0,
            "grpcio reached {id}: {outcome:?}"
        );
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_backends_announced_beside_them_fails_no_call() {
    let o = rolling_restart("rollbeside", Backends::Beside, "1s").await;
    assert_eq!((o.tonic_failed, o.grpcio_failed), (0, 0), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_backends_run_by_announce_fails_no_call() {
    let o = rolling_restart("rollcmd", Backends::Supervised, "1s").await;
    assert_eq!((o.tonic_failed, o.grpcio_failed), (0, 0), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_drain_the_same_restart_is_run_and_its_failures_told() {
    let o = rolling_restart("rollnodrain", Backends::Supervised, "0s").await;
    eprintln!(
        "without a drain: {} tonic and {} grpcio calls of {} a second each failed through the restart of 3 backends",
        o.tonic_failed, o.grpcio_failed, RATE
    );
}
