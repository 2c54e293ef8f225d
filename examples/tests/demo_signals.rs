//! The demo, built as a person runs it, ends cleanly on a terminal's Ctrl-C: SIGINT sent to
//! its whole process group stops it with exit status 0, a goodbye line, no error and no
//! backtrace, and the `nats-server` and `etcd` it started are gone afterwards.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use herald_testkit::{ChildGuard, pid_alive, spawn_guarded};

/// SIGINT, what a terminal sends on Ctrl-C.
const SIGINT: i32 = 2;
/// Start-up of both servers, announcers and the subscriber, on a loaded two-core machine.
const FIRST_VIEW_TIMEOUT: Duration = Duration::from_secs(90);
/// Announcers' goodbyes, the subscriber's shutdown and both servers' stops.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_to_the_demo_group_ends_it_cleanly_and_stops_its_servers() {
    let mut cmd = Command::new(demo_binary());
    cmd.env("RUST_BACKTRACE", "1")
        .env_remove("HERALD_NATS_URL")
        .env_remove("HERALD_ETCD_ENDPOINTS")
        .env_remove("HERALD_DEMO_SECONDS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A new process group led by the demo, as a shell gives a foreground job.
        .process_group(0);
    let mut demo = spawn_guarded(cmd);
    let stdout = demo.child_mut().stdout.take().expect("piped stdout");
    let mut stderr = demo.child_mut().stderr.take().expect("piped stderr");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (lines_tx, lines) = mpsc::channel();
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line.clone());
            text.push_str(&line);
            text.push('\n');
        }
        text
    });

    let deadline = Instant::now() + FIRST_VIEW_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("Herald live view") => break,
            Ok(_) => {}
            Err(_) => {
                demo.kill();
                panic!(
                    "the demo printed no live view within {FIRST_VIEW_TIMEOUT:?}; stderr:\n{}",
                    stderr.join().unwrap()
                );
            }
        }
    }
    let servers = children(&demo);
    let names: Vec<&str> = servers.iter().map(|(_, name)| name.as_str()).collect();
    assert!(
        names.contains(&"nats-server") && names.contains(&"etcd"),
        "the demo must have started a nats-server and an etcd, found {names:?}"
    );

    demo.signal_group(SIGINT)
        .expect("SIGINT to the demo's group");
    let status = demo.wait_exit(EXIT_TIMEOUT).await;
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    let output = format!("stdout:\n{}\nstderr:\n{stderr}", tail(&stdout));
    let status = status.unwrap_or_else(|| panic!("no exit within {EXIT_TIMEOUT:?}\n{output}"));
    assert!(
        status.success(),
        "Ctrl-C must end the demo with status 0, got {status}\n{output}"
    );
    assert!(
        stdout.contains("Bye"),
        "the demo must say goodbye\n{output}"
    );
    for bad in ["Error", "error:", "backtrace", "panicked"] {
        assert!(
            !stdout.contains(bad) && !stderr.contains(bad),
            "the demo must stop without {bad:?}\n{output}"
        );
    }
    for (pid, name) in &servers {
        assert!(!pid_alive(*pid), "the demo's {name} ({pid}) outlived it");
    }
}

/// Builds the demo as CI's own commands do (the whole workspace's features, so nothing is
/// compiled twice) into this test's target directory, and returns its path.
fn demo_binary() -> PathBuf {
    let test_exe = std::env::current_exe().expect("test binary path");
    // <target>/<profile>/deps/<this test>
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("profile dir");
    let target_dir = profile_dir.parent().expect("target dir");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    // The runtime value first: a test run from an archive (`cargo nextest run
    // --archive-file`) is told where the sources are now, not where they were built.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let manifest = crate_dir.join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut build = Command::new(cargo);
    // Without the variables cargo sets for this test: build scripts that watch one of them
    // (ring's watches CARGO_MANIFEST_DIR) would otherwise be rebuilt here, and again by the
    // next cargo command of the same target dir.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(set_for_this_test) {
            build.env_remove(key);
        }
    }
    let status = build
        .args([
            "build",
            "--quiet",
            "--workspace",
            "--all-features",
            "--example",
            "demo",
        ])
        .arg("--profile")
        .arg(profile)
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo could not build the demo");
    profile_dir.join("examples/demo")
}

/// Whether cargo set `key` for this test binary (its package, crate and paths), as opposed
/// to the caller's own settings such as `CARGO_HOME` or `CARGO_TARGET_DIR`.
fn set_for_this_test(key: &str) -> bool {
    key == "OUT_DIR"
        || key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_BIN_")
        || key.starts_with("CARGO_MANIFEST_")
        || matches!(
            key,
            "CARGO_CRATE_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
        )
}

/// The direct children of `parent` as (pid, command name), read from `/proc`.
fn children(parent: &ChildGuard) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": the name may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if ppid.and_then(|p| p.parse::<u32>().ok()) == Some(parent.pid()) {
            found.push((pid, stat[open + 1..close].to_owned()));
        }
    }
    found
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
