//! The `herald` binary against real nats-server and etcd: every subcommand and endpoint, and
//! the errors a user meets (bad flags, unreachable servers, a port in use).

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Env, eventually, exit_within, sigterm};
use herald_testkit::{free_port, http, spawn_guarded};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announce_ls_and_graceful_exit() {
    let env = Env::start("ls").await;
    let mut child = env.announce(
        "web",
        "web-1",
        &["--zone", "z1", "--meta", "version=2", "--load", "0.5"],
    );
    let list = env.ls_json("web").await;
    assert_eq!(list.len(), 1, "{list:?}");
    let i = &list[0];
    assert_eq!(i["instance"], "web-1");
    assert_eq!(i["addr"], "127.0.0.1:9000");
    assert_eq!(i["zone"], "z1");
    assert_eq!(i["meta"]["version"], "2");
    assert_eq!(i["state"], "up");
    assert!(i["epoch"].as_u64().unwrap() > 0, "registered in etcd");

    let table = env.output(&["ls"]).await;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.lines().next().unwrap().starts_with("SERVICE"),
        "{table}"
    );
    assert!(table.contains("web-1"), "{table}");

    let status = sigterm(&mut child);
    assert!(
        status.success(),
        "SIGTERM must shut down gracefully and exit 0: {status:?}"
    );
    assert!(
        env.ls_json("web").await.is_empty(),
        "gone at once after a graceful stop"
    );
    let mut etcd = etcd_client::Client::connect([env.etcd.endpoint()], None)
        .await
        .unwrap();
    let key = format!("/{}/services/web/web-1", env.prefix);
    assert_eq!(
        etcd.get(key, None).await.unwrap().count(),
        0,
        "the lease was revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_does_not_show_a_killed_instance_as_up() {
    let env = Env::start("killed").await;
    let mut child = env.announce("web", "web-1", &["--lease-ttl", "30s"]);
    let list = env.ls_json("web").await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["confirmed"], true, "it answered the probe");
    child.kill().expect("kill -9 ends it");
    // Its registration holds for the 30 s lease; it does not answer the probe.
    assert!(
        env.ls_json("web").await.is_empty(),
        "a killed instance must not be listed as up"
    );
    let out = env.output(&["ls", "web", "--wait", "200ms"]).await;
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("1 registered instance did not answer within 200ms (--all lists it"),
        "the hidden registration is said on stderr: {note}"
    );
    assert!(out.status.success());
    let out = env
        .output(&["ls", "web", "--all", "--json", "--wait", "200ms"])
        .await;
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.len(), 1, "--all lists the silent registration: {all:?}");
    assert_eq!(all[0]["confirmed"], false);
    let table = env.output(&["ls", "--all", "--wait", "200ms"]).await;
    let table = String::from_utf8_lossy(&table.stdout);
    let row = table
        .lines()
        .find(|l| l.contains("web-1"))
        .expect("listed with --all");
    assert!(row.contains("silent"), "marked as silent: {table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_drains_and_a_passing_one_brings_it_back() {
    let env = Env::start("check").await;
    let port = free_port();
    let target = format!("127.0.0.1:{port}");
    let listener = std::net::TcpListener::bind(&target).unwrap();
    let (_child, lines) = env.announce_watched(
        "db",
        "db-1",
        &["--check-tcp", &target, "--check-interval", "100ms"],
    );
    let state = async || {
        env.ls_json("db")
            .await
            .first()
            .map(|i| i["state"].as_str().unwrap().to_owned())
    };
    eventually(
        Duration::from_secs(5),
        "up while the check passes",
        async || state().await.as_deref() == Some("up"),
    )
    .await;
    drop(listener);
    eventually(
        Duration::from_secs(5),
        "draining while the check fails",
        async || state().await.as_deref() == Some("draining"),
    )
    .await;
    let _listener = std::net::TcpListener::bind(&target).unwrap();
    eventually(Duration::from_secs(5), "up again", async || {
        state().await.as_deref() == Some("up")
    })
    .await;
    // Each change is one line, shown without RUST_LOG.
    let mut logged = Vec::new();
    while !logged
        .iter()
        .any(|l: &String| l.contains("check passes: up again after"))
    {
        match lines.recv_timeout(Duration::from_secs(2)) {
            Ok(line) => logged.push(line),
            Err(_) => panic!("no `up again` line: {logged:?}"),
        }
    }
    let fails = logged
        .iter()
        .filter(|l| l.contains("check fails: draining"));
    assert_eq!(fails.count(), 1, "{logged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_json_events() {
    let env = Env::start("watch").await;
    let mut cmd = env.herald(&["watch", "api", "--json"]);
    cmd.stdout(Stdio::piped());
    let mut watcher = spawn_guarded(cmd);
    let stdout = watcher.child_mut().stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value =
                serde_json::from_str(&line).expect("one JSON object per line");
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    // The watcher is ready once it lists: give it a moment by announcing after a probe
    // round trip; a late start still shows the instance as added (initial listing).
    let mut child = env.announce("api", "api-1", &[]);
    let next = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
                      want: &str| loop {
        let v = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event")
            .unwrap();
        if v["event"] == want {
            return v;
        }
    };
    let added = next(&mut rx, "added").await;
    for field in ["service", "instance", "addr", "load", "state", "epoch"] {
        assert!(
            added.get(field).is_some(),
            "added event lacks `{field}`: {added}"
        );
    }
    assert_eq!(added["instance"], "api-1");
    sigterm(&mut child);
    let removed = next(&mut rx, "removed").await;
    assert_eq!(
        (removed["instance"].as_str(), removed["cause"].as_str()),
        (Some("api-1"), Some("goodbye"))
    );
    assert!(sigterm(&mut watcher).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_services_follows_those_alone() {
    let env = Env::start("services").await;
    let out = env.output(&["serve", "--services", "pay,bad.name"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad name is a usage error: {err}"
    );
    assert!(err.contains("--services"), "the flag is named: {err}");

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut agent =
        spawn_guarded(env.herald(&["serve", "--listen", &listen, "--services", "pay,ship"]));
    // Announced first: listed by the time pay is, were it followed.
    let _mail = env.announce("mail", "mail-1", &[]);
    let _pay = env.announce("pay", "pay-1", &[]);
    eventually(Duration::from_secs(10), "pay listed", async || {
        http::get(port, "/v1/services")
            .await
            .is_ok_and(|r| r.body.contains("\"pay\":1"))
    })
    .await;
    let r = http::get(port, "/v1/services").await.unwrap();
    assert!(!r.body.contains("mail"), "mail is not followed: {}", r.body);
    let r = http::get(port, "/v1/pick/mail").await.unwrap();
    assert_eq!(r.status, 503, "mail is not followed: {}", r.body);
    let r = http::get(port, "/healthz").await.unwrap();
    let health: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        health["follows"],
        serde_json::json!(["pay", "ship"]),
        "{}",
        r.body
    );
    assert!(sigterm(&mut agent).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_every_endpoint() {
    let env = Env::start("serve").await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut agent = spawn_guarded(env.herald(&["serve", "--listen", &listen]));
    eventually(
        Duration::from_secs(10),
        "the agent answers /healthz",
        async || {
            http::get(port, "/healthz")
                .await
                .is_ok_and(|r| r.status == 200)
        },
    )
    .await;
    let r = http::get(port, "/v1/pick/pay").await.unwrap();
    assert_eq!(r.status, 503, "no instance yet: {}", r.body);

    let _a = env.announce(
        "pay",
        "pay-1",
        &[
            "--meta",
            "team=core",
            "--meta",
            "a-b=dash",
            "--meta",
            "a_b=underscore",
        ],
    );
    let _b = env.announce("pay", "pay-2", &["--zone", "z2"]);
    eventually(Duration::from_secs(5), "both listed", async || {
        http::get(port, "/v1/services")
            .await
            .is_ok_and(|r| r.body.contains("\"pay\":2"))
    })
    .await;
    let r = http::get(port, "/v1/services/pay").await.unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_str(&r.body).unwrap();
    assert_eq!(list.len(), 2);
    for strategy in [
        "p2c",
        "round_robin",
        "random",
        "least_load",
        "weighted_random",
    ] {
        let r = http::get(port, &format!("/v1/pick/pay?strategy={strategy}"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{strategy}: {}", r.body);
        let i: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert!(i["instance"].as_str().unwrap().starts_with("pay-"));
    }
    let r = http::get(port, "/v1/pick/pay?strategy=affinity&key=user-7")
        .await
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let r = http::get(port, "/v1/pick/pay?strategy=affinity&key=user-7")
        .await
        .unwrap();
    let second: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        first["instance"], second["instance"],
        "affinity keeps a key on its instance"
    );
    // Errors answer JSON with the right status.
    for (path, status, says) in [
        ("/v1/pick/pay?strategy=bogus", 400, "unknown strategy"),
        ("/v1/pick/pay?strategy=affinity", 400, "key"),
        (
            "/v1/services/bad.name",
            400,
            "`bad.name` is not a service name: it must match [A-Za-z0-9_-]{1,64}",
        ),
        ("/v1/pick/bad.name", 400, "not a service name"),
        ("/v1/watch/bad.name", 400, "not a service name"),
        ("/v1/pick/nobody", 503, "no available instance"),
        ("/v1/nothing/here", 404, "no such endpoint"),
        // What axum's extractors refuse is JSON too.
        (
            "/v1/pick/pay?strategy=p2c&strategy=random",
            400,
            "duplicate field `strategy`",
        ),
        ("/v1/services/%FF", 400, "UTF-8"),
    ] {
        let r = http::get(port, path).await.unwrap();
        assert_eq!(r.status, status, "{path}: {}", r.body);
        let body: serde_json::Value = serde_json::from_str(&r.body).expect("a JSON error body");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(says)),
            "{path}: {body}"
        );
    }
    let r = http::post_json(port, "/v1/services", "{}").await.unwrap();
    assert_eq!(r.status, 405, "{}", r.body);
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("a JSON error body");
    assert_eq!(body["error"], "only GET is served", "{body}");
    // Requests the HTTP parser refuses before any handler runs are answered JSON too, and
    // read to their end first, so that the client gets the answer rather than a reset.
    let long_uri = format!(
        "GET /v1/services?q={} HTTP/1.1\r\n\r\n",
        "a".repeat(100_000)
    );
    let huge_uri = format!(
        "GET /v1/services?q={} HTTP/1.1\r\n\r\n",
        "a".repeat(1_000_000)
    );
    for (request, status, says) in [
        (long_uri.as_bytes(), 414, "URI is too long"),
        (
            huge_uri.as_bytes(),
            431,
            "head (its line and headers) is too large",
        ),
        (
            &b"GET /\x01 HTTP/1.1\r\n\r\n"[..],
            400,
            "not valid HTTP/1.1",
        ),
    ] {
        let (head, body) = raw_request(port, request).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{status}: {head}"
        );
        assert!(head.contains("content-type: application/json"), "{head}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON error body");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(says)),
            "{status}: {body}"
        );
    }
    let r = http::get(port, "/").await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        body["endpoints"]
            .as_array()
            .is_some_and(|e| e.iter().any(|p| p == "/v1/pick/{service}")),
        "an unknown path lists the endpoints: {body}"
    );

    let r = http::get(port, "/v1/sd/prometheus").await.unwrap();
    let groups: Vec<serde_json::Value> = serde_json::from_str(&r.body).unwrap();
    assert_eq!(groups.len(), 2);
    let pay1 = groups
        .iter()
        .find(|g| g["labels"]["__meta_herald_instance"] == "pay-1")
        .unwrap();
    assert_eq!(pay1["targets"][0], "127.0.0.1:9000");
    assert_eq!(pay1["labels"]["service"], "pay");
    assert_eq!(pay1["labels"]["__meta_herald_meta_team"], "core");
    // Keys that differ only in characters a label cannot hold keep a label each.
    assert_eq!(pay1["labels"]["__meta_herald_meta_a_2db"], "dash");
    assert_eq!(pay1["labels"]["__meta_herald_meta_a__b"], "underscore");

    let r = http::get(port, "/metrics").await.unwrap();
    assert!(
        r.body.contains("herald_instances{service=\"pay\"} 2"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("herald_tokens_accepted_total"),
        "{}",
        r.body
    );

    // Server-Sent Events, on both watch endpoints: raw streams, opened (response headers
    // read, so the agent is subscribed) before the instance goes, read until its removal.
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    async fn open_sse(
        listen: &str,
        path: &str,
    ) -> tokio::io::Lines<tokio::io::BufReader<tokio::net::TcpStream>> {
        let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut lines = tokio::io::BufReader::new(s).lines();
        let status = lines.next_line().await.unwrap().unwrap();
        assert!(status.contains(" 200 "), "{path}: {status}");
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.is_empty() {
                break;
            }
        }
        lines
    }
    async fn next_removal(
        lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::net::TcpStream>>,
    ) -> String {
        tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.starts_with("data:") && line.contains("\"removed\"") {
                    return line;
                }
            }
            panic!("stream ended");
        })
        .await
        .expect("a removed event on the SSE stream")
    }
    let mut one = open_sse(&listen, "/v1/watch/pay").await;
    let mut all = open_sse(&listen, "/v1/watch").await;
    drop(_a);
    let found = next_removal(&mut one).await;
    assert!(found.contains("pay-1"), "{found}");
    let found = next_removal(&mut all).await;
    assert!(found.contains("pay-1"), "{found}");
    assert!(sigterm(&mut agent).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_errors_are_one_line_and_quick() {
    let env = Env::start("errors").await;
    let started = Instant::now();
    let out = env.output(&["announce", "--service", "x"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing flag is a usage error"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("--addr"), "{err}");

    let mut cmd = env.herald(&["ls"]);
    cmd.env(
        "HERALD_NATS_URL",
        format!("nats://127.0.0.1:{}", free_port()),
    );
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("nats"), "{err}");

    let mut cmd = env.herald(&["ls"]);
    cmd.env(
        "HERALD_ETCD_ENDPOINTS",
        format!("http://127.0.0.1:{}", free_port()),
    );
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("etcd"), "{err}");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = env.output(&["serve", "--listen", &addr]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot listen"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "errors took {:?}",
        started.elapsed()
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_stops_at_once_on_a_signal_while_it_waits_for_answers() {
    let env = Env::start("ls_signal").await;
    let mut silent = env.announce("web", "web-1", &["--lease-ttl", "30s"]);
    assert_eq!(env.ls_json("web").await.len(), 1);
    silent.kill().expect("kill -9 ends it");
    // Its registration holds for the 30 s lease and nobody answers for it: `ls` waits the
    // whole `--wait` for that answer.
    for (signal, code) in [(2, 130), (15, 143)] {
        let mut cmd = env.herald(&["ls", "web", "--wait", "30s"]);
        cmd.env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut ls = spawn_guarded(cmd);
        let stderr = BufReader::new(ls.child_mut().stderr.take().unwrap());
        let mut lines = stderr.lines().map_while(Result::ok);
        lines
            .find(|l| l.contains("subscriber started"))
            .expect("ls started its subscriber");
        // Read to the end: a closed pipe would fail its next log line.
        std::thread::spawn(move || lines.for_each(drop));
        let asked = Instant::now();
        ls.signal(signal).unwrap();
        let status = exit_within(&mut ls, Duration::from_secs(3), "the signal");
        assert_eq!(status.code(), Some(code), "signal {signal}");
        assert!(asked.elapsed() < Duration::from_secs(3));
        let mut out = String::new();
        std::io::Read::read_to_string(&mut ls.child_mut().stdout.take().unwrap(), &mut out)
            .unwrap();
        assert_eq!(out, "", "nothing printed for a listing it did not finish");
    }
}

/// Sends `request` as raw bytes on its own connection while reading the answer to the end:
/// the answer's head and body.
async fn raw_request(port: u16, request: &[u8]) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the agent accepts");
    let (mut reader, mut writer) = stream.into_split();
    let request = request.to_vec();
    let writing = tokio::spawn(async move { writer.write_all(&request).await });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer))
        .await
        .expect("the agent answers and closes within 10 s")
        .expect("the answer is read, not reset");
    writing
        .await
        .unwrap()
        .expect("the whole request is read by the agent");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    (head.to_owned(), body.to_owned())
}
