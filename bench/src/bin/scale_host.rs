//! A host of the scale benchmark: one process running many announcers on one NATS
//! connection and one etcd session (or a lease per announcer), as `herald_bench::scale::host`
//! describes. Started by `scale` (and by its smoke test); not meant to be run by hand.
//!
//! `scale_host --nats URL --etcd URL[,URL] --host N --case SPEC [--concurrency N]`

use herald_bench::scale::{host, host_args::HostArgs};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = HostArgs::parse(&args).unwrap_or_else(|e| {
        eprintln!("scale_host: {e}");
        std::process::exit(2);
    });
    // One thread drives every announcer of the host: the host's cost is then what its
    // announcers need, not what a thread pool spends waking up.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if runtime.block_on(host::run(args)).is_err() {
        std::process::exit(1);
    }
}
