//! A Markdown table with one column per case, and the small formatting helpers the reports
//! share.

use crate::scale::outcome::Outcome;
use crate::scale::plan::Leases;

/// Rows under a header of one column per case.
#[derive(Debug)]
pub(crate) struct Table<'o> {
    outcomes: &'o [Outcome],
    rows: Vec<Vec<String>>,
}

impl<'o> Table<'o> {
    pub(crate) fn new(outcomes: &'o [Outcome]) -> Table<'o> {
        Table {
            outcomes,
            rows: Vec::new(),
        }
    }

    /// A bold row that names what follows.
    pub(crate) fn section(&mut self, title: &str) {
        let mut row = vec![format!("**{title}**")];
        row.resize(self.outcomes.len() + 1, String::new());
        self.rows.push(row);
    }

    /// A row named `name`, with `cell` of each case.
    pub(crate) fn row(&mut self, name: &str, cell: impl Fn(&Outcome) -> String) {
        let mut row = vec![name.to_owned()];
        row.extend(self.outcomes.iter().map(cell));
        self.rows.push(row);
    }

    pub(crate) fn render(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut header = vec![String::new()];
        header.extend(self.outcomes.iter().map(label));
        let mut out = line(&header);
        let rule: Vec<String> = (0..header.len())
            .map(|i| if i == 0 { "---" } else { "---:" }.to_owned())
            .collect();
        out.push_str(&line(&rule));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// `10k (10 x 1000), lease per host, 1 s`.
fn label(o: &Outcome) -> String {
    let n = o.case.instances();
    let size = if n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    };
    let leases = match o.case.leases {
        Leases::Session => "lease per host",
        Leases::PerInstance => "lease per instance",
    };
    format!(
        "{size} ({} x {}), {leases}, {} s",
        o.case.hosts,
        o.case.per_host,
        o.case.interval.as_secs_f64()
    )
}

/// `x` with `decimals` decimals.
pub(crate) fn num(x: f64, decimals: usize) -> String {
    format!("{x:.decimals$}")
}

/// Bytes as MiB, one decimal.
pub(crate) fn mib(bytes: u64) -> String {
    num(bytes as f64 / (1024.0 * 1024.0), 1)
}

/// `x` divided by the case's instances.
pub(crate) fn per_instance(o: &Outcome, x: f64) -> f64 {
    x / o.instances.max(1) as f64
}

/// `x` divided by the case's tokens per second (ingested).
pub(crate) fn per_token(o: &Outcome, x: f64) -> f64 {
    x / o.window.accepted.max(1.0)
}

/// Growth from `before` to `after` per instance, bytes.
pub(crate) fn growth_per_instance(o: &Outcome, before: u64, after: u64) -> String {
    num(per_instance(o, after as f64 - before as f64), 0)
}
