//! `herald serve --xds` against real proxyless gRPC clients: grpcio (Python, from the venv
//! `scripts/install-deps` makes) and @grpc/grpc-js-xds (Node, installed by the same script)
//! call `xds:///echo` with the bootstrap `herald xds-bootstrap`
//! prints, over three gRPC backends announced with `herald announce` (with etcd). Every call
//! is served, the busy backend gets few calls, and a draining or killed backend none.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Env, agent, backend, eventually, python, script};
use herald_testkit::{ChildGuard, free_port, spawn_guarded};

/// A proxyless gRPC client of the test.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// grpcio, Python.
    Grpcio,
    /// @grpc/grpc-js-xds, Node.
    GrpcJs,
}

/// Runs `calls` calls of `xds:///echo` through `client`: calls served per backend, and failed.
async fn calls(client: Client, bootstrap: &str, calls: usize) -> (serde_json::Value, u64) {
    let mut cmd = match client {
        Client::Grpcio => {
            let mut cmd = Command::new(python());
            cmd.arg(script("client.py"));
            cmd
        }
        Client::GrpcJs => {
            let modules =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-node/node_modules");
            assert!(
                modules.join("@grpc/grpc-js-xds").exists(),
                "{} is missing: scripts/install-deps installs @grpc/grpc-js-xds there",
                modules.display()
            );
            let mut cmd = Command::new("node");
            cmd.arg(script("client.js")).env("NODE_PATH", modules);
            cmd
        }
    };
    cmd.arg("echo")
        .arg(calls.to_string())
        .env("GRPC_XDS_BOOTSTRAP_CONFIG", bootstrap)
        .env_remove("GRPC_XDS_BOOTSTRAP");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("python runs"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the {client:?} client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the client prints one JSON line");
    (report["served"].clone(), report["failed"].as_u64().unwrap())
}

fn served(report: &serde_json::Value, name: &str) -> u64 {
    report[name].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_clients_balance_over_the_agent_by_load_and_leave_drained_and_killed_backends_out() {
    let env = Env::start("xds").await;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _backends: Vec<ChildGuard> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| backend(&format!("b{}", i + 1), *port))
        .collect();
    let mut announcers: Vec<ChildGuard> = ports
        .iter()
        .zip(["0.1", "0.1", "0.9"])
        .enumerate()
        .map(|(i, (port, load))| {
            env.announce_at(
                "echo",
                &format!("b{}", i + 1),
                &format!("127.0.0.1:{port}"),
                &["--load", load],
            )
        })
        .collect();

    // A fourth backend, serving, but announced draining: its check fails (nothing listens
    // on the port it checks).
    let port4 = free_port();
    let _backend4 = backend("b4", port4);
    let closed = format!("127.0.0.1:{}", free_port());
    let _draining = env.announce_at(
        "echo",
        "b4",
        &format!("127.0.0.1:{port4}"),
        &["--check-tcp", &closed, "--check-interval", "100ms"],
    );

    let xds_port = free_port();
    let http_port = free_port();
    let xds = format!("127.0.0.1:{xds_port}");
    let mut serve = env.herald(&[
        "serve",
        "--listen",
        &format!("127.0.0.1:{http_port}"),
        "--xds",
        &xds,
    ]);
    serve.stderr(Stdio::null());
    let _serve = spawn_guarded(serve);
    let health = format!("http://127.0.0.1:{http_port}/healthz");
    eventually(Duration::from_secs(10), "the agent answers", async || {
        reqwest::get(&health)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let body: serde_json::Value =
        serde_json::from_str(&reqwest::get(&health).await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(
        body["xds"]["listen"],
        xds.as_str(),
        "/healthz names the xDS listener"
    );

    let instances = format!("http://127.0.0.1:{http_port}/v1/services/echo");
    eventually(
        Duration::from_secs(10),
        "four instances listed, b4 draining",
        async || {
            let Ok(r) = reqwest::get(&instances).await else {
                return false;
            };
            let listed: serde_json::Value =
                serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default();
            let Some(listed) = listed.as_array() else {
                return false;
            };
            listed.len() == 4
                && listed
                    .iter()
                    .any(|i| i["instance"] == "b4" && i["state"] == "draining")
        },
    )
    .await;

    let out = env
        .output(&[
            "xds-bootstrap",
            "--server",
            &xds,
            "--node-id",
            "grpcio-test",
        ])
        .await;
    assert!(out.status.success());
    let bootstrap = String::from_utf8(out.stdout).unwrap();

    for client in [Client::Grpcio, Client::GrpcJs] {
        let (report, failed) = calls(client, &bootstrap, 1_000).await;
        assert_eq!(failed, 0, "{client:?}: every call is served: {report}");
        assert_eq!(
            served(&report, "b4"),
            0,
            "{client:?}: a draining instance gets none: {report}"
        );
        let total: u64 = ["b1", "b2", "b3"].iter().map(|b| served(&report, b)).sum();
        assert_eq!(total, 1_000, "{client:?}: {report}");
        assert!(
            served(&report, "b3") < 150,
            "{client:?}: the backend at load 0.9 gets under 15 % of the calls: {report}"
        );
        assert!(
            served(&report, "b1") > 300 && served(&report, "b2") > 300,
            "{client:?}: the two at load 0.1 share the rest: {report}"
        );
    }

    let metrics = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "herald_xds_clients",
        "herald_xds_responses_total{type=\"endpoints\"}",
        "herald_xds_push_seconds_count",
    ] {
        assert!(metrics.contains(family), "/metrics has {family}: {metrics}");
    }

    // kill -9 of b3's announcer: its instance goes after its TTL (3 x 200 ms).
    announcers.pop().unwrap().kill();
    eventually(Duration::from_secs(5), "b3 no longer listed", async || {
        let Ok(r) = reqwest::get(&instances).await else {
            return false;
        };
        let listed: serde_json::Value =
            serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default();
        listed.as_array().is_some_and(|listed| {
            !listed.is_empty() && listed.iter().all(|i| i["instance"] != "b3")
        })
    })
    .await;
    for client in [Client::Grpcio, Client::GrpcJs] {
        let (report, failed) = calls(client, &bootstrap, 200).await;
        assert_eq!(failed, 0, "{client:?}: {report}");
        assert_eq!(
            served(&report, "b3"),
            0,
            "{client:?}: no call goes to it: {report}"
        );
    }
}

/// When (milliseconds into the timeline) `name` first served a call.
fn first_call(timeline: &[(u64, Option<String>)], name: &str) -> Option<u64> {
    timeline
        .iter()
        .find(|(_, who)| who.as_deref() == Some(name))
        .map(|(at, _)| *at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_gets_calls_within_a_second_and_an_agent_restart_fails_no_call() {
    let env = Env::start("xdsflow").await;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _backends: Vec<ChildGuard> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| backend(&format!("b{}", i + 1), *port))
        .collect();
    let announce = |i: usize| {
        env.announce_at(
            "echo",
            &format!("b{}", i + 1),
            &format!("127.0.0.1:{}", ports[i]),
            &[],
        )
    };
    let _b1 = announce(0);
    let (http_port, xds) = (free_port(), format!("127.0.0.1:{}", free_port()));
    let mut serving = agent(&env, http_port, &xds);
    let bootstrap = String::from_utf8(
        env.output(&["xds-bootstrap", "--server", &xds])
            .await
            .stdout,
    )
    .unwrap();

    // 100 calls a second for 9 s.
    let mut client = Command::new(python());
    client
        .arg(script("timeline.py"))
        .args(["echo", "9", "100"])
        .env("GRPC_XDS_BOOTSTRAP_CONFIG", &bootstrap)
        .stdout(Stdio::piped());
    let mut client = spawn_guarded(client);
    let stdout = client.child_mut().stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let output = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        ready_tx.send(()).unwrap();
        lines.next().unwrap().unwrap()
    });
    tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the client's first call is served");
    let started = std::time::Instant::now();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let _b2 = announce(1);
    let b2_joined = started.elapsed().as_millis() as u64;

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let stopped = common::sigterm(&mut serving);
    assert!(stopped.success(), "the agent stops cleanly: {stopped:?}");
    let _serving = agent(&env, http_port, &xds);
    let restarted = started.elapsed().as_millis() as u64;

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let _b3 = announce(2);
    let b3_joined = started.elapsed().as_millis() as u64;

    let line = tokio::task::spawn_blocking(move || output.join().unwrap())
        .await
        .unwrap();
    let timeline: Vec<(u64, Option<String>)> =
        serde_json::from_str(&line).expect("the client prints its calls");
    let failed: Vec<u64> = timeline
        .iter()
        .filter(|(_, who)| who.is_none())
        .map(|(at, _)| *at)
        .collect();
    assert!(
        failed.is_empty(),
        "no call fails, the agent's restart at {restarted} ms included: failed at {failed:?}"
    );
    let b2 = first_call(&timeline, "b2").expect("b2 gets calls");
    assert!(
        b2 <= b2_joined + 1_000,
        "a new instance gets calls within 1 s: joined at {b2_joined} ms, first call at {b2} ms"
    );
    let b3 = first_call(&timeline, "b3").expect("changes flow again after the restart");
    assert!(b3 > b3_joined.saturating_sub(100), "b3 at {b3} ms");
    eprintln!(
        "b2 joined at {b2_joined} ms, first call {b2} ms; agent restarted at {restarted} ms; b3 joined at {b3_joined} ms, first call {b3} ms; {} calls",
        timeline.len()
    );
}

/// Envoy's bootstrap: a gRPC listener on `listen_port` routing to cluster `echo`, with
/// clusters and endpoints from the agent's xDS at `xds_port` (ADS).
fn envoy_bootstrap(listen_port: u16, admin_port: u16, xds_port: u16) -> String {
    format!(
        r#"node: {{id: envoy-test, cluster: test}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: herald_xds}}}}]
  cds_config: {{resource_api_version: V3, ads: {{}}}}
static_resources:
  listeners:
  - name: grpc_in
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: grpc
          route_config:
            validate_clusters: false
            virtual_hosts:
            - name: echo
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: echo}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: herald_xds
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: herald_xds
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {xds_port}}}}}}}}}]}}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_balances_over_the_agent_by_load_and_leaves_a_draining_backend_out() {
    let env = Env::start("xdsenvoy").await;
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let _backends: Vec<ChildGuard> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| backend(&format!("b{}", i + 1), *port))
        .collect();
    let closed = format!("127.0.0.1:{}", free_port());
    let _announcers: Vec<ChildGuard> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let mut extra = vec!["--load", if i == 2 { "0.9" } else { "0.1" }];
            if i == 3 {
                // Drains: nothing listens where its check looks.
                extra.extend(["--check-tcp", &closed, "--check-interval", "100ms"]);
            }
            env.announce_at(
                "echo",
                &format!("b{}", i + 1),
                &format!("127.0.0.1:{port}"),
                &extra,
            )
        })
        .collect();
    let (http_port, xds_port) = (free_port(), free_port());
    let _agent = agent(&env, http_port, &format!("127.0.0.1:{xds_port}"));

    let (listen_port, admin_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("envoy.yaml");
    std::fs::write(&config, envoy_bootstrap(listen_port, admin_port, xds_port)).unwrap();
    let envoy_bin = python().with_file_name("envoy");
    let mut envoy = Command::new(&envoy_bin);
    envoy
        .arg("-c")
        .arg(&config)
        .args(["-l", "error", "--base-id"])
        .arg(listen_port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _envoy = spawn_guarded(envoy);
    // Envoy has the cluster and its four endpoints, b4 draining.
    let clusters = format!("http://127.0.0.1:{admin_port}/clusters");
    eventually(
        Duration::from_secs(20),
        "Envoy lists four endpoints of echo",
        async || {
            let Ok(r) = reqwest::get(&clusters).await else {
                return false;
            };
            let text = r.text().await.unwrap_or_default();
            let hosts = text
                .lines()
                .filter(|l| l.starts_with("echo::127.0.0.1:") && l.contains("::health_flags::"))
                .count();
            let draining = text.lines().any(|l| {
                l.starts_with(&format!("echo::127.0.0.1:{}::health_flags::", ports[3]))
                    && l.contains("eds_status_draining")
            });
            hosts == 4 && draining
        },
    )
    .await;

    let mut cmd = Command::new(python());
    cmd.arg(script("direct.py"))
        .arg(format!("127.0.0.1:{listen_port}"))
        .arg("1000");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("python runs"))
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "the client prints one JSON line: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let (served_by, failed) = (&report["served"], report["failed"].as_u64().unwrap());
    assert_eq!(failed, 0, "every call through Envoy is served: {report}");
    assert_eq!(
        served(served_by, "b4"),
        0,
        "a draining backend gets none: {report}"
    );
    assert!(
        served(served_by, "b3") < 150,
        "the backend at load 0.9 gets under 15 % of the calls: {report}"
    );
}
