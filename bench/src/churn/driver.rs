//! The soak's main loop ([`run`]): servers, subscriber, observer and fleet started, then
//! churn, settle and wind-down, every source feeding the [`Soak`] as it arrives.

use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_shared::{EtcdConfig, NatsConfig, Subjects, round_trip};
use herald_subscriber::Subscriber;
use herald_testkit::{ADVISORY_SUBJECT, EtcdServer, NatsServer};

use super::protocol::{Answer, FleetArgs};
use super::report::Report;
use super::settings::{SERVICE, Settings};
use super::soak::Soak;
use crate::child::Child;

/// The subcommand of `herald-bench` that runs the fleet.
pub const FLEET_SUBCOMMAND: &str = "churn-fleet";

/// How long the settling waits for the fleet's last answers before going on without them
/// (they are then reported as unanswered).
const UNANSWERED_LIMIT: Duration = Duration::from_secs(15);

/// Runs a soak: starts its own nats-server and etcd, the subscriber, the observer and the
/// fleet; churns for `settings.duration`; settles; makes every remaining announcer leave.
///
/// # Panics
///
/// When a server, the subscriber or the fleet cannot start.
pub async fn run(settings: Settings) -> Report {
    let started = Instant::now();
    let nats = match settings.disconnect_grace {
        Some(_) => NatsServer::builder().advisories().start().await,
        None => NatsServer::start().await,
    };
    let etcd = EtcdServer::start().await;
    let prefix = format!("churn{}", settings.seed % 1_000_000);
    let subjects = Subjects::new(&prefix).expect("valid prefix");
    let mut sub = Subscriber::builder()
        .nats(NatsConfig::new([nats.url()]))
        .etcd(EtcdConfig::new(etcd.endpoints()))
        .prefix(&prefix)
        .service(SERVICE)
        .event_capacity(settings.event_capacity);
    if let Some(grace) = settings.disconnect_grace {
        sub = sub
            .disconnect_advisories(ADVISORY_SUBJECT)
            .disconnect_grace(grace);
    }
    let sub = sub.start().await.expect("subscriber starts");
    let mut events = sub.events();
    let observer = async_nats::connect(nats.url())
        .await
        .expect("observer connects");
    let mut raw = observer
        .subscribe(subjects.announce(SERVICE))
        .await
        .expect("observer subscribes");
    round_trip::confirm_subscriptions(&observer, Duration::from_secs(5))
        .await
        .expect("observer subscription active");
    let mut fleet: Child<Answer> = Child::spawn(
        &settings.fleet_program,
        0,
        FLEET_SUBCOMMAND,
        &FleetArgs {
            nats: nats.url(),
            etcd: etcd.endpoints(),
            prefix: prefix.clone(),
            interval: settings.interval,
            ttl: settings.ttl,
            lease_ttl: settings.lease_ttl,
        },
    );

    let mut soak = Soak::new(settings, started);
    let mut rng = fastrand::Rng::with_seed(soak.settings.seed);
    let churn_end = tokio::time::Instant::now() + soak.settings.duration;
    let mut next_action = tokio::time::Instant::now();
    let mut checks = tokio::time::interval(soak.settings.check_every);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut phase = Phase::Churn;
    let mut phase_deadline = churn_end;
    let mut settle_limit = churn_end + UNANSWERED_LIMIT;
    loop {
        tokio::select! {
            biased;
            Some(e) = events.next() => soak.on_event(e, Instant::now()),
            Some(msg) = raw.next() => soak.on_token(&msg.payload, Instant::now()),
            Some((at, answer)) = fleet.reports().recv() => soak.on_answer(answer, at),
            _ = checks.tick() => soak.check(&sub, Instant::now()),
            _ = tokio::time::sleep_until(next_action), if phase == Phase::Churn => {
                if let Some(order) = soak.next_order(&mut rng, Instant::now()) {
                    fleet.send(&order).expect("the fleet takes orders");
                }
                let gap = soak.settings.mean_gap.mul_f64(0.5 + rng.f64());
                next_action = tokio::time::Instant::now() + gap;
            }
            _ = tokio::time::sleep_until(phase_deadline) => {
                match phase {
                    Phase::Churn => {
                        // Let in-flight orders finish and every death run past its TTL.
                        phase = Phase::Settle;
                        settle_limit = tokio::time::Instant::now() + UNANSWERED_LIMIT;
                        phase_deadline = tokio::time::Instant::now()
                            + soak.settings.ttl
                            + soak.settings.sweep_margin
                            + Duration::from_secs(1);
                    }
                    Phase::Settle
                        if soak.in_flight() > 0 && tokio::time::Instant::now() < settle_limit =>
                    {
                        phase_deadline = tokio::time::Instant::now() + Duration::from_millis(100);
                    }
                    Phase::Settle => {
                        soak.check(&sub, Instant::now());
                        soak.converged = soak.listing_matches(&sub);
                        for order in soak.leave_all(Instant::now()) {
                            fleet.send(&order).expect("the fleet takes orders");
                        }
                        phase = Phase::WindDown;
                        phase_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                    }
                    Phase::WindDown => break,
                }
            }
        }
        if phase == Phase::WindDown && soak.in_flight() == 0 && sub.instances(SERVICE).is_empty() {
            // Give the last events a moment to come out of the stream.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
                soak.on_event(e, Instant::now());
            }
            break;
        }
    }
    soak.emptied = sub.instances(SERVICE).is_empty();
    soak.finish(sub.stats(), started.elapsed())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Churn,
    Settle,
    WindDown,
}
