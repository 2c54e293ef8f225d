//! The body of a host process: one NATS connection and either one [`Session`] (one etcd
//! lease for the whole process) or one shared etcd client with a lease per announcer, and
//! `per_host` announcers on them, started a bounded number at a time.
//!
//! It reports `Ready` once every announcer has started, answers `Stats` orders, and when
//! stdin closes or SIGTERM comes, shuts every announcer down (goodbye token, key deleted or
//! lease revoked), closes the session and reports `Stopped`.

use std::time::Instant;

use futures::{StreamExt, stream};
use herald_announcer::{Announcer, AnnouncerHandle, Connection, Session};
use herald_shared::{EtcdConfig, NatsConfig};
use tokio::signal::unix::{SignalKind, signal};

use crate::child;
use crate::fleet;
use crate::process::rss_bytes;
use crate::scale::plan::{Case, Leases};
use crate::scale::protocol::{HostArgs, HostOrder, HostStats, ReportLine};

/// How the announcers of this host reach etcd.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // `etcd_client::Client` is not `Debug`
enum Etcd {
    Session(Session),
    Client(Box<etcd_client::Client>),
}

/// Runs the host until stdin closes or SIGTERM; reports `Failed` and returns the error when it
/// cannot start.
///
/// # Errors
///
/// The first connection or announcer start that failed, as a message.
pub async fn run(args: HostArgs) -> Result<(), String> {
    let result = serve(&args).await;
    if let Err(why) = &result {
        child::report(&ReportLine::Failed(why.clone()));
    }
    result
}

async fn serve(args: &HostArgs) -> Result<(), String> {
    let case = args.case;
    // The channel closes with stdin.
    let mut orders = child::orders::<HostOrder>();
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;

    let (client, _events) = NatsConfig::new([args.nats.clone()])
        .connect()
        .await
        .map_err(|e| format!("nats: {e}"))?;
    let nats = Connection::new(client);
    let config = EtcdConfig::new(args.etcd.iter().cloned());
    let etcd = match case.leases {
        Leases::Session => Etcd::Session(
            Session::connect(config, case.lease_ttl)
                .await
                .map_err(|e| format!("session: {e}"))?,
        ),
        Leases::PerInstance => Etcd::Client(Box::new(
            config.connect().await.map_err(|e| format!("etcd: {e}"))?,
        )),
    };
    let base_rss = rss_bytes(None).unwrap_or(0);

    let started_at = Instant::now();
    let results: Vec<Result<AnnouncerHandle, String>> = stream::iter(args.instances())
        .map(|g| start_one(&case, g, &nats, &etcd))
        .buffer_unordered(case.concurrency.max(1))
        .collect()
        .await;
    let millis = started_at.elapsed().as_millis() as u64;
    let mut handles = Vec::with_capacity(results.len());
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok(h) => handles.push(h),
            Err(e) => failures.push(e),
        }
    }
    if let Some(first) = failures.first() {
        return Err(format!(
            "{} of {} announcers failed to start, first: {first}",
            failures.len(),
            case.per_host
        ));
    }
    child::report(&ReportLine::Ready {
        started: handles.len(),
        millis,
        base_rss,
    });

    loop {
        tokio::select! {
            order = orders.recv() => match order {
                Some(HostOrder::Stats) => child::report(&ReportLine::Stats(stats(&handles, &etcd))),
                None => break,
            },
            _ = term.recv() => break,
        }
    }

    let stopping = Instant::now();
    let mut failures: Vec<String> = stream::iter(handles)
        .map(|h| async move { h.shutdown().await.err().map(|e| format!("{:?}", e.kind())) })
        .buffer_unordered(case.concurrency.max(1))
        .filter_map(std::future::ready)
        .collect()
        .await;
    if let Etcd::Session(session) = &etcd {
        if let Err(e) = session.close().await {
            failures.push(format!("session close: {e}"));
        }
    }
    let errors = failures.len();
    if errors > 0 {
        let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
        for f in &failures {
            *kinds.entry(f).or_default() += 1;
        }
        eprintln!(
            "scale-host {}: shutdown errors by kind: {kinds:?}",
            args.host
        );
    }
    child::report(&ReportLine::Stopped {
        millis: stopping.elapsed().as_millis() as u64,
        errors,
    });
    Ok(())
}

/// Starts fleet instance `g` with a typical token (as [`fleet::typical_token`] describes).
async fn start_one(
    case: &Case,
    g: usize,
    nats: &Connection,
    etcd: &Etcd,
) -> Result<AnnouncerHandle, String> {
    let (s, service, id) = case.instance(g);
    let i = g / case.services;
    let addr = format!("10.{}.{}.{}:8080", s % 250, i / 250 % 250, i % 250);
    let builder = Announcer::builder(service, addr)
        .connection(nats)
        .instance(&id)
        .zone(fleet::zone(i))
        .meta("version", "1.2.3")
        .meta("zone", fleet::zone(i))
        // Spread loads, so that least-load picks have something to choose.
        .load((g * 37 % 100) as f32 / 100.0)
        .interval(case.interval);
    let builder = match etcd {
        Etcd::Session(session) => builder.session(session),
        Etcd::Client(client) => builder
            .etcd_client((**client).clone())
            .lease_ttl(case.lease_ttl),
    };
    builder.start().await.map_err(|e| format!("{id}: {e}"))
}

fn stats(handles: &[AnnouncerHandle], etcd: &Etcd) -> HostStats {
    let mut s = HostStats::default();
    for h in handles {
        let a = h.stats();
        s.tokens += a.tokens_sent;
        s.keep_alives += a.keep_alives;
        s.publish_errors += a.publish_errors;
        s.lease_losses += a.lease_losses;
    }
    if let Etcd::Session(session) = etcd {
        let st = session.stats();
        s.keep_alives += st.keep_alives;
        s.key_watches = st.key_watches;
        s.watch_streams = st.watch_streams;
        s.lease_losses += st.lease_losses;
    }
    s
}
