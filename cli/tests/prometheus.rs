//! A real consumer of the agent: Debian's Prometheus, pointed at `herald serve` through
//! `http_sd_configs`, discovers exactly the announced instances and drops one after its
//! graceful stop (checked through Prometheus's own `/api/v1/targets`).

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{Env, eventually, sigterm};
use herald_testkit::{free_port, http, spawn_guarded};

fn prometheus_binary() -> String {
    std::env::var("HERALD_PROMETHEUS").unwrap_or_else(|_| "prometheus".into())
}

/// The `__address__` of every active target Prometheus reports.
async fn targets(port: u16) -> BTreeSet<String> {
    let Ok(r) = http::get(port, "/api/v1/targets?state=active").await else {
        return BTreeSet::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body) else {
        return BTreeSet::new();
    };
    v["data"]["activeTargets"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| {
                    t["discoveredLabels"]["__address__"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_discovers_exactly_the_announced_instances() {
    let env = Env::start("prom").await;
    let agent_port = free_port();
    let mut agent =
        spawn_guarded(env.herald(&["serve", "--listen", &format!("127.0.0.1:{agent_port}")]));
    eventually(Duration::from_secs(10), "the agent answers", async || {
        http::get(agent_port, "/healthz")
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut announcers: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| env.announce_at("metrics", &format!("m{i}"), addr, &[]))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: herald\n    http_sd_configs:\n      - url: http://127.0.0.1:{agent_port}/v1/sd/prometheus\n        refresh_interval: 1s\n"
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let mut cmd = Command::new(prometheus_binary());
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _prometheus = spawn_guarded(cmd);
    eventually(Duration::from_secs(30), "prometheus ready", async || {
        http::get(prom_port, "/-/ready")
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;

    let all: BTreeSet<String> = addrs.iter().cloned().collect();
    eventually(
        Duration::from_secs(15),
        "prometheus discovering the three instances",
        async || targets(prom_port).await == all,
    )
    .await;

    assert!(sigterm(&mut announcers[1]).success());
    let remaining: BTreeSet<String> = [addrs[0].clone(), addrs[2].clone()].into();
    eventually(
        Duration::from_secs(15),
        "prometheus dropping the stopped instance",
        async || targets(prom_port).await == remaining,
    )
    .await;
    assert!(sigterm(&mut agent).success());
}
