//! `herald announce`: announces a service that cannot embed the Rust announcer, optionally
//! draining it while a health check fails, and optionally running it (`-- CMD`).
//!
//! SIGINT/SIGTERM stop it in the order that fails no call: `draining` at once, goodbye and
//! deregistration after `--drain-for`, and only then the command's stop. When etcd's
//! authority ends the announcer (its key deleted, or taken over), the command ends too, with
//! an exit code that says why (see [`crate::exit`]); when the command exits on its own, the
//! instance is withdrawn at once and `announce` ends with the command's code.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use herald_announcer::{Announcer, AnnouncerHandle, ErrorKind, Stopped};

use crate::args::{AnnounceArgs, Global};
use crate::exit;
use crate::health::Check;
use crate::supervise::{self, Service};

pub(crate) async fn run(global: &Global, args: &AnnounceArgs) -> anyhow::Result<ExitCode> {
    let mut nats = global.nats_config()?;
    // The announcer names its connection after the instance ("herald svc/id").
    nats.name = None;
    let mut builder = Announcer::builder(&args.service, &args.addr)
        .nats(nats)
        .prefix(&global.prefix)
        .interval(args.interval)
        .full_token_every(args.full_token_every)
        .load(args.load)
        .weight(args.weight)
        .takeover(args.takeover);
    if let Some(id) = &args.instance {
        builder = builder.instance(id);
    }
    if let Some(ttl) = args.ttl {
        builder = builder.ttl(ttl);
    }
    if let Some(z) = &args.zone {
        builder = builder.zone(z);
    }
    for (k, v) in &args.meta {
        builder = builder.meta(k, v);
    }
    builder = crate::etcd_options(builder, global, Some(args.lease_ttl));
    let check = Check::from_args(args)?;
    let mut service = match args.command.is_empty() {
        true => None,
        false => {
            let mut service = match Service::spawn(&args.command) {
                Ok(service) => service,
                Err(e) => {
                    // As a shell says it: 127 not found, 126 found but not runnable.
                    let code = match e.downcast_ref::<std::io::Error>().map(|e| e.kind()) {
                        Some(std::io::ErrorKind::NotFound) => 127,
                        _ => 126,
                    };
                    eprintln!("herald: error: {e:#}");
                    return Ok(ExitCode::from(code));
                }
            };
            let ready = until_ready(&mut service, check.as_ref(), &args.addr, args.stop_timeout);
            if let Some(code) = ready.await {
                return Ok(ExitCode::from(code));
            }
            Some(service)
        }
    };
    // A signal while it starts (waiting for etcd, or for a silent predecessor's TTL) stops
    // the start, and what it registered is removed before it returns.
    let announcer = match builder.start_until(crate::shutdown_signal()).await {
        Ok(announcer) => announcer,
        Err(e) => {
            if let Some(service) = &mut service {
                service.stop(args.stop_timeout).await;
            }
            if e.kind() == ErrorKind::Stopped && crate::signalled() {
                return Ok(crate::interrupted());
            }
            if let Some(message) = crate::connect::login_needed(&e, global.etcd_user.as_deref()) {
                return Err(anyhow::anyhow!("cannot announce: {message}"));
            }
            return Err(start_error(e));
        }
    };
    tracing::info!(
        service = args.service,
        instance = announcer.instance(),
        "announcing"
    );
    eprintln!(
        "announcing {}/{} at {}",
        args.service,
        announcer.instance(),
        args.addr
    );
    let stopped = announcer.stopped();
    tokio::pin!(stopped);
    let mut health = Health::default();
    let mut tick = tokio::time::interval(args.check_interval.max(Duration::from_millis(50)));
    loop {
        tokio::select! {
            _ = crate::shutdown_signal() => break,
            reason = &mut stopped => {
                let code = ended(reason);
                if let Some(service) = &mut service {
                    service.stop(args.stop_timeout).await;
                }
                return Ok(code);
            }
            status = exited(&mut service) => {
                // Nothing serves at the address any more: withdrawn at once, no drain.
                announcer.shutdown().await?;
                let name = service.as_ref().map_or("", |s| s.name.as_str());
                eprintln!(
                    "herald: `{name}` exited on its own ({}); its instance is withdrawn",
                    supervise::describe(status)
                );
                return Ok(ExitCode::from(supervise::code(status).max(1)));
            }
            _ = tick.tick(), if check.is_some() => {
                let ok = check.as_ref().expect("guarded").run().await;
                health.observe(ok, &announcer).await?;
            }
        }
    }
    if !args.drain_for.is_zero() {
        eprintln!(
            "draining; leaving in {}",
            humantime::format_duration(args.drain_for)
        );
    }
    let left = announcer.shutdown_after(args.drain_for).await;
    let code = match &mut service {
        Some(service) => service.stop(args.stop_timeout).await,
        None => 0,
    };
    left?;
    Ok(ExitCode::from(code))
}

/// Resolves when the supervised command exits; never without one.
async fn exited(service: &mut Option<Service>) -> std::process::ExitStatus {
    match service {
        Some(service) => service.exited().await,
        None => std::future::pending().await,
    }
}

/// Waits until the command accepts connections on `addr` (or passes `check`). `None` once it
/// does; the code to exit with when it exits first, or when a signal comes first (it is then
/// stopped).
async fn until_ready(
    service: &mut Service,
    check: Option<&Check>,
    addr: &str,
    stop_timeout: Duration,
) -> Option<u8> {
    let connect = Check::Tcp(addr.to_owned());
    let check = check.unwrap_or(&connect);
    let since = Instant::now();
    let mut said = false;
    loop {
        if check.run().await {
            return None;
        }
        if !said && since.elapsed() > READY_NOTE_AFTER {
            said = true;
            eprintln!(
                "waiting for `{}` to {} before announcing it",
                service.name,
                check.describe()
            );
        }
        tokio::select! {
            status = service.exited() => {
                eprintln!(
                    "herald: `{}` exited before it was ready ({}); nothing was announced",
                    service.name,
                    supervise::describe(status)
                );
                return Some(supervise::code(status).max(1));
            }
            _ = crate::shutdown_signal() => {
                return Some(service.stop(stop_timeout).await);
            }
            () = tokio::time::sleep(READY_POLL) => {}
        }
    }
}

/// How often a starting command is checked for readiness.
const READY_POLL: Duration = Duration::from_millis(20);
/// When a command that is not ready yet is said to be awaited.
const READY_NOTE_AFTER: Duration = Duration::from_secs(5);

/// The announcer ended on its own: one line naming why, and the exit code of that reason.
fn ended(reason: Stopped) -> ExitCode {
    let (code, why) = match reason {
        Stopped::Deregistered => (
            exit::DEREGISTERED,
            "its etcd registration was deleted (deregistered by an operator)".to_owned(),
        ),
        Stopped::Fenced { by_epoch } => (
            exit::FENCED,
            format!("another process took over its instance id (registration of epoch {by_epoch})"),
        ),
        other => (exit::CLOSED, format!("it was closed ({other})")),
    };
    eprintln!("herald: announcer stopped: {why}");
    ExitCode::from(code)
}

/// `start()`'s errors, in the command line's words where the library's would name its API.
fn start_error(e: herald_announcer::Error) -> anyhow::Error {
    match (e.kind(), e.field()) {
        (ErrorKind::DuplicateInstance, _) => anyhow::Error::new(e).context(
            "cannot announce (the id is in use by a live process; pass --takeover to replace it)",
        ),
        (ErrorKind::Config, Some(field)) => crate::exit::bad_value(
            &crate::args::flag_of(field),
            e.bound().unwrap_or("out of bounds"),
        )
        .context("cannot announce"),
        _ => anyhow::Error::new(e).context("cannot announce"),
    }
}

/// The `tracing` target of the health check's verdict changes, shown by default.
pub(crate) const CHECK_LOG: &str = "herald::check";

/// The health check's last verdict, and since when it fails.
#[derive(Debug)]
struct Health {
    healthy: bool,
    failing_since: Option<Instant>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            healthy: true,
            failing_since: None,
        }
    }
}

impl Health {
    /// Drains on the first failing check, resumes on the first passing one; logs each change
    /// once.
    async fn observe(&mut self, ok: bool, announcer: &AnnouncerHandle) -> anyhow::Result<()> {
        if ok == self.healthy {
            return Ok(());
        }
        self.healthy = ok;
        if ok {
            let down = self.failing_since.take().map(|t| t.elapsed());
            tracing::info!(
                target: CHECK_LOG,
                "check passes: up again after {:.1} s",
                down.unwrap_or_default().as_secs_f64()
            );
            announcer.resume().await?;
        } else {
            self.failing_since = Some(Instant::now());
            tracing::warn!(target: CHECK_LOG, "check fails: draining");
            announcer.drain().await?;
        }
        Ok(())
    }
}
