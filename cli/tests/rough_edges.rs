//! The `herald` command at its edges, against real servers: an announcer ended by etcd ends
//! the command with the reason's exit code, a stop while NATS is down is still graceful, a
//! closed pipe is a normal end, a lost and regained link is said once each, errors say each cause once in the CLI's words, bad values are
//! refused up front, and the output reads well.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use common::{Env, exit_within, sigterm};
use herald_testkit::{free_port, spawn_guarded};

fn key(env: &Env, service: &str, id: &str) -> String {
    format!("/{}/services/{service}/{id}", env.prefix)
}

async fn etcd(env: &Env) -> etcd_client::Client {
    etcd_client::Client::connect([env.etcd.endpoint()], None)
        .await
        .unwrap()
}

/// The first line of `lines` that contains `text`, within `within`.
fn line_with(lines: &Receiver<String>, text: &str, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(text) => return line,
            Ok(_) => continue,
            Err(_) => panic!("no line with `{text}` within {within:?}"),
        }
    }
}

/// Every line of `lines` still to come, up to the end of the output (the reader sees the pipe
/// close once the command exited), within `within`.
fn to_the_end(lines: &Receiver<String>, within: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + within;
    let mut rest = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => rest.push(line),
            Err(RecvTimeoutError::Disconnected) => return rest,
            Err(RecvTimeoutError::Timeout) => {
                panic!("the output did not end within {within:?}: {rest:?}")
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_delete_ends_announce_with_exit_code_3() {
    let env = Env::start("deleted").await;
    let (mut child, lines) = env.announce_watched("web", "web-1", &[]);
    etcd(&env)
        .await
        .delete(key(&env, "web", "web-1"), None)
        .await
        .unwrap();
    let status = exit_within(&mut child, Duration::from_secs(5), "the key's deletion");
    assert_eq!(status.code(), Some(3), "deregistered has its own exit code");
    let said = to_the_end(&lines, Duration::from_secs(5));
    let line = said
        .iter()
        .find(|l| l.contains("herald: announcer stopped"))
        .expect("the stop is said");
    assert!(line.contains("deregistered"), "{line}");
    // The promised one line, with no log line that says the same before it.
    assert!(
        !said.iter().any(|l| l.contains("stopped by etcd")),
        "one line in the CLI's words: {said:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_ends_the_first_announce_with_exit_code_4() {
    let env = Env::start("fenced").await;
    let (mut first, lines) = env.announce_watched("web", "web-1", &[]);
    let out = env
        .output(&[
            "announce",
            "--service",
            "web",
            "--addr",
            "127.0.0.1:9001",
            "--instance",
            "web-1",
        ])
        .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a live id is refused without --takeover"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--takeover"), "the hint speaks CLI: {err}");
    assert!(
        !err.contains("takeover(true)"),
        "no library call in a CLI message: {err}"
    );
    let (mut second, _) = env.announce_watched("web", "web-1", &["--takeover"]);
    let status = exit_within(&mut first, Duration::from_secs(5), "the takeover");
    assert_eq!(status.code(), Some(4), "fenced has its own exit code");
    let line = line_with(&lines, "herald: announcer stopped", Duration::from_secs(1));
    assert!(line.contains("took over"), "{line}");
    assert!(second.try_status().is_none(), "the new owner keeps running");
    assert!(sigterm(&mut second).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_nats_is_down_is_a_graceful_stop() {
    let mut env = Env::start("natsdown").await;
    let (mut child, lines) = env.announce_watched("web", "web-1", &[]);
    env.nats.kill();
    let status = sigterm(&mut child);
    assert!(
        status.success(),
        "the lease is revoked: a graceful stop ({status:?})"
    );
    let warning = line_with(&lines, "goodbye not broadcast", Duration::from_secs(1));
    assert!(warning.contains("WARN"), "{warning}");
    assert_eq!(
        etcd(&env)
            .await
            .get(key(&env, "web", "web-1"), None)
            .await
            .unwrap()
            .count(),
        0,
        "the registration is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announce_says_once_when_each_link_is_lost_and_when_it_is_back() {
    let mut env = Env::start("links").await;
    // Keep-alives every ~3 s: an etcd outage of a few seconds fails one and leaves the lease.
    let (mut child, lines) = env.announce_watched("web", "web-1", &["--lease-ttl", "10s"]);
    let mut seen = Vec::new();
    let mut expect = |text: &str, within: Duration| {
        let line = line_with(&lines, text, within);
        seen.push(line.clone());
        line
    };

    env.nats.kill();
    assert!(expect("nats connection lost", Duration::from_secs(5)).contains("WARN"));
    env.nats.restart().await;
    assert!(expect("nats reconnected after", Duration::from_secs(10)).contains("INFO"));

    env.etcd.kill();
    assert!(expect("etcd lease keep-alive failed", Duration::from_secs(10)).contains("WARN"));
    env.etcd.restart().await;
    assert!(expect("etcd lease keep-alives resumed", Duration::from_secs(15)).contains("INFO"));

    assert!(sigterm(&mut child).success());
    // Nothing else was said in between: no line per retry.
    let rest = to_the_end(&lines, Duration::from_secs(5));
    for needle in [
        "nats connection lost",
        "nats reconnected",
        "keep-alive failed",
    ] {
        assert!(
            !rest.iter().any(|l| l.contains(needle)),
            "`{needle}` said once per outage: {seen:?} then {rest:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_server_variable_is_an_unset_one() {
    let env = Env::start("emptyvar").await;
    let mut cmd = env.herald(&["ls"]);
    cmd.env("HERALD_ETCD_ENDPOINTS", "");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "NATS alone, as without the variable: {err}"
    );

    let mut cmd = env.herald(&["ls"]);
    cmd.env("HERALD_NATS_URL", " ");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no NATS server given: pass --nats URL or set HERALD_NATS_URL"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_is_a_normal_end() {
    let env = Env::start("pipe").await;
    let _first = env.announce("web", "web-1", &[]);
    let mut cmd = env.herald(&["watch", "--json"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut watch = spawn_guarded(cmd);
    let stdout = watch.child_mut().stdout.take().unwrap();
    let mut first_line = String::new();
    BufReader::new(stdout).read_line(&mut first_line).unwrap();
    assert!(first_line.contains("web-1"), "{first_line}");
    // The reader is gone (`| head -1`); the next event makes watch write into the closed pipe.
    let _second = env.announce("web", "web-2", &[]);
    let status = exit_within(&mut watch, Duration::from_secs(5), "the closed pipe");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut watch.child_mut().stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        status.success(),
        "exit 0 on a closed pipe: {status:?} {err}"
    );
    assert!(err.is_empty(), "nothing printed: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_each_cause_once_in_the_clis_words() {
    let env = Env::start("words").await;
    let refused = format!("nats://127.0.0.1:{}", free_port());
    let out = env
        .output(&[
            "--nats",
            &refused,
            "announce",
            "--service",
            "a",
            "--addr",
            "h:1",
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("cannot connect to nats").count(), 1, "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");

    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = env
        .output(&["--etcd", &dead, "--connect-timeout", "500ms", "ls"])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcd unreachable"), "{err}");
    assert!(
        !err.contains("Status {") && !err.contains("details:"),
        "no debug output: {err}"
    );
    assert!(err.len() < 300, "short: {err}");
    assert_eq!(err.matches("tcp connect error").count(), 1, "{err}");

    for (args, says) in [
        (
            vec![
                "announce",
                "--service",
                "a",
                "--addr",
                "h:1",
                "--weight",
                "0",
            ],
            "invalid --weight",
        ),
        (
            vec![
                "announce",
                "--service",
                "a",
                "--addr",
                "h:1",
                "--load",
                "-1",
            ],
            "invalid --load",
        ),
    ] {
        let out = env.output(&args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "a bad value: {args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            !err.contains("drain()") && !err.contains("`"),
            "CLI words only: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }

    // Names and addresses break the command line itself: a usage error naming the argument,
    // with the rule it broke.
    for (args, says) in [
        (
            vec!["announce", "--service", "bad name", "--addr", "h:1"],
            "'--service <SERVICE>': must match [A-Za-z0-9_-]{1,64}",
        ),
        (
            vec![
                "announce",
                "--service",
                "a",
                "--addr",
                "h:1",
                "--instance",
                "a/b",
            ],
            "'--instance <INSTANCE>'",
        ),
        (
            vec!["announce", "--service", "a", "--addr", "nohost"],
            "'--addr <ADDR>': must be host:port",
        ),
        (vec!["ls", "bad name!"], "'[SERVICE]': must match"),
        (vec!["watch", "a.b"], "'[SERVICE]': must match"),
        (vec!["serve", "--zone", "z z"], "'--zone <ZONE>'"),
        (vec!["--prefix", "a.b", "ls"], "'--prefix <PREFIX>'"),
    ] {
        let out = env.output(&args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_refused_before_anything_runs() {
    let env = Env::start("values").await;
    for (args, says) in [
        (
            vec![
                "announce",
                "--service",
                "a",
                "--addr",
                "h:1",
                "--check-tcp",
                "nohostport",
            ],
            "HOST:PORT",
        ),
        (
            vec![
                "announce",
                "--service",
                "a",
                "--addr",
                "h:1",
                "--check-http",
                "notaurl",
            ],
            "'notaurl' for '--check-http <CHECK_HTTP>': not a URL",
        ),
        (
            vec![
                "announce",
                "--service",
                "a",
                "--addr",
                "h:1",
                "--weight",
                "-5",
            ],
            "'-5' for '--weight",
        ),
    ] {
        let out = env.output(&args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            !err.contains("unexpected argument"),
            "a value, not a flag: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_the_library_refuses_exit_2_and_name_their_flag() {
    let env = Env::start("refused").await;
    let announce = |extra: &[&'static str]| {
        let mut args = vec!["announce", "--service", "a", "--addr", "h:1"];
        args.extend_from_slice(extra);
        args
    };
    for (args, flag) in [
        (announce(&["--interval", "10ms"]), "--interval"),
        (announce(&["--ttl", "1s"]), "--ttl"),
        (announce(&["--load", "-1"]), "--load"),
        (announce(&["--load", "NaN"]), "--load"),
        (announce(&["--load", "inf"]), "--load"),
        (announce(&["--full-token-every", "0"]), "--full-token-every"),
        (announce(&["--weight", "0"]), "--weight"),
        (announce(&["--connect-timeout", "0s"]), "--connect-timeout"),
        (announce(&["--nats", "not a url"]), "--nats"),
        (announce(&["--lease-ttl", "1s"]), "--lease-ttl"),
        (vec!["ls", "--nats-advisories", "a.*"], "--nats-advisories"),
        (
            vec![
                "ls",
                "--nats-advisories",
                "a.b",
                "--disconnect-grace",
                "20s",
            ],
            "--disconnect-grace",
        ),
    ] {
        let out = env.output(&args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&format!("invalid {flag}")), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_reads_well() {
    let env = Env::start("output").await;
    let long = "an-instance-id-much-longer-than-the-old-fixed-column";
    let _a = env.announce("web", long, &[]);
    let _b = env.announce("web", "w2", &[]);
    let out = env.output(&["ls", "web"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let column = |l: &str, text: &str| l.find(text).unwrap();
    let addr_at = column(lines[0], "ADDR");
    // Numbers are right-aligned, their headers too (as the README shows).
    let load_ends = column(lines[0], "LOAD") + "LOAD".len();
    for row in &lines[1..] {
        assert_eq!(column(row, "127.0.0.1:9000"), addr_at, "aligned:\n{table}");
        assert_eq!(
            column(row, "0.000") + "0.000".len(),
            load_ends,
            "aligned:\n{table}"
        );
    }

    // A goodbye's removal says `leaving`; logs carry no colour codes off a terminal.
    let mut cmd = env.herald(&["watch", "web", "--json"]);
    cmd.stdout(Stdio::piped()).env("RUST_LOG", "info");
    cmd.stderr(Stdio::piped());
    let mut watch = spawn_guarded(cmd);
    let mut stdout = BufReader::new(watch.child_mut().stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let mut leaving = env.announce("web", "w3", &[]);
    // Seen first: a watch that started after w3 came and went would wait forever.
    stdout
        .find(|l| l.contains("\"added\"") && l.contains("w3"))
        .expect("w3 listed by the watch");
    assert!(sigterm(&mut leaving).success());
    let removed = stdout
        .find(|l| l.contains("\"removed\"") && l.contains("w3"))
        .expect("the removal of w3");
    assert!(removed.contains("\"state\":\"leaving\""), "{removed}");
    assert!(removed.contains("\"cause\":\"goodbye\""), "{removed}");
    assert!(sigterm(&mut watch).success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut watch.child_mut().stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("INFO"), "RUST_LOG=info logs: {err}");
    assert!(
        !err.contains('\u{1b}'),
        "no ANSI codes when stderr is not a terminal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_etcd_connection_fails_at_once() {
    let env = Env::start("refused_etcd").await;
    // Nothing listens there: the connection is refused, as NATS's would be.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let started = std::time::Instant::now();
    let out = env
        .output(&[
            "announce",
            "--service",
            "a",
            "--addr",
            "h:1",
            "--etcd",
            &nowhere,
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "said at once, not after the 3 s connect timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_announce_starts_stops_it_and_leaves_nothing_registered() {
    let env = Env::start("start_signal").await;
    // A killed holder of the id: its registration stays for its lease, and a new process
    // with the id waits up to the holder's token TTL for it to answer before taking over.
    let mut holder = env.announce("web", "web-1", &["--ttl", "20s"]);
    let mut client = etcd(&env).await;
    let key = key(&env, "web", "web-1");
    let before = client.get(key.as_str(), None).await.unwrap();
    let before = before
        .kvs()
        .first()
        .map(|kv| (kv.mod_revision(), kv.lease()));
    assert!(before.is_some(), "the holder registered");
    holder.kill().expect("kill -9 ends it");
    for (signal, code) in [(2, 130), (15, 143)] {
        let mut cmd = env.herald(&[
            "announce",
            "--service",
            "web",
            "--addr",
            "h:1",
            "--instance",
            "web-1",
        ]);
        cmd.env("RUST_LOG", "info").stderr(Stdio::piped());
        let mut second = spawn_guarded(cmd);
        let stderr = BufReader::new(second.child_mut().stderr.take().unwrap());
        let mut lines = stderr.lines().map_while(Result::ok);
        lines
            .find(|l| l.contains("probing its holder"))
            .expect("the start waits for the holder");
        // Read to the end: a closed pipe would fail its next log line.
        std::thread::spawn(move || lines.for_each(drop));
        second.signal(signal).unwrap();
        let status = exit_within(&mut second, Duration::from_secs(3), "the signal");
        assert_eq!(status.code(), Some(code), "signal {signal}");
        let after = client.get(key.as_str(), None).await.unwrap();
        assert_eq!(
            after
                .kvs()
                .first()
                .map(|kv| (kv.mod_revision(), kv.lease())),
            before,
            "the holder's registration is untouched"
        );
        let leases = client.leases().await.unwrap();
        assert_eq!(
            leases.leases().len(),
            1,
            "the stopped start's own lease was revoked: {:?}",
            leases.leases().iter().map(|l| l.id()).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_waiting_for_etcd_stops_announce_and_serve_at_once() {
    let env = Env::start("etcd_wait").await;
    // Connections are accepted by the kernel and never answered: etcd "does not answer".
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_at = listener.local_addr().unwrap().to_string();
    let silent = format!("http://{silent_at}");
    for command in [
        vec!["announce", "--service", "a", "--addr", "h:1"],
        vec!["serve", "--listen", "127.0.0.1:0"],
    ] {
        let mut args = command.clone();
        args.extend(["--etcd", &silent, "--connect-timeout", "20s"]);
        let mut cmd = env.herald(&args);
        cmd.env("RUST_LOG", "debug").stderr(Stdio::piped());
        let mut started = spawn_guarded(cmd);
        let stderr = BufReader::new(started.child_mut().stderr.take().unwrap());
        let mut lines = stderr.lines().map_while(Result::ok);
        lines
            .find(|l| l.contains(&format!("connecting to {silent_at}")))
            .expect("it connects to etcd");
        // Its stderr is closed from here on: the log lines it still writes are lost, and
        // that must not make it panic (it did: exit 101).
        drop(lines);
        started.signal(2).unwrap();
        let status = exit_within(&mut started, Duration::from_secs(3), "SIGINT");
        assert_eq!(status.code(), Some(130), "{command:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_publish_rights_gets_one_line_and_nothing_registered() {
    let env = Env::start("noright").await;
    let nats = herald_testkit::NatsServer::builder()
        .config(
            "authorization {\n  users = [\n    { user: ro, password: \"ro-pw\", permissions: { publish: [\"_INBOX.>\"], subscribe: [\">\"] } }\n  ]\n}\n",
        )
        .start()
        .await;
    let url = format!("nats://ro:ro-pw@127.0.0.1:{}", nats.port());
    let out = env
        .output(&[
            "--nats",
            &url,
            "announce",
            "--service",
            "svc",
            "--addr",
            "h:1",
            "--instance",
            "i1",
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("may not publish to `{}.announce.svc`", env.prefix)),
        "names the subject: {err}"
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one line, no log line repeating it: {err}"
    );
    let left = etcd(&env)
        .await
        .get(key(&env, "svc", "i1"), None)
        .await
        .unwrap();
    assert!(
        left.kvs().is_empty(),
        "the refused start left its registration"
    );
}
