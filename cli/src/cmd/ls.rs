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
    let subscriber = global.subscriber(args.service.as_slice(), None).await?;
    // start() sent a probe: every live announcer answers within one round trip.
    let registry_only = global.etcd_config().is_some() && !global.allow_unregistered;
    wait_for_answers(&subscriber, args, registry_only).await;
    let (instances, silent): (Vec<Instance>, Vec<Instance>) = listed(&subscriber, args)
        .into_iter()
        .partition(|i| args.all || i.is_confirmed());
    if !silent.is_empty() {
        // Registered, but no answer: crashed with its lease still held, or slow to answer.
        eprintln!(
            "herald: {} registered instance{} did not answer within {} (--all lists {}, --wait waits longer)",
            silent.len(),
            if silent.len() == 1 { "" } else { "s" },
            humantime::format_duration(args.wait),
            if silent.len() == 1 { "it" } else { "them" },
        );
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<InstanceJson<'_>> = instances.iter().map(InstanceJson::from).collect();
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &instances)?;
    }
    subscriber.shutdown().await;
    Ok(())
}

/// The instances as a table whose columns are as wide as their longest value.
fn print_table(out: &mut impl Write, instances: &[Instance]) -> std::io::Result<()> {
    let header = [
        "SERVICE", "INSTANCE", "ADDR", "LOAD", "STATE", "ZONE", "EPOCH",
    ];
    let rows: Vec<[String; 7]> = instances
        .iter()
        .map(|i| {
            let state = if i.is_confirmed() {
                i.state().as_str()
            } else {
                "silent"
            };
            [
                i.service().to_owned(),
                i.id().to_owned(),
                i.addr().to_owned(),
                format!("{:.3}", i.load()),
                state.to_owned(),
                i.zone().unwrap_or("-").to_owned(),
                i.epoch().to_string(),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: [&str; 7]| {
        // Text columns left-aligned, numbers right-aligned.
        writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:<w4$}  {:<w5$}  {:>w6$}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4],
            w5 = width[5],
            w6 = width[6],
        )
    };
    line(out, header)?;
    for row in &rows {
        line(out, row.each_ref().map(String::as_str))?;
    }
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
