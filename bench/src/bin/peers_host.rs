//! A host of the kill comparison: a few instances of one system in a process of their own,
//! killed by `peers_kill` as the crash (see `herald_bench::peers::kill::host`). Started by
//! `peers_kill` and its smoke test; not meant to be run by hand.
//!
//! `peers_host herald|polling NATS_URL ETCD_URL TARGET_MS LEASE_MS FIRST COUNT`

use herald_bench::peers::kill::host::{self, HostArgs};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(args) = HostArgs::parse(&args) else {
        eprintln!(
            "usage: peers_host herald|polling NATS_URL ETCD_URL TARGET_MS LEASE_MS FIRST COUNT"
        );
        std::process::exit(2);
    };
    // One thread drives the host's few instances, as in a small service process.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if runtime.block_on(host::run(args)).is_err() {
        std::process::exit(1);
    }
}
