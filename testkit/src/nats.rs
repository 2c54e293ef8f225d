//! One `nats-server` process on loopback: its options ([`NatsBuilder`]), readiness (the
//! server's `INFO` line on a fresh connection), and its lifecycle (kill, stop, restart on the
//! same ports). The config file generated from the options is in the `conf` submodule.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::launch::{self, LaunchError};
use crate::ports::{self, LOCALHOST, free_port};
use crate::process::ChildGuard;

mod conf;

pub use conf::advisory_accounts;

/// How long a start or restart may take before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// First starts that lose a port race are retried on fresh ports this many times.
const START_ATTEMPTS: usize = 5;

/// TLS for client connections, written as the config file's `tls { .. }` block.
#[derive(Debug, Clone)]
pub struct NatsTls {
    /// Server certificate (PEM).
    pub cert_file: PathBuf,
    /// Server private key (PEM).
    pub key_file: PathBuf,
    /// CA that client certificates must chain to.
    pub ca_file: Option<PathBuf>,
    /// Require and verify client certificates.
    pub verify: bool,
}

impl NatsTls {
    /// Server-side TLS with `cert_file` and `key_file`, no client certificates.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        NatsTls {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            ca_file: None,
            verify: false,
        }
    }
}

/// Route settings of a cluster member: written as the config file's `cluster { .. }` block.
#[derive(Debug, Clone)]
pub struct NatsRoutes {
    /// The cluster name (must match on every member).
    pub name: String,
    /// The port this member listens on for routes (on 127.0.0.1).
    pub port: u16,
    /// Route URLs of the other members, such as `nats-route://127.0.0.1:6222`.
    pub routes: Vec<String>,
}

/// Options of a [`NatsServer`]; `start` launches it.
#[derive(Debug, Clone, Default)]
pub struct NatsBuilder {
    port: Option<u16>,
    name: Option<String>,
    user: Option<(String, String)>,
    token: Option<String>,
    tls: Option<NatsTls>,
    cluster: Option<NatsRoutes>,
    advisories: bool,
    extra_config: String,
}

/// Where a server started with [`NatsBuilder::advisories`] delivers disconnect advisories to
/// its clients.
pub const ADVISORY_SUBJECT: &str = "herald.sys.disconnect";

impl NatsBuilder {
    /// Listen for clients on this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The server name (`server_name`), shown in logs and monitoring.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Require this user and password (`--user`/`--pass`).
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// Require this authorization token (`--auth`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Serve clients over TLS.
    pub fn tls(mut self, tls: NatsTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Publish disconnect advisories to clients: accounts `SYS` (the system account, which
    /// exports `$SYS.ACCOUNT.APP.DISCONNECT`) and `APP` (which imports it as
    /// [`ADVISORY_SUBJECT`]); clients without credentials are `APP`'s. Not with
    /// [`user`](NatsBuilder::user) or [`token`](NatsBuilder::token).
    pub fn advisories(mut self) -> Self {
        self.advisories = true;
        self
    }

    /// Join a cluster: listen for routes and connect to the given ones.
    pub fn cluster(mut self, routes: NatsRoutes) -> Self {
        self.cluster = Some(routes);
        self
    }

    /// Text appended verbatim to the generated config file (accounts, permissions, ...).
    pub fn config(mut self, text: impl AsRef<str>) -> Self {
        self.extra_config.push_str(text.as_ref());
        self.extra_config.push('\n');
        self
    }

    /// Starts the server and waits until it greets clients. Panics (quoting the server's log)
    /// if it is not ready within 20 s.
    pub async fn start(self) -> NatsServer {
        assert!(
            !(self.advisories && (self.user.is_some() || self.token.is_some())),
            "advisories() sets up accounts; it does not combine with user() or token()"
        );
        let dir = tempfile::Builder::new()
            .prefix("herald-nats-")
            .tempdir()
            .expect("create a temp dir for nats-server");
        let mut server = NatsServer {
            binary: launch::find_binary(
                "nats-server",
                "HERALD_NATS_SERVER",
                &["/usr/sbin/nats-server", "/usr/local/bin/nats-server"],
            ),
            port: 0,
            monitor_port: 0,
            child: None,
            opts: self,
            dir,
        };
        for attempt in 1..=START_ATTEMPTS {
            server.port = server.opts.port.unwrap_or_else(free_port);
            server.monitor_port = free_port();
            match server.launch().await {
                Ok(()) => return server,
                Err(LaunchError::AddrInUse(msg)) if attempt < START_ATTEMPTS => {
                    tracing::warn!("nats-server lost a port race, retrying on new ports: {msg}");
                }
                Err(e) => panic!("{}", e.message()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }
}

/// A running (or killed) `nats-server` on 127.0.0.1; killed and its temp dir removed on drop.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    monitor_port: u16,
    child: Option<ChildGuard>,
    opts: NatsBuilder,
    dir: TempDir,
}

impl NatsServer {
    /// Starts a server with default options (no auth, no TLS, standalone).
    pub async fn start() -> NatsServer {
        NatsServer::builder().start().await
    }

    /// Options for a server with auth, TLS, routes or extra configuration.
    pub fn builder() -> NatsBuilder {
        NatsBuilder::default()
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring URL, `http://127.0.0.1:PORT` (`/varz`, `/routez`, `/connz`, ...).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The HTTP monitoring port.
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// The route port, if the server is a cluster member.
    pub fn cluster_port(&self) -> Option<u16> {
        self.opts.cluster.as_ref().map(|c| c.port)
    }

    /// The process id of the current process, if one was started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// Whether the server process is alive.
    pub fn is_running(&self) -> bool {
        self.child.as_ref().is_some_and(ChildGuard::is_alive)
    }

    /// The server's temp dir (config file and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file that receives the server's stdout and stderr, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        launch::log_tail(&self.log_path())
    }

    /// SIGKILLs the server and reaps it (no goodbye to clients or routes).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
            tracing::info!(port = self.port, pid = child.pid(), "nats-server killed");
        }
    }

    /// Freezes the server (SIGSTOP): its sockets stay open and accept bytes, but it handles
    /// nothing until [`thaw`](NatsServer::thaw), as a hung server would. Returns once every
    /// thread of the process is stopped (a signal is delivered asynchronously).
    pub fn freeze(&mut self) {
        self.send(rustix::process::Signal::STOP, "frozen");
        let Some(pid) = self.pid() else {
            return;
        };
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        while !all_threads_stopped(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server (pid {pid}) not stopped {READY_TIMEOUT:?} after SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets a frozen server run again (SIGCONT); it then handles what arrived meanwhile.
    pub fn thaw(&mut self) {
        self.send(rustix::process::Signal::CONT, "thawed");
    }

    fn send(&mut self, signal: rustix::process::Signal, what: &str) {
        if let Some(child) = self.child.as_mut() {
            child.signal(signal.as_raw()).expect("signal nats-server");
            tracing::info!(port = self.port, pid = child.pid(), "nats-server {what}");
        }
    }

    /// Lame-duck mode (`nats-server --signal ldm`, SIGUSR2): the server stops accepting
    /// clients, closes its clients one by one (they reconnect elsewhere), then exits. Waits up
    /// to `within` for the exit; panics otherwise. nats-server 2.9 spreads the closes over
    /// `lame_duck_duration` (at least 30 s) after `lame_duck_grace_period`, at most 1 s apart:
    /// configure both (see [`NatsBuilder::config`]) to keep this short.
    pub async fn lame_duck(&mut self, within: Duration) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        child
            .signal(rustix::process::Signal::USR2.as_raw())
            .expect("signal nats-server");
        let pid = child.pid();
        let status = child.wait_exit(within).await;
        assert!(
            status.is_some(),
            "nats-server (pid {pid}) still runs {within:?} after lame-duck mode began:\n{}",
            self.log_tail()
        );
        self.child = None;
        tracing::info!(port = self.port, pid, "nats-server left in lame-duck mode");
    }

    /// SIGTERM, then waits for exit (SIGKILL after 5 s).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = child.stop(STOP_GRACE).await;
            tracing::info!(
                port = self.port,
                pid = child.pid(),
                ?status,
                "nats-server stopped"
            );
        }
    }

    /// Starts the server again on the same ports with the same configuration, killing it
    /// first if it still runs; waits until the ports are free and the server greets clients.
    pub async fn restart(&mut self) {
        self.kill();
        let mut ports = vec![self.port, self.monitor_port];
        ports.extend(self.cluster_port());
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        if !ports::wait_bindable(&ports, READY_TIMEOUT).await {
            panic!("nats-server ports {ports:?} still busy after {READY_TIMEOUT:?}");
        }
        loop {
            match self.launch().await {
                Ok(()) => return,
                Err(LaunchError::AddrInUse(msg)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!("nats-server restart found a port busy, retrying: {msg}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{}", e.message()),
            }
        }
    }

    async fn launch(&mut self) -> Result<(), LaunchError> {
        let args = self.args()?;
        let what = format!("nats-server on 127.0.0.1:{}", self.port);
        let log = self.log_path();
        let (mut child, offset) = launch::spawn_logged(&self.binary, &args, &log)?;
        let port = self.port;
        let ready = launch::wait_ready(&mut child, &what, &log, offset, READY_TIMEOUT, || {
            sends_info(port)
        })
        .await;
        if ready.is_ok() {
            tracing::info!(
                port,
                pid = child.pid(),
                monitor = self.monitor_port,
                "nats-server started"
            );
            self.child = Some(child);
        }
        ready
    }

    fn args(&self) -> Result<Vec<OsString>, LaunchError> {
        let mut args: Vec<OsString> = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string().into(),
            "-m".into(),
            self.monitor_port.to_string().into(),
        ];
        if let Some((user, pass)) = &self.opts.user {
            args.extend(["--user".into(), user.into(), "--pass".into(), pass.into()]);
        }
        if let Some(token) = &self.opts.token {
            args.extend(["--auth".into(), token.into()]);
        }
        let config = self.config_text();
        if !config.is_empty() {
            let path = self.dir.path().join("nats-server.conf");
            std::fs::write(&path, config).map_err(|e| {
                LaunchError::Failed(format!("cannot write {}: {e}", path.display()))
            })?;
            args.extend(["-c".into(), path.into()]);
        }
        Ok(args)
    }
}

/// Whether a fresh connection to 127.0.0.1:`port` receives the server's `INFO` line.
pub(crate) async fn sends_info(port: u16) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect((LOCALHOST, port)).await.ok()?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(buf.starts_with(b"INFO "))
    };
    tokio::time::timeout(Duration::from_secs(1), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Whether every thread of `pid` is stopped by a signal (state `T` in `/proc`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    threads.flatten().all(|thread| {
        std::fs::read_to_string(thread.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        })
    })
}
