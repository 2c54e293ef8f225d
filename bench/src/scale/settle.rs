//! Waiting for a case to be steady, and checking what the subscriber lists against what the
//! hosts run.

use std::time::{Duration, Instant};

use herald_subscriber::Subscriber;
use herald_testkit::EtcdServer;

use crate::fleet;
use crate::metrics::EtcdMetrics;
use crate::scale::hosts::Hosts;
use crate::scale::plan::{Case, Leases};

/// Each service's listing against the ids the hosts run; one problem per service that
/// differs.
pub fn exact_listing(sub: &Subscriber, case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let mut total = 0;
    for s in 0..case.services.min(case.instances()) {
        let mut ids = sub.instances(&fleet::service_name(s)).ids();
        ids.sort();
        total += ids.len();
        let expected = case.expected_ids(s);
        if ids != expected {
            problems.push(format!(
                "{} lists {} instances, {} expected",
                fleet::service_name(s),
                ids.len(),
                expected.len()
            ));
        }
    }
    if total != case.instances() || sub.stats().instances != case.instances() as u64 {
        problems.push(format!(
            "{total} instances listed ({} by the stats), {} expected",
            sub.stats().instances,
            case.instances()
        ));
    }
    problems
}

/// Waits `at_least`, then until every key watch is open on the sessions and etcd has no
/// watcher left to catch up (at most a minute more).
pub async fn settle(
    etcd: &EtcdServer,
    hosts: &mut Hosts,
    case: &Case,
    at_least: Duration,
) -> Result<(), String> {
    tokio::time::sleep(at_least).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let watches = hosts.stats().await?.key_watches as usize;
        let slow = EtcdMetrics::read(etcd)
            .await
            .map_or(f64::NAN, |m| m.slow_watchers);
        let sessions_ready = case.leases != Leases::Session || watches == case.instances();
        if (sessions_ready && slow == 0.0) || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
