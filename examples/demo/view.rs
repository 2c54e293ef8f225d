//! The demo's live view: one screen per tick, a table of every instance, a summary line per
//! service with its power-of-two-choices pick, the narration, the latest events and counters.

use herald_subscriber::{Strategy, Subscriber};

/// Clears the terminal and prints the current view.
pub(crate) fn render(subscriber: &Subscriber, narration: &str, log: &[String]) {
    let mut out = String::from("\x1b[2J\x1b[H");
    out.push_str("Herald live view  (Ctrl-C to stop)\n\n");
    out.push_str(&format!(
        "{:<10} {:<14} {:<16} {:>6} {:<9} {}\n",
        "service", "instance", "addr", "load", "state", "zone"
    ));
    for service in subscriber.services() {
        for i in subscriber.instances(&service).iter() {
            out.push_str(&format!(
                "{:<10} {:<14} {:<16} {:>6.2} {:<9} {}\n",
                service,
                i.id(),
                i.addr(),
                i.load(),
                i.state().as_str(),
                i.zone().unwrap_or("-")
            ));
        }
        let snapshot = subscriber.instances(&service);
        let loads: Vec<f32> = snapshot.iter().map(|i| i.load()).collect();
        let mean = loads.iter().sum::<f32>() / loads.len().max(1) as f32;
        let max = loads.iter().copied().fold(0.0, f32::max);
        let pick = subscriber
            .pick(&service, Strategy::PowerOfTwoChoices)
            .map_or("-".to_owned(), |p| p.id().to_owned());
        out.push_str(&format!(
            "{:<10} {} instance{}, mean load {mean:.2}, max {max:.2}, p2c pick -> {pick}\n",
            "",
            loads.len(),
            if loads.len() == 1 { "" } else { "s" }
        ));
    }
    let stats = subscriber.stats();
    out.push_str(&format!(
        "\nnow: {narration}\nrecent: {}\n\naccepted {}  rejected {}  disconnected {}  expired {}  goodbyes {}  lost {}  p99 visible <= {} ms\n",
        log.join("  |  "),
        stats.accepted,
        stats.rejected_total(),
        stats.disconnections,
        stats.expirations,
        stats.goodbyes,
        stats.tokens_lost,
        stats.latency.quantile_ms(0.99).map_or("-".into(), |v| v.to_string()),
    ));
    print!("{out}");
}
