//! Early tokens on load change: immediate beyond the delta, rate-limited, never dropped.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use common::{Observer, announce_subject, announcer, ms_between};
use herald_announcer::{Connection, ErrorKind};
use herald_testkit::NatsServer;
use tokio::time::Instant;

const GAP: Duration = Duration::from_millis(100);
/// How often `load_fn` is sampled in `load_fn_is_sampled_and_sent_early`.
const SAMPLE: Duration = Duration::from_millis(50);

#[tokio::test]
async fn set_load_beyond_the_delta_sends_an_early_token() {
    let server = NatsServer::start().await;
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;
    let announcer = announcer(&server)
        .interval(Duration::from_secs(5))
        .load(0.2)
        .load_delta(0.1)
        .min_early_gap(GAP)
        .start()
        .await
        .unwrap();
    let first = observer
        .expect(Duration::from_secs(1), "the first token")
        .await;
    // Past the rate limit of the first token, so that an early token would go out at once.
    tokio::time::sleep(GAP + Duration::from_millis(20)).await;

    announcer.set_load(0.25).unwrap();
    // The announcer's task takes requests in order: the metadata token goes out after it
    // took the load (it carries it), and after any early token that load would have caused.
    announcer.set_meta([("mark", "1")]).await.unwrap();
    // The next periodic token is 5 s away: the next token is the metadata one.
    let marked = observer
        .expect(Duration::from_secs(2), "the metadata token")
        .await;
    assert_eq!(marked.token.load, 0.25, "the task took the load first");
    assert_eq!(
        marked.token.seq,
        first.token.seq + 1,
        "a move within the delta is not sent early"
    );
    assert_eq!(announcer.stats().early_tokens, 0);
    // Past the rate limit of the metadata token, so the early token may go out at once.
    tokio::time::sleep(GAP + Duration::from_millis(20)).await;

    let asked = Instant::now();
    announcer.set_load(0.9).unwrap();
    let early = observer
        .expect(Duration::from_secs(2), "an early token")
        .await;
    let latency = ms_between(asked, early.at);
    assert_eq!(early.token.load, 0.9);
    assert_eq!(early.token.seq, marked.token.seq + 1);
    assert_eq!(announcer.stats().early_tokens, 1);
    eprintln!("set_load -> early token: {latency:.2} ms");

    let err = announcer.set_load(f32::NAN).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(
        err.field(),
        Some("load"),
        "the error names the field: {err}"
    );
    assert!(
        announcer.set_load(-1.0).is_err(),
        "negative load is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_set_load_calls_give_at_most_one_early_token_per_gap() {
    let server = NatsServer::start().await;
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;
    let announcer = announcer(&server)
        .interval(Duration::from_secs(5))
        .min_early_gap(GAP)
        .start()
        .await
        .unwrap();
    observer
        .expect(Duration::from_secs(1), "the first token")
        .await;

    // 100 climbs of 0.5 over ~1 s, each beyond the delta, up to LAST.
    const LAST: f32 = 50.0;
    let sent_last = |s: &common::Seen| s.token.load == LAST;
    let watching = observer.collect_in_background(Duration::from_secs(5), sent_last);
    let started = Instant::now();
    for i in 1..=100 {
        let last = 0.5 * i as f32;
        announcer.set_load(last).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let spent = ms_between(started, Instant::now());
    let (mut observer, tokens) = watching.await.unwrap();
    let offsets: Vec<f64> = tokens.iter().map(|t| ms_between(started, t.at)).collect();

    let allowed = (spent / 100.0).ceil() as usize + 1;
    assert!(
        tokens.len() <= allowed,
        "{} early tokens in {spent:.0} ms, at most one per 100 ms ({allowed}): {offsets:.0?}",
        tokens.len()
    );
    assert!(
        tokens.len() >= 2,
        "rate-limited, not only the last: {} tokens in {spent:.0} ms",
        tokens.len()
    );
    // Gaps as the announcer stamped them when it sent each token, which a busy receiver
    // cannot bunch up (1 ms of slack for the millisecond stamps).
    let sent: Vec<u64> = tokens.iter().map(|t| t.token.sent_at_ms).collect();
    for w in sent.windows(2) {
        assert!(
            w[1] - w[0] >= 99,
            "early tokens are >= min_early_gap apart: sent at {sent:?} (ms)"
        );
    }
    assert_eq!(
        tokens.last().unwrap().token.load,
        LAST,
        "the last change is sent (rate-limited, not dropped)"
    );
    observer
        .expect_silence(GAP * 2, "no early token once the load is sent")
        .await;
    eprintln!(
        "{} early tokens over {spent:.0} ms of set_load",
        tokens.len()
    );
}

#[tokio::test]
async fn load_fn_is_sampled_and_sent_early() {
    let server = NatsServer::start().await;
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;
    let gauge = Arc::new(AtomicU32::new(0.1f32.to_bits()));
    let source = gauge.clone();
    let samples = Arc::new(AtomicU64::new(0));
    let sampled = samples.clone();
    let announcer = announcer(&server)
        .interval(Duration::from_secs(5))
        .load_fn(move || {
            sampled.fetch_add(1, Ordering::SeqCst);
            f32::from_bits(source.load(Ordering::SeqCst))
        })
        .load_sample_interval(SAMPLE)
        .min_early_gap(GAP)
        .start()
        .await
        .unwrap();
    observer
        .expect(Duration::from_secs(1), "the first token")
        .await;

    gauge.store(0.8f32.to_bits(), Ordering::SeqCst);
    // The next periodic token is 5 s away: a token within 2 s is the sampled one.
    let early = observer
        .expect(Duration::from_secs(2), "an early token from load_fn")
        .await;
    assert_eq!(early.token.load, 0.8);
    assert_eq!(announcer.stats().early_tokens, 1);

    let sent = announcer.stats().tokens_sent;
    gauge.store(f32::NAN.to_bits(), Ordering::SeqCst);
    // Every sample counted from here reads NaN. Once the first NaN sample is followed by
    // enough samples to span the early gap, any token it could have caused has gone out.
    let stored = samples.load(Ordering::SeqCst);
    let wanted = stored + 2 + GAP.div_duration_f64(SAMPLE).ceil() as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    while samples.load(Ordering::SeqCst) < wanted {
        assert!(
            Instant::now() < deadline,
            "load_fn not sampled {} times within 5 s",
            wanted - stored
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        announcer.stats().tokens_sent,
        sent,
        "an invalid sample is ignored, not sent"
    );

    // The next token, whatever its cause, carries the last valid sample.
    announcer.set_meta([("mark", "1")]).await.unwrap();
    let next = observer
        .expect(Duration::from_secs(2), "the metadata token")
        .await;
    assert_eq!(next.token.seq, early.token.seq + 1);
    assert_eq!(next.token.load, 0.8, "an invalid sample is not kept");
    assert_eq!(announcer.token().load, 0.8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_load_fn_stalls_no_other_announcer_on_the_connection() {
    let server = NatsServer::start().await;
    let client = Connection::new(async_nats::connect(server.url()).await.unwrap());
    let mut observer = Observer::new(&server.url(), &announce_subject()).await;
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    // Blocks its thread for a second at every sample, as a load source stuck on a lock or a
    // slow system call would.
    let slow = announcer(&server)
        .connection(&client)
        .instance("slow")
        .interval(Duration::from_secs(5))
        .load_fn(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(1));
            0.7
        })
        .load_sample_interval(Duration::from_millis(25))
        .start()
        .await
        .unwrap();
    let steady = announcer(&server)
        .connection(&client)
        .instance("steady")
        .interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "load_fn never sampled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // While the slow source blocks, the other announcer on the connection keeps its 100 ms
    // period: a scheduler blocked by the sample would send one token a second at best.
    let seen = observer.collect(Duration::from_millis(1_500)).await;
    let steady_tokens = seen.iter().filter(|s| s.token.instance == "steady").count();
    assert!(
        steady_tokens >= 8,
        "{steady_tokens} tokens of the other announcer in 1.5 s at a 100 ms period"
    );
    // The slow source's load still arrives, with the sample that blocked.
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.token().load != 0.7 {
        assert!(Instant::now() < deadline, "the slow sample never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    steady.shutdown().await.unwrap();
    slow.shutdown().await.unwrap();
}
