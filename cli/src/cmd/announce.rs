//! `herald announce`: announces a service that cannot embed the Rust announcer, optionally
//! draining it while a health check fails; SIGINT/SIGTERM shut it down gracefully.

use std::time::Duration;

use anyhow::Context;
use herald_announcer::Announcer;

use crate::args::{AnnounceArgs, Global};
use crate::health::Check;

pub(crate) async fn run(global: &Global, args: &AnnounceArgs) -> anyhow::Result<()> {
    let mut builder = Announcer::builder(&args.service, &args.addr)
        .nats(global.nats_config()?)
        .prefix(&global.prefix)
        .interval(args.interval)
        .load(args.load);
    if let Some(id) = &args.instance {
        builder = builder.instance(id);
    }
    if let Some(ttl) = args.ttl {
        builder = builder.ttl(ttl);
    }
    if let Some(w) = args.weight {
        builder = builder.weight(w);
    }
    if let Some(z) = &args.zone {
        builder = builder.zone(z);
    }
    for (k, v) in &args.meta {
        builder = builder.meta(k, v);
    }
    builder = crate::etcd_options(builder, global, args.lease_ttl);
    let check = Check::from_args(args)?;
    let announcer = builder.start().await.context("cannot announce")?;
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

    let mut healthy = true;
    let mut tick = tokio::time::interval(args.check_interval.max(Duration::from_millis(50)));
    loop {
        tokio::select! {
            _ = crate::shutdown_signal() => break,
            _ = tick.tick(), if check.is_some() => {
                let ok = check.as_ref().expect("guarded").run().await;
                if ok != healthy {
                    healthy = ok;
                    if ok {
                        tracing::info!("check passes: up");
                        announcer.resume().await?;
                    } else {
                        tracing::warn!("check fails: draining");
                        announcer.drain().await?;
                    }
                }
            }
        }
    }
    announcer.shutdown().await.context("graceful shutdown")?;
    Ok(())
}
