//! A rolling restart under load, with real servers, real backends and real clients: what the
//! rolling-restart tests assert (no failed call) and what `herald-bench rolling` measures
//! (failed calls with and without a drain, and the drain that makes them 0).
//!
//! gRPC backends (`backend.py`, grpcio servers whose calls take `call_ms` and which exit at
//! once on SIGTERM, cutting their calls in flight: a service that knows nothing of draining)
//! are announced by `herald announce`, either beside them or running them (`-- CMD`). Two
//! clients call `test.Echo/Who` at `rate` calls a second each: tonic through
//! `Subscriber::discover` and its balancer, in this process, and grpcio through `xds:///`
//! against `herald serve --xds` (`steady.py`). Backends are restarted one at a time, each
//! serving again before the next goes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use futures::StreamExt;
use herald_shared::{EtcdConfig, NatsConfig, State};
use herald_subscriber::Subscriber;
use herald_testkit::{ChildGuard, EtcdServer, NatsServer, free_port, spawn_guarded};
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

const SERVICE: &str = "echo";
/// The longest a backend may take to stop, or to serve again.
const PATIENCE: Duration = Duration::from_secs(30);

/// How the backends are announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// `herald announce` beside the server: the operator stops announce first (it drains
    /// and leaves), then the server.
    Beside,
    /// `herald announce -- python backend.py`: one SIGTERM to announce does it all.
    Supervised,
}

/// What a run needs and does.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `herald` program.
    pub herald: PathBuf,
    /// A Python with grpcio.
    pub python: PathBuf,
    /// The directory of `backend.py` and `steady.py`.
    pub scripts: PathBuf,
    /// Backends of the service.
    pub backends: usize,
    /// Restarts, one backend after another (more than `backends` goes round again).
    pub restarts: usize,
    /// `--drain-for` of every announce.
    pub drain: Duration,
    /// How the backends are announced.
    pub announced: Announced,
    /// Calls a second, per client.
    pub rate: u64,
    /// How long each call takes in the backend.
    pub call_ms: u64,
}

/// One client's calls through the run.
#[derive(Debug, Default, Clone)]
pub struct Calls {
    /// Calls served, per backend.
    pub served: BTreeMap<String, u64>,
    /// Calls that failed.
    pub failed: u64,
    /// The first few failures, as the client told them.
    pub errors: Vec<String>,
    /// How long the served calls took, p50 and p99, as the client saw them.
    pub latency: (Duration, Duration),
}

/// What a run gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The tonic client's calls.
    pub tonic: Calls,
    /// The grpcio client's calls.
    pub grpcio: Calls,
    /// Restarts done.
    pub restarts: usize,
    /// From SIGTERM to the backend listed again, per restart.
    pub restart_took: Vec<Duration>,
}

/// Where the servers are, for the `herald` processes.
struct Servers {
    nats: NatsServer,
    etcd: EtcdServer,
    prefix: String,
}

impl Servers {
    fn herald(&self, settings: &Settings, args: &[&str]) -> Command {
        let mut cmd = Command::new(&settings.herald);
        cmd.args(args)
            .env("HERALD_NATS_URL", self.nats.url())
            .env("HERALD_ETCD_ENDPOINTS", self.etcd.endpoint())
            .env("HERALD_PREFIX", &self.prefix)
            .env_remove("RUST_LOG");
        cmd
    }
}

/// Runs `cmd` until it prints a stderr line starting with `ready`; its later lines go on
/// being read, so that a closed pipe never fails it.
fn spawn_until(mut cmd: Command, ready: &str) -> ChildGuard {
    cmd.stderr(Stdio::piped());
    let mut child = spawn_guarded(cmd);
    let mut reader = BufReader::new(child.child_mut().stderr.take().expect("piped"));
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).expect("stderr readable");
        assert!(read > 0, "the process ended before `{ready}`");
        if line.starts_with(ready) {
            break;
        }
    }
    std::thread::spawn(move || for _ in reader.lines().map_while(Result::ok) {});
    child
}

/// One backend and its announcer.
struct Backend {
    announce: ChildGuard,
    server: Option<ChildGuard>,
}

impl Backend {
    fn start(servers: &Servers, settings: &Settings, id: &str, port: u16) -> Backend {
        let addr = format!("127.0.0.1:{port}");
        let drain = format!("{}ms", settings.drain.as_millis());
        let script = settings.scripts.join("backend.py").display().to_string();
        let python = settings.python.display().to_string();
        let (port, call_ms) = (port.to_string(), settings.call_ms.to_string());
        let server_args = [
            python.as_str(),
            &script,
            id,
            &port,
            "--delay-ms",
            &call_ms,
            "--abrupt",
        ];
        let mut args = vec![
            "announce",
            "--service",
            SERVICE,
            "--addr",
            &addr,
            "--instance",
            id,
            "--interval",
            "200ms",
            "--drain-for",
            &drain,
        ];
        let server = match settings.announced {
            Announced::Beside => {
                let mut cmd = Command::new(server_args[0]);
                cmd.args(&server_args[1..]).stdout(Stdio::piped());
                let mut server = spawn_guarded(cmd);
                let mut line = String::new();
                BufReader::new(server.child_mut().stdout.take().expect("piped"))
                    .read_line(&mut line)
                    .expect("the backend's stdout");
                assert!(line.starts_with("serving"), "backend {id} said {line:?}");
                Some(server)
            }
            Announced::Supervised => {
                args.push("--");
                args.extend(server_args);
                None
            }
        };
        let mut cmd = servers.herald(settings, &args);
        cmd.stdout(Stdio::null());
        Backend {
            announce: spawn_until(cmd, "announcing"),
            server,
        }
    }

    /// Stops it as an operator does: SIGTERM to announce, and once it has left, to the
    /// server beside it.
    fn stop(&mut self) {
        const SIGTERM: i32 = 15;
        self.announce.signal(SIGTERM).expect("announce signalled");
        let status = exit_within(&mut self.announce);
        assert_eq!(status.code(), Some(0), "announce stops cleanly");
        if let Some(server) = &mut self.server {
            server.signal(SIGTERM).expect("server signalled");
            exit_within(server);
        }
    }
}

fn exit_within(child: &mut ChildGuard) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_status() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "no exit {PATIENCE:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
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

/// The tonic client's tally, shared with its calls.
#[derive(Debug, Default)]
struct Tally {
    served: Mutex<BTreeMap<String, u64>>,
    took: Mutex<Vec<Duration>>,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn failure(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().expect("errors lock");
        if errors.len() < 5 {
            errors.push(what);
        }
    }
}

/// The tonic client: a balanced channel over the subscriber's view, calling at `rate` until
/// `stop`, each call on its own task so that a slow one does not slow the rate.
async fn tonic_client(sub: Arc<Subscriber>, rate: u64, stop: CancellationToken) -> Calls {
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
    let tally = Arc::new(Tally::default());
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut calls = Vec::new();
    while !stop.is_cancelled() {
        tick.tick().await;
        let channel = channel.clone();
        let tally = tally.clone();
        calls.push(tokio::spawn(async move {
            let began = Instant::now();
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
                    tally.took.lock().expect("took lock").push(began.elapsed());
                    let who = String::from_utf8_lossy(response.get_ref()).into_owned();
                    *tally
                        .served
                        .lock()
                        .expect("served lock")
                        .entry(who)
                        .or_default() += 1;
                }
                Ok(Err(status)) => {
                    tally.failure(format!("{}: {}", status.code(), status.message()))
                }
                Err(_) => tally.failure("timed out".into()),
            }
        }));
    }
    for call in calls {
        call.await.expect("a call's task");
    }
    let mut took = std::mem::take(&mut *tally.took.lock().expect("took lock"));
    let took = crate::stats::Summary::of(&mut took);
    Calls {
        served: tally.served.lock().expect("served lock").clone(),
        failed: tally.failed.load(Ordering::Relaxed),
        errors: tally.errors.lock().expect("errors lock").clone(),
        latency: (took.p50, took.p99),
    }
}

/// The grpcio client (`steady.py`), calling once it has been served.
struct Grpcio(ChildGuard, BufReader<std::process::ChildStdout>);

impl Grpcio {
    fn start(settings: &Settings, bootstrap: &str) -> Grpcio {
        let mut cmd = Command::new(&settings.python);
        cmd.arg(settings.scripts.join("steady.py"))
            .arg(SERVICE)
            .arg(settings.rate.to_string())
            .env("GRPC_XDS_BOOTSTRAP_CONFIG", bootstrap)
            .env_remove("GRPC_XDS_BOOTSTRAP")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = spawn_guarded(cmd);
        let mut out = BufReader::new(child.child_mut().stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line)
            .expect("the grpcio client's stdout");
        assert_eq!(line.trim(), "ready", "the grpcio client said {line:?}");
        Grpcio(child, out)
    }

    /// Stops calling; what it counted.
    fn finish(mut self) -> Calls {
        let mut stdin = self.0.child_mut().stdin.take().expect("piped");
        let _ = stdin.flush();
        drop(stdin);
        let mut line = String::new();
        self.1
            .read_line(&mut line)
            .expect("the grpcio client's report");
        let report: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        Calls {
            served: report["served"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default(),
            failed: report["failed"].as_u64().unwrap_or(0),
            errors: report["errors"]
                .as_array()
                .map(|a| a.iter().map(|e| e.to_string()).collect())
                .unwrap_or_default(),
            latency: (
                Duration::from_secs_f64(report["p50_ms"].as_f64().unwrap_or(0.0) / 1e3),
                Duration::from_secs_f64(report["p99_ms"].as_f64().unwrap_or(0.0) / 1e3),
            ),
        }
    }
}

/// Runs one rolling restart.
///
/// # Panics
///
/// When a server, a backend or a client does not start or stop: the run measures nothing
/// then.
pub async fn run(settings: &Settings) -> Outcome {
    let servers = Servers {
        nats: NatsServer::start().await,
        etcd: EtcdServer::start().await,
        prefix: format!("roll{}", fastrand::u32(..)),
    };
    let ids: Vec<String> = (1..=settings.backends).map(|i| format!("b{i}")).collect();
    let ports: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let mut backends: Vec<Backend> = tokio::task::block_in_place(|| {
        ids.iter()
            .zip(&ports)
            .map(|(id, port)| Backend::start(&servers, settings, id, *port))
            .collect()
    });
    let xds = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let _agent = tokio::task::block_in_place(|| {
        spawn_until(
            servers.herald(settings, &["serve", "--listen", &listen, "--xds", &xds]),
            "herald agent listening",
        )
    });
    let bootstrap = herald_xds::bootstrap::json(&xds, "rolling", None);
    let sub = Arc::new(
        Subscriber::builder()
            .nats(NatsConfig::new([servers.nats.url()]))
            .etcd(EtcdConfig::new([servers.etcd.endpoint()]))
            .prefix(&servers.prefix)
            .start()
            .await
            .expect("subscriber starts"),
    );
    let up = |id: &str| {
        sub.instances(SERVICE)
            .iter()
            .any(|i| i.id() == id && i.state() == State::Up && i.is_confirmed())
    };
    until(|| ids.iter().all(|id| up(id)), "every backend listed").await;

    let grpcio = tokio::task::block_in_place(|| Grpcio::start(settings, &bootstrap));
    let stop_calls = CancellationToken::new();
    let tonic = tokio::spawn(tonic_client(sub.clone(), settings.rate, stop_calls.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut restart_took = Vec::new();
    for r in 0..settings.restarts {
        let i = r % ids.len();
        let began = Instant::now();
        tokio::task::block_in_place(|| {
            backends[i].stop();
            backends[i] = Backend::start(&servers, settings, &ids[i], ports[i]);
        });
        until(|| up(&ids[i]), "the backend listed again").await;
        restart_took.push(began.elapsed());
        // Serving again: the clients have it back before the next one goes.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_calls.cancel();
    let tonic = tonic.await.expect("the tonic client");
    let grpcio = tokio::task::block_in_place(|| grpcio.finish());
    Outcome {
        tonic,
        grpcio,
        restarts: settings.restarts,
        restart_took,
    }
}

async fn until(cond: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
