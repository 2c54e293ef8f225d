//! How a [`Report`] prints: the settings, the delays, the findings, RSS and heap over time.

use std::fmt;

use super::report::Report;
use crate::stats::{Summary, ms};

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
        match s.disconnect_grace {
            Some(grace) => writeln!(
                f,
                "disconnect advisories on, grace {} ms: a crash must be removed as disconnected",
                grace.as_millis()
            )?,
            None => writeln!(
                f,
                "disconnect advisories off: a crash must be removed as expired, after its TTL"
            )?,
        }
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
             above and the listing checks; without advisories a crash is meant to stay listed \
             up to its TTL)",
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
            "subscriber stats: expirations {}, disconnections {} (of {} advisories), goodbyes {}, \
             deregistrations {}, fenced {}, tokens lost {}, registrations {}, duplicate drops {}, \
             stale-epoch drops {}",
            st.expirations,
            st.disconnections,
            st.disconnect_advisories,
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
