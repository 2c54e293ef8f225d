//! One `etcd` member on loopback: its options ([`EtcdBuilder`]), its command line, readiness
//! (`GET /health` on a plain-HTTP metrics listener, so it works with TLS too), and its
//! lifecycle (kill, stop, restart on the same data or on a new one). Client calls against it
//! (`etcdctl`, auth, status) are in the `ctl` submodule.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use crate::launch::{self, LaunchError};
use crate::ports::{self, free_port};
use crate::process::ChildGuard;

mod ctl;

pub use ctl::EtcdStatus;
use ctl::healthy;

/// How long a start or restart may take before the test fails.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// First starts that lose a port race are retried on fresh ports this many times.
const START_ATTEMPTS: usize = 5;
/// Raft timing for tests: leaders are noticed missing after about half a second.
const HEARTBEAT_MS: &str = "50";
const ELECTION_MS: &str = "500";

/// TLS for client connections (`--cert-file`, `--key-file`, `--trusted-ca-file`,
/// `--client-cert-auth`); client URLs become `https://`.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// Server certificate (PEM).
    pub cert_file: PathBuf,
    /// Server private key (PEM).
    pub key_file: PathBuf,
    /// CA that client certificates must chain to; also the CA the kit's `etcdctl` trusts.
    pub trusted_ca_file: Option<PathBuf>,
    /// Require client certificates.
    pub client_cert_auth: bool,
    /// Certificate and key the kit's own `etcdctl` calls present (needed with
    /// `client_cert_auth`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Options of an [`EtcdServer`]; `start` launches it.
#[derive(Debug, Clone, Default)]
pub struct EtcdBuilder {
    name: Option<String>,
    auth: Option<String>,
    tls: Option<EtcdTls>,
}

impl EtcdBuilder {
    /// The member name (`--name`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Enable authentication once started, with user `root` and this password.
    pub fn auth(mut self, root_password: impl Into<String>) -> Self {
        self.auth = Some(root_password.into());
        self
    }

    /// Serve clients over TLS.
    pub fn tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Starts a single-member cluster and waits until it is healthy (and auth is on, if
    /// asked). Panics, quoting the log, after 30 s.
    pub async fn start(self) -> EtcdServer {
        let name = self.name.unwrap_or_else(|| "etcd".to_owned());
        let mut server = EtcdServer::new(name, self.tls);
        for attempt in 1..=START_ATTEMPTS {
            server.client_port = free_port();
            server.peer_port = free_port();
            server.metrics_port = free_port();
            server.initial_cluster = format!("{}={}", server.name, server.peer_url());
            match server.launch().await {
                Ok(()) => break,
                Err(LaunchError::AddrInUse(msg)) if attempt < START_ATTEMPTS => {
                    tracing::warn!("etcd lost a port race, retrying on new ports: {msg}");
                }
                Err(e) => panic!("{}", e.message()),
            }
        }
        if let Some(password) = self.auth {
            server.enable_auth(&password).await;
        }
        server
    }
}

/// A running (or killed) `etcd` member on 127.0.0.1; killed and its temp dirs removed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    binary: PathBuf,
    name: String,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    initial_cluster: String,
    cluster_token: String,
    tls: Option<EtcdTls>,
    root_password: Option<String>,
    child: Option<ChildGuard>,
    data: TempDir,
    dir: TempDir,
}

impl EtcdServer {
    /// Starts a single-member cluster with default options (no auth, no TLS).
    pub async fn start() -> EtcdServer {
        EtcdServer::builder().start().await
    }

    /// Options for a member with auth or TLS.
    pub fn builder() -> EtcdBuilder {
        EtcdBuilder::default()
    }

    /// An unstarted member; ports and `--initial-cluster` are set by the caller.
    pub(crate) fn new(name: String, tls: Option<EtcdTls>) -> EtcdServer {
        EtcdServer {
            binary: launch::find_binary("etcd", "HERALD_ETCD", &["/usr/bin/etcd"]),
            name,
            client_port: 0,
            peer_port: 0,
            metrics_port: 0,
            initial_cluster: String::new(),
            cluster_token: new_cluster_token(),
            tls,
            root_password: None,
            child: None,
            data: temp_dir("herald-etcd-data-"),
            dir: temp_dir("herald-etcd-"),
        }
    }

    /// Sets the ports of a cluster member and the shared cluster settings.
    pub(crate) fn set_member(
        &mut self,
        (client, peer, metrics): (u16, u16, u16),
        initial_cluster: &str,
        cluster_token: &str,
    ) {
        self.client_port = client;
        self.peer_port = peer;
        self.metrics_port = metrics;
        self.initial_cluster = initial_cluster.to_owned();
        self.cluster_token = cluster_token.to_owned();
    }

    /// The client URL, `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The client URLs (this member's only).
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// The member name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The peer URL, `http://127.0.0.1:PORT`.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The plain-HTTP metrics URL (`/health`, `/metrics`), even when clients use TLS.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    /// The data dir (`--data-dir`); a new one after [`EtcdServer::restart_fresh`].
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// The root password, once auth is enabled.
    pub fn root_password(&self) -> Option<&str> {
        self.root_password.as_deref()
    }

    /// The process id of the current process, if one was started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// Whether the etcd process is alive.
    pub fn is_running(&self) -> bool {
        self.child.as_ref().is_some_and(ChildGuard::is_alive)
    }

    /// The file that receives etcd's stdout and stderr, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The last lines of etcd's log.
    pub fn log_tail(&self) -> String {
        launch::log_tail(&self.log_path())
    }

    /// SIGKILLs etcd and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
            tracing::info!(name = %self.name, port = self.client_port, pid = child.pid(), "etcd killed");
        }
    }

    /// SIGTERM, then waits for exit (SIGKILL after 5 s).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = child.stop(STOP_GRACE).await;
            tracing::info!(name = %self.name, port = self.client_port, pid = child.pid(), ?status, "etcd stopped");
        }
    }

    /// Starts etcd again on the same ports and the same data dir (same cluster, same keys),
    /// killing it first if it still runs. Waits until it is healthy.
    pub async fn restart(&mut self) {
        self.kill();
        self.relaunch().await;
    }

    /// Starts etcd again on the same ports with a new, empty data dir: a brand-new cluster
    /// (new cluster id, no keys). Auth, if it was enabled, is enabled again with the same
    /// password. Only meaningful for a single-member server.
    pub async fn restart_fresh(&mut self) {
        self.kill();
        self.data = temp_dir("herald-etcd-data-");
        self.cluster_token = new_cluster_token();
        self.relaunch().await;
        if let Some(password) = self.root_password.take() {
            self.enable_auth(&password).await;
        }
    }

    async fn relaunch(&mut self) {
        let ports = [self.client_port, self.peer_port, self.metrics_port];
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        if !ports::wait_bindable(&ports, READY_TIMEOUT).await {
            panic!("etcd ports {ports:?} still busy after {READY_TIMEOUT:?}");
        }
        loop {
            match self.launch().await {
                Ok(()) => return,
                Err(LaunchError::AddrInUse(msg)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!("etcd restart found a port busy, retrying: {msg}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{}", e.message()),
            }
        }
    }

    async fn launch(&mut self) -> Result<(), LaunchError> {
        let offset = self.spawn()?;
        self.wait_ready(offset).await
    }

    /// Spawns the process without waiting; returns the log offset for [`Self::wait_ready`].
    pub(crate) fn spawn(&mut self) -> Result<u64, LaunchError> {
        let (child, offset) = launch::spawn_logged(&self.binary, &self.args(), &self.log_path())?;
        self.child = Some(child);
        Ok(offset)
    }

    /// Waits until `/health` says `true` (which needs a leader).
    pub(crate) async fn wait_ready(&mut self, log_offset: u64) -> Result<(), LaunchError> {
        let what = format!("etcd {} on {}", self.name, self.endpoint());
        let log = self.log_path();
        let metrics = self.metrics_port;
        let Some(child) = self.child.as_mut() else {
            return Err(LaunchError::Failed(format!("{what} was not spawned")));
        };
        let ready = launch::wait_ready(child, &what, &log, log_offset, READY_TIMEOUT, || {
            healthy(metrics)
        })
        .await;
        let pid = child.pid();
        match &ready {
            Ok(()) => tracing::info!(
                name = %self.name,
                endpoint = %self.endpoint(),
                pid,
                data_dir = %self.data.path().display(),
                "etcd started"
            ),
            Err(_) => self.kill(),
        }
        ready
    }

    fn args(&self) -> Vec<OsString> {
        let client = self.endpoint();
        let peer = self.peer_url();
        let mut args: Vec<OsString> = vec![
            "--name".into(),
            self.name.clone().into(),
            "--data-dir".into(),
            self.data.path().into(),
            "--listen-client-urls".into(),
            client.clone().into(),
            "--advertise-client-urls".into(),
            client.into(),
            "--listen-peer-urls".into(),
            peer.clone().into(),
            "--initial-advertise-peer-urls".into(),
            peer.into(),
            "--initial-cluster".into(),
            self.initial_cluster.clone().into(),
            // Ignored when the data dir already holds a member: restarts rejoin from the WAL.
            "--initial-cluster-state".into(),
            "new".into(),
            "--initial-cluster-token".into(),
            self.cluster_token.clone().into(),
            "--listen-metrics-urls".into(),
            self.metrics_url().into(),
            "--heartbeat-interval".into(),
            HEARTBEAT_MS.into(),
            "--election-timeout".into(),
            ELECTION_MS.into(),
            "--logger".into(),
            "zap".into(),
            "--log-outputs".into(),
            "stderr".into(),
        ];
        if let Some(tls) = &self.tls {
            args.extend(["--cert-file".into(), tls.cert_file.clone().into()]);
            args.extend(["--key-file".into(), tls.key_file.clone().into()]);
            if let Some(ca) = &tls.trusted_ca_file {
                args.extend(["--trusted-ca-file".into(), ca.clone().into()]);
            }
            if tls.client_cert_auth {
                args.push("--client-cert-auth".into());
            }
        }
        args
    }
}

/// A cluster token never used before in this process, so every bootstrap (including
/// `restart_fresh` on the same ports and name) gets a new cluster id.
pub(crate) fn new_cluster_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("herald-test-{}-{n}-{nanos}", std::process::id())
}

fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temp dir for etcd")
}
