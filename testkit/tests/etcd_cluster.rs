//! A real three-member `etcd` cluster: it elects a leader, survives losing it, and takes the
//! old leader back.

use std::time::Instant;

use herald_testkit::EtcdCluster;

#[tokio::test(flavor = "multi_thread")]
async fn three_members_elect_a_new_leader_when_the_leader_dies() {
    let mut cluster = EtcdCluster::start(3).await;
    assert_eq!(cluster.len(), 3);
    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.len(), 3);
    let leader = cluster.leader_index().await.expect("a leader after start");

    let out = cluster
        .member((leader + 1) % 3)
        .etcdctl(&["put", "k", "v"])
        .await;
    assert!(out.status.success(), "{out:?}");

    let killed_at = Instant::now();
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, leader);
    eprintln!("new leader after {:?}", killed_at.elapsed());

    cluster.restart(leader).await;
    assert!(cluster.member(leader).is_running());
    let out = cluster
        .member(leader)
        .etcdctl(&["get", "k", "--print-value-only"])
        .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
    cluster.wait_for_leader().await;
}
