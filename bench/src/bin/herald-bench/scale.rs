//! The scale benchmark: 10k and 50k announcers in host processes against one subscriber of
//! every service, each case on fresh servers and in a fresh process of its own (so that one
//! case's memory does not carry into the next). Prints the figures and the cost per
//! instance as Markdown tables; exits with status 1 when a check failed.
//!
//! ```text
//! cargo run --release -p herald-bench -- scale [--case 10x1000 --case 10x1000:instance
//!     --case 10x5000 --window 30s --settle 5s --picks 200000 --concurrency 100 --host-nice 10]
//! ```
//!
//! A case is `HOSTSxPER_HOST[:session|:instance][@INTERVAL][/SERVICES][~LEASE_TTL]` (see
//! `herald_bench::scale::plan::Case::parse`); without `--case`: 10k with a lease per host,
//! 10k with a lease per instance, 50k with a lease per host, and 50k with a 5 s interval.
//! Each case runs in this program started again with the hidden `scale-case` subcommand,
//! which prints its outcome as a `result {json}` line; the hosts are this program too
//! (`scale-host`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use herald_bench::child;
use herald_bench::scale::case::{self, Settings};
use herald_bench::scale::host;
use herald_bench::scale::outcome::Outcome;
use herald_bench::scale::plan::Case;
use herald_bench::scale::protocol::HostArgs;
use herald_bench::scale::{cost, report};
use herald_testkit::spawn_guarded;

const DEFAULT_CASES: [&str; 4] = ["10x1000", "10x1000:instance", "10x5000", "10x5000@5s"];

/// What `scale` takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// A case, `HOSTSxPER_HOST[:session|:instance][@INTERVAL][/SERVICES][~LEASE_TTL]`
    /// (repeatable; default: the four cases of BENCHMARKS.md).
    #[arg(long = "case", value_parser = case)]
    cases: Vec<Case>,
    /// Announcers each host starts at a time (default: each case's).
    #[arg(long)]
    concurrency: Option<usize>,
    #[command(flatten)]
    settings: Settings,
}

fn case(spec: &str) -> Result<Case, String> {
    Case::parse(spec).ok_or_else(|| {
        "expected HOSTSxPER_HOST[:session|:instance][@INTERVAL][/SERVICES][~LEASE_TTL]".to_owned()
    })
}

impl Args {
    fn cases(&self) -> Vec<Case> {
        let mut cases = if self.cases.is_empty() {
            DEFAULT_CASES
                .iter()
                .map(|c| case(c).expect("valid"))
                .collect()
        } else {
            self.cases.clone()
        };
        if let Some(n) = self.concurrency {
            cases.iter_mut().for_each(|c| c.concurrency = n);
        }
        cases
    }
}

/// One case, in a process of its own, its case and settings as JSON: its outcome as a
/// `result {json}` line.
pub(crate) fn run_case(settings: &str) {
    let (case, settings) = child::settings::<(Case, Settings)>(settings).unwrap_or_else(|e| {
        eprintln!("scale-case: {e}");
        std::process::exit(2);
    });
    match crate::runtime().block_on(case::run(&case, &settings)) {
        Ok(o) => println!(
            "result {}",
            serde_json::to_string(&o).expect("serialisable")
        ),
        Err(e) => {
            eprintln!("case {case} failed: {e}");
            std::process::exit(1);
        }
    }
}

/// A host process: many announcers on one NATS connection, on one thread, as
/// `herald_bench::scale::host` describes.
pub(crate) fn host_process(settings: &str) {
    let args = child::settings::<HostArgs>(settings)
        .and_then(|a| a.check().map(|()| a))
        .unwrap_or_else(|e| {
            eprintln!("scale-host: {e}");
            std::process::exit(2);
        });
    // One thread drives every announcer of the host: the host's cost is then what its
    // announcers need, not what a thread pool spends waking up.
    if crate::current_thread().block_on(host::run(args)).is_err() {
        std::process::exit(1);
    }
}

pub(crate) fn run(mut args: Args) {
    let me = std::env::current_exe().expect("own path");
    args.settings.host_program = me.clone();
    let cases = args.cases();
    let mut outcomes = Vec::new();
    for c in &cases {
        println!("case {c}");
        let mut cmd = Command::new(&me);
        let settings = serde_json::to_string(&(c, &args.settings)).expect("serialisable");
        cmd.args(["scale-case", settings.as_str()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
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
    if outcomes.iter().any(|o| !o.problems.is_empty()) || outcomes.len() < cases.len() {
        println!("FAILED: see the problems row");
        std::process::exit(1);
    }
}
