//! Processes die with their owners: dropping a server, panicking while owning one, and
//! killing a guarded child.

use std::process::Command;
use std::time::Duration;

use herald_testkit::{NatsServer, free_port, pid_alive, spawn_guarded};

/// Waits briefly for `pid` to disappear (drop reaps synchronously, so this is immediate).
fn gone(pid: u32) -> bool {
    !pid_alive(pid) && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_kills_the_server() {
    let nats = NatsServer::start().await;
    let pid = nats.pid().unwrap();
    let dir = nats.dir().to_owned();
    assert!(pid_alive(pid));
    drop(nats);
    assert!(gone(pid), "nats-server {pid} survived drop");
    assert!(!dir.exists(), "temp dir {} survived drop", dir.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn panicking_task_kills_its_server() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let nats = NatsServer::start().await;
        tx.send(nats.pid().unwrap()).unwrap();
        panic!("test failure while a server runs");
    });
    let pid = rx.await.unwrap();
    assert!(task.await.unwrap_err().is_panic());
    assert!(gone(pid), "nats-server {pid} survived the panic");
}

#[test]
fn catch_unwind_kills_the_server() {
    let mut pid = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let nats = NatsServer::start().await;
            pid = nats.pid();
            panic!("test failure while a server runs");
        })
    }));
    assert!(result.is_err());
    let pid = pid.unwrap();
    assert!(gone(pid), "nats-server {pid} survived the panic");
}

#[tokio::test(flavor = "multi_thread")]
async fn guarded_child_kill_and_wait_exit() {
    let mut sleeper = Command::new("sleep");
    sleeper.arg("30");
    let mut child = spawn_guarded(sleeper);
    let pid = child.pid();
    assert!(child.is_running());
    assert!(child.is_alive());
    assert_eq!(child.wait_exit(Duration::from_millis(50)).await, None);
    let status = child.kill().unwrap();
    assert!(!status.success());
    assert!(gone(pid));
    assert!(!child.is_running());

    let mut quick = Command::new("sh");
    quick.args(["-c", "exit 3"]);
    let mut child = spawn_guarded(quick);
    let status = child.wait_exit(Duration::from_secs(5)).await.unwrap();
    assert_eq!(status.code(), Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn guarded_child_stops_on_sigterm() {
    let mut sleeper = Command::new("sleep");
    sleeper.arg("30");
    let mut child = spawn_guarded(sleeper);
    let started = std::time::Instant::now();
    let status = child.stop(Duration::from_secs(5)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(rustix::process::Signal::TERM.as_raw())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn child_outlives_the_thread_that_spawned_it() {
    // The parent-death signal follows the spawning thread; the kit forks from a thread of its
    // own, so a child asked for by a short-lived thread keeps running.
    let handle = std::thread::spawn(|| {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        spawn_guarded(cmd)
    });
    let mut child = handle.join().unwrap();
    assert_eq!(
        child.wait_exit(Duration::from_millis(200)).await,
        None,
        "child died with the thread that asked for it"
    );
    child.kill();
}

const VICTIM_ENV: &str = "HERALD_TESTKIT_VICTIM";

/// Not a test: the body of the process that `server_dies_when_the_test_process_is_killed`
/// starts (with `--ignored`), which starts a server, reports its pid, and waits to be
/// SIGKILLed. Ignored, so that no test run counts it as a test that passed.
#[test]
#[ignore = "a helper process of server_dies_when_the_test_process_is_killed, not a test"]
fn victim_process() {
    if std::env::var_os(VICTIM_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _nats = rt.block_on(async {
        let nats = NatsServer::start().await;
        println!("PID {} DIR {}", nats.pid().unwrap(), nats.dir().display());
        nats
    });
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn server_dies_when_the_test_process_is_killed() {
    use std::io::BufRead;
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "victim_process",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(VICTIM_ENV, "1")
    .stdout(std::process::Stdio::piped());
    let mut victim = spawn_guarded(cmd);
    let stdout = victim.child_mut().stdout.take().unwrap();
    let mut reported = None;
    for line in std::io::BufReader::new(stdout).lines() {
        // The harness prints "test victim_process ... " on the same line first.
        if let Some((_, rest)) = line.unwrap().split_once("PID ") {
            let (pid, dir) = rest.split_once(" DIR ").unwrap();
            reported = Some((pid.parse::<u32>().unwrap(), dir.trim().to_owned()));
            break;
        }
    }
    let (server_pid, server_dir) = reported.expect("the victim process reported no server pid");
    assert!(pid_alive(server_pid));
    victim.kill(); // SIGKILL: no destructor runs in the victim
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pid_alive(server_pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "nats-server {server_pid} outlived its killed parent"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A SIGKILLed process cannot remove its temp dir.
    std::fs::remove_dir_all(server_dir).unwrap();
}

#[test]
fn free_ports_are_never_repeated() {
    let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len());
    assert!(!ports.contains(&4222) && !ports.contains(&2379));
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_run_in_their_own_process_group() {
    use rustix::process::{Pid, getpgid, getpgrp};
    let nats = NatsServer::start().await;
    let pid = Pid::from_raw(nats.pid().unwrap() as i32).unwrap();
    let group = getpgid(Some(pid)).unwrap();
    assert_eq!(
        group, pid,
        "nats-server must lead a process group of its own"
    );
    assert_ne!(
        group,
        getpgrp(),
        "a Ctrl-C to the test's group must not reach the server"
    );
}
