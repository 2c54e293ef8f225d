//! Real `nats-server` processes: readiness, kill and restart on the same port, freezing,
//! distinct ports, auth, TLS, and a routed cluster.

use std::time::Duration;

use herald_testkit::{NatsCluster, NatsServer, NatsTls, http};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Connects and returns the first line the server sends.
async fn first_line(port: u16) -> std::io::Result<(String, BufReader<TcpStream>)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("no INFO within 2 s"))??;
    Ok((line, reader))
}

/// Sends `CONNECT` with `fields` and a `PING`; returns the server's next line.
async fn connect_reply(port: u16, fields: &str) -> String {
    let (info, mut conn) = first_line(port).await.unwrap();
    assert!(info.starts_with("INFO "), "{info}");
    let connect = format!("CONNECT {{\"verbose\":false,\"pedantic\":false{fields}}}\r\nPING\r\n");
    conn.get_mut().write_all(connect.as_bytes()).await.unwrap();
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(2), conn.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    line
}

#[tokio::test(flavor = "multi_thread")]
async fn start_kill_restart_same_port() {
    let mut nats = NatsServer::start().await;
    let port = nats.port();
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
    assert!(nats.is_running());

    let (info, _conn) = first_line(port).await.unwrap();
    assert!(info.starts_with("INFO {"), "{info}");
    assert!(info.contains(&format!("\"port\":{port}")), "{info}");

    nats.kill();
    assert!(!nats.is_running());
    let refused = TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "port {port} still accepts after kill");

    nats.restart().await;
    assert_eq!(nats.port(), port);
    assert!(nats.is_running());
    let (info, _conn) = first_line(port).await.unwrap();
    assert!(info.starts_with("INFO "), "{info}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_server_answers_only_once_thawed() {
    let mut nats = NatsServer::start().await;
    let (_, mut conn) = first_line(nats.port()).await.unwrap();
    conn.get_mut()
        .write_all(b"CONNECT {\"verbose\":false}\r\n")
        .await
        .unwrap();

    nats.freeze();
    assert!(nats.is_running(), "a frozen server is not dead");
    conn.get_mut().write_all(b"PING\r\n").await.unwrap();
    let mut line = String::new();
    let early = tokio::time::timeout(Duration::from_millis(300), conn.read_line(&mut line)).await;
    assert!(early.is_err(), "a frozen server answered: {line:?}");

    nats.thaw();
    tokio::time::timeout(Duration::from_secs(5), conn.read_line(&mut line))
        .await
        .expect("the thawed server answers what arrived while frozen")
        .unwrap();
    assert_eq!(line, "PONG\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_of_a_running_server_and_graceful_stop() {
    let mut nats = NatsServer::start().await;
    let first_pid = nats.pid().unwrap();
    nats.restart().await;
    assert_ne!(nats.pid().unwrap(), first_pid);
    assert!(first_line(nats.port()).await.is_ok());

    nats.stop().await;
    assert!(!nats.is_running());
    assert!(
        nats.log_tail().contains("Server Exiting"),
        "{}",
        nats.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_get_different_ports() {
    let (a, b) = tokio::join!(NatsServer::start(), NatsServer::start());
    let ports = [a.port(), b.port(), a.monitor_port(), b.monitor_port()];
    for (i, p) in ports.iter().enumerate() {
        assert!(
            !ports[i + 1..].contains(p),
            "port {p} used twice: {ports:?}"
        );
        assert_ne!(*p, 4222);
    }
    assert_ne!(a.url(), b.url());
}

#[tokio::test(flavor = "multi_thread")]
async fn monitoring_endpoint_answers() {
    let nats = NatsServer::start().await;
    let varz = http::get(nats.monitor_port(), "/varz").await.unwrap();
    assert_eq!(varz.status, 200);
    assert!(
        varz.body.contains(&format!("\"port\": {}", nats.port())),
        "{}",
        varz.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn user_password_and_token_auth() {
    let nats = NatsServer::builder().user("herald", "s3cret").start().await;
    let ok = connect_reply(nats.port(), r#","user":"herald","pass":"s3cret""#).await;
    assert_eq!(ok.trim_end(), "PONG");
    let bad = connect_reply(nats.port(), r#","user":"herald","pass":"wrong""#).await;
    assert!(bad.contains("Authorization Violation"), "{bad}");

    let nats = NatsServer::builder().token("t0ken").start().await;
    let ok = connect_reply(nats.port(), r#","auth_token":"t0ken""#).await;
    assert_eq!(ok.trim_end(), "PONG");
    let bad = connect_reply(nats.port(), "").await;
    assert!(bad.contains("Authorization Violation"), "{bad}");
}

#[tokio::test(flavor = "multi_thread")]
async fn extra_config_is_applied() {
    let nats = NatsServer::builder()
        .config("max_payload: 4096")
        .start()
        .await;
    let (info, _conn) = first_line(nats.port()).await.unwrap();
    assert!(info.contains("\"max_payload\":4096"), "{info}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed(dir.path()) else {
        eprintln!("openssl not available; TLS configuration not exercised");
        return;
    };
    let nats = NatsServer::builder()
        .tls(NatsTls::new(cert, key))
        .start()
        .await;
    let (info, _conn) = first_line(nats.port()).await.unwrap();
    assert!(info.contains("\"tls_required\":true"), "{info}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_of_three_forms_routes_and_heals() {
    let mut cluster = NatsCluster::start(3).await;
    assert_eq!(cluster.urls().len(), 3);
    for node in cluster.nodes() {
        let routez = http::get(node.monitor_port(), "/routez").await.unwrap();
        assert!(routez.body.contains("\"num_routes\": 2"), "{}", routez.body);
    }

    cluster.node(1).kill();
    cluster.wait_for_routes().await; // the two survivors still see each other
    cluster.node(1).restart().await;
    cluster.wait_for_routes().await;
    let routez = http::get(cluster.node(1).monitor_port(), "/routez")
        .await
        .unwrap();
    assert!(routez.body.contains("\"num_routes\": 2"), "{}", routez.body);
}

/// A self-signed certificate for 127.0.0.1, made with the `openssl` command.
fn self_signed(dir: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then_some((cert, key))
}

/// Reads lines until one satisfies `done`, or panics after 5 s quoting what was read.
async fn read_until(conn: &mut BufReader<TcpStream>, done: impl Fn(&str) -> bool) -> String {
    let mut seen = String::new();
    let read = async {
        loop {
            let mut line = String::new();
            if conn.read_line(&mut line).await.unwrap() == 0 {
                return None;
            }
            seen.push_str(&line);
            if done(&line) {
                return Some(line);
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Some(line)) => line,
        _ => panic!("expected line not received; read so far:\n{seen}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn advisories_reach_plain_clients_when_a_connection_closes() {
    let nats = NatsServer::builder().advisories().start().await;
    let (_, mut watcher) = first_line(nats.port()).await.unwrap();
    let subscribe = format!(
        "CONNECT {{\"verbose\":false}}\r\nSUB {} 1\r\nPING\r\n",
        herald_testkit::ADVISORY_SUBJECT
    );
    watcher
        .get_mut()
        .write_all(subscribe.as_bytes())
        .await
        .unwrap();
    read_until(&mut watcher, |l| l.starts_with("PONG")).await;

    let reply = connect_reply(nats.port(), ",\"name\":\"victim\"").await;
    assert!(
        reply.starts_with("PONG"),
        "a plain client is let in: {reply}"
    );
    // `connect_reply` dropped its socket: the server reports the closed connection.
    read_until(&mut watcher, |l| l.starts_with("MSG ")).await;
    let advisory = read_until(&mut watcher, |_| true).await;
    assert!(advisory.contains("\"name\":\"victim\""), "{advisory}");
    assert!(
        advisory.contains("\"reason\":\"Client Closed\""),
        "{advisory}"
    );
}
