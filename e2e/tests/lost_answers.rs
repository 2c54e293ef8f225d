//! A registration whose answer etcd sent but the announcer never read (a reply lost on the
//! way): on a shared [`Session`], the retry must take the key it finds under the session's
//! lease as its own, and a start that fails must leave no key behind under that lease.
//!
//! The fault is injected process-wide (`herald_announcer::faults`), so this file holds one
//! test: no other test of its process can be touched by it.

use std::time::Duration;

use herald_announcer::{Announcer, ErrorKind, Session, faults};
use herald_e2e::{etcd, etcd_client, init_tracing, prefix};
use herald_shared::Subjects;
use herald_testkit::{EtcdServer, NatsServer};

async fn holder(client: &mut etcd_client::Client, key: &str) -> Option<(u64, i64)> {
    let resp = client.get(key, None).await.expect("etcd get");
    resp.kvs()
        .first()
        .map(|kv| (kv.mod_revision() as u64, kv.lease()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_answer_on_a_session_is_taken_as_its_own_and_a_failed_start_leaves_no_key() {
    init_tracing();
    let nats_server = NatsServer::start().await;
    let etcd_server = EtcdServer::start().await;
    let prefix = prefix("lost");
    let session = Session::connect(etcd(&etcd_server.endpoints()), Duration::from_secs(3))
        .await
        .expect("session starts");
    let lease = session.lease().expect("the session's lease");
    let client =
        herald_announcer::Connection::new(async_nats::connect(nats_server.url()).await.unwrap());
    let mut etcd_c = etcd_client(&etcd_server.endpoints()).await;
    let subjects = Subjects::new(&prefix).unwrap();
    let builder = |instance: &str| {
        Announcer::builder("svc", "127.0.0.1:9000")
            .connection(&client)
            .session(&session)
            .prefix(&prefix)
            .instance(instance)
    };

    // The first claim lands, its answer is lost; the retry finds the key under the session's
    // lease.
    faults::lose_claim_answers(1);
    let a = builder("a")
        .start()
        .await
        .expect("a claim that landed is the announcer's own, not a duplicate");
    let (epoch, held_by) = holder(&mut etcd_c, &subjects.key("svc", "a"))
        .await
        .expect("registered");
    assert_eq!((a.epoch(), held_by), (epoch, lease));
    assert_eq!(a.stats().registrations, 1);
    // Another announcer of the same id on the same session is still a duplicate.
    let err = builder("a").start().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateInstance, "{err}");
    assert_eq!(
        holder(&mut etcd_c, &subjects.key("svc", "a")).await,
        Some((epoch, lease)),
        "the refused duplicate left the key alone"
    );

    // Every answer is lost: the start fails, and the claims that landed are deleted.
    faults::lose_claim_answers(u32::MAX);
    let err = builder("b").start().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::EtcdUnreachable, "{err}");
    assert_eq!(
        holder(&mut etcd_c, &subjects.key("svc", "b")).await,
        None,
        "no key is left under the session's lease"
    );
    faults::lose_claim_answers(0);
    let b = builder("b")
        .start()
        .await
        .expect("the id is free once the failed start is undone");
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
    session.close().await.unwrap();
}
