//! `herald announce -- CMD` against real servers and a real gRPC backend (grpcio, from the
//! venv of `scripts/install-deps`): announced once it serves, a stop in the order that fails
//! no call (draining, the drain, goodbye, then the command's SIGTERM), a crash withdrawn at
//! once, the command gone with a killed `announce`, and the exit codes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Env, sigterm};
use futures::StreamExt;
use herald_shared::{EtcdConfig, NatsConfig, State};
use herald_subscriber::{Event, EventStream, RemovalCause, Strategy, Subscriber};
use herald_testkit::{ChildGuard, free_port, pid_alive, signal_pid, spawn_guarded};

fn backend_script() -> String {
    common::script("backend.py").display().to_string()
}

async fn subscriber(env: &Env) -> Subscriber {
    Subscriber::builder()
        .nats(NatsConfig::new([env.nats.url()]))
        .etcd(EtcdConfig::new([env.etcd.endpoint()]))
        .prefix(&env.prefix)
        .start()
        .await
        .expect("subscriber starts")
}

/// `herald announce ... -- python backend.py ID PORT`, its stderr lines, and the backend's
/// pid once it serves.
fn supervised(env: &Env, id: &str, port: u16, extra: &[&str]) -> (ChildGuard, u32) {
    let addr = format!("127.0.0.1:{port}");
    let port_arg = port.to_string();
    let python = common::python().display().to_string();
    let script = backend_script();
    let mut args = vec![
        "announce",
        "--service",
        "echo",
        "--addr",
        &addr,
        "--instance",
        id,
        "--interval",
        "200ms",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", &python, &script, id, &port_arg]);
    let mut cmd = env.herald(&args);
    cmd.stdout(Stdio::piped());
    let mut child = spawn_guarded(cmd);
    let stdout = child.child_mut().stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let pid: u32 = line
        .strip_prefix(&format!("serving {id} {port} "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the backend said {line:?}"));
    std::thread::spawn(move || for _ in reader.lines().map_while(Result::ok) {});
    (child, pid)
}

/// The next event of instance `id` that says it joined, drains or is gone: not an update
/// that leaves it up (its registration confirmed) or reads `leaving` (with etcd, the goodbye
/// waits for the deletion of the registration, which removes the instance).
async fn next_of(events: &mut EventStream, id: &str) -> (Instant, Event) {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap_or_else(|_| panic!("no event of {id} within 10 s"))
            .expect("events open");
        let of_id = match &e {
            Event::Added(i) => i.id() == id,
            Event::Updated(i) => i.id() == id && i.state() == State::Draining,
            Event::Removed { instance, .. } => instance.id() == id,
            _ => false,
        };
        if of_id {
            return (Instant::now(), e);
        }
    }
}

/// Waits until instance `id` is heard on NATS (confirmed): its first token is out, so the
/// start is over. Events of other instances meanwhile are skipped. Listed from its etcd registration alone, it is still starting, and a signal
/// then stops the start (the registration removed) rather than the announcer.
async fn heard(events: &mut EventStream, id: &str) {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap_or_else(|_| panic!("{id} not heard within 10 s"))
            .expect("events open");
        match &e {
            Event::Added(i) | Event::Updated(i) if i.id() == id && i.is_confirmed() => return,
            Event::Removed { instance, .. } if instance.id() == id => panic!("{id} left: {e:?}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_is_announced_once_it_serves_and_stopped_only_after_it_left() {
    let env = Env::start("supervise").await;
    let sub = subscriber(&env).await;
    let mut events = sub.events();
    let port = free_port();
    let (mut announce, backend) = supervised(&env, "e1", port, &["--drain-for", "400ms"]);
    let (_, added) = next_of(&mut events, "e1").await;
    assert!(matches!(added, Event::Added(_)), "{added:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "announced only once the command accepts connections"
    );
    if !matches!(&added, Event::Added(i) if i.is_confirmed()) {
        heard(&mut events, "e1").await;
    }

    let asked = Instant::now();
    announce.signal(common::libc_sigterm()).unwrap();
    let (drained_at, drained) = next_of(&mut events, "e1").await;
    assert!(
        matches!(&drained, Event::Updated(i) if i.state() == State::Draining),
        "the first news of the stop is the drain: {drained:?}"
    );
    assert!(
        pid_alive(backend) && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the command serves while the instance drains"
    );
    let (removed_at, removed) = loop {
        // Tokens go on while it drains.
        let (at, e) = next_of(&mut events, "e1").await;
        if !matches!(&e, Event::Updated(_)) {
            break (at, e);
        }
    };
    assert!(
        matches!(
            &removed,
            Event::Removed {
                cause: RemovalCause::Goodbye,
                ..
            }
        ),
        "then a goodbye: {removed:?}"
    );
    assert!(
        removed_at - asked >= Duration::from_millis(400),
        "the goodbye waits for the drain: {:?} after the signal, drained after {:?}",
        removed_at - asked,
        drained_at - asked
    );
    let status = common::exit_within(&mut announce, Duration::from_secs(10), "SIGTERM");
    assert_eq!(status.code(), Some(0), "a clean stop exits 0");
    assert!(!pid_alive(backend), "the command is stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_command_is_withdrawn_at_once_and_announce_fails_with_its_signal() {
    let env = Env::start("crash").await;
    let sub = subscriber(&env).await;
    let mut events = sub.events();
    let (_other, _) = supervised(&env, "ok", free_port(), &[]);
    let (mut announce, backend) = supervised(&env, "e2", free_port(), &[]);
    // Both started (heard on NATS), so the crash meets a running announcer.
    heard(&mut events, "ok").await;
    heard(&mut events, "e2").await;
    // `herald watch` as an operator runs it, beside the test's own subscriber.
    let mut watch = env.herald(&["watch", "echo", "--json"]);
    watch.stdout(Stdio::piped());
    let mut watch = spawn_guarded(watch);
    let (lines_tx, watched) = std::sync::mpsc::channel();
    let stdout = BufReader::new(watch.child_mut().stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = lines_tx.send((Instant::now(), line));
        }
    });
    // It prints what it lists first: once both instances are there, it watches.
    let mut listed = 0;
    while listed < 2 {
        let (_, line) = watched
            .recv_timeout(Duration::from_secs(10))
            .expect("watch lists the instances");
        listed += usize::from(line.contains("\"added\""));
    }
    let killed = Instant::now();
    signal_pid(backend, 9).unwrap();
    let (removed_at, removed) = next_of(&mut events, "e2").await;
    let (watch_removed_at, line) = loop {
        let (at, line) = watched
            .recv_timeout(Duration::from_secs(10))
            .expect("watch tells the removal");
        if line.contains("\"removed\"") {
            break (at, line);
        }
    };
    assert!(line.contains("\"instance\":\"e2\""), "{line}");
    assert!(
        watch_removed_at - killed < Duration::from_millis(100),
        "herald watch told the removal {:?} after the crash",
        watch_removed_at - killed
    );
    assert!(
        matches!(
            &removed,
            Event::Removed {
                cause: RemovalCause::Goodbye,
                ..
            }
        ),
        "withdrawn by its announcer: {removed:?}"
    );
    assert!(
        removed_at - killed < Duration::from_millis(100),
        "removed {:?} after the crash",
        removed_at - killed
    );
    for _ in 0..200 {
        assert_eq!(
            sub.pick("echo", Strategy::PowerOfTwoChoices)
                .map(|i| i.id().to_owned()),
            Some("ok".to_owned()),
            "no pick goes to the dead backend"
        );
    }
    let status = common::exit_within(&mut announce, Duration::from_secs(10), "the crash");
    assert_eq!(
        status.code(),
        Some(128 + 9),
        "announce fails with the child's signal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_does_not_outlive_a_killed_announce() {
    let env = Env::start("orphan").await;
    let (mut announce, backend) = supervised(&env, "e3", free_port(), &[]);
    assert!(pid_alive(backend));
    announce.kill();
    let killed = Instant::now();
    while pid_alive(backend) {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the command outlived announce by 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_fails_before_serving_is_never_announced() {
    let env = Env::start("early").await;
    let out = env
        .output(&[
            "announce",
            "--service",
            "echo",
            "--addr",
            "127.0.0.1:1",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "its code: {err}");
    assert!(err.contains("nothing was announced"), "{err}");
    assert!(!err.contains("announcing"), "{err}");

    let out = env
        .output(&[
            "announce",
            "--service",
            "echo",
            "--addr",
            "127.0.0.1:1",
            "--",
            "/nonexistent/service",
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(127),
        "not found, as a shell says: {err}"
    );
    assert!(err.contains("/nonexistent/service"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_command_starts_stops_it_and_announces_nothing() {
    let env = Env::start("startstop").await;
    let mut cmd = env.herald(&[
        "announce",
        "--service",
        "echo",
        "--addr",
        "127.0.0.1:1",
        "--",
        "sh",
        "-c",
        "echo started; exec sleep 30",
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut announce = spawn_guarded(cmd);
    // The command runs once it says so; `sleep` never listens: announce waits for it.
    let mut out = BufReader::new(announce.child_mut().stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n", "the command's first line");
    let status = sigterm(&mut announce);
    assert_eq!(
        status.code(),
        Some(0),
        "sleep died of the SIGTERM it was sent"
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut announce.child_mut().stderr.take().unwrap(), &mut err)
        .unwrap();
    assert!(!err.contains("announcing"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_ignores_sigterm_is_killed_after_the_stop_timeout() {
    let env = Env::start("stoptimeout").await;
    let port = free_port();
    let python = common::python().display().to_string();
    let serve = format!(
        "import signal, socket, time\n\
         signal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
         s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n\
         time.sleep(60)"
    );
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = env.herald(&[
        "announce",
        "--service",
        "echo",
        "--addr",
        &addr,
        "--drain-for",
        "0s",
        "--stop-timeout",
        "300ms",
        "--",
        &python,
        "-c",
        &serve,
    ]);
    cmd.stderr(Stdio::piped());
    let mut announce = spawn_guarded(cmd);
    let mut err = BufReader::new(announce.child_mut().stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("announcing") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "announce ended first"
        );
    }
    let asked = Instant::now();
    let status = sigterm(&mut announce);
    assert_eq!(
        status.code(),
        Some(128 + 9),
        "killed, and said so by its code"
    );
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "SIGKILL only after --stop-timeout: {:?}",
        asked.elapsed()
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert!(rest.contains("did not exit"), "{rest}");
    assert!(rest.contains("--stop-timeout"), "{rest}");
}
