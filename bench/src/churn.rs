//! Churn soak: announcers join, crash (handle dropped) and leave gracefully (`shutdown`) at
//! random against one subscriber with etcd, while this harness keeps the ground truth and
//! checks the subscriber against it.
//!
//! The announcers run in a child process, the `churn` program started with `--fleet`, so
//! that the RSS sampled here is the subscriber's (with this harness's bookkeeping), not the
//! fleet's. The harness sends the fleet one [`Order`] per line on its stdin; the fleet
//! answers each with an [`Answer`] on its stdout, stamped on arrival here. The harness also
//! watches the announce subject with a plain NATS subscription: the arrival of each token
//! there is the ground truth for "when did this instance last speak".
//!
//! Checked, as etcd's robustness suite checks its watches:
//! - every second, the subscriber's listing against the truth: no zombie (listed although
//!   dead for longer than TTL + a sweep margin), no live instance missing, nothing unknown;
//! - the `events()` stream, per instance: `Added` first, never twice without a `Removed`
//!   between, `Updated` only while listed, versions (epoch, seq) never going back, nothing
//!   missing against the truth (every join added, every death removed), no live instance
//!   removed before its TTL ran out since its last token (a false removal);
//! - removal delays per cause (crash: from the handle's drop; graceful: from the `shutdown`
//!   call), join delays, and the subscriber's RSS over time (with the live heap, when the
//!   program counts allocations with [`crate::alloc::Counting`]). The harness forgets an
//!   instance a few seconds after its removal, so that its own bookkeeping stays flat too.
//!
//! The decisions (what to do next, to whom) come from a generator seeded with
//! [`Settings::seed`]; the timing of a real system does not repeat, the sequence does.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_shared::{EtcdConfig, NatsConfig, State, Subjects, codec, round_trip};
use herald_subscriber::{Event, Instance, RemovalCause, Subscriber};
use herald_testkit::{ChildGuard, EtcdServer, NatsServer, spawn_guarded};
use tokio::sync::mpsc;

use crate::summary::{Summary, ms};

/// The one service every announcer of the soak announces.
pub const SERVICE: &str = "churn";

/// How long the settling waits for the fleet's last answers before going on without them
/// (they are then reported as unanswered).
const UNANSWERED_LIMIT: Duration = Duration::from_secs(15);

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long announcers churn (the run then settles and winds down, a few seconds more).
    pub duration: Duration,
    /// Seed of the generator that picks actions and targets.
    pub seed: u64,
    /// Announcers' broadcast interval.
    pub interval: Duration,
    /// Announcers' token TTL.
    pub ttl: Duration,
    /// Announcers' etcd lease TTL: a crashed instance's key goes when it runs out, during
    /// the run, so the subscriber sees those deletions too.
    pub lease_ttl: Duration,
    /// Fewest live (or joining) announcers: below it the next action is a join.
    pub min_live: usize,
    /// Most live (or joining) announcers: at it the next action is a crash or a leave.
    pub max_live: usize,
    /// Mean gap between actions (each gap is uniform within 0.5..1.5 of it).
    pub mean_gap: Duration,
    /// How often the listing is checked against the truth.
    pub check_every: Duration,
    /// How long past its TTL a dead instance may stay listed before it counts as a zombie:
    /// the subscriber's sweep, the last token's flight, and this harness's own scheduling.
    pub sweep_margin: Duration,
    /// How much earlier than its TTL after the last token (as this harness saw the token) an
    /// expiry may come before it counts as early: the subscriber may receive a token before
    /// this harness's observer does.
    pub expiry_slack: Duration,
    /// A live instance absent from the listing longer than this after its `start()` returned
    /// counts as missing.
    pub join_margin: Duration,
    /// RSS is first sampled this long after the start (connections, runtime and caches warm up).
    pub rss_warmup: Duration,
    /// The subscriber's `event_capacity`. Its event ring holds that many events, each with
    /// its instance, until they are overwritten: RSS grows until the ring is full.
    pub event_capacity: usize,
    /// The `churn` program, started with `--fleet` to run the announcers.
    pub fleet_program: PathBuf,
}

impl Settings {
    /// Defaults for a run of `duration` with `seed`, the fleet run by `fleet_program`.
    pub fn new(fleet_program: impl Into<PathBuf>, duration: Duration, seed: u64) -> Settings {
        Settings {
            duration,
            seed,
            interval: Duration::from_millis(200),
            ttl: Duration::from_millis(1_000),
            lease_ttl: Duration::from_secs(10),
            min_live: 5,
            max_live: 25,
            mean_gap: Duration::from_millis(250),
            check_every: Duration::from_secs(1),
            sweep_margin: Duration::from_millis(500),
            expiry_slack: Duration::from_millis(250),
            join_margin: Duration::from_secs(1),
            rss_warmup: Duration::from_secs(5).min(duration / 4),
            event_capacity: 4096,
            fleet_program: fleet_program.into(),
        }
    }
}

/// What the harness asks the fleet, one per line.
#[derive(Debug, Clone, PartialEq)]
pub enum Order {
    /// Start an announcer of this id (`start()`).
    Join(String),
    /// Drop its handle: no goodbye, no revoke.
    Crash(String),
    /// `shutdown()`: a goodbye, then the lease revoked.
    Leave(String),
    /// `set_load`.
    Load(String, f32),
}

/// What the fleet answers, one per order, once the order is carried out.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `start()` returned with this epoch.
    Joined(String, u64),
    /// `start()` failed.
    Failed(String, String),
    /// The handle is dropped and its broadcast task has ended: nothing more goes out.
    Crashed(String),
    /// `shutdown()` returned, with its error if any.
    Left(String, Option<String>),
    /// The load is set.
    Loaded(String),
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Order::Join(id) => write!(f, "join {id}"),
            Order::Crash(id) => write!(f, "crash {id}"),
            Order::Leave(id) => write!(f, "leave {id}"),
            Order::Load(id, load) => write!(f, "load {id} {load}"),
        }
    }
}

impl Order {
    /// Parses a line written by `Display`.
    pub fn parse(line: &str) -> Option<Order> {
        let mut words = line.split_whitespace();
        let (verb, id) = (words.next()?, words.next()?.to_owned());
        Some(match verb {
            "join" => Order::Join(id),
            "crash" => Order::Crash(id),
            "leave" => Order::Leave(id),
            "load" => Order::Load(id, words.next()?.parse().ok()?),
            _ => return None,
        })
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Errors go last on the line, spaces and all; newlines would break the framing.
        let line = |s: &str| s.replace('\n', " ");
        match self {
            Answer::Joined(id, epoch) => write!(f, "joined {id} {epoch}"),
            Answer::Failed(id, e) => write!(f, "failed {id} {}", line(e)),
            Answer::Crashed(id) => write!(f, "crashed {id}"),
            Answer::Left(id, None) => write!(f, "left {id}"),
            Answer::Left(id, Some(e)) => write!(f, "left {id} {}", line(e)),
            Answer::Loaded(id) => write!(f, "loaded {id}"),
        }
    }
}

impl Answer {
    /// Parses a line written by `Display`.
    pub fn parse(line: &str) -> Option<Answer> {
        let mut parts = line.splitn(3, ' ');
        let (verb, id) = (parts.next()?, parts.next()?.to_owned());
        let rest = parts.next().map(str::to_owned);
        Some(match verb {
            "joined" => Answer::Joined(id, rest?.parse().ok()?),
            "failed" => Answer::Failed(id, rest.unwrap_or_default()),
            "crashed" => Answer::Crashed(id),
            "left" => Answer::Left(id, rest),
            "loaded" => Answer::Loaded(id),
            _ => return None,
        })
    }
}

/// Where the fleet's announcers connect, and how they announce: the fleet's command line.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetArgs {
    /// NATS URL.
    pub nats: String,
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// Subject and key prefix.
    pub prefix: String,
    /// Broadcast interval.
    pub interval: Duration,
    /// Token TTL.
    pub ttl: Duration,
    /// Lease TTL.
    pub lease_ttl: Duration,
}

impl FleetArgs {
    /// The arguments after `--fleet`.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            self.nats.clone(),
            self.etcd.join(","),
            self.prefix.clone(),
            self.interval.as_millis().to_string(),
            self.ttl.as_millis().to_string(),
            self.lease_ttl.as_millis().to_string(),
        ]
    }

    /// Reads what [`FleetArgs::to_args`] wrote.
    pub fn from_args(args: &[String]) -> Option<FleetArgs> {
        let millis = |s: &String| s.parse().ok().map(Duration::from_millis);
        match args {
            [nats, etcd, prefix, interval, ttl, lease] => Some(FleetArgs {
                nats: nats.clone(),
                etcd: etcd.split(',').map(str::to_owned).collect(),
                prefix: prefix.clone(),
                interval: millis(interval)?,
                ttl: millis(ttl)?,
                lease_ttl: millis(lease)?,
            }),
            _ => None,
        }
    }
}

/// The fleet process, as the harness drives it.
struct Fleet {
    /// Declared first: closing stdin lets the fleet exit before the guard kills it.
    stdin: ChildStdin,
    answers: mpsc::UnboundedReceiver<(Instant, Answer)>,
    _child: ChildGuard,
}

impl Fleet {
    fn spawn(program: &PathBuf, args: &FleetArgs) -> Fleet {
        let mut cmd = Command::new(program);
        cmd.arg("--fleet")
            .args(args.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = spawn_guarded(cmd);
        let stdin = child.child_mut().stdin.take().expect("fleet stdin");
        let stdout = child.child_mut().stdout.take().expect("fleet stdout");
        let (tx, answers) = mpsc::unbounded_channel();
        // A thread of its own stamps each answer as it arrives, whatever the runtime is doing.
        std::thread::Builder::new()
            .name("churn-fleet-answers".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let at = Instant::now();
                    match Answer::parse(&line) {
                        Some(a) => {
                            if tx.send((at, a)).is_err() {
                                break;
                            }
                        }
                        None => eprintln!("churn: unreadable fleet answer {line:?}"),
                    }
                }
            })
            .expect("start the fleet reader thread");
        Fleet {
            stdin,
            answers,
            _child: child,
        }
    }

    fn send(&mut self, order: &Order) {
        writeln!(self.stdin, "{order}")
            .and_then(|()| self.stdin.flush())
            .expect("the fleet takes orders");
    }
}

/// How an instance's life ended, or is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Crash,
    Leave,
}

#[derive(Debug)]
struct Ending {
    kind: Kind,
    /// When the order went out (the `shutdown()` call, or the start of the crash).
    ordered: Instant,
    /// When the fleet confirmed it: from then on nothing is sent any more.
    done: Option<Instant>,
}

/// One instance (ids are never reused): the truth about it, and what the events said.
#[derive(Debug)]
struct Incarnation {
    join_sent: Instant,
    joined: Option<Instant>,
    failed: bool,
    end: Option<Ending>,
    /// Last `up`/`draining` token seen by the observer.
    last_token: Option<Instant>,
    tokens_after_death: u64,
    /// Listed according to the event stream.
    listed: bool,
    added: Option<Instant>,
    removed: Option<(Instant, RemovalCause)>,
    /// (epoch, seq) of the last event.
    version: (u64, u64),
    /// Its last removal was an expiry after its own silence outlasted its TTL: it may come
    /// back when its tokens do.
    starved: bool,
}

impl Incarnation {
    fn alive(&self) -> bool {
        self.joined.is_some() && self.end.is_none()
    }

    /// Since when it is certainly dead: the confirmed end, or the failed start.
    fn dead_since(&self) -> Option<Instant> {
        if self.failed {
            return Some(self.join_sent);
        }
        self.end.as_ref().and_then(|e| e.done)
    }
}

/// Kinds of violation found in the event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Violation {
    /// `Added` while already listed.
    DuplicateAdded,
    /// `Added` again after a `Removed` (ids are never reused).
    Readded,
    /// `Removed` while not listed.
    RemovedUnlisted,
    /// `Updated` while not listed.
    UpdatedUnlisted,
    /// (epoch, seq) went back.
    OutOfOrder,
    /// An event for an id nobody started.
    Unknown,
    /// The stream lagged: events were lost.
    Lagged,
    /// A crash removed as anything but expired, or any fencing.
    WrongCause,
    /// A joined instance never added.
    MissingAdded,
    /// A dead instance never removed.
    MissingRemoved,
}

/// What a soak found. `Display` prints the report.
#[derive(Debug, Clone)]
pub struct Report {
    /// The settings of the run.
    pub settings: Settings,
    /// Wall time of the whole run, settle and wind-down included.
    pub elapsed: Duration,
    /// Joins, crashes, leaves and load changes ordered.
    pub actions: [u64; 4],
    /// Starts that failed.
    pub join_failures: u64,
    /// Shutdowns that returned an error.
    pub leave_errors: u64,
    /// Orders the fleet never answered.
    pub unanswered: u64,
    /// Tokens the observer saw.
    pub tokens_seen: u64,
    /// Tokens seen from an instance after its end was confirmed.
    pub tokens_after_death: u64,
    /// Listing checks made.
    pub checks: u64,
    /// Live instances removed before their TTL since their last token ran out.
    pub false_removals: Vec<String>,
    /// Live instances expired after their TTL since their last token (the announcer was late,
    /// not the subscriber wrong); not a failure, but reported.
    pub starved_expiries: u64,
    /// Crashed instances expired before their TTL since their last token.
    pub early_expiries: Vec<String>,
    /// Dead instances listed, or removed, later than TTL + sweep margin after their end.
    pub zombies: Vec<String>,
    /// Live instances missing from the listing at a check.
    pub missing_live: Vec<String>,
    /// Unknown instances listed.
    pub phantoms: Vec<String>,
    /// Event-stream violations, by kind, with the first few details.
    pub violations: Vec<String>,
    /// Graceful leaves removed by expiry (their goodbye and revoke did not arrive).
    pub leaves_expired: u64,
    /// `start()` call to `Added`.
    pub join_delay: Option<Summary>,
    /// Crash confirmed to `Removed`.
    pub crash_removal: Option<Summary>,
    /// Last token seen to `Removed`, for crashes.
    pub crash_since_last_token: Option<Summary>,
    /// `shutdown()` call to `Removed`.
    pub leave_removal: Option<Summary>,
    /// Removals by cause, for crashes and for leaves.
    pub causes: Vec<(&'static str, RemovalCause, u64)>,
    /// Largest discrepancy found by a listing check (a dead instance listed, or a live one
    /// missing), and how old it was.
    pub max_stale_at_check: Duration,
    /// RSS samples (time since start, bytes).
    pub rss: Vec<(Duration, u64)>,
    /// Live heap samples (time since start, bytes), when the program counts its allocations
    /// with [`crate::alloc::Counting`]; empty otherwise.
    pub heap: Vec<(Duration, u64)>,
    /// At the end, after settling: the listing equals the live set.
    pub converged: bool,
    /// After every remaining announcer left: the listing is empty.
    pub emptied: bool,
    /// Distinct instances started (joined).
    pub started: u64,
    /// Instances this harness still tracked at the end (the others were retired after their
    /// removal).
    pub tracked_at_end: usize,
    /// The subscriber's own counters at the end.
    pub stats: herald_subscriber::Stats,
}

impl Report {
    /// RSS after the warm-up, at the end, and the largest sample, in bytes.
    pub fn rss_first_last_max(&self) -> Option<(u64, u64, u64)> {
        let first = self.rss.first()?.1;
        let last = self.rss.last()?.1;
        let max = self.rss.iter().map(|s| s.1).max()?;
        Some((first, last, max))
    }

    /// Every criterion the run failed, with RSS growth (last - first) allowed up to
    /// `rss_growth_bound` bytes. Empty when the run passed.
    pub fn problems(&self, rss_growth_bound: u64) -> Vec<String> {
        let mut p = Vec::new();
        let mut list = |what: &str, v: &[String]| {
            if !v.is_empty() {
                p.push(format!("{what}: {} ({:?})", v.len(), &v[..v.len().min(5)]));
            }
        };
        list("false removals", &self.false_removals);
        list("early expiries", &self.early_expiries);
        list("zombies", &self.zombies);
        list("live instances missing", &self.missing_live);
        list("phantoms", &self.phantoms);
        list("event-stream violations", &self.violations);
        if self.tokens_after_death > 0 {
            p.push(format!("{} tokens after death", self.tokens_after_death));
        }
        if self.unanswered > 0 {
            p.push(format!(
                "{} orders unanswered by the fleet",
                self.unanswered
            ));
        }
        if self.join_failures > 0 || self.leave_errors > 0 {
            p.push(format!(
                "{} failed joins, {} failed leaves",
                self.join_failures, self.leave_errors
            ));
        }
        if self.leaves_expired > 0 {
            p.push(format!("{} graceful leaves expired", self.leaves_expired));
        }
        if !self.converged {
            p.push("the listing did not converge to the live set".into());
        }
        if !self.emptied {
            p.push("the listing did not empty after the last leave".into());
        }
        if self.stats.added != self.started {
            p.push(format!(
                "subscriber added {} instances, {} were started",
                self.stats.added, self.started
            ));
        }
        match self.rss_first_last_max() {
            Some((first, last, _)) if last.saturating_sub(first) > rss_growth_bound => p.push(
                format!("RSS grew from {first} to {last} bytes (bound {rss_growth_bound})"),
            ),
            None => p.push("no RSS sample".into()),
            _ => {}
        }
        p
    }
}

/// Runs a soak: starts its own nats-server and etcd, the subscriber, the observer and the
/// fleet; churns for `settings.duration`; settles; makes every remaining announcer leave.
///
/// # Panics
///
/// When a server, the subscriber or the fleet cannot start.
pub async fn run(settings: Settings) -> Report {
    let started = Instant::now();
    let nats = NatsServer::start().await;
    let etcd = EtcdServer::start().await;
    let prefix = format!("churn{}", settings.seed % 1_000_000);
    let subjects = Subjects::new(&prefix).expect("valid prefix");
    let sub = Subscriber::builder()
        .nats(NatsConfig::new([nats.url()]))
        .etcd(EtcdConfig::new(etcd.endpoints()))
        .prefix(&prefix)
        .service(SERVICE)
        .event_capacity(settings.event_capacity)
        .start()
        .await
        .expect("subscriber starts");
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
    let mut fleet = Fleet::spawn(
        &settings.fleet_program,
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
            Some((at, answer)) = fleet.answers.recv() => soak.on_answer(answer, at),
            _ = checks.tick() => soak.check(&sub, Instant::now()),
            _ = tokio::time::sleep_until(next_action), if phase == Phase::Churn => {
                if let Some(order) = soak.next_order(&mut rng, Instant::now()) {
                    fleet.send(&order);
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
                            fleet.send(&order);
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

/// An event's change, its instance aside.
#[derive(Debug, Clone, Copy)]
enum Change {
    Added,
    Updated,
    Removed(RemovalCause),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Churn,
    Settle,
    WindDown,
}

/// The harness's state: the truth, what the events said, and the findings so far.
struct Soak {
    settings: Settings,
    started: Instant,
    instances: BTreeMap<String, Incarnation>,
    next_id: u64,
    actions: [u64; 4],
    join_failures: u64,
    leave_errors: u64,
    tokens_seen: u64,
    checks: u64,
    false_removals: Vec<String>,
    starved_expiries: u64,
    early_expiries: Vec<String>,
    zombies: BTreeMap<String, String>,
    missing_live: BTreeMap<String, String>,
    phantoms: BTreeMap<String, String>,
    violations: BTreeMap<Violation, Vec<String>>,
    leaves_expired: u64,
    join_delays: Vec<Duration>,
    crash_removals: Vec<Duration>,
    crash_since_token: Vec<Duration>,
    leave_removals: Vec<Duration>,
    causes: BTreeMap<(&'static str, &'static str), (RemovalCause, u64)>,
    max_stale_at_check: Duration,
    rss: Vec<(Duration, u64)>,
    heap: Vec<(Duration, u64)>,
    converged: bool,
    emptied: bool,
    /// Joined instances forgotten by `retire`.
    retired: u64,
    retired_tokens_after_death: u64,
}

impl Soak {
    fn new(settings: Settings, started: Instant) -> Soak {
        Soak {
            settings,
            started,
            instances: BTreeMap::new(),
            next_id: 0,
            actions: [0; 4],
            join_failures: 0,
            leave_errors: 0,
            tokens_seen: 0,
            checks: 0,
            false_removals: Vec::new(),
            starved_expiries: 0,
            early_expiries: Vec::new(),
            zombies: BTreeMap::new(),
            missing_live: BTreeMap::new(),
            phantoms: BTreeMap::new(),
            violations: BTreeMap::new(),
            leaves_expired: 0,
            join_delays: Vec::new(),
            crash_removals: Vec::new(),
            crash_since_token: Vec::new(),
            leave_removals: Vec::new(),
            causes: BTreeMap::new(),
            max_stale_at_check: Duration::ZERO,
            rss: Vec::new(),
            heap: Vec::new(),
            converged: false,
            emptied: false,
            retired: 0,
            retired_tokens_after_death: 0,
        }
    }

    fn violation(&mut self, kind: Violation, detail: String) {
        let v = self.violations.entry(kind).or_default();
        if v.len() < 5 {
            v.push(detail);
        } else {
            v.push(String::new());
        }
    }

    /// Orders sent and not answered yet.
    fn in_flight(&self) -> usize {
        self.instances
            .values()
            .filter(|i| {
                (i.joined.is_none() && !i.failed)
                    || i.end.as_ref().is_some_and(|e| e.done.is_none())
            })
            .count()
    }

    fn alive_ids(&self) -> Vec<String> {
        self.instances
            .iter()
            .filter(|(_, i)| i.alive())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The next action, chosen by `rng` from the current population.
    fn next_order(&mut self, rng: &mut fastrand::Rng, now: Instant) -> Option<Order> {
        let alive = self.alive_ids();
        let joining = self
            .instances
            .values()
            .filter(|i| i.joined.is_none() && !i.failed)
            .count();
        let population = alive.len() + joining;
        let r = rng.f64();
        let choice = if population < self.settings.min_live || alive.is_empty() {
            0
        } else if population >= self.settings.max_live {
            if r < 0.5 { 1 } else { 2 }
        } else if r < 0.4 {
            0
        } else if r < 0.6 {
            1
        } else if r < 0.8 {
            2
        } else {
            3
        };
        self.actions[choice] += 1;
        if choice == 0 {
            let id = format!("i{:06}", self.next_id);
            self.next_id += 1;
            self.instances.insert(
                id.clone(),
                Incarnation {
                    join_sent: now,
                    joined: None,
                    failed: false,
                    end: None,
                    last_token: None,
                    tokens_after_death: 0,
                    listed: false,
                    added: None,
                    removed: None,
                    version: (0, 0),
                    starved: false,
                },
            );
            return Some(Order::Join(id));
        }
        let id = alive[rng.usize(..alive.len())].clone();
        let kind = match choice {
            1 => Kind::Crash,
            2 => Kind::Leave,
            _ => return Some(Order::Load(id, (rng.f32() * 100.0).round() / 100.0)),
        };
        let inc = self.instances.get_mut(&id)?;
        inc.end = Some(Ending {
            kind,
            ordered: now,
            done: None,
        });
        Some(match kind {
            Kind::Crash => Order::Crash(id),
            Kind::Leave => Order::Leave(id),
        })
    }

    /// Leave orders for every live instance (the wind-down).
    fn leave_all(&mut self, now: Instant) -> Vec<Order> {
        let ids = self.alive_ids();
        for id in &ids {
            if let Some(inc) = self.instances.get_mut(id) {
                inc.end = Some(Ending {
                    kind: Kind::Leave,
                    ordered: now,
                    done: None,
                });
            }
        }
        ids.into_iter().map(Order::Leave).collect()
    }

    fn on_answer(&mut self, answer: Answer, at: Instant) {
        let id = match &answer {
            Answer::Joined(id, _)
            | Answer::Failed(id, _)
            | Answer::Crashed(id)
            | Answer::Left(id, _)
            | Answer::Loaded(id) => id.clone(),
        };
        let Some(inc) = self.instances.get_mut(&id) else {
            eprintln!("churn: answer for an unknown instance: {answer:?}");
            return;
        };
        match answer {
            Answer::Joined(..) => inc.joined = Some(at),
            Answer::Failed(_, e) => {
                eprintln!("churn: {id} failed to start: {e}");
                inc.failed = true;
                self.join_failures += 1;
            }
            Answer::Crashed(_) | Answer::Left(_, None) => {
                if let Some(end) = inc.end.as_mut() {
                    end.done = Some(at);
                }
            }
            Answer::Left(_, Some(e)) => {
                eprintln!("churn: {id} shutdown failed: {e}");
                self.leave_errors += 1;
                if let Some(end) = inc.end.as_mut() {
                    end.done = Some(at);
                }
            }
            Answer::Loaded(_) => {}
        }
    }

    fn on_token(&mut self, payload: &[u8], at: Instant) {
        let Ok(token) = codec::decode(payload) else {
            return;
        };
        self.tokens_seen += 1;
        let Some(inc) = self.instances.get_mut(token.instance) else {
            if self.is_retired(token.instance) {
                self.retired_tokens_after_death += 1;
            } else {
                self.phantoms
                    .entry(token.instance.to_owned())
                    .or_insert_with(|| "token from an instance never started".into());
            }
            return;
        };
        if token.state != State::Leaving {
            inc.last_token = Some(at);
        }
        // A token handed to the connection just before the end may still be in flight when
        // the end is confirmed.
        let slack = self.settings.expiry_slack;
        if inc.dead_since().is_some_and(|d| at > d + slack) {
            inc.tokens_after_death += 1;
        }
    }

    fn on_event(&mut self, event: Event, at: Instant) {
        let (instance, change) = match event {
            Event::Added(i) => (i, Change::Added),
            Event::Updated(i) => (i, Change::Updated),
            Event::Removed { instance, cause } => (instance, Change::Removed(cause)),
            Event::Lagged { missed } => {
                self.violation(Violation::Lagged, format!("missed {missed}"));
                return;
            }
            other => {
                eprintln!("churn: unexpected event {other:?}");
                return;
            }
        };
        let id = instance.id().to_owned();
        let Some(inc) = self.instances.get_mut(&id) else {
            let detail = if self.is_retired(&id) {
                format!("{id} (long dead)")
            } else {
                id
            };
            self.violation(Violation::Unknown, detail);
            return;
        };
        let version = (instance.epoch(), instance.seq());
        let before = inc.version;
        inc.version = before.max(version);
        let listed = inc.listed;
        if version < before {
            let detail = format!("{id}: {version:?} after {before:?}");
            self.violation(Violation::OutOfOrder, detail);
        }
        match change {
            Change::Added if listed => {
                self.violation(Violation::DuplicateAdded, id);
            }
            Change::Added => {
                let inc = self.instances.get_mut(&id).expect("known instance");
                inc.listed = true;
                let readded = inc.removed.is_some() && !inc.starved;
                if inc.added.is_none() {
                    inc.added = Some(at);
                    self.join_delays
                        .push(at.saturating_duration_since(inc.join_sent));
                }
                if readded {
                    self.violation(Violation::Readded, id);
                }
            }
            Change::Updated if !listed => self.violation(Violation::UpdatedUnlisted, id),
            Change::Updated => {}
            Change::Removed(cause) => self.on_removed(&id, &instance, cause, at),
        }
    }

    fn on_removed(&mut self, id: &str, instance: &Instance, cause: RemovalCause, at: Instant) {
        let ttl = self.settings.ttl;
        let slack = self.settings.expiry_slack;
        let margin = self.settings.sweep_margin;
        let inc = self.instances.get_mut(id).expect("known instance");
        if !inc.listed {
            let detail = format!("{id} ({})", cause.as_str());
            self.violation(Violation::RemovedUnlisted, detail);
            return;
        }
        inc.listed = false;
        inc.removed = Some((at, cause));
        let since_token = inc.last_token.map(|t| at.saturating_duration_since(t));
        let kind = inc.end.as_ref().map(|e| e.kind);
        let label = match kind {
            None => "live",
            Some(Kind::Crash) => "crash",
            Some(Kind::Leave) => "leave",
        };
        let entry = self
            .causes
            .entry((label, cause.as_str()))
            .or_insert((cause, 0));
        entry.1 += 1;
        let dead = inc.dead_since();
        let ordered = inc.end.as_ref().map(|e| e.ordered);
        match kind {
            None => {
                let starved = since_token.is_none_or(|s| s + slack >= ttl);
                if cause == RemovalCause::Expired && starved {
                    inc.starved = true;
                    self.starved_expiries += 1;
                } else {
                    self.false_removals.push(format!(
                        "{id} removed ({}) while alive, {since_token:?} after its last token \
                         (seq {})",
                        cause.as_str(),
                        instance.seq()
                    ));
                }
            }
            Some(Kind::Crash) => {
                if cause != RemovalCause::Expired {
                    let detail = format!("{id}: crash removed as {}", cause.as_str());
                    self.violation(Violation::WrongCause, detail);
                } else if since_token.is_some_and(|s| s + slack < ttl) {
                    self.early_expiries
                        .push(format!("{id} expired {since_token:?} after its last token"));
                }
                if let Some(s) = since_token {
                    self.crash_since_token.push(s);
                }
                // The crash may be confirmed after the removal (the answer is in flight): the
                // delay is then counted from the order.
                let from = dead.or(ordered).expect("an ending");
                self.crash_removals.push(at.saturating_duration_since(from));
            }
            Some(Kind::Leave) => {
                match cause {
                    RemovalCause::Expired => self.leaves_expired += 1,
                    RemovalCause::Fenced => {
                        let detail = format!("{id}: leave removed as fenced");
                        self.violation(Violation::WrongCause, detail);
                    }
                    _ => {}
                }
                let from = ordered.expect("an ending");
                self.leave_removals.push(at.saturating_duration_since(from));
            }
        }
        if let Some(d) = dead {
            let late = at.saturating_duration_since(d);
            if late > ttl + margin {
                self.zombies
                    .entry(id.to_owned())
                    .or_insert_with(|| format!("removed {late:?} after its end"));
            }
        }
    }

    /// Compares the listing with the truth, and samples RSS.
    fn check(&mut self, sub: &Subscriber, now: Instant) {
        self.checks += 1;
        let ttl = self.settings.ttl;
        let margin = self.settings.sweep_margin;
        let listed: HashSet<String> = sub.instances(SERVICE).ids().into_iter().collect();
        for id in &listed {
            let Some(inc) = self.instances.get(id) else {
                if self.is_retired(id) {
                    self.zombies
                        .entry(id.clone())
                        .or_insert_with(|| "listed long after its end".into());
                } else {
                    self.phantoms
                        .entry(id.clone())
                        .or_insert_with(|| "listed, never started".into());
                }
                continue;
            };
            if let Some(d) = inc.dead_since() {
                let age = now.saturating_duration_since(d);
                self.max_stale_at_check = self.max_stale_at_check.max(age);
                if age > ttl + margin {
                    self.zombies
                        .entry(id.clone())
                        .or_insert_with(|| format!("listed {age:?} after its end"));
                }
            }
        }
        for (id, inc) in &self.instances {
            let Some(joined) = inc.joined.filter(|_| inc.alive()) else {
                continue;
            };
            if listed.contains(id) {
                continue;
            }
            let age = now.saturating_duration_since(joined);
            if age <= self.settings.join_margin {
                continue;
            }
            // A live instance may be absent only after its own silence outlasted its TTL.
            let silent = inc.last_token.is_none_or(|t| {
                now.saturating_duration_since(t) + self.settings.expiry_slack >= ttl
            });
            if !silent {
                self.max_stale_at_check = self.max_stale_at_check.max(age);
                self.missing_live
                    .entry(id.clone())
                    .or_insert_with(|| format!("live, not listed {age:?} after start()"));
            }
        }
        // A death whose Removed is overdue is a zombie in the stream, listed or not.
        let overdue: Vec<(String, Duration)> = self
            .instances
            .iter()
            .filter(|(_, i)| i.listed)
            .filter_map(|(id, i)| {
                let age = now.saturating_duration_since(i.dead_since()?);
                (age > ttl + margin).then(|| (id.clone(), age))
            })
            .collect();
        for (id, age) in overdue {
            self.zombies
                .entry(id)
                .or_insert_with(|| format!("no Removed {age:?} after its end"));
        }
        self.retire(now);
        let since_start = now.saturating_duration_since(self.started);
        if since_start >= self.settings.rss_warmup {
            if let Some(rss) = rss_bytes() {
                self.rss.push((since_start, rss));
            }
            let heap = crate::alloc::live_bytes();
            if heap > 0 {
                self.heap.push((since_start, heap as u64));
            }
        }
    }

    /// Forgets instances whose story is over (ended, removed, and dead well past their
    /// TTL), so that this harness's own memory stays flat and the RSS is the subscriber's.
    /// An event or a listing that names one of them later is still caught: ids are numbered
    /// and never reused.
    fn retire(&mut self, now: Instant) {
        let keep_for = self.settings.ttl + self.settings.sweep_margin + Duration::from_secs(2);
        let over: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, i)| {
                i.joined.is_some()
                    && i.removed.is_some()
                    && !i.listed
                    && i.dead_since()
                        .is_some_and(|d| now.saturating_duration_since(d) > keep_for)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in over {
            if let Some(i) = self.instances.remove(&id) {
                self.retired += 1;
                self.retired_tokens_after_death += i.tokens_after_death;
            }
        }
    }

    /// Whether `id` names an instance started earlier and since retired.
    fn is_retired(&self, id: &str) -> bool {
        !self.instances.contains_key(id)
            && id
                .strip_prefix('i')
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n < self.next_id)
    }

    /// Whether the listing is exactly the live set, and the stream agrees.
    fn listing_matches(&self, sub: &Subscriber) -> bool {
        let mut listed = sub.instances(SERVICE).ids();
        listed.sort();
        let alive = self.alive_ids();
        let mut ok = listed == alive;
        if !ok {
            eprintln!("churn: listed {listed:?}\n       alive  {alive:?}");
        }
        for inc in self.instances.values() {
            ok &= inc.alive() == inc.listed;
        }
        ok
    }

    fn finish(mut self, stats: herald_subscriber::Stats, elapsed: Duration) -> Report {
        // Nothing missing against the truth: every start added, every end removed (after
        // the wind-down every instance has ended).
        let mut missing = Vec::new();
        for (id, inc) in &self.instances {
            if inc.joined.is_none() {
                continue;
            }
            if inc.added.is_none() {
                missing.push((Violation::MissingAdded, format!("{id}: never added")));
            }
            if inc.removed.is_none() || inc.listed {
                missing.push((Violation::MissingRemoved, format!("{id}: not removed")));
            }
        }
        for (kind, detail) in missing {
            self.violation(kind, detail);
        }
        let summary = |v: &mut Vec<Duration>| (!v.is_empty()).then(|| Summary::of(v));
        let violations = self
            .violations
            .iter()
            .map(|(kind, v)| {
                let details: Vec<&String> = v.iter().filter(|d| !d.is_empty()).collect();
                format!("{kind:?} x{}: {details:?}", v.len())
            })
            .collect();
        let joined = self.instances.values().filter(|i| i.joined.is_some());
        let unanswered = self.in_flight() as u64;
        Report {
            unanswered,
            started: self.retired + joined.count() as u64,
            tracked_at_end: self.instances.len(),
            tokens_after_death: self.retired_tokens_after_death
                + self
                    .instances
                    .values()
                    .map(|i| i.tokens_after_death)
                    .sum::<u64>(),
            join_delay: summary(&mut self.join_delays),
            crash_removal: summary(&mut self.crash_removals),
            crash_since_last_token: summary(&mut self.crash_since_token),
            leave_removal: summary(&mut self.leave_removals),
            causes: self
                .causes
                .iter()
                .map(|((label, _), (cause, n))| (*label, *cause, *n))
                .collect(),
            zombies: self
                .zombies
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect(),
            missing_live: self
                .missing_live
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect(),
            phantoms: self
                .phantoms
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect(),
            violations,
            settings: self.settings,
            elapsed,
            actions: self.actions,
            join_failures: self.join_failures,
            leave_errors: self.leave_errors,
            tokens_seen: self.tokens_seen,
            checks: self.checks,
            false_removals: self.false_removals,
            starved_expiries: self.starved_expiries,
            early_expiries: self.early_expiries,
            leaves_expired: self.leaves_expired,
            max_stale_at_check: self.max_stale_at_check,
            rss: self.rss,
            heap: self.heap,
            converged: self.converged,
            emptied: self.emptied,
            stats,
        }
    }
}

/// This process's resident set size, from `/proc/self/status`.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        writeln!(
            f,
            "churn soak: {:?} of churn (seed {}), {} to {} live announcers, an action every \
             {} ms on average; interval {} ms, TTL {} ms, lease {} s; event capacity {}; run \
             took {:.1} s",
            s.duration,
            s.seed,
            s.min_live,
            s.max_live,
            s.mean_gap.as_millis(),
            s.interval.as_millis(),
            s.ttl.as_millis(),
            s.lease_ttl.as_secs(),
            s.event_capacity,
            self.elapsed.as_secs_f64()
        )?;
        let [joins, crashes, leaves, loads] = self.actions;
        writeln!(
            f,
            "actions: {joins} joins ({} failed), {crashes} crashes, {leaves} leaves \
             (+ the wind-down's), {loads} load changes; {} tokens observed; {} listing checks",
            self.join_failures, self.tokens_seen, self.checks
        )?;
        writeln!(f, "delays (event received by this harness):")?;
        let line = |f: &mut fmt::Formatter<'_>, what: &str, s: &Option<Summary>| match s {
            Some(s) => writeln!(f, "  {what:<34} {s}"),
            None => writeln!(f, "  {what:<34} no sample"),
        };
        line(f, "join: start() -> Added", &self.join_delay)?;
        line(f, "crash: handle dropped -> Removed", &self.crash_removal)?;
        line(
            f,
            "crash: last token -> Removed",
            &self.crash_since_last_token,
        )?;
        line(f, "leave: shutdown() -> Removed", &self.leave_removal)?;
        let max_staleness = [&self.join_delay, &self.crash_removal, &self.leave_removal]
            .into_iter()
            .flatten()
            .map(|s| s.max)
            .max()
            .unwrap_or_default()
            .max(self.max_stale_at_check);
        writeln!(
            f,
            "max staleness: {} ms (largest gap between the view and the truth, by the delays \
             above and the listing checks; a crash is meant to stay listed up to its TTL)",
            ms(max_staleness)
        )?;
        let causes: Vec<String> = self
            .causes
            .iter()
            .map(|(label, cause, n)| format!("{label}/{}: {n}", cause.as_str()))
            .collect();
        writeln!(f, "removals by ending and cause: {}", causes.join(", "))?;
        writeln!(
            f,
            "false removals: {}   early expiries: {}   zombies: {}   live missing: {}   \
             phantoms: {}   starved expiries (late announcer, allowed): {}",
            self.false_removals.len(),
            self.early_expiries.len(),
            self.zombies.len(),
            self.missing_live.len(),
            self.phantoms.len(),
            self.starved_expiries
        )?;
        writeln!(
            f,
            "event stream: {} (ordered, no duplicate Added, nothing missing: checked per \
             instance)",
            if self.violations.is_empty() {
                "ok".to_owned()
            } else {
                self.violations.join("; ")
            }
        )?;
        writeln!(
            f,
            "converged after settling: {}; empty after the wind-down: {}; tokens after \
             death: {}; orders unanswered: {}; subscriber added {} of {} started ({} still \
             tracked by this harness at the end)",
            self.converged,
            self.emptied,
            self.tokens_after_death,
            self.unanswered,
            self.stats.added,
            self.started,
            self.tracked_at_end
        )?;
        let st = &self.stats;
        writeln!(
            f,
            "subscriber stats: expirations {}, goodbyes {}, deregistrations {}, fenced {}, \
             tokens lost {}, registrations {}, duplicate drops {}, stale-epoch drops {}",
            st.expirations,
            st.goodbyes,
            st.deregistrations,
            st.fenced,
            st.tokens_lost,
            st.registrations,
            st.duplicate_drops,
            st.stale_epoch_drops
        )?;
        if let Some((first, last, max)) = self.rss_first_last_max() {
            writeln!(
                f,
                "subscriber process RSS: first {} (at {:.0} s), last {}, max {}, growth {:+.1} MiB",
                mib(first),
                self.rss[0].0.as_secs_f64(),
                mib(last),
                mib(max),
                (last as f64 - first as f64) / (1024.0 * 1024.0)
            )?;
            let step = (self.rss.len() / 10).max(1);
            let series: Vec<String> = self
                .rss
                .iter()
                .step_by(step)
                .map(|(t, b)| format!("{:.0}s {:.1}", t.as_secs_f64(), *b as f64 / 1048576.0))
                .collect();
            writeln!(f, "  RSS series (MiB): {}", series.join(", "))?;
        }
        if let (Some(first), Some(last)) = (self.heap.first(), self.heap.last()) {
            let max = self.heap.iter().map(|s| s.1).max().unwrap_or_default();
            writeln!(
                f,
                "live heap (counted allocations): first {}, last {}, max {}, growth {:+.1} KiB",
                mib(first.1),
                mib(last.1),
                mib(max),
                (last.1 as f64 - first.1 as f64) / 1024.0
            )?;
            let step = (self.heap.len() / 10).max(1);
            let series: Vec<String> = self
                .heap
                .iter()
                .step_by(step)
                .map(|(t, b)| format!("{:.0}s {:.2}", t.as_secs_f64(), *b as f64 / 1048576.0))
                .collect();
            writeln!(f, "  heap series (MiB): {}", series.join(", "))?;
        }
        for (what, v) in [
            ("false removals", &self.false_removals),
            ("early expiries", &self.early_expiries),
            ("zombies", &self.zombies),
            ("live missing", &self.missing_live),
            ("phantoms", &self.phantoms),
        ] {
            if !v.is_empty() {
                writeln!(f, "  {what}: {:?}", &v[..v.len().min(10)])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_answers_read_back() {
        for o in [
            Order::Join("i000001".into()),
            Order::Crash("a".into()),
            Order::Leave("b".into()),
            Order::Load("c".into(), 0.25),
        ] {
            assert_eq!(Order::parse(&o.to_string()), Some(o));
        }
        for a in [
            Answer::Joined("i1".into(), 42),
            Answer::Failed("i1".into(), "cannot connect: timed out".into()),
            Answer::Crashed("i2".into()),
            Answer::Left("i3".into(), None),
            Answer::Left("i3".into(), Some("timed out".into())),
            Answer::Loaded("i4".into()),
        ] {
            assert_eq!(Answer::parse(&a.to_string()), Some(a));
        }
        let args = FleetArgs {
            nats: "nats://127.0.0.1:1".into(),
            etcd: vec!["http://127.0.0.1:2".into(), "http://127.0.0.1:3".into()],
            prefix: "p".into(),
            interval: Duration::from_millis(200),
            ttl: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(10),
        };
        assert_eq!(FleetArgs::from_args(&args.to_args()), Some(args));
    }
}
