//! `herald-bench rolling` at a tiny size: it runs to its end with the `herald` beside it and
//! prints every figure it promises, and a restart with a drain longer than the calls fails
//! none.

use std::process::Command;

#[test]
fn the_rolling_benchmark_prints_its_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args([
            "rolling",
            "--backends",
            "3",
            "--drains",
            "0s,500ms",
            "--sweep",
            "500ms",
            "--sweep-restarts",
            "2",
            "--rate",
            "50",
        ])
        .output()
        .expect("herald-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "herald-bench rolling failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for figure in [
        "3 backends, drain     0s: failed calls tonic",
        "3 backends, drain  500ms: failed calls tonic    0 of",
        "drain  500ms: failed calls tonic   0, grpcio   0; calls took",
    ] {
        assert!(stdout.contains(figure), "it prints {figure:?}: {stdout}");
    }
}
