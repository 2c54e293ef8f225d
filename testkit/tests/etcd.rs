//! Real single-member `etcd`: health, restart on the same data, restart on fresh data, auth,
//! and TLS.

use std::path::{Path, PathBuf};
use std::process::Command;

use herald_testkit::{EtcdServer, EtcdTls, http};

/// `etcdctl --endpoints E args..` through a plain `std::process::Command`.
fn etcdctl(endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--dial-timeout", "3s"])
        .args(args)
        .output()
        .expect("run etcdctl")
}

fn get(endpoint: &str, key: &str) -> String {
    let out = etcdctl(endpoint, &["get", key, "--print-value-only"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_healthy_on_loopback() {
    let etcd = EtcdServer::start().await;
    let endpoint = etcd.endpoint();
    assert_eq!(endpoint, format!("http://127.0.0.1:{}", etcd.port()));
    assert_eq!(etcd.endpoints(), vec![endpoint]);
    assert_ne!(etcd.port(), 2379);
    let health = http::get(etcd.port(), "/health").await.unwrap();
    assert_eq!(health.status, 200);
    assert!(
        health.body.contains(r#""health":"true""#),
        "{}",
        health.body
    );
    let status = etcd.status().await.unwrap();
    assert_eq!(status.leader, status.member_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_data_and_restart_fresh_loses_it() {
    let mut etcd = EtcdServer::start().await;
    let endpoint = etcd.endpoint();
    let data_dir = etcd.data_dir().to_owned();
    let cluster_id = etcd.status().await.unwrap().cluster_id;

    let put = etcdctl(&endpoint, &["put", "k", "v"]);
    assert!(put.status.success(), "{put:?}");

    etcd.kill();
    assert!(!etcd.is_running());
    etcd.restart().await;
    assert_eq!(etcd.endpoint(), endpoint);
    assert_eq!(etcd.data_dir(), data_dir);
    assert_eq!(get(&endpoint, "k"), "v");
    assert_eq!(etcd.status().await.unwrap().cluster_id, cluster_id);

    etcd.restart_fresh().await;
    assert_eq!(etcd.endpoint(), endpoint);
    assert_ne!(etcd.data_dir(), data_dir);
    assert!(!data_dir.exists(), "old data dir not removed");
    assert_eq!(get(&endpoint, "k"), "");
    assert_ne!(etcd.status().await.unwrap().cluster_id, cluster_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_stop_then_restart() {
    let mut etcd = EtcdServer::start().await;
    let out = etcd.etcdctl(&["put", "a", "1"]).await;
    assert!(out.status.success(), "{out:?}");
    etcd.stop().await;
    assert!(!etcd.is_running());
    etcd.restart().await;
    let out = etcd.etcdctl(&["get", "a", "--print-value-only"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_requires_credentials_and_survives_restart_fresh() {
    let mut etcd = EtcdServer::builder().auth("rootpw").start().await;
    assert_eq!(etcd.root_password(), Some("rootpw"));
    let anonymous = etcdctl(&etcd.endpoint(), &["put", "k", "v"]);
    assert!(!anonymous.status.success(), "{anonymous:?}");
    let root = etcdctl(
        &etcd.endpoint(),
        &["--user", "root:rootpw", "put", "k", "v"],
    );
    assert!(root.status.success(), "{root:?}");
    assert!(etcd.etcdctl(&["get", "k"]).await.status.success());

    etcd.restart_fresh().await;
    let anonymous = etcdctl(&etcd.endpoint(), &["put", "k", "v"]);
    assert!(!anonymous.status.success(), "auth off after restart_fresh");
    assert!(etcd.etcdctl(&["put", "k", "v"]).await.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cert) = self_signed(dir.path()) else {
        eprintln!("openssl not available; TLS configuration not exercised");
        return;
    };
    let etcd = EtcdServer::builder()
        .tls(EtcdTls {
            cert_file: cert.clone(),
            key_file: dir.path().join("key.pem"),
            trusted_ca_file: Some(cert.clone()),
            client_cert_auth: true,
            client_cert: Some((cert.clone(), dir.path().join("key.pem"))),
        })
        .start()
        .await;
    assert!(etcd.endpoint().starts_with("https://127.0.0.1:"));
    let out = etcd.etcdctl(&["put", "k", "v"]).await;
    assert!(out.status.success(), "{out:?}");
    let without_cert = etcdctl(
        &etcd.endpoint(),
        &[
            "--cacert",
            cert.to_str().unwrap(),
            "--command-timeout",
            "1s",
            "put",
            "k",
            "v",
        ],
    );
    assert!(!without_cert.status.success(), "{without_cert:?}");
}

/// A self-signed certificate (its own CA) for 127.0.0.1; `None` without `openssl`.
fn self_signed(dir: &Path) -> Option<PathBuf> {
    let cert = dir.join("cert.pem");
    let status = Command::new("openssl")
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
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then_some(cert)
}
