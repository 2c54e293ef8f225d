//! `herald ls`: the current instances, from etcd's snapshot plus one probe round.

use std::io::Write;

use crate::args::{Global, LsArgs};
use crate::json::InstanceJson;

pub(crate) async fn run(global: &Global, args: &LsArgs) -> anyhow::Result<()> {
    let subscriber = global.subscriber(args.service.as_deref(), None).await?;
    // start() sent a probe: every live announcer answers within one round trip.
    tokio::time::sleep(args.wait).await;
    let services = match &args.service {
        Some(s) => vec![s.clone()],
        None => subscriber.services(),
    };
    let snapshots: Vec<_> = services.iter().map(|s| subscriber.instances(s)).collect();
    let instances: Vec<_> = snapshots.iter().flat_map(|s| s.iter()).collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<InstanceJson<'_>> =
            instances.iter().map(|i| InstanceJson::from(*i)).collect();
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:<20} {:<28} {:<22} {:>8} {:<9} {:<10} {:>8}",
            "SERVICE", "INSTANCE", "ADDR", "LOAD", "STATE", "ZONE", "EPOCH"
        )?;
        for i in instances {
            writeln!(
                out,
                "{:<20} {:<28} {:<22} {:>8.3} {:<9} {:<10} {:>8}",
                i.service(),
                i.id(),
                i.addr(),
                i.load(),
                i.state().as_str(),
                i.zone().unwrap_or("-"),
                i.epoch()
            )?;
        }
    }
    subscriber.shutdown().await;
    Ok(())
}
