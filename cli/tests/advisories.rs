//! `--nats-advisories`: a killed `herald announce` leaves `herald watch` when its connection
//! closes, not after its TTL; and the subscriber says at start whether advisories arrive.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Env, sigterm};
use herald_testkit::{ADVISORY_SUBJECT, EtcdServer, NatsServer, spawn_guarded};

async fn env(name: &str, advisories: bool) -> Env {
    let nats = if advisories {
        NatsServer::builder().advisories().start().await
    } else {
        NatsServer::start().await
    };
    Env {
        nats,
        etcd: EtcdServer::start().await,
        prefix: format!("cliadv{name}{}", std::process::id()),
    }
}

/// Lines of `reader` until one contains `text`; panics with what was read after `within`.
fn line_with(lines: &std::sync::mpsc::Receiver<String>, text: &str, within: Duration) -> String {
    let give_up = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(text) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "no line with {text:?} within {within:?}; read:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// Every line of `stream`, on a channel (read on a thread of its own).
fn lines_of(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_announce_leaves_watch_when_its_connection_closes() {
    let env = env("kill", true).await;
    let mut cmd = env.herald(&[
        "watch",
        "web",
        "--json",
        "--nats-advisories",
        ADVISORY_SUBJECT,
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut watch = spawn_guarded(cmd);
    let out = lines_of(watch.child_mut().stdout.take().unwrap());
    let err = lines_of(watch.child_mut().stderr.take().unwrap());
    line_with(
        &err,
        "disconnect advisories arrive",
        Duration::from_secs(10),
    );

    let mut web = env.announce("web", "w1", &["--ttl", "5s"]);
    // Listed from its registration first; its token, which names its connection, confirms it.
    let mut listed = line_with(&out, "\"w1\"", Duration::from_secs(5));
    while !listed.contains("\"confirmed\":true") {
        listed = line_with(&out, "\"w1\"", Duration::from_secs(5));
    }
    let killed = Instant::now();
    web.kill();
    let removed = line_with(&out, "\"removed\"", Duration::from_secs(8));
    let after = killed.elapsed();
    assert!(removed.contains("\"w1\""), "{removed}");
    assert!(removed.contains("\"cause\":\"disconnected\""), "{removed}");
    assert!(
        after < Duration::from_millis(2_500),
        "gone when its connection closed, well inside its 5 s TTL: took {after:?}"
    );
    assert!(sigterm(&mut watch).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_warns_when_no_advisory_can_arrive() {
    // A server without accounts publishes no advisories to clients.
    let env = env("none", false).await;
    let mut cmd = env.herald(&["watch", "web", "--nats-advisories", ADVISORY_SUBJECT]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut watch = spawn_guarded(cmd);
    let err = lines_of(watch.child_mut().stderr.take().unwrap());
    let warning = line_with(
        &err,
        "no disconnect advisory arrived",
        Duration::from_secs(15),
    );
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains(ADVISORY_SUBJECT),
        "names the subject: {warning}"
    );
    assert!(sigterm(&mut watch).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_advisory_subject_or_grace_is_refused_naming_the_flag() {
    let env = env("bad", false).await;
    let out = env
        .output(&["ls", "--nats-advisories", "herald.*.disconnect"])
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--nats-advisories"), "{err}");
    let out = env
        .output(&[
            "ls",
            "--nats-advisories",
            ADVISORY_SUBJECT,
            "--disconnect-grace",
            "1m",
        ])
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--disconnect-grace"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_killed_announces_in_a_row_each_leave_as_disconnected_within_a_second() {
    let env = env("kills", true).await;
    let mut cmd = env.herald(&[
        "watch",
        "web",
        "--json",
        "--nats-advisories",
        ADVISORY_SUBJECT,
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut watch = spawn_guarded(cmd);
    let out = lines_of(watch.child_mut().stdout.take().unwrap());
    let err = lines_of(watch.child_mut().stderr.take().unwrap());
    line_with(
        &err,
        "disconnect advisories arrive",
        Duration::from_secs(10),
    );
    let _burners = herald_bench::process::Burners::start(2);
    let mut slowest = Duration::ZERO;
    for k in 0..20 {
        let id = format!("w{k}");
        let mut web = env.announce("web", &id, &["--ttl", "5s"]);
        let quoted = format!("\"{id}\"");
        let mut listed = line_with(&out, &quoted, Duration::from_secs(10));
        while !listed.contains("\"confirmed\":true") {
            listed = line_with(&out, &quoted, Duration::from_secs(10));
        }
        let killed = Instant::now();
        web.kill();
        let removed = line_with(&out, "\"removed\"", Duration::from_secs(8));
        let after = killed.elapsed();
        assert!(removed.contains(&quoted), "kill {k}: {removed}");
        assert!(
            removed.contains("\"cause\":\"disconnected\""),
            "kill {k}: {removed}"
        );
        assert!(
            after < Duration::from_secs(1),
            "kill {k}: removed {after:?} after the kill"
        );
        slowest = slowest.max(after);
    }
    eprintln!("20 kills beside 2 CPU burners: the slowest removal took {slowest:?}");
    assert!(sigterm(&mut watch).success());
}
