//! `herald watch`: a live stream of events, readable or one JSON object per line.

use std::io::Write;

use futures::StreamExt;

use crate::args::{Global, WatchArgs};
use crate::json::EventJson;

pub(crate) async fn run(global: &Global, args: &WatchArgs) -> anyhow::Result<()> {
    let subscriber = global.subscriber(args.service.as_slice(), None).await?;
    let mut events = subscriber.events();
    // What was known before the stream began (etcd snapshot) is reported as added.
    let initial: Vec<_> = match &args.service {
        Some(s) => subscriber.instances(s).to_vec(),
        None => subscriber
            .services()
            .iter()
            .flat_map(|s| subscriber.instances(s).to_vec())
            .collect(),
    };
    for i in initial {
        print(&herald_subscriber::Event::Added(i), args.json)?;
    }
    loop {
        tokio::select! {
            _ = crate::shutdown_signal() => break,
            e = events.next() => match e {
                Some(e) => print(&e, args.json)?,
                None => break,
            },
        }
    }
    subscriber.shutdown().await;
    Ok(())
}

fn print(e: &herald_subscriber::Event, json: bool) -> anyhow::Result<()> {
    let j = EventJson::from(e);
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &j)?;
        writeln!(out)?;
    } else if let Some(i) = &j.instance {
        writeln!(
            out,
            "{:<8} {}/{} {} load={:.3} state={} epoch={}{}{}",
            j.event,
            i.service,
            i.instance,
            i.addr,
            i.load,
            i.state,
            i.epoch,
            // Known from etcd, not heard on NATS yet: an `updated` line follows when it is.
            if i.confirmed { "" } else { " unconfirmed" },
            j.cause.map(|c| format!(" cause={c}")).unwrap_or_default()
        )?;
    } else {
        writeln!(out, "{:<8} missed={}", j.event, j.missed.unwrap_or(0))?;
    }
    out.flush()?;
    Ok(())
}
