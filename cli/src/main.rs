//! `herald`: announce services that cannot embed the Rust announcer, list and watch
//! instances, and run the per-host discovery agent.
//!
//! # Layout
//! - `args`: the command line (clap), global options with their environment variables;
//! - `connect`: NATS/etcd settings and subscribers from the global options;
//! - `cmd`: one module per subcommand (`announce`, `ls`, `watch`, `serve`);
//! - `exit`: exit codes, and what ends the output normally (a closed pipe);
//! - `health`: TCP and HTTP checks for `announce`;
//! - `json`: the JSON shapes of instances and events;
//! - `metrics`: Prometheus text for `/metrics`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

mod args;
mod cmd;
#[cfg(test)]
mod compose_check;
mod connect;
mod exit;
mod health;
mod json;
mod metrics;
mod refusals;
mod supervise;

use args::{Cli, Command, Global};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // clap's message, without its usage block, on one line.
            let text = e.to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!(
                "herald: {} (see --help)",
                message.join(" ").trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    if let Err(e) = install_signal_handlers() {
        eprintln!("herald: error: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            // Warnings, and the lines that say a lost link or a failing check is back (with
            // how long it was down). Not the lines that repeat what the CLI says itself in
            // its one last line: an announcer stopped by etcd, and async-nats's own report
            // of a connection it could not make (the CLI names the cause, and its lost and
            // recovered links are `herald::connection` lines).
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "warn,async_nats=off,herald::stopped=off,herald::connection=info,herald::check=info"
                    .into()
            }),
        )
        .with_writer(std::io::stderr)
        // A closed stderr loses the log lines; reporting that on stderr again would panic.
        .log_internal_errors(false)
        .with_ansi(exit::colours_wanted())
        .init();
    let result = match &cli.command {
        Command::Announce(a) => cmd::announce::run(&cli.global, a).await,
        Command::Ls(a) => tokio::select! {
            // It prints only once it has every answer: stopped before, it prints nothing.
            listed = cmd::ls::run(&cli.global, a) => listed.map(|()| ExitCode::SUCCESS),
            () = shutdown_signal() => Ok(interrupted()),
        },
        Command::Watch(a) => cmd::watch::run(&cli.global, a)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Serve(a) => cmd::serve::run(&cli.global, a)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::XdsBootstrap(a) => {
            println!(
                "{}",
                herald_xds::bootstrap::json(&a.server, &a.node_id, a.zone.as_deref())
            );
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        // A reader that went away (`| head`) is a normal end of the output.
        Err(e) if exit::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) if exit::is_interrupted(&e) => interrupted(),
        // A value the library refused before connecting: a bad command line, as for clap.
        Err(e) if exit::is_bad_value(&e) => {
            eprintln!("herald: error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            // One line: what failed and why, never a panic trace.
            eprintln!("herald: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancelled on the first SIGINT or SIGTERM.
static SHUTDOWN: std::sync::OnceLock<tokio_util::sync::CancellationToken> =
    std::sync::OnceLock::new();

/// The number of that signal (0 before one came).
static SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Installs the SIGINT/SIGTERM handlers. Called first thing in `main`: a signal that arrives
/// before its handler exists kills the process outright, skipping the graceful shutdown.
fn install_signal_handlers() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = SHUTDOWN.get_or_init(Default::default).clone();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let number = tokio::select! {
            _ = term.recv() => rustix::process::Signal::TERM.as_raw(),
            _ = int.recv() => rustix::process::Signal::INT.as_raw(),
        };
        SIGNAL.store(number, std::sync::atomic::Ordering::SeqCst);
        token.cancel();
    });
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    SHUTDOWN.get_or_init(Default::default).cancelled().await;
}

/// Whether SIGINT or SIGTERM came.
pub(crate) fn signalled() -> bool {
    SIGNAL.load(std::sync::atomic::Ordering::SeqCst) != 0
}

/// The exit code of a command a signal interrupted before it could finish: 128 + the
/// signal's number, as a shell reports it (130 for SIGINT, 143 for SIGTERM).
pub(crate) fn interrupted() -> ExitCode {
    let number = SIGNAL.load(std::sync::atomic::Ordering::SeqCst);
    ExitCode::from(128 + u8::try_from(number).unwrap_or(0))
}

/// Adds the etcd authority to an announcer when endpoints are configured.
pub(crate) fn etcd_options(
    builder: herald_announcer::AnnouncerBuilder,
    global: &Global,
    lease_ttl: Option<Duration>,
) -> herald_announcer::AnnouncerBuilder {
    let Some(etcd) = global.etcd_config() else {
        return builder;
    };
    let builder = builder.etcd(etcd);
    match lease_ttl {
        Some(ttl) => builder.lease_ttl(ttl),
        None => builder,
    }
}
