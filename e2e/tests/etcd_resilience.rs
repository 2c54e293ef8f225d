//! The subscriber's etcd link under faults: changes made while it was cut off are caught up
//! after it comes back (by resuming the watch, or by listing again when the revision was
//! compacted), and a replaced cluster makes it forget the old cluster's epochs.

use std::time::Duration;

use herald_e2e::{
    RawPublisher, etcd_client, eventually, init_tracing, is_added, is_removed, lease, prefix,
    register, token, wait_event,
};
use herald_subscriber::{RemovalCause, Subscriber};
use herald_testkit::{EtcdCluster, EtcdServer, NatsServer};

use herald_e2e::subscriber_with_etcd as subscriber;

/// The subscriber talks to member 0 only; member 0 is killed, the registry changes through
/// member 1, member 0 comes back.
async fn changes_while_cut_off(compact: bool) -> Subscriber {
    let nats_server = NatsServer::start().await;
    let mut cluster = EtcdCluster::start(3).await;
    let prefix = prefix(if compact { "compact" } else { "resume" });
    let all = cluster.endpoints();
    let mut writer = etcd_client(&all[1..]).await;
    let lease_id = lease(&mut writer, 120).await;
    for id in ["stays", "goes"] {
        let t = token("svc", id, 1, Duration::from_secs(120));
        register(&mut writer, &prefix, &t, lease_id).await;
    }
    let sub = subscriber(&nats_server.url(), &all[..1], &prefix).await;
    assert_eq!(sub.instances("svc").len(), 2);
    let mut events = sub.events();

    cluster.kill(0);
    // Member 0 may have led: writes wait for the remaining two to elect a leader.
    cluster.wait_for_leader().await;
    let subjects = herald_shared::Subjects::new(&prefix).unwrap();
    retry(|| {
        let (mut w, k) = (writer.clone(), subjects.key("svc", "goes"));
        async move { w.delete(k, None).await.map(drop) }
    })
    .await;
    let value = herald_shared::codec::encode(&token("svc", "arrives", 1, Duration::from_secs(120)))
        .unwrap();
    let revision = retry(|| {
        let (mut w, k, v) = (
            writer.clone(),
            subjects.key("svc", "arrives"),
            value.clone(),
        );
        let opts = etcd_client::PutOptions::new().with_lease(lease_id);
        async move {
            w.put(k, v, Some(opts))
                .await
                .map(|r| r.header().unwrap().revision())
        }
    })
    .await;
    if compact {
        retry(|| {
            let mut w = writer.clone();
            let opts = etcd_client::CompactionOptions::new().with_physical();
            async move { w.compact(revision, Some(opts)).await.map(drop) }
        })
        .await;
    }
    cluster.restart(0).await;

    let mut seen_removed = false;
    let mut seen_added = false;
    while !(seen_removed && seen_added) {
        let e = wait_event(
            &mut events,
            Duration::from_secs(10),
            "the missed changes",
            |_| true,
        )
        .await;
        seen_removed |= is_removed(&e, "goes", RemovalCause::Deregistered);
        seen_added |= is_added(&e, "arrives");
    }
    let mut ids = sub.instances("svc").ids();
    ids.sort();
    assert_eq!(ids, vec!["arrives", "stays"]);
    drop(cluster);
    drop(nats_server);
    sub
}

/// Retries a write while the cluster is electing (etcd answers "request timed out").
async fn retry<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "etcd write retried");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("etcd write failed for 15 s: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_and_catches_up_after_the_link_returns() {
    init_tracing();
    let sub = changes_while_cut_off(false).await;
    assert_eq!(
        sub.stats().etcd_resyncs,
        1,
        "resuming the watch needs no second listing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_revision_is_recovered_by_listing_again() {
    init_tracing();
    let sub = changes_while_cut_off(true).await;
    assert!(
        sub.stats().etcd_resyncs >= 2,
        "a compaction forces a second listing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_cluster_resets_epochs() {
    init_tracing();
    let nats_server = NatsServer::start().await;
    let mut etcd_server = EtcdServer::start().await;
    let prefix = prefix("newcluster");
    let mut client = etcd_client(&etcd_server.endpoints()).await;
    // Push the old cluster's revision well above what the new one will start from.
    for i in 0..200 {
        client.put(format!("/filler/{i}"), "x", None).await.unwrap();
    }
    let mut t = token("svc", "a", 1, Duration::from_secs(30));
    t.epoch = register(&mut client, &prefix, &t, 0).await;
    assert!(t.epoch > 200);
    let publisher = RawPublisher::connect(&nats_server.url(), &prefix).await;
    let sub = subscriber(&nats_server.url(), &etcd_server.endpoints(), &prefix).await;
    publisher.token(&t).await;
    assert_eq!(sub.get("svc", "a").unwrap().epoch(), t.epoch);

    etcd_server.restart_fresh().await;
    eventually(Duration::from_secs(10), "the new cluster noticed", || {
        sub.stats().etcd_cluster_changes == 1
    })
    .await;
    assert!(
        sub.get("svc", "a").is_some(),
        "a live instance stays through the cluster change"
    );

    // The announcer registers again in the new cluster, at a far smaller revision.
    let mut client = etcd_client(&etcd_server.endpoints()).await;
    let old_epoch = t.epoch;
    t.epoch = register(&mut client, &prefix, &t, 0).await;
    assert!(
        t.epoch < old_epoch,
        "the new cluster's revisions start again near 1"
    );
    t.seq = 2;
    t.load = 0.75;
    publisher.token(&t).await;
    eventually(
        Duration::from_secs(5),
        "tokens of the new, smaller epoch accepted",
        || {
            sub.get("svc", "a")
                .is_some_and(|i| i.epoch() == t.epoch && i.load() == 0.75)
        },
    )
    .await;
}
