use std::time::Duration;

use tokio::time::Instant;

use super::{PROBE_GAP, Schedule, Timing, Why, jittered};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn timing(interval_ms: u64, min_early_gap_ms: u64, load_delta: f32) -> Timing {
    Timing {
        interval: ms(interval_ms),
        min_early_gap: ms(min_early_gap_ms),
        load_delta,
    }
}

/// The default-like timing of these tests: 1 s interval, 100 ms early gap, 0.1 delta.
fn default_timing() -> Timing {
    timing(1_000, 100, 0.1)
}

enum Input {
    Probe,
    Load(f32),
}

/// Drives a schedule the way the broadcast task does, on tokio's paused clock: each input is
/// applied at its offset (ms after the first token), the schedule is asked after every input
/// and every wake-up, and each token "sent" is recorded with its offset and reason.
async fn run(timing: Timing, inputs: &[(u64, Input)], until_ms: u64) -> Vec<(u64, Why)> {
    let start = Instant::now();
    let at = |offset: u64| start + ms(offset);
    let mut load = 0.0;
    let mut schedule = Schedule::new(timing, start, load, fastrand::Rng::with_seed(7));
    let mut sent = Vec::new();
    let mut inputs = inputs.iter().peekable();
    loop {
        let wake = match inputs.peek() {
            Some((offset, _)) => at(*offset).min(schedule.next_wake()),
            None => schedule.next_wake(),
        };
        if wake > at(until_ms) {
            return sent;
        }
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        let mut check = |schedule: &mut Schedule, load: f32| {
            if let Some(why) = schedule.due(now) {
                sent.push(((now - start).as_millis() as u64, why));
                schedule.published(now, load);
            }
        };
        while let Some((_, input)) = inputs.next_if(|(offset, _)| at(*offset) <= now) {
            match input {
                Input::Probe => schedule.probe(now),
                Input::Load(x) => {
                    load = *x;
                    schedule.load(now, load);
                }
            }
            check(&mut schedule, load);
        }
        check(&mut schedule, load);
    }
}

fn gaps(sent: &[(u64, Why)]) -> Vec<u64> {
    sent.windows(2).map(|w| w[1].0 - w[0].0).collect()
}

#[test]
fn jitter_stays_within_ten_percent_of_the_interval() {
    let interval = Duration::from_secs(1);
    assert_eq!(jittered(interval, 0.0), ms(900));
    assert_eq!(jittered(interval, 1.0), ms(1_100));
    assert_eq!(jittered(interval, 7.0), ms(1_100), "unit must be clamped");
    let mut rng = fastrand::Rng::with_seed(1);
    let samples: Vec<Duration> = (0..10_000).map(|_| jittered(interval, rng.f64())).collect();
    assert!(
        samples.iter().all(|d| (ms(900)..=ms(1_100)).contains(d)),
        "every jittered interval must lie within [0.9, 1.1] x interval"
    );
    let (min, max) = (samples.iter().min().unwrap(), samples.iter().max().unwrap());
    assert!(
        *min < ms(910) && *max > ms(1_090),
        "jitter must use the whole +-10 % band, saw {min:?}..{max:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn periodic_tokens_are_jittered_around_the_interval() {
    let sent = run(default_timing(), &[], 60_000).await;
    assert!(
        sent.iter().all(|(_, why)| *why == Why::Periodic),
        "without probes or load changes only periodic tokens go out"
    );
    assert!((54..=67).contains(&sent.len()), "about one token a second");
    let gaps = gaps(&sent);
    assert!(
        gaps.iter().all(|g| (900..=1_100).contains(g)),
        "periodic gaps must lie within [0.9, 1.1] x interval: {gaps:?}"
    );
    let distinct: std::collections::HashSet<_> = gaps.iter().collect();
    assert!(distinct.len() > 10, "periodic gaps must be jittered");
}

#[tokio::test(start_paused = true)]
async fn a_probe_after_a_quiet_spell_is_answered_at_once() {
    let sent = run(default_timing(), &[(500, Input::Probe)], 800).await;
    assert_eq!(sent, vec![(500, Why::Probe)], "a probe is answered at once");
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_probes_gets_one_answer_per_gap() {
    let burst: Vec<_> = (0..50).map(|i| (500 + i, Input::Probe)).collect();
    let sent = run(default_timing(), &burst, 800).await;
    assert_eq!(
        sent,
        vec![(500, Why::Probe), (600, Why::Probe)],
        "50 probes within 50 ms get the immediate answer plus one coalesced answer"
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_right_after_a_token_waits_for_the_gap() {
    let sent = run(default_timing(), &[(30, Input::Probe)], 800).await;
    let gap = PROBE_GAP.as_millis() as u64;
    assert_eq!(
        sent,
        vec![(gap, Why::Probe)],
        "a probe 30 ms after the first token is answered at first + 100 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn periodic_tokens_count_for_probe_coalescing() {
    let first = run(default_timing(), &[], 1_200).await[0].0;
    let sent = run(default_timing(), &[(first + 20, Input::Probe)], first + 500).await;
    assert_eq!(
        sent,
        vec![(first, Why::Periodic), (first + 100, Why::Probe)],
        "a probe 20 ms after a periodic token is answered 100 ms after that token"
    );
}

#[tokio::test(start_paused = true)]
async fn a_periodic_token_due_while_a_probe_waits_is_the_answer() {
    // A 90 ms interval: the next periodic token (81..=99 ms) falls due within the probe's gap.
    let fast = timing(90, 100, 0.1);
    let first = run(fast, &[], 200).await[0].0;
    let sent = run(fast, &[(first + 20, Input::Probe)], first + 100).await;
    assert_eq!(sent[0], (first, Why::Periodic));
    assert_eq!(
        sent[1].1,
        Why::Probe,
        "the token that answers is the answer: {sent:?}"
    );
    assert!(
        sent[1].0 < first + 100,
        "sent when the periodic one was due: {sent:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_load_jump_beyond_the_delta_goes_out_at_once() {
    let sent = run(default_timing(), &[(400, Input::Load(0.5))], 800).await;
    assert_eq!(
        sent,
        vec![(400, Why::Early)],
        "a jump of 0.5 > 0.1 is sent early"
    );
}

#[tokio::test(start_paused = true)]
async fn small_load_moves_wait_for_the_periodic_token() {
    let inputs = [(400, Input::Load(0.05)), (500, Input::Load(0.09))];
    let sent = run(default_timing(), &inputs, 850).await;
    assert!(sent.is_empty(), "moves within the delta send nothing early");
}

#[tokio::test(start_paused = true)]
async fn early_tokens_are_rate_limited_not_dropped() {
    // The load climbs by 0.5 every 5 ms from 300 ms to 1295 ms: every sample is beyond the
    // delta, so tokens go out as fast as the 100 ms gap allows, and the last climb is sent.
    let inputs: Vec<_> = (0..200)
        .map(|i| (300 + 5 * i, Input::Load(0.5 * (i + 1) as f32)))
        .collect();
    let sent = run(default_timing(), &inputs, 2_000).await;
    let early: Vec<_> = sent.iter().filter(|(_, w)| *w == Why::Early).collect();
    assert_eq!(
        early.len(),
        11,
        "one early token per 100 ms from 300 to 1300"
    );
    assert_eq!(
        early.first().unwrap().0,
        300,
        "the first jump goes out at once"
    );
    assert_eq!(
        early.last().unwrap().0,
        1_300,
        "the last change is sent at last + gap, not dropped"
    );
    assert!(
        gaps(&sent[..11]).iter().all(|g| *g == 100),
        "early tokens are spaced by min_early_gap exactly"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pending_early_token_is_dropped_when_the_load_comes_back() {
    let inputs = [
        (300, Input::Load(1.0)),
        (350, Input::Load(0.0)),
        (380, Input::Load(0.95)),
    ];
    let sent = run(default_timing(), &inputs, 800).await;
    assert_eq!(
        sent,
        vec![(300, Why::Early)],
        "a load back within the delta of the last sent one needs no early token"
    );
}

#[tokio::test(start_paused = true)]
async fn any_token_pushes_the_periodic_one_back() {
    let sent = run(default_timing(), &[(500, Input::Load(1.0))], 2_000).await;
    assert_eq!(sent[0], (500, Why::Early));
    assert_eq!(sent[1].1, Why::Periodic);
    assert!(
        (1_400..=1_600).contains(&sent[1].0),
        "the periodic token follows the early one by 0.9..1.1 x interval, got {}",
        sent[1].0
    );
}
