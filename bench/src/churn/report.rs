//! What a soak found ([`Report`]), the criteria it is judged by ([`Report::problems`]), and
//! the RSS it samples.

use std::time::Duration;

use herald_subscriber::RemovalCause;

use super::settings::Settings;
use crate::stats::Summary;

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
