//! One case from start to finish: fresh servers, the hosts, a cold-started subscriber of
//! every service with etcd in this process, a steady window, picks on the live cache, then a
//! graceful stop and a look at what etcd kept.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use herald_shared::{EtcdConfig, NatsConfig, Subjects};
use herald_subscriber::Subscriber;
use herald_testkit::{EtcdServer, NatsServer};
use serde::{Deserialize, Serialize};

use crate::fleet;
use crate::metrics::NatsVarz;
use crate::process::{Burners, process_cpu, rss_bytes};
use crate::scale::hosts::Hosts;
use crate::scale::outcome::{EtcdState, Memory, Outcome, Startup, Trouble};
use crate::scale::picks::{clock_overhead_ns, time_picks};
use crate::scale::plan::Case;
use crate::scale::sample::{Sample, Window};
use crate::scale::settle::{exact_listing, settle};

/// How a case is measured. Its fields are options of `herald-bench scale`, with the bench's
/// defaults ([`Settings::bench`]).
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct Settings {
    /// The `herald-bench` program, which runs a host with its `scale-host` subcommand.
    #[arg(skip)]
    pub host_program: PathBuf,
    /// Length of the steady window.
    #[arg(long, default_value = "30s", value_parser = crate::nonzero_duration)]
    pub window: Duration,
    /// Pause between the full listing and the window (the probe answers, etcd's watchers
    /// catching up).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// How long the hosts may take to start every announcer.
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    pub start_timeout: Duration,
    /// Picks timed per strategy.
    #[arg(long, default_value_t = 200_000, value_parser = crate::at_least_one)]
    pub picks: usize,
    /// Niceness of the host processes (0: as this one). They are the simulation, not the
    /// system measured: on a small machine a positive value keeps them from starving the
    /// subscriber, NATS and etcd (they then take what those leave).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub host_nice: i32,
    /// CPU burners at normal priority from just before the subscriber's cold start until
    /// it lists every instance (0: none).
    #[arg(long, default_value_t = 0)]
    pub start_burners: usize,
    /// Print each phase on stderr.
    #[arg(skip = true)]
    pub verbose: bool,
}

impl Settings {
    /// The benchmark's settings, hosts run by `host_program`: a 30 s window after 5 s of
    /// settling, 200,000 picks per strategy, hosts at niceness 10.
    pub fn bench(host_program: PathBuf) -> Settings {
        Settings {
            host_program,
            ..crate::defaults()
        }
    }
}

/// Runs `case` and checks it ([`Outcome::check`]); `Err` when it could not be measured at
/// all (a host failed, the listing never completed).
///
/// # Errors
///
/// What stopped the case, as a message.
///
/// # Panics
///
/// When a server cannot start. Needs a multi-threaded runtime (the picks block a worker).
pub async fn run(case: &Case, settings: &Settings) -> Result<Outcome, String> {
    let say = |what: String| {
        if settings.verbose {
            eprintln!("  [{case}] {what}");
        }
    };
    let nats = NatsServer::start().await;
    let etcd = EtcdServer::start().await;
    let mut etcd_client = EtcdConfig::new(etcd.endpoints())
        .connect()
        .await
        .map_err(|e| format!("etcd client: {e}"))?;
    let n = case.instances();

    let etcd_cpu_before_start = process_cpu(etcd.pid()).unwrap_or_default();
    let mut hosts = Hosts::spawn(
        &settings.host_program,
        settings.host_nice,
        &nats.url(),
        &etcd.endpoints(),
        case,
    );
    let started = hosts.wait_ready(settings.start_timeout).await?;
    let etcd_cpu_start = process_cpu(etcd.pid())
        .unwrap_or_default()
        .saturating_sub(etcd_cpu_before_start);
    say(format!(
        "{} announcers started in {:.2} s",
        started.instances,
        started.all_ready.as_secs_f64()
    ));

    let subscriber_base = rss_bytes(None).unwrap_or(0);
    let burners = Burners::start(settings.start_burners);
    let t = Instant::now();
    let sub = Subscriber::builder()
        .nats(NatsConfig::new([nats.url()]))
        .etcd(EtcdConfig::new(etcd.endpoints()))
        .start()
        .await
        .map_err(|e| format!("subscriber: {e}"))?;
    let subscriber_start = t.elapsed();
    let deadline = t + Duration::from_secs(60) + Duration::from_millis(n as u64);
    while sub.stats().instances < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let listed = t.elapsed();
    drop(burners);
    let mut problems = exact_listing(&sub, case);
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    say(format!(
        "subscriber started in {:.3} s, all {n} listed after {:.3} s",
        subscriber_start.as_secs_f64(),
        listed.as_secs_f64()
    ));
    let plain_listing = plain_listing(&mut etcd_client, n).await?;
    say(format!(
        "a plain paged listing of the same keys took {:.3} s",
        plain_listing.as_secs_f64()
    ));

    settle(&etcd, &mut hosts, case, settings.settle).await?;
    let before = Sample::take(&etcd, &nats, &sub, &mut hosts).await?;
    let warm_up = Trouble::of(&sub.stats());
    let mut listed_range = (u64::MAX, 0);
    let window_start = Instant::now();
    let window_end = window_start + settings.window;
    let mut last = warm_up;
    while Instant::now() < window_end {
        let left = window_end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        let stats = sub.stats();
        let now = stats.instances;
        listed_range = (listed_range.0.min(now), listed_range.1.max(now));
        // Say when the view is not exact, as it happens: a failing window reads as a story.
        let trouble = Trouble::of(&stats);
        if now != n as u64 || trouble != last {
            say(format!(
                "{:>4.1} s into the window: {now} listed, since the last line {}",
                window_start.elapsed().as_secs_f64(),
                trouble.since(&last)
            ));
        }
        last = trouble;
    }
    let after = Sample::take(&etcd, &nats, &sub, &mut hosts).await?;
    let window = Window::between(&before, &after);
    let host_stats = hosts.stats().await?;
    let memory = Memory {
        subscriber_base,
        subscriber: rss_bytes(None).unwrap_or(0),
        hosts_base: started.base_rss,
        hosts: hosts
            .pids()
            .into_iter()
            .filter_map(|p| rss_bytes(Some(p)))
            .sum(),
        etcd: etcd.pid().and_then(|p| rss_bytes(Some(p))).unwrap_or(0),
        nats: nats.pid().and_then(|p| rss_bytes(Some(p))).unwrap_or(0),
    };
    let leases = count_leases(&mut etcd_client).await?;
    let nats_subscriptions = NatsVarz::read(&nats).await.map_or(0, |v| v.subscriptions);
    say(format!(
        "window of {:.1} s: subscriber {:.3} cores, {:.0} tokens/s",
        window.seconds, window.subscriber_cpu, window.accepted
    ));

    let services: Vec<String> = (0..case.services.min(n)).map(fleet::service_name).collect();
    let picks = tokio::task::block_in_place(|| time_picks(&sub, &services, settings.picks));
    let clock = clock_overhead_ns();
    problems.extend(exact_listing(&sub, case));
    sub.shutdown().await;

    let etcd_cpu_before_stop = process_cpu(etcd.pid()).unwrap_or_default();
    let (stop, stop_errors) = hosts.stop(Duration::from_secs(300)).await?;
    let etcd_cpu_stop = process_cpu(etcd.pid())
        .unwrap_or_default()
        .saturating_sub(etcd_cpu_before_stop);
    say(format!("hosts stopped in {:.2} s", stop.as_secs_f64()));
    let keys_after_stop = etcd_client
        .get(
            Subjects::default().services_prefix(),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .map_err(|e| format!("etcd count: {e}"))?
        .count();
    let m = after.etcd;
    let mut outcome = Outcome {
        case: *case,
        instances: started.instances,
        listed_range,
        startup: Startup {
            all_ready: started.all_ready.as_secs_f64(),
            slowest_host: started.slowest_host.as_secs_f64(),
            subscriber_start: subscriber_start.as_secs_f64(),
            listed: listed.as_secs_f64(),
            plain_listing: plain_listing.as_secs_f64(),
            start_burners: settings.start_burners,
            stop: stop.as_secs_f64(),
            stop_errors,
            etcd_cpu_per_start_us: per_instance_us(etcd_cpu_start, started.instances),
            etcd_cpu_per_stop_us: per_instance_us(etcd_cpu_stop, started.instances),
        },
        window,
        memory,
        etcd: EtcdState {
            leases,
            watch_streams: m.watch_streams,
            grpc_watch_streams: m.grpc_watch_streams,
            watchers: m.watchers,
            keys: m.keys,
            db_size: m.db_size,
            db_in_use: m.db_in_use,
            leases_after_stop: count_leases(&mut etcd_client).await?,
            keys_after_stop,
        },
        nats_subscriptions,
        host_key_watches: host_stats.key_watches,
        warm_up,
        picks,
        clock_overhead_ns: clock,
        problems,
    };
    outcome.check();
    Ok(outcome)
}

async fn count_leases(client: &mut etcd_client::Client) -> Result<usize, String> {
    Ok(client
        .leases()
        .await
        .map_err(|e| format!("etcd leases: {e}"))?
        .leases()
        .len())
}

/// Reads every registration with etcd-client alone, at one revision, in pages sized as the
/// subscriber sizes its own (the first of [`LISTING_PAGE`] keys, then about 2 MiB): what the
/// subscriber's cold start is compared with.
///
/// [`LISTING_PAGE`]: herald_subscriber::internals::LISTING_PAGE
async fn plain_listing(client: &mut etcd_client::Client, n: usize) -> Result<Duration, String> {
    let prefix = Subjects::default().services_prefix();
    let mut end = prefix.clone().into_bytes();
    *end.last_mut().expect("a prefix") += 1;
    let t = Instant::now();
    let mut start = prefix.into_bytes();
    let mut revision = 0;
    let (mut read, mut bytes) = (0, 0);
    let mut limit = herald_subscriber::internals::LISTING_PAGE;
    loop {
        let mut opts = etcd_client::GetOptions::new()
            .with_range(end.clone())
            .with_limit(limit);
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let resp = client
            .get(start.clone(), Some(opts))
            .await
            .map_err(|e| format!("plain listing: {e}"))?;
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        read += resp.kvs().len();
        bytes += resp
            .kvs()
            .iter()
            .map(|kv| kv.key().len() + kv.value().len())
            .sum::<usize>();
        limit = herald_subscriber::internals::listing_page_after(read, bytes);
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    let took = t.elapsed();
    if read != n {
        return Err(format!("the plain listing read {read} keys, {n} expected"));
    }
    Ok(took)
}

/// CPU time spread over `instances`, in µs each.
fn per_instance_us(cpu: Duration, instances: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / instances.max(1) as f64
}
