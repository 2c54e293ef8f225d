//! `herald announce`: announces a service that cannot embed the Rust announcer, optionally
//! draining it while a health check fails. SIGINT/SIGTERM shut it down gracefully (exit 0);
//! when etcd's authority ends the announcer (its key deleted, or taken over), the command
//! ends too, with an exit code that says why (see [`crate::exit`]).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use herald_announcer::{Announcer, AnnouncerHandle, ErrorKind, Stopped};

use crate::args::{AnnounceArgs, Global};
use crate::exit;
use crate::health::Check;

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
    let announcer = builder.start().await.map_err(start_error)?;
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
            reason = &mut stopped => return Ok(ended(reason)),
            _ = tick.tick(), if check.is_some() => {
                let ok = check.as_ref().expect("guarded").run().await;
                health.observe(ok, &announcer).await?;
            }
        }
    }
    announcer.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

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
        (ErrorKind::Config, Some(field)) => anyhow::anyhow!(
            "cannot announce: invalid {}: {}",
            crate::args::flag_of(field),
            e.bound().unwrap_or("out of bounds")
        ),
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
