//! Talking to a running member as a client: `etcdctl` with the member's TLS files and
//! credentials, enabling auth, `/v3/maintenance/status`, and `/health`.

use std::process::Output;

use serde::Deserialize;

use super::EtcdServer;
use crate::http;
use crate::launch;

/// What `/v3/maintenance/status` reports about a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdStatus {
    /// The cluster id (new for every bootstrapped cluster).
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
    /// The leader's member id as this member sees it (0: none).
    pub leader: u64,
    /// The raft term.
    pub raft_term: u64,
}

impl EtcdServer {
    /// Runs `etcdctl` (API v3) against this member with its TLS files and, once auth is on,
    /// root's credentials; for example `etcdctl(&["put", "k", "v"])`. Returns its output
    /// whatever its exit status; panics only if `etcdctl` cannot be run.
    pub async fn etcdctl(&self, args: &[&str]) -> Output {
        let binary = launch::find_binary("etcdctl", "HERALD_ETCDCTL", &["/usr/bin/etcdctl"]);
        let mut cmd = tokio::process::Command::new(&binary);
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoint())
            .args(["--dial-timeout", "3s", "--command-timeout", "10s"]);
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.trusted_ca_file {
                cmd.arg("--cacert").arg(ca);
            }
            if let Some((cert, key)) = &tls.client_cert {
                cmd.arg("--cert").arg(cert).arg("--key").arg(key);
            }
        }
        if let Some(password) = &self.root_password {
            cmd.arg("--user").arg(format!("root:{password}"));
        }
        cmd.args(args).kill_on_drop(true);
        match cmd.output().await {
            Ok(out) => out,
            Err(e) => panic!("cannot run {}: {e}", binary.display()),
        }
    }

    /// Creates user `root` with `root_password` and the `root` role, and enables auth. From
    /// then on [`EtcdServer::etcdctl`] authenticates as root. Panics if a step fails.
    pub async fn enable_auth(&mut self, root_password: &str) {
        let user = format!("root:{root_password}");
        for step in [
            &["role", "add", "root"][..],
            &["user", "add", &user][..],
            &["user", "grant-role", "root", "root"][..],
            &["auth", "enable"][..],
        ] {
            let out = self.etcdctl(step).await;
            if !out.status.success() {
                panic!(
                    "etcdctl {step:?} failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        self.root_password = Some(root_password.to_owned());
        tracing::info!(endpoint = %self.endpoint(), "etcd auth enabled");
    }

    /// This member's view from `POST /v3/maintenance/status`; `None` if it does not answer
    /// (or serves clients over TLS, which the kit's plain HTTP cannot speak).
    pub async fn status(&self) -> Option<EtcdStatus> {
        if self.tls.is_some() || !self.is_running() {
            return None;
        }
        let resp = http::post_json(self.client_port, "/v3/maintenance/status", "{}")
            .await
            .ok()?;
        if resp.status != 200 {
            return None;
        }
        let json: StatusJson = resp.json().ok()?;
        Some(EtcdStatus {
            cluster_id: json.header.cluster_id.get()?,
            member_id: json.header.member_id.get()?,
            leader: json.leader.and_then(JsonU64::get).unwrap_or(0),
            raft_term: json.raft_term.and_then(JsonU64::get).unwrap_or(0),
        })
    }
}

/// The body of `/v3/maintenance/status`; fields at zero may be left out.
#[derive(Deserialize)]
struct StatusJson {
    header: HeaderJson,
    leader: Option<JsonU64>,
    #[serde(rename = "raftTerm")]
    raft_term: Option<JsonU64>,
}

#[derive(Deserialize)]
struct HeaderJson {
    cluster_id: JsonU64,
    member_id: JsonU64,
}

/// A 64-bit number, which etcd's JSON gateway writes as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonU64 {
    Text(String),
    Number(u64),
}

impl JsonU64 {
    fn get(self) -> Option<u64> {
        match self {
            JsonU64::Text(text) => text.parse().ok(),
            JsonU64::Number(n) => Some(n),
        }
    }
}

/// The body of `/health`.
#[derive(Deserialize)]
struct HealthJson {
    health: String,
}

/// Whether `GET /health` on the metrics port answers `{"health":"true"}`.
pub(crate) async fn healthy(metrics_port: u16) -> bool {
    match http::get(metrics_port, "/health").await {
        Ok(resp) => {
            resp.status == 200 && resp.json::<HealthJson>().is_ok_and(|h| h.health == "true")
        }
        Err(_) => false,
    }
}
