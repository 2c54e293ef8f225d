//! Probe answers: immediate, on both probe subjects, and coalesced.

mod common;

use std::time::Duration;

use common::{Observer, SERVICE, announce_subject, announcer, ms_between};
use herald_shared::Subjects;
use herald_testkit::NatsServer;
use tokio::time::Instant;

/// Probes arriving within this long of the last token are answered at last + 100 ms, so a
/// probe meant to be answered at once waits this long after the previous token first.
const COALESCING_WINDOW: Duration = Duration::from_millis(120);

#[tokio::test]
async fn a_probe_is_answered_at_once_on_either_probe_subject() {
    let server = NatsServer::start().await;
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;
    let announcer = announcer(&server)
        .interval(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    observer
        .expect(Duration::from_secs(1), "the first token")
        .await;
    let subjects = Subjects::default();

    let mut latencies = Vec::new();
    for probe in [subjects.probe(SERVICE), subjects.probe_all()] {
        tokio::time::sleep(COALESCING_WINDOW).await;
        let asked = Instant::now();
        observer
            .client
            .publish(probe.clone(), bytes::Bytes::new())
            .await
            .unwrap();
        // The next periodic token is 5 s away: an answer within 2 s is the probe's.
        let answer = observer
            .expect(Duration::from_secs(2), &format!("an answer to {probe}"))
            .await;
        latencies.push(ms_between(asked, answer.at));
    }
    assert_eq!(announcer.stats().probe_answers, 2);

    tokio::time::sleep(COALESCING_WINDOW).await;
    observer
        .client
        .publish(subjects.probe("another-service"), bytes::Bytes::new())
        .await
        .unwrap();
    observer
        .expect_silence(
            Duration::from_millis(300),
            "a probe for another service gets no answer",
        )
        .await;
    eprintln!("probe answer latency (ms): {latencies:.2?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_probes_is_answered_at_most_once_per_100_ms() {
    let server = NatsServer::start().await;
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;
    let announcer = announcer(&server)
        .interval(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    observer
        .expect(Duration::from_secs(1), "the first token")
        .await;
    tokio::time::sleep(COALESCING_WINDOW).await;

    let probe = Subjects::default().probe(SERVICE);
    let prober = observer.client.clone();
    let watching = observer.collect_in_background(Duration::from_millis(500), |_| false);
    let started = Instant::now();
    for _ in 0..50 {
        prober
            .publish(probe.clone(), bytes::Bytes::new())
            .await
            .unwrap();
    }
    prober.flush().await.unwrap();
    let burst = ms_between(started, Instant::now());
    let (_, answers) = watching.await.unwrap();
    let offsets: Vec<f64> = answers.iter().map(|a| ms_between(started, a.at)).collect();
    assert!(!answers.is_empty(), "a burst gets an answer");
    assert!(
        answers.len() <= 10,
        "50 probes are coalesced into a few answers, got {offsets:.1?}"
    );
    // Gaps as the announcer stamped them when it sent each answer: a busy receiver cannot
    // bunch them up (1 ms of slack for the millisecond stamps).
    let sent: Vec<u64> = answers.iter().map(|a| a.token.sent_at_ms).collect();
    for w in sent.windows(2) {
        assert!(
            w[1] - w[0] >= 99,
            "answers go out at most once per 100 ms: sent at {sent:?} (ms)"
        );
    }
    assert_eq!(
        announcer.stats().probe_answers,
        answers.len() as u64,
        "every answer is counted"
    );
    eprintln!("50-probe burst took {burst:.1} ms; answers at {offsets:.1?} ms");
}
