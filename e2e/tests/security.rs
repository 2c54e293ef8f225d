//! Proof under hostile input, against real servers: NATS logins, TLS and client certificates;
//! per-user NATS permissions that keep a client without publish rights from injecting an
//! instance; etcd logins with least-privilege roles; etcd TLS and client certificates; and a
//! flood of garbage that is counted under its reasons, never evicts the valid instance, never
//! stops its load from being followed, and does not grow memory.
//!
//! The NATS permissions and the etcd roles are read from README.md's "Securing NATS and etcd"
//! section, so the documented configuration is the tested one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_announcer::{Announcer, AnnouncerHandle, ErrorKind as AnnouncerErrorKind};
use herald_e2e::{
    RawPublisher, eventually, init_tracing, is_added, nats, prefix, token, wait_event,
};
use herald_shared::{EtcdConfig, NatsAuth, NatsConfig, Reject, Subjects, Token, round_trip};
use herald_subscriber::{ErrorKind as SubscriberErrorKind, Event, Subscriber};
use herald_testkit::{EtcdServer, NatsServer};
use tempfile::TempDir;

/// The tests of this file run one at a time, even under `cargo test`: the flood measures this
/// process's memory, and the refusals bound how long a failure may take.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const INTERVAL: Duration = Duration::from_millis(200);
/// Connect timeout of the clients that must be refused: short, so that a refusal that waited
/// for it instead of failing at once would still be caught by the margin below.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack on top of the connect timeout for a refused `start()` to return.
const REFUSAL_MARGIN: Duration = Duration::from_secs(1);
const EVENT_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// NATS logins and TLS
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_user_and_password_are_required_and_a_wrong_password_is_refused_at_once() {
    let _serial = SERIAL.lock().await;
    init_tracing();
    let server = NatsServer::builder()
        .user("herald", "s3cret-pw")
        .start()
        .await;
    let prefix = prefix("nats_user");
    let login = |password: &str| {
        let mut config = nats(&server.url());
        config.auth = NatsAuth::UserPassword {
            user: "herald".into(),
            password: password.into(),
        };
        config.connect_timeout = REFUSAL_TIMEOUT;
        config
    };

    let sub = Subscriber::builder()
        .nats(login("s3cret-pw"))
        .prefix(&prefix)
        .start()
        .await
        .expect("a subscriber with the right password starts");
    let mut events = sub.events();
    let _announcer = Announcer::builder("svc", "127.0.0.1:9000")
        .nats(login("s3cret-pw"))
        .prefix(&prefix)
        .instance("a1")
        .interval(INTERVAL)
        .start()
        .await
        .expect("an announcer with the right password starts");
    wait_event(&mut events, EVENT_WAIT, "Added(a1)", |e| is_added(e, "a1")).await;

    let started = Instant::now();
    let err = Subscriber::builder()
        .nats(login("wrong"))
        .prefix(&prefix)
        .start()
        .await
        .expect_err("a wrong password must be refused");
    let took = started.elapsed();
    assert_eq!(err.kind(), SubscriberErrorKind::Connect, "{err}");
    assert!(
        herald_e2e::chain(&err)
            .to_lowercase()
            .contains("authorization"),
        "the error says the login was refused: {}",
        herald_e2e::chain(&err)
    );
    assert!(
        took < REFUSAL_TIMEOUT + REFUSAL_MARGIN,
        "a refused login fails within the connect timeout: took {took:?}"
    );

    // Credentials written in the URL log in too.
    let in_url = server.url().replace("nats://", "nats://herald:s3cret-pw@");
    Subscriber::builder()
        .nats(nats(&in_url))
        .prefix(&prefix)
        .start()
        .await
        .expect("the URL's user and password log in")
        .shutdown()
        .await;

    let mut anonymous = nats(&server.url());
    anonymous.connect_timeout = REFUSAL_TIMEOUT;
    let started = Instant::now();
    let err = Announcer::builder("svc", "127.0.0.1:9000")
        .nats(anonymous)
        .prefix(&prefix)
        .start()
        .await
        .expect_err("an announcer without credentials must be refused");
    assert_eq!(err.kind(), AnnouncerErrorKind::Connect, "{err}");
    assert!(started.elapsed() < REFUSAL_TIMEOUT + REFUSAL_MARGIN);
    assert!(
        sub.get("svc", "a1").is_some(),
        "refused clients change nothing for the others"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_with_a_private_ca_and_with_client_certificates() {
    let _serial = SERIAL.lock().await;
    init_tracing();
    let pki = Pki::new();
    let stranger = Pki::new();

    // Server authentication only.
    let server = NatsServer::builder()
        .tls(herald_testkit::NatsTls::new(&pki.server.0, &pki.server.1))
        .start()
        .await;
    let prefix = prefix("nats_tls");
    let sub = Subscriber::builder()
        // `tls://` and `nats://` with `required` both work; one of each.
        .nats(tls_nats(
            &format!("tls://127.0.0.1:{}", server.port()),
            &[&pki.ca],
            None,
        ))
        .prefix(&prefix)
        .start()
        .await
        .expect("a subscriber that trusts the CA starts");
    let mut events = sub.events();
    let _announcer = Announcer::builder("svc", "127.0.0.1:9000")
        .nats(tls_nats(&server.url(), &[&pki.ca], None))
        .prefix(&prefix)
        .instance("a1")
        .interval(INTERVAL)
        .start()
        .await
        .expect("an announcer that trusts the CA starts");
    wait_event(&mut events, EVENT_WAIT, "Added(a1) over TLS", |e| {
        is_added(e, "a1")
    })
    .await;
    for (what, roots) in [
        ("the system's roots only", Vec::new()),
        ("another CA", vec![stranger.ca.as_path()]),
    ] {
        let err = refused_subscriber(tls_nats(&server.url(), &roots, None), &prefix).await;
        assert_eq!(
            err.kind(),
            SubscriberErrorKind::Connect,
            "a client trusting {what} must not connect: {err}"
        );
    }

    // Client certificates required.
    let mut mutual = herald_testkit::NatsTls::new(&pki.server.0, &pki.server.1);
    mutual.ca_file = Some(pki.ca.clone());
    mutual.verify = true;
    let server = NatsServer::builder().tls(mutual).start().await;
    let sub = Subscriber::builder()
        .nats(tls_nats(&server.url(), &[&pki.ca], Some(&pki.client)))
        .prefix(&prefix)
        .start()
        .await
        .expect("a subscriber with a client certificate starts");
    let mut events = sub.events();
    let _announcer = Announcer::builder("svc", "127.0.0.1:9000")
        .nats(tls_nats(&server.url(), &[&pki.ca], Some(&pki.client)))
        .prefix(&prefix)
        .instance("a2")
        .interval(INTERVAL)
        .start()
        .await
        .expect("an announcer with a client certificate starts");
    wait_event(&mut events, EVENT_WAIT, "Added(a2) over mutual TLS", |e| {
        is_added(e, "a2")
    })
    .await;
    let err = refused_subscriber(tls_nats(&server.url(), &[&pki.ca], None), &prefix).await;
    assert_eq!(
        err.kind(),
        SubscriberErrorKind::Connect,
        "a client without a certificate must not connect: {err}"
    );
    let foreign = (stranger.client.0.clone(), stranger.client.1.clone());
    let err =
        refused_subscriber(tls_nats(&server.url(), &[&pki.ca], Some(&foreign)), &prefix).await;
    assert_eq!(
        err.kind(),
        SubscriberErrorKind::Connect,
        "a client certificate from another CA must not connect: {err}"
    );
}

/// NATS settings with TLS required, trusting `roots`, presenting `client` if given.
fn tls_nats(url: &str, roots: &[&Path], client: Option<&(PathBuf, PathBuf)>) -> NatsConfig {
    let mut config = nats(url);
    config.tls = herald_shared::NatsTls {
        root_certificates: roots.iter().map(|p| p.to_path_buf()).collect(),
        client_certificate: client.cloned(),
        required: true,
    };
    config.connect_timeout = REFUSAL_TIMEOUT;
    config
}

/// Starts a subscriber that must be refused, and checks it is refused within its connect
/// timeout plus a margin.
async fn refused_subscriber(config: NatsConfig, prefix: &str) -> herald_subscriber::Error {
    let timeout = config.connect_timeout;
    let started = Instant::now();
    let err = Subscriber::builder()
        .nats(config)
        .prefix(prefix)
        .start()
        .await
        .expect_err("this client must be refused");
    let took = started.elapsed();
    assert!(
        took < timeout + REFUSAL_MARGIN,
        "a refused client fails within its connect timeout: took {took:?} ({err})"
    );
    err
}

// ---------------------------------------------------------------------------------------------
// NATS permissions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_permissions_keep_a_client_without_publish_rights_from_injecting_an_instance() {
    let _serial = SERIAL.lock().await;
    init_tracing();
    let prefix = prefix("nats_perms");
    let server = NatsServer::builder()
        .config(permissions_config(&prefix))
        .start()
        .await;
    let login = |user: &str| {
        let mut config = nats(&server.url());
        config.auth = NatsAuth::UserPassword {
            user: user.into(),
            password: format!("{user}-pw"),
        };
        config
    };

    let sub = Subscriber::builder()
        .nats(login("subscriber"))
        .prefix(&prefix)
        .start()
        .await
        .expect("the subscriber starts with the documented permissions");
    let mut events = sub.events();
    let announcer = Announcer::builder("svc", "127.0.0.1:9000")
        .nats(login("announcer"))
        .prefix(&prefix)
        .instance("legit")
        .interval(INTERVAL)
        .load(0.1)
        .start()
        .await
        .expect("the announcer starts with the documented permissions");
    wait_event(&mut events, EVENT_WAIT, "Added(legit)", |e| {
        is_added(e, "legit")
    })
    .await;
    // An announcer with the subscriber's rights cannot announce: its start says so instead
    // of looking healthy while the server drops every token.
    let err = Announcer::builder("svc", "127.0.0.1:9001")
        .nats(login("subscriber"))
        .prefix(&prefix)
        .instance("no-rights")
        .interval(INTERVAL)
        .start()
        .await
        .expect_err("a user without publish rights cannot announce");
    assert_eq!(err.kind(), AnnouncerErrorKind::Publish, "{err}");
    let said = herald_e2e::chain(&err);
    assert!(
        said.contains("may not publish to")
            && said.contains(&Subjects::new(&prefix).unwrap().announce("svc")),
        "names the subject and the missing permission: {said}"
    );

    // A subscriber started now fills its view through a probe, answered at once.
    let late = Subscriber::builder()
        .nats(login("subscriber"))
        .prefix(&prefix)
        .start()
        .await
        .expect("a second subscriber starts");
    eventually(
        EVENT_WAIT,
        "an answer to the late subscriber's probe",
        || announcer.stats().probe_answers >= 1 && late.get("svc", "legit").is_some(),
    )
    .await;

    // The rogue has the subscriber's rights: it may read tokens and send probes, not announce.
    let (violations_tx, mut violations) = tokio::sync::mpsc::unbounded_channel();
    let rogue =
        async_nats::ConnectOptions::with_user_and_password("rogue".into(), "rogue-pw".into())
            .event_callback(move |event| {
                let tx = violations_tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(server.url())
            .await
            .expect("the rogue logs in");
    let subjects = Subjects::new(&prefix).unwrap();
    let mut injected = token("svc", "rogue-1", 1, Duration::from_secs(60));
    injected.addr = "10.66.6.6:666".into();
    let mut hijack = token("svc", "legit", u64::MAX / 2, Duration::from_secs(60));
    hijack.load = 999.0;
    for t in [&injected, &hijack] {
        rogue
            .publish(subjects.announce("svc"), encode(t).into())
            .await
            .expect("the client library sends it; the server refuses it");
    }
    // The server reads one connection's protocol lines in order: once this round trip is
    // back, both publishes above have been judged.
    round_trip::confirm_subscriptions(&rogue, EVENT_WAIT)
        .await
        .expect("the rogue may use its inbox");
    let violation = tokio::time::timeout(EVENT_WAIT, violations.recv())
        .await
        .expect("the server reports the refused publish")
        .expect("event channel open");
    assert!(
        violation.contains("Permissions Violation for Publish"),
        "the server refused the rogue's publish: {violation}"
    );

    // A marker sent by the legitimate announcer after the rogue's tokens were refused: once the
    // subscriber shows it, it has processed everything that could have come before.
    announcer.set_load(0.7).expect("valid load");
    wait_event(
        &mut events,
        EVENT_WAIT,
        "the marker load 0.7",
        |e| matches!(e, Event::Updated(i) if i.id() == "legit" && i.load() == 0.7),
    )
    .await;
    for s in [&sub, &late] {
        assert!(
            s.get("svc", "rogue-1").is_none(),
            "a client without publish rights must not inject an instance"
        );
        assert_eq!(s.instances("svc").len(), 1, "only the legitimate instance");
        assert_ne!(
            s.get("svc", "legit").map(|i| i.load()),
            Some(999.0),
            "nor change a legitimate one"
        );
        assert_eq!(
            s.stats().rejected_total(),
            0,
            "the refused tokens never reached a subscriber"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_accounts_deliver_a_dead_announcers_disconnect_to_the_subscriber_user() {
    let _serial = SERIAL.lock().await;
    init_tracing();
    let prefix = prefix("nats_advisories");
    let block = readme_block("HERALD_ANNOUNCER = {");
    let config = block.replace("\"herald.", &format!("\"{prefix}."));
    assert!(
        config.contains("system_account")
            && config.contains(&format!("\"{prefix}.sys.disconnect\"")),
        "README's advisory accounts have an unexpected shape:\n{block}"
    );
    let server = NatsServer::builder()
        .config(format!(
            "HERALD_SYSTEM_PASSWORD: \"system-pw\"\nHERALD_ANNOUNCER_PASSWORD: \"announcer-pw\"\n\
             HERALD_SUBSCRIBER_PASSWORD: \"subscriber-pw\"\n{config}"
        ))
        .start()
        .await;
    let login = |user: &str| {
        let mut config = nats(&server.url());
        config.auth = NatsAuth::UserPassword {
            user: user.into(),
            password: format!("{user}-pw"),
        };
        config
    };
    let sub = Subscriber::builder()
        .nats(login("subscriber"))
        .prefix(&prefix)
        .disconnect_advisories(format!("{prefix}.sys.disconnect"))
        .start()
        .await
        .expect("the subscriber starts with the documented permissions");
    eventually(EVENT_WAIT, "the start-up check's own advisory", || {
        sub.stats().disconnect_advisories >= 1
    })
    .await;
    let mut events = sub.events();
    let announcer = Announcer::builder("svc", "127.0.0.1:9000")
        .nats(login("announcer"))
        .prefix(&prefix)
        .instance("mortal")
        .interval(INTERVAL)
        .start()
        .await
        .expect("the announcer starts with the documented permissions");
    wait_event(&mut events, EVENT_WAIT, "Added(mortal)", |e| {
        is_added(e, "mortal")
    })
    .await;
    // Dropped without shutdown: no goodbye, and its own connection closes.
    drop(announcer);
    wait_event(
        &mut events,
        EVENT_WAIT,
        "Removed(mortal, disconnected)",
        |e| {
            matches!(e, Event::Removed { instance, cause }
            if instance.id() == "mortal" && *cause == herald_subscriber::RemovalCause::Disconnected)
        },
    )
    .await;
    assert!(
        !server.log_tail().contains("Violation"),
        "no permission is missing:\n{}",
        server.log_tail()
    );
}

/// README.md's NATS permissions for `prefix`, with the passwords `{user}-pw` and one more
/// user, `rogue`, with the subscriber's permissions.
fn permissions_config(prefix: &str) -> String {
    let block = readme_block("authorization {");
    let config = block
        .replace("\"herald.", &format!("\"{prefix}."))
        .replace(
            "  users = [\n",
            "  users = [\n    { user: rogue, password: \"rogue-pw\", permissions: $HERALD_SUBSCRIBER }\n",
        );
    assert!(
        config.contains(&format!("{prefix}.announce.")) && config.contains("user: rogue"),
        "README's NATS permissions have an unexpected shape:\n{block}"
    );
    // The README takes the passwords from the environment; variables defined at the top of
    // the file take precedence.
    format!(
        "HERALD_ANNOUNCER_PASSWORD: \"announcer-pw\"\nHERALD_SUBSCRIBER_PASSWORD: \"subscriber-pw\"\n{config}"
    )
}

// ---------------------------------------------------------------------------------------------
// etcd logins and TLS
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_logins_with_least_privilege_roles_and_a_wrong_password_refused() {
    let _serial = SERIAL.lock().await;
    init_tracing();
    let nats_server = NatsServer::start().await;
    let etcd = EtcdServer::builder().auth("root-pw").start().await;
    let prefix = prefix("etcd_auth");
    for line in readme_block("etcdctl role add").lines() {
        let args: Vec<String> = line
            .split_whitespace()
            .skip(1)
            .map(|a| {
                a.replace("/herald/", &format!("/{prefix}/"))
                    .replace("$HERALD_ANNOUNCER_PASSWORD", "announcer-pw")
                    .replace("$HERALD_SUBSCRIBER_PASSWORD", "subscriber-pw")
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = etcd.etcdctl(&args).await;
        assert!(
            out.status.success(),
            "README's `{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let login = |user: &str, password: &str| {
        let mut config = herald_e2e::etcd(&etcd.endpoints());
        config.credentials = Some((user.to_owned(), password.to_owned()));
        config.connect_timeout = REFUSAL_TIMEOUT;
        config
    };
    let announcer_login = login("herald-announcer", "announcer-pw");
    let subscriber_login = login("herald-subscriber", "subscriber-pw");

    let announcer = registered_announcer(&nats_server, &prefix, "a1", announcer_login.clone())
        .await
        .expect("an announcer with its role registers");
    assert!(announcer.epoch() > 0, "registered in etcd");
    let sub = Subscriber::builder()
        .nats(nats(&nats_server.url()))
        .etcd(subscriber_login.clone())
        .prefix(&prefix)
        .start()
        .await
        .expect("a subscriber with its role lists and watches");
    assert_cold_start_listing(&sub, &announcer);

    // Shutdown revokes the lease, which needs write access to the key: the role has it.
    let mut events = sub.events();
    announcer
        .shutdown()
        .await
        .expect("the announcer may revoke its lease");
    wait_event(
        &mut events,
        EVENT_WAIT,
        "a1 removed",
        |e| matches!(e, Event::Removed { instance, .. } if instance.id() == "a1"),
    )
    .await;
    let key = Subjects::new(&prefix).unwrap().key("svc", "a1");
    let out = etcd.etcdctl(&["get", &key]).await;
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "the registration is gone after shutdown"
    );

    // A subscriber's credentials cannot register.
    let err = registered_announcer(&nats_server, &prefix, "a2", subscriber_login)
        .await
        .expect_err("a read-only user must not register");
    assert_eq!(err.kind(), AnnouncerErrorKind::EtcdAuth, "{err}");

    // Wrong passwords, on both sides.
    let started = Instant::now();
    let err = registered_announcer(
        &nats_server,
        &prefix,
        "a3",
        login("herald-announcer", "wrong"),
    )
    .await
    .expect_err("a wrong password must be refused");
    assert_eq!(err.kind(), AnnouncerErrorKind::EtcdAuth, "{err}");
    assert!(
        err.to_string().contains("refused the credentials"),
        "the error says why: {err}"
    );
    assert!(started.elapsed() < REFUSAL_TIMEOUT + REFUSAL_MARGIN);
    let started = Instant::now();
    let err = Subscriber::builder()
        .nats(nats(&nats_server.url()))
        .etcd(login("herald-subscriber", "wrong"))
        .prefix(&prefix)
        .start()
        .await
        .expect_err("a wrong password must be refused");
    assert_eq!(err.kind(), SubscriberErrorKind::Etcd, "{err}");
    assert!(
        herald_e2e::chain(&err).contains("refused the credentials"),
        "the error says why: {}",
        herald_e2e::chain(&err)
    );
    assert!(started.elapsed() < REFUSAL_TIMEOUT + REFUSAL_MARGIN);

    // No credentials at all, with authentication on: a login problem, not an outage.
    let mut anonymous = login("herald-announcer", "unused");
    anonymous.credentials = None;
    let started = Instant::now();
    let err = registered_announcer(&nats_server, &prefix, "a4", anonymous)
        .await
        .expect_err("etcd wants a login");
    assert_eq!(err.kind(), AnnouncerErrorKind::EtcdAuth, "{err}");
    assert!(
        started.elapsed() < REFUSAL_TIMEOUT + REFUSAL_MARGIN,
        "refused at once: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_a_private_ca_and_with_client_certificates() {
    let _serial = SERIAL.lock().await;
    init_tracing();
    let pki = Pki::new();
    let nats_server = NatsServer::start().await;
    let prefix = prefix("etcd_tls");
    let tls = |client: Option<&(PathBuf, PathBuf)>| herald_shared::EtcdTls {
        ca_certificate: Some(pki.ca.clone()),
        client_certificate: client.cloned(),
        domain: None,
    };

    for client_cert_auth in [false, true] {
        let etcd = EtcdServer::builder()
            .tls(herald_testkit::EtcdTls {
                cert_file: pki.server.0.clone(),
                key_file: pki.server.1.clone(),
                trusted_ca_file: Some(pki.ca.clone()),
                client_cert_auth,
                client_cert: Some(pki.client.clone()),
            })
            .start()
            .await;
        let config = |tls: Option<herald_shared::EtcdTls>| {
            let mut config = herald_e2e::etcd(&etcd.endpoints());
            config.tls = tls;
            config.connect_timeout = REFUSAL_TIMEOUT;
            config
        };
        let good = config(Some(tls(Some(&pki.client))));
        let id = format!("a-{client_cert_auth}");
        let announcer = registered_announcer(&nats_server, &prefix, &id, good.clone())
            .await
            .expect("an announcer trusting the CA registers over TLS");
        assert!(announcer.epoch() > 0);
        let sub = Subscriber::builder()
            .nats(nats(&nats_server.url()))
            .etcd(good)
            .prefix(&prefix)
            .start()
            .await
            .expect("a subscriber trusting the CA lists over TLS");
        assert_cold_start_listing(&sub, &announcer);

        let mut refused = vec![
            (
                "the system's roots",
                config(Some(herald_shared::EtcdTls::default())),
            ),
            ("plain HTTP", {
                let mut c = config(None);
                c.endpoints = vec![etcd.endpoint().replace("https://", "http://")];
                c
            }),
        ];
        if client_cert_auth {
            refused.push(("no client certificate", config(Some(tls(None)))));
        }
        for (what, config) in refused {
            let started = Instant::now();
            let err = Subscriber::builder()
                .nats(nats(&nats_server.url()))
                .etcd(config)
                .prefix(&prefix)
                .start()
                .await
                .expect_err(what);
            assert_eq!(err.kind(), SubscriberErrorKind::Etcd, "{what}: {err}");
            assert!(
                started.elapsed() < REFUSAL_TIMEOUT + REFUSAL_MARGIN,
                "{what}: refused within the connect timeout, took {:?}",
                started.elapsed()
            );
        }
        announcer.shutdown().await.expect("clean shutdown over TLS");
    }
}

/// An announcer of `svc`/`id` registered in etcd with `etcd`.
async fn registered_announcer(
    nats_server: &NatsServer,
    prefix: &str,
    id: &str,
    etcd: EtcdConfig,
) -> Result<AnnouncerHandle, herald_announcer::Error> {
    Announcer::builder("svc", "127.0.0.1:9000")
        .nats(nats(&nats_server.url()))
        .etcd(etcd)
        .prefix(prefix)
        .instance(id)
        .interval(INTERVAL)
        .start()
        .await
}

/// The subscriber, just started, lists `announcer` from etcd with its epoch.
fn assert_cold_start_listing(sub: &Subscriber, announcer: &AnnouncerHandle) {
    assert!(
        sub.stats().registrations >= 1,
        "the listing was read from etcd: {:?}",
        sub.stats()
    );
    let listed = sub
        .get("svc", announcer.instance())
        .expect("listed as soon as start() returns");
    assert_eq!(
        listed.epoch(),
        announcer.epoch(),
        "with its registration's epoch"
    );
    assert!(listed.epoch() > 0);
}

// ---------------------------------------------------------------------------------------------
// Garbage flood
// ---------------------------------------------------------------------------------------------

/// Garbage messages in the flood.
const FLOOD: usize = 100_000;
/// The valid instance's TTL during the flood.
const FLOOD_TTL: Duration = Duration::from_secs(3);
/// Oversized payloads are this large (the limit is 4 KiB).
const OVERSIZED: usize = 5 * 1024;
/// How much this process's resident memory may grow across the flood. The flood carries about
/// 135 MiB of payload (a quarter of its messages are 5 KiB), so keeping it, or anything per
/// message, would not fit. What does show: the messages waiting in the subscription buffer
/// (up to 65,536) at the flood's peak, whose pages the allocator keeps after they are freed;
/// 8 to 62 MiB in 15 runs on a 2-core machine (debug build), hence the headroom.
const RSS_GROWTH_BOUND_KIB: u64 = 96 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_flood_is_counted_and_the_valid_instance_stays_listed_and_current() {
    let _serial = SERIAL.lock().await;
    init_tracing();
    let server = NatsServer::start().await;
    let prefix = prefix("flood");
    let sub = herald_e2e::subscriber(&server.url(), &prefix).await;
    let mut events = sub.events();
    let announcer = Arc::new(
        Announcer::builder("svc", "127.0.0.1:9000")
            .nats(nats(&server.url()))
            .prefix(&prefix)
            .instance("legit")
            .interval(INTERVAL)
            // What is tested is that garbage evicts nothing; a TTL of 3 intervals could run
            // out while a loaded machine works through the flood.
            .ttl(FLOOD_TTL)
            .start()
            .await
            .expect("announcer starts"),
    );
    wait_event(&mut events, EVENT_WAIT, "Added(legit)", |e| {
        is_added(e, "legit")
    })
    .await;

    // Everything the subscriber says about `legit` from now on: never removed, never lagging,
    // and every load it shows is one the announcer set.
    let watcher = tokio::spawn(async move {
        let mut loads = Vec::new();
        while let Some(event) = events.next().await {
            match event {
                Event::Updated(i) if i.id() == "legit" => loads.push((Instant::now(), i.load())),
                Event::Removed { instance, cause } if instance.id() == "legit" => {
                    panic!("the valid instance was removed ({cause:?}) during the flood")
                }
                Event::Lagged { missed } => panic!("the event watcher lagged by {missed}"),
                _ => {}
            }
        }
        loads
    });
    // The announcer's load changes every 50 ms (by more than its early-send delta).
    let stop_loads = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn({
        let announcer = announcer.clone();
        let stop = stop_loads.clone();
        async move {
            let mut set = Vec::new();
            let mut step = 0u32;
            while !stop.load(Ordering::Relaxed) {
                step += 1;
                let load = (step % 10) as f32 * 0.5;
                announcer.set_load(load).expect("valid load");
                set.push(load);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            set
        }
    });

    let publisher = RawPublisher::connect(&server.url(), &prefix).await;
    let mut marker_events = sub.events();
    let garbage = Garbage::new();
    let before = sub.stats();
    let in_before = sub
        .client()
        .statistics()
        .in_messages
        .load(Ordering::Relaxed);
    let rss_before = rss_kib();
    let flood_start = Instant::now();
    let mut sent: BTreeMap<&'static str, u64> = BTreeMap::new();
    for n in 0..FLOOD {
        let (service, bytes, reason) = garbage.payload(n);
        *sent.entry(reason.label()).or_default() += 1;
        publisher.bytes(&service, bytes).await;
    }
    publisher.flush().await;
    // NATS keeps one publisher's order: once this marker is listed, every garbage message
    // that reached the subscriber has been judged.
    let mut marker_seq = 1;
    loop {
        publisher
            .token(&token("marker", "m", marker_seq, Duration::from_secs(30)))
            .await;
        let seen = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(e) = marker_events.next().await {
                if is_added(&e, "m") {
                    return;
                }
            }
        })
        .await;
        if seen.is_ok() {
            break;
        }
        // Only a slow-consumer drop loses the marker; send another.
        assert!(marker_seq < 10, "the marker never arrived");
        marker_seq += 1;
    }
    let flood_took = flood_start.elapsed();
    let rss_after = rss_kib();

    // The load kept following the announcer during the flood, and the latest load arrives
    // after it (an early token, or the next periodic one).
    stop_loads.store(true, Ordering::Relaxed);
    let set_loads = loader.await.expect("load task");
    announcer.set_load(42.0).expect("valid load");
    let final_set = Instant::now();
    eventually(Duration::from_secs(3), "the latest load", || {
        sub.get("svc", "legit").is_some_and(|i| i.load() == 42.0)
    })
    .await;
    let final_visible = final_set.elapsed();

    let stats = sub.stats();
    let in_after = sub
        .client()
        .statistics()
        .in_messages
        .load(Ordering::Relaxed);
    drop(sub);
    let loads = watcher.await.expect("watcher saw no removal and no lag");
    let during: Vec<f32> = loads
        .iter()
        .filter(|(at, _)| *at > flood_start && at.duration_since(flood_start) < flood_took)
        .map(|(_, l)| *l)
        .collect();
    eprintln!(
        "flood: {FLOOD} messages in {flood_took:?}; rejected {} ({:?}); slow-consumer events {}; \
         loads seen during the flood {}; final load visible after {final_visible:?}; \
         RSS {rss_before} KiB -> {rss_after} KiB (growth {} KiB)",
        stats.rejected_total() - before.rejected_total(),
        stats
            .rejected
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.label(), *n))
            .collect::<Vec<_>>(),
        stats.slow_consumer_events,
        during.len(),
        rss_after.saturating_sub(rss_before),
    );

    // Every message that reached the subscriber is accounted for.
    let received = stats.received - before.received;
    let rejected = stats.rejected_total() - before.rejected_total();
    let settled = (stats.accepted - before.accepted)
        + (stats.duplicate_drops - before.duplicate_drops)
        + (stats.stale_epoch_drops - before.stale_epoch_drops)
        + (stats.goodbye_unknown_drops - before.goodbye_unknown_drops)
        + (stats.unregistered_drops - before.unregistered_drops);
    assert_eq!(
        rejected + settled,
        received,
        "every received message is either a counted reject or a judged token: {stats:?}"
    );
    // What async-nats dropped for a full buffer never reached the subscriber's counters.
    let dropped = (in_after - in_before) - received;
    assert!(
        rejected as usize <= FLOOD && rejected + dropped >= FLOOD as u64,
        "rejects ({rejected}) plus drops ({dropped}) cover the {FLOOD} garbage messages"
    );
    if stats.slow_consumer_events == 0 {
        assert_eq!(dropped, 0, "no drop without a slow-consumer report");
        for reason in Reject::all() {
            assert_eq!(
                stats.rejected(reason) - before.rejected(reason),
                sent.get(reason.label()).copied().unwrap_or(0),
                "every garbage message counted under its reason ({reason})"
            );
        }
    } else {
        assert!(
            dropped > 0,
            "a slow-consumer report means messages were dropped"
        );
    }
    assert_eq!(
        stats.expirations + stats.goodbyes + stats.deregistrations + stats.fenced,
        0,
        "nothing was removed"
    );
    assert_eq!(
        stats.instances, 2,
        "legit and the marker; no garbage became an instance"
    );
    assert!(
        during.len() >= 3,
        "the load kept following the announcer during the flood: {during:?}"
    );
    assert!(
        loads
            .iter()
            .all(|(_, l)| *l == 42.0 || set_loads.contains(l)),
        "every load shown is one the announcer set: {loads:?}"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < RSS_GROWTH_BOUND_KIB,
        "resident memory grew by {} KiB across the flood (bound {RSS_GROWTH_BOUND_KIB} KiB)",
        rss_after.saturating_sub(rss_before)
    );
}

/// The flood's payloads, made on the fly from a few templates so that the test itself holds
/// little memory.
struct Garbage {
    /// A valid token of `legit` with an absurd load: cut short, or sent on other subjects.
    legit: Token,
    legit_bytes: Vec<u8>,
    oversized: bytes::Bytes,
}

impl Garbage {
    fn new() -> Garbage {
        let mut legit = token("svc", "legit", u64::MAX / 2, Duration::from_secs(3_600));
        legit.load = 999.0;
        Garbage {
            legit_bytes: encode(&legit),
            legit,
            oversized: bytes::Bytes::from(vec![0x90; OVERSIZED]),
        }
    }

    /// Message `n`: the service whose subject it goes to, its bytes, and the reason it must be
    /// rejected for. A quarter each: random bytes, truncated tokens, oversized payloads, and
    /// valid tokens on the wrong subject. Spoofs name a new service or subject each time, so
    /// that any state kept per name would grow with the flood.
    fn payload(&self, n: usize) -> (String, bytes::Bytes, Reject) {
        let mut rng = fastrand::Rng::with_seed(0x5eed ^ n as u64);
        let svc = || "svc".to_owned();
        match n % 4 {
            0 => {
                // 0xc1 is never used by MessagePack: whatever follows, this is not a token.
                let len = rng.usize(1..=512);
                let mut b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                b[0] = 0xc1;
                (svc(), b.into(), Reject::Malformed)
            }
            1 => {
                let cut = rng.usize(1..self.legit_bytes.len());
                let b = self.legit_bytes[..cut].to_vec();
                (svc(), b.into(), Reject::Malformed)
            }
            2 => (svc(), self.oversized.clone(), Reject::Oversized),
            _ if n % 8 == 3 => {
                // The valid instance's token, on another service's subject.
                let b = self.legit_bytes.clone();
                (format!("spoof{n}"), b.into(), Reject::SubjectMismatch)
            }
            _ => {
                // Another service's token, on the valid instance's subject.
                let mut t = self.legit.clone();
                t.service = format!("spoof{n}");
                t.instance = format!("i{n}");
                (svc(), encode(&t).into(), Reject::SubjectMismatch)
            }
        }
    }
}

/// This process's resident set size in KiB (`VmRSS` of `/proc/self/status`, the same figure as
/// `/proc/self/statm`'s second field, without needing the page size).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

// ---------------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------------

/// Encodes a valid token.
fn encode(t: &Token) -> Vec<u8> {
    herald_shared::codec::encode(t).expect("valid token")
}

/// The fenced code block of README.md's "Securing NATS and etcd" section whose first line
/// starts with `first_line`.
fn readme_block(first_line: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).expect("read README.md");
    let section = readme
        .split("\n## Securing NATS and etcd\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README.md has a section \"Securing NATS and etcd\"");
    section
        .split("```")
        .skip(1)
        .step_by(2)
        .filter_map(|block| block.split_once('\n').map(|(_, body)| body))
        .find(|body| body.starts_with(first_line))
        .unwrap_or_else(|| panic!("no code block starting with `{first_line}` in the section"))
        .to_owned()
}

/// Certificates made for one test: a CA, and a server certificate (for 127.0.0.1 and
/// localhost) and a client certificate signed by it, as PEM files in a temp dir.
struct Pki {
    _dir: TempDir,
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::Builder::new()
            .prefix("herald-pki-")
            .tempdir()
            .expect("temp dir for certificates");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };

        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "herald test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |names: &[&str], cn: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = usages;
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        // The server certificate also serves as a client one: etcd's own gateway dials the
        // member with it when client certificates are required.
        let (server_cert, server_key) = leaf(
            &["127.0.0.1", "localhost"],
            "herald test server",
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (client_cert, client_key) = leaf(
            &[],
            "herald-client",
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        Pki {
            ca: write("ca.pem", ca_pem),
            server: (
                write("server.pem", server_cert),
                write("server-key.pem", server_key),
            ),
            client: (
                write("client.pem", client_cert),
                write("client-key.pem", client_key),
            ),
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_permission_lost_later_is_the_announcers_error_state() {
    let _serial = SERIAL.lock().await;
    init_tracing();
    let prefix = prefix("perm_lost");
    // Permissions written in place: nats-server 2.9 does not reload the README's variables.
    let publish = format!("publish: [\"{prefix}.announce.*\", \"{prefix}.probe.*\", \"_INBOX.>\"]");
    let config = format!(
        "authorization {{\n  users = [\n    {{ user: announcer, password: \"announcer-pw\", permissions: {{ {publish}, subscribe: [\"{prefix}.announce.*\", \"{prefix}.probe\", \"{prefix}.probe.*\", \"_INBOX.>\"] }} }}\n  ]\n}}\n"
    );
    let server = NatsServer::builder().config(&config).start().await;
    let mut config = nats(&server.url());
    config.auth = NatsAuth::UserPassword {
        user: "announcer".into(),
        password: "announcer-pw".into(),
    };
    let announcer = Announcer::builder("svc", "127.0.0.1:9000")
        .nats(config)
        .prefix(&prefix)
        .instance("demoted")
        .interval(INTERVAL)
        .start()
        .await
        .expect("the announcer starts with the documented permissions");
    assert_eq!(announcer.stats().permission_violations, 0);

    // The operator takes the right to publish tokens away, and reloads.
    let file = server.dir().join("nats-server.conf");
    let text = std::fs::read_to_string(&file).unwrap();
    let demoted = text.replace(&publish, "publish: [\"_INBOX.>\"]");
    assert_ne!(
        text, demoted,
        "the config names the announcer's permissions"
    );
    std::fs::write(&file, demoted).unwrap();
    let pid = server.pid().expect("the server runs").to_string();
    let reloaded = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(reloaded.success());
    // Each refused token is counted: the announcer's stats show it is no longer heard.
    eventually(Duration::from_secs(10), "refused tokens counted", || {
        announcer.stats().permission_violations >= 2
    })
    .await;
    announcer.shutdown().await.ok();
}
