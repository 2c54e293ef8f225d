//! `herald ls`: the live instances, from etcd's snapshot confirmed by one probe round.

use std::io::Write;
use std::time::Duration;

use herald_subscriber::{Instance, Subscriber};
use tokio::time::Instant;

use crate::args::{Global, LsArgs};
use crate::json::InstanceJson;

/// How often the answers collected so far are looked at.
const POLL: Duration = Duration::from_millis(20);
/// Without etcd there is no list to complete: answers are taken as complete once none came
/// for this long.
const QUIET: Duration = Duration::from_millis(200);

pub(crate) async fn run(global: &Global, args: &LsArgs) -> anyhow::Result<()> {
    let subscriber = global.subscriber(args.service.as_deref(), None).await?;
    // start() sent a probe: every live announcer answers within one round trip.
    let registry_only = global.etcd_config().is_some() && !global.allow_unregistered;
    wait_for_answers(&subscriber, args, registry_only).await;
    let instances: Vec<Instance> = listed(&subscriber, args)
        .into_iter()
        .filter(|i| args.all || i.is_confirmed())
        .collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<InstanceJson<'_>> = instances.iter().map(InstanceJson::from).collect();
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:<20} {:<28} {:<22} {:>8} {:<9} {:<10} {:>8}",
            "SERVICE", "INSTANCE", "ADDR", "LOAD", "STATE", "ZONE", "EPOCH"
        )?;
        for i in &instances {
            let state = if i.is_confirmed() {
                i.state().as_str()
            } else {
                "silent"
            };
            writeln!(
                out,
                "{:<20} {:<28} {:<22} {:>8.3} {:<9} {:<10} {:>8}",
                i.service(),
                i.id(),
                i.addr(),
                i.load(),
                state,
                i.zone().unwrap_or("-"),
                i.epoch()
            )?;
        }
    }
    subscriber.shutdown().await;
    Ok(())
}

/// Every listed instance of the services asked for, confirmed or not.
fn listed(subscriber: &Subscriber, args: &LsArgs) -> Vec<Instance> {
    let services = match &args.service {
        Some(s) => vec![s.clone()],
        None => subscriber.services(),
    };
    services
        .iter()
        .flat_map(|s| subscriber.instances(s).to_vec())
        .collect()
}

/// Waits until every registered instance answered (`registry_only`: etcd lists everything
/// that can be shown) or answers stopped coming, at most `--wait`.
async fn wait_for_answers(subscriber: &Subscriber, args: &LsArgs, registry_only: bool) {
    let give_up = Instant::now() + args.wait;
    let mut last_change = Instant::now();
    let mut seen = usize::MAX;
    while Instant::now() < give_up {
        let instances = listed(subscriber, args);
        if registry_only && instances.iter().all(Instance::is_confirmed) {
            return;
        }
        let confirmed = instances.iter().filter(|i| i.is_confirmed()).count();
        if confirmed != seen {
            seen = confirmed;
            last_change = Instant::now();
        } else if !registry_only && last_change.elapsed() >= QUIET {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}
