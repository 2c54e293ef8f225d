//! `herald-bench xds` at a tiny size: it runs to its end and prints every figure it promises
//! (grpcio's first call from `scripts/install-deps`' venv, the memory and CPU of a server
//! with several clients), and the burst becomes far fewer responses than joins.

use std::process::Command;

#[test]
fn the_xds_benchmark_prints_its_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args([
            "xds",
            "--changes",
            "30",
            "--burst",
            "200",
            "--first-calls",
            "3",
            "--clients",
            "4",
            "--services",
            "5",
            "--pushes",
            "10",
        ])
        .output()
        .expect("herald-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "herald-bench xds failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for figure in [
        "publish -> subscriber's Updated",
        "publish -> EDS response read by the client",
        "Updated -> EDS response",
        "start() -> subscriber's Added",
        "Added -> first grpcio call",
        "KiB per client",
        "us per push",
    ] {
        assert!(stdout.contains(figure), "it prints {figure:?}: {stdout}");
    }
    let responses: u64 = stdout
        .split("a burst of 200 joins into one service: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("it counts the burst's responses: {stdout}"));
    assert!(
        (1..=50).contains(&responses),
        "200 joins become few responses, not one each: {responses}"
    );
}
