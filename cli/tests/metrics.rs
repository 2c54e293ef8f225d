//! The agent's readiness and metrics against real servers: `/metrics` passes Debian's
//! `promtool check metrics`, and `/healthz` names the link that is down while nats-server or
//! etcd is stopped, and answers 200 again once it is back.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Env, eventually, sigterm};
use herald_testkit::{free_port, http, spawn_guarded};
use serde_json::Value;

/// `promtool` from PATH, else where Debian's `prometheus` package puts it.
fn promtool() -> String {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("promtool"))
                .find(|p| p.is_file())
        })
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/usr/bin/promtool".into())
}

/// `promtool check metrics` of `text`: exit success and what it printed.
async fn promtool_check(text: String) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(promtool())
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool runs (Debian package `prometheus`)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), printed)
    })
    .await
    .unwrap()
}

/// `GET /healthz`: status and JSON body.
async fn healthz(port: u16) -> Option<(u16, Value)> {
    let r = http::get(port, "/healthz").await.ok()?;
    let body = serde_json::from_str(&r.body).ok()?;
    Some((r.status, body))
}

async fn wait_ready(port: u16, what: &str) {
    eventually(Duration::from_secs(20), what, async || {
        healthz(port).await.is_some_and(|(status, body)| {
            status == 200 && body["status"] == "ok" && body["nats"]["up"] == true
        })
    })
    .await;
}

/// Raw `GET /metrics` with an OpenMetrics `Accept` header (the testkit helper sends none):
/// the response head and body.
async fn openmetrics(port: u16) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        b"GET /metrics HTTP/1.0\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_check() {
    let env = Env::start("promtool").await;
    let port = free_port();
    let mut agent = spawn_guarded(env.herald(&["serve", "--listen", &format!("127.0.0.1:{port}")]));
    wait_ready(port, "the agent ready").await;
    let _a = env.announce("pay", "pay-1", &[]);
    eventually(Duration::from_secs(5), "pay-1 listed", async || {
        http::get(port, "/metrics")
            .await
            .is_ok_and(|r| r.body.contains("herald_instances{service=\"pay\"} 1"))
    })
    .await;

    let body = http::get(port, "/metrics").await.unwrap().body;
    for name in [
        "herald_announce_visible_seconds_sum",
        "herald_announce_visible_seconds_count",
        "herald_announce_visible_seconds_bucket{le=\"+Inf\"}",
        "herald_tokens_dropped_total{reason=\"identity_mismatch\"}",
        "herald_removals_total{cause=\"deregistered\"}",
        "herald_tokens_held_now",
        "herald_tokens_held_total",
        "herald_connection_up{connection=\"nats\"} 1",
        "herald_connection_up{connection=\"etcd\"} 1",
        "herald_connection_state_age_seconds{connection=\"etcd\"}",
    ] {
        assert!(body.contains(name), "/metrics must export {name}:\n{body}");
    }
    assert!(
        !body.contains("_ms"),
        "no abbreviated units in metric names:\n{body}"
    );
    let (ok, printed) = promtool_check(body.clone()).await;
    assert!(ok, "promtool check metrics failed: {printed}\n{body}");

    let (head, body) = openmetrics(port).await;
    assert!(
        head.contains("application/openmetrics-text"),
        "OpenMetrics asked for, OpenMetrics served: {head}"
    );
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF:\n{body}"
    );
    assert!(sigterm(&mut agent).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_names_the_link_that_is_down() {
    let mut env = Env::start("healthz").await;
    let port = free_port();
    let logs = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = env.herald(&["serve", "--listen", &format!("127.0.0.1:{port}")]);
    cmd.env_remove("RUST_LOG") // the default filter shows each lost and regained link
        .env("NO_COLOR", "1")
        .stderr(logs.reopen().unwrap());
    let mut agent = spawn_guarded(cmd);
    let log_lines = |needle: &str| {
        std::fs::read_to_string(logs.path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    };
    wait_ready(port, "the agent ready").await;
    let (_, body) = healthz(port).await.unwrap();
    assert_eq!(body["etcd"]["up"], true, "etcd is followed: {body}");
    assert!(
        body.get("note").is_none(),
        "no note while all is up: {body}"
    );

    env.nats.kill();
    eventually(
        Duration::from_secs(10),
        "503 naming nats while nats-server is down",
        async || {
            healthz(port).await.is_some_and(|(status, body)| {
                status == 503
                    && body["status"] == "degraded"
                    && body["nats"]["up"] == false
                    && body["nats"]["down_since"].is_string()
                    && body["nats"]["down_for_seconds"].is_number()
                    && body["etcd"]["up"] == true
                    && body["note"]
                        .as_str()
                        .is_some_and(|n| n.contains("self-preservation"))
            })
        },
    )
    .await;
    let metrics = http::get(port, "/metrics").await.unwrap().body;
    assert!(
        metrics.contains("herald_connection_up{connection=\"nats\"} 0"),
        "the gauge follows the link:\n{metrics}"
    );
    env.nats.restart().await;
    wait_ready(port, "200 again once nats-server is back").await;

    env.etcd.kill();
    eventually(
        Duration::from_secs(10),
        "503 naming etcd while etcd is down",
        async || {
            healthz(port).await.is_some_and(|(status, body)| {
                status == 503
                    && body["etcd"]["up"] == false
                    && body["etcd"]["down_since"].is_string()
                    && body["nats"]["up"] == true
            })
        },
    )
    .await;
    let metrics = http::get(port, "/metrics").await.unwrap().body;
    assert!(
        metrics.contains("herald_connection_up{connection=\"etcd\"} 0"),
        "the gauge follows the link:\n{metrics}"
    );
    // Retries back off to one a second: three seconds down span several of them, and each
    // must stay quiet (debug) after the one warning.
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.etcd.restart().await;
    eventually(
        Duration::from_secs(20),
        "200 again once etcd is back",
        async || {
            healthz(port).await.is_some_and(|(status, body)| {
                status == 200 && body["etcd"]["up"] == true && body["nats"]["up"] == true
            })
        },
    )
    .await;
    eventually(Duration::from_secs(5), "the recovery logged", async || {
        log_lines("etcd watch resumed after") == 1
    })
    .await;
    assert!(sigterm(&mut agent).success());
    let all = std::fs::read_to_string(logs.path()).unwrap();
    for (needle, n) in [
        ("nats connection lost", 1),
        ("nats reconnected after", 1),
        ("etcd watch lost", 1),
        ("etcd watch resumed after", 1),
    ] {
        assert_eq!(
            log_lines(needle),
            n,
            "`{needle}` logged once per outage:\n{all}"
        );
    }
    assert_eq!(
        all.lines().filter(|l| l.contains("WARN")).count(),
        2,
        "one warning per outage, none per retry:\n{all}"
    );
}
