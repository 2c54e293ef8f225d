//! What the CLI tests share: servers, the `herald` command with its environment, announcer
//! processes, and waits.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use herald_testkit::{ChildGuard, EtcdServer, NatsServer, spawn_guarded};

pub struct Env {
    pub nats: NatsServer,
    pub etcd: EtcdServer,
    pub prefix: String,
}

impl Env {
    pub async fn start(name: &str) -> Env {
        Env {
            nats: NatsServer::start().await,
            etcd: EtcdServer::start().await,
            prefix: format!("cli{name}{}", std::process::id()),
        }
    }

    pub fn herald(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(herald_testkit::bin_exe(
            "herald",
            env!("CARGO_BIN_EXE_herald"),
        ));
        cmd.args(args)
            .env("HERALD_NATS_URL", self.nats.url())
            .env("HERALD_ETCD_ENDPOINTS", self.etcd.endpoint())
            .env("HERALD_PREFIX", &self.prefix)
            .env_remove("RUST_LOG");
        cmd
    }

    pub async fn output(&self, args: &[&str]) -> Output {
        let mut cmd = self.herald(args);
        tokio::task::spawn_blocking(move || cmd.output().expect("herald runs"))
            .await
            .unwrap()
    }

    pub fn announce(&self, service: &str, instance: &str, extra: &[&str]) -> ChildGuard {
        self.announce_at(service, instance, "127.0.0.1:9000", extra)
    }

    /// `herald announce` of `service`/`instance` at `addr`, once its first token is out.
    pub fn announce_at(
        &self,
        service: &str,
        instance: &str,
        addr: &str,
        extra: &[&str],
    ) -> ChildGuard {
        self.announce_watched_at(service, instance, addr, extra).0
    }

    /// `herald announce` of `service`/`instance` with extra flags, once its first token is
    /// out, and every later line of its stderr.
    pub fn announce_watched(
        &self,
        service: &str,
        instance: &str,
        extra: &[&str],
    ) -> (ChildGuard, std::sync::mpsc::Receiver<String>) {
        self.announce_watched_at(service, instance, "127.0.0.1:9000", extra)
    }

    fn announce_watched_at(
        &self,
        service: &str,
        instance: &str,
        addr: &str,
        extra: &[&str],
    ) -> (ChildGuard, std::sync::mpsc::Receiver<String>) {
        let mut args = vec![
            "announce",
            "--service",
            service,
            "--addr",
            addr,
            "--instance",
            instance,
            "--interval",
            "200ms",
        ];
        args.extend_from_slice(extra);
        let mut cmd = self.herald(&args);
        cmd.stderr(Stdio::piped());
        let mut child = spawn_guarded(cmd);
        let stderr = child.child_mut().stderr.take().unwrap();
        let mut reader = BufReader::new(stderr);
        let (tx, rx) = std::sync::mpsc::channel();
        // Log lines may come first (a takeover warns); "announcing" means the first token is out.
        loop {
            let mut line = String::new();
            let read = reader.read_line(&mut line).unwrap();
            assert!(read > 0, "announce ended before announcing");
            if line.starts_with("announcing") {
                break;
            }
            eprintln!("[announce] {}", line.trim_end());
            let _ = tx.send(line);
        }
        // Keep reading even when nobody listens: a closed pipe would fail the child's later
        // log writes.
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                eprintln!("[announce] {line}");
                let _ = tx.send(line);
            }
        });
        (child, rx)
    }

    pub async fn ls_json(&self, service: &str) -> Vec<serde_json::Value> {
        let out = self
            .output(&["ls", service, "--json", "--wait", "200ms"])
            .await;
        assert!(
            out.status.success(),
            "ls failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("ls --json prints a JSON array")
    }
}

pub async fn eventually<F: AsyncFnMut() -> bool>(timeout: Duration, what: &str, mut cond: F) {
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn sigterm(child: &mut ChildGuard) -> std::process::ExitStatus {
    child.signal(libc_sigterm()).unwrap();
    exit_within(child, Duration::from_secs(5), "SIGTERM")
}

/// The child's exit status, or a panic naming `after` when it does not exit within `within`.
pub fn exit_within(
    child: &mut ChildGuard,
    within: Duration,
    after: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_status() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "no exit within {within:?} of {after}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn libc_sigterm() -> i32 {
    15
}

/// The Python of the venv `scripts/install-deps` makes, with grpcio.
pub fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: scripts/install-deps makes it (grpcio for the xDS tests)",
        venv.display()
    );
    venv
}

/// A script of `tests/grpc`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/grpc")
        .join(name)
}

/// A gRPC backend answering with `name`, once it serves.
pub fn backend(name: &str, port: u16) -> ChildGuard {
    backend_with(name, port, &[])
}

/// [`backend`] with `backend.py`'s options (`--delay-ms N`, `--abrupt`).
pub fn backend_with(name: &str, port: u16, options: &[&str]) -> ChildGuard {
    let mut cmd = Command::new(python());
    cmd.arg(script("backend.py"))
        .arg(name)
        .arg(port.to_string())
        .args(options)
        .stdout(Stdio::piped());
    let mut child = spawn_guarded(cmd);
    let stdout = child.child_mut().stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.starts_with("serving"), "backend {name} said {line:?}");
    child
}

/// The agent of a test: `herald serve` with HTTP and xDS on fixed ports, started again on the
/// same ports after a stop.
pub fn agent(env: &Env, http_port: u16, xds: &str) -> ChildGuard {
    let mut serve = env.herald(&[
        "serve",
        "--listen",
        &format!("127.0.0.1:{http_port}"),
        "--xds",
        xds,
    ]);
    serve.stderr(Stdio::piped());
    let mut child = spawn_guarded(serve);
    let stderr = child.child_mut().stderr.take().unwrap();
    let mut reader = BufReader::new(stderr);
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the agent ended before serving"
        );
        if line.starts_with("herald agent listening") {
            break;
        }
    }
    // Keep reading: a closed pipe would fail the agent's later log lines.
    std::thread::spawn(move || for _ in reader.lines().map_while(Result::ok) {});
    child
}
