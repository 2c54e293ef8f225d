//! The scale benchmark: 10k and 50k announcers in host processes (`scale_host`) against one
//! subscriber of every service, each case on fresh servers and in a fresh process of its own
//! (so that one case's memory does not carry into the next). Prints the figures and the cost
//! per instance as Markdown tables; exits with status 1 when a check failed.
//!
//! ```text
//! cargo build --release -p herald-bench --bins
//! cargo run --release -p herald-bench --bin scale [-- --case 10x1000 --case 10x1000:instance
//!     --case 10x5000 --window 30s --settle 5s --picks 200000 --concurrency 100 --host-nice 10]
//! ```
//!
//! A case is `HOSTSxPER_HOST[:session|:instance][@INTERVAL][/SERVICES][~LEASE_TTL]` (see
//! `herald_bench::scale::plan::Case::parse`); without `--case`: 10k with a lease per host,
//! 10k with a lease per instance, 50k with a lease per host, and 50k with a 5 s interval. `--run-case SPEC` runs one case in this process
//! and prints its outcome as a `result {json}` line: that is how the driver runs each case.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use herald_bench::scale::case::{self, Settings};
use herald_bench::scale::outcome::Outcome;
use herald_bench::scale::plan::{Case, parse_duration};
use herald_bench::scale::{cost, report};
use herald_testkit::spawn_guarded;

const DEFAULT_CASES: [&str; 4] = ["10x1000", "10x1000:instance", "10x5000", "10x5000@5s"];

struct Args {
    cases: Vec<Case>,
    run_case: bool,
    settings: Settings,
    concurrency: Option<usize>,
    /// The arguments to hand down to each case's process.
    forwarded: Vec<String>,
}

fn main() {
    let args = parse_args();
    if args.run_case {
        let outcome = runtime().block_on(case::run(&args.cases[0], &args.settings));
        match outcome {
            Ok(o) => println!(
                "result {}",
                serde_json::to_string(&o).expect("serialisable")
            ),
            Err(e) => {
                eprintln!("case {} failed: {e}", args.cases[0]);
                std::process::exit(1);
            }
        }
        return;
    }
    check_host_program(&args.settings.host_program);
    let me = std::env::current_exe().expect("own path");
    let mut outcomes = Vec::new();
    for c in &args.cases {
        println!("case {c}");
        let mut cmd = Command::new(&me);
        cmd.arg("--run-case")
            .arg(c.spec())
            .args(&args.forwarded)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(n) = args.concurrency {
            cmd.args(["--concurrency", &n.to_string()]);
        }
        let mut child = spawn_guarded(cmd);
        let stdout = child.child_mut().stdout.take().expect("piped stdout");
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            match line.strip_prefix("result ") {
                Some(json) => match serde_json::from_str::<Outcome>(json) {
                    Ok(o) => outcomes.push(o),
                    Err(e) => eprintln!("unreadable result: {e}"),
                },
                None => println!("{line}"),
            }
        }
        let status = child.child_mut().wait().ok();
        if !status.is_some_and(|s| s.success()) {
            println!("case {c} could not be measured ({status:?})");
        }
    }
    if outcomes.is_empty() {
        std::process::exit(1);
    }
    println!("\n## Figures\n\n{}", report::figures(&outcomes));
    println!("## Cost per instance\n\n{}", cost::cost_model(&outcomes));
    if outcomes.iter().any(|o| !o.problems.is_empty()) || outcomes.len() < args.cases.len() {
        println!("FAILED: see the problems row");
        std::process::exit(1);
    }
}

fn parse_args() -> Args {
    let own_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_default();
    let mut settings = Settings::bench(own_dir.join("scale_host"));
    let mut specs = Vec::new();
    let mut run_case = false;
    let mut concurrency = None;
    let mut forwarded = Vec::new();
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut it = raw.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let duration = || parse_duration(value).unwrap_or_else(|| usage("bad duration"));
        match flag.as_str() {
            "--case" => specs.push(value.clone()),
            "--run-case" => {
                specs = vec![value.clone()];
                run_case = true;
            }
            "--window" => settings.window = duration(),
            "--settle" => settings.settle = duration(),
            "--start-timeout" => settings.start_timeout = duration(),
            "--picks" => settings.picks = value.parse().unwrap_or_else(|_| usage("bad --picks")),
            "--concurrency" => {
                concurrency = Some(value.parse().unwrap_or_else(|_| usage("bad --concurrency")));
            }
            "--host-program" => settings.host_program = PathBuf::from(value),
            "--host-nice" => {
                settings.host_nice = value.parse().unwrap_or_else(|_| usage("bad --host-nice"));
            }
            other => usage(&format!("unknown argument {other}")),
        }
        if !matches!(flag.as_str(), "--case" | "--run-case" | "--concurrency") {
            forwarded.extend([flag.clone(), value.clone()]);
        }
    }
    if specs.is_empty() {
        specs = DEFAULT_CASES.iter().map(|s| (*s).to_owned()).collect();
    }
    let cases = specs
        .iter()
        .map(|s| {
            let mut c = Case::parse(s).unwrap_or_else(|| usage(&format!("bad case {s}")));
            if let Some(n) = concurrency {
                c.concurrency = n;
            }
            c
        })
        .collect();
    Args {
        cases,
        run_case,
        settings,
        concurrency,
        forwarded,
    }
}

/// The host program must exist and be as new as this one (both are built from the same
/// library; `cargo run --bin scale` rebuilds only this one).
fn check_host_program(host: &std::path::Path) {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let me = std::env::current_exe().ok();
    let stale = match (modified(host), me.as_deref().and_then(modified)) {
        (None, _) => true,
        (Some(h), Some(m)) => h + Duration::from_secs(60) < m,
        (Some(_), None) => false,
    };
    if stale {
        eprintln!(
            "{} is missing or older than this program: build both first with \
             `cargo build --release -p herald-bench --bins`",
            host.display()
        );
        std::process::exit(2);
    }
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: scale [--case HOSTSxPER_HOST[:session|:instance][@INTERVAL][/SERVICES][~TTL]]... \
         [--window 30s] [--settle 5s] [--start-timeout 600s] [--picks N] [--concurrency N] \
         [--host-nice N] [--host-program PATH]"
    );
    std::process::exit(2);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
