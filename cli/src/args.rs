//! The command line: global connection options (each with an environment variable) and the
//! subcommands.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use herald_shared::validate;

/// Herald service discovery: announce, list, watch, and serve instances.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, after_help = ENVIRONMENT)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// What `--help` says about logging and exit codes.
const ENVIRONMENT: &str = "\
Logging: RUST_LOG sets what is logged to stderr (default: warnings, and the lines saying
that a lost NATS or etcd link or a failing check is back,
`warn,herald::connection=info,herald::check=info`; e.g. RUST_LOG=info or
RUST_LOG=herald_subscriber=debug). Colours only when stderr is a terminal and NO_COLOR
is unset.

Exit codes: 0 done (or stopped by SIGINT/SIGTERM), 1 error, 2 bad command line;
`announce` has codes of its own (`herald announce --help`).";

/// What `announce --help` says about its stop sequence and exit codes.
const ANNOUNCE_HELP: &str = "\
Stop sequence on SIGINT/SIGTERM: `draining` is announced at once (consumers stop picking
the instance; the calls they made go on); after --drain-for, goodbye and deregistration;
then, with a command, SIGTERM to its process group and, after --stop-timeout, SIGKILL.

Exit codes: 0 stopped by SIGINT/SIGTERM, 1 error, 2 bad command line, 3 deregistered (its
etcd key was deleted), 4 fenced (another process took over its instance id), 5 closed
otherwise. With `-- CMD`: stopped by SIGINT/SIGTERM, the command's exit code (0 when it exits
0 or dies of the SIGTERM it is sent; 128+N when signal N killed it); a command that exits on
its own, or before it is ready: its code, at least 1 (128+N for signal N), its instance
withdrawn at once; 127 not found, 126 not runnable.";

/// Where NATS and etcd are, and how to authenticate to them.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Connection (every command)")]
pub(crate) struct Global {
    /// NATS server URLs, comma-separated.
    #[arg(
        long = "nats",
        env = "HERALD_NATS_URL",
        value_delimiter = ',',
        global = true
    )]
    pub(crate) nats: Vec<String>,
    /// etcd endpoints, comma-separated (optional: without them, NATS alone).
    #[arg(
        long = "etcd",
        env = "HERALD_ETCD_ENDPOINTS",
        value_delimiter = ',',
        global = true
    )]
    pub(crate) etcd: Vec<String>,
    /// Subject and key prefix.
    #[arg(long, env = "HERALD_PREFIX", default_value = "herald", global = true, value_parser = prefix)]
    pub(crate) prefix: String,
    /// NATS credentials file (.creds).
    #[arg(long, env = "HERALD_NATS_CREDS", global = true)]
    pub(crate) nats_creds: Option<PathBuf>,
    /// NATS user.
    #[arg(
        long,
        env = "HERALD_NATS_USER",
        global = true,
        requires = "nats_password"
    )]
    pub(crate) nats_user: Option<String>,
    /// NATS password.
    #[arg(
        long,
        env = "HERALD_NATS_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub(crate) nats_password: Option<String>,
    /// NATS token.
    #[arg(long, env = "HERALD_NATS_TOKEN", global = true, hide_env_values = true)]
    pub(crate) nats_token: Option<String>,
    /// CA certificate (PEM) to trust for NATS TLS.
    #[arg(long, env = "HERALD_NATS_TLS_CA", global = true)]
    pub(crate) nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS mutual TLS.
    #[arg(
        long,
        env = "HERALD_NATS_TLS_CERT",
        global = true,
        requires = "nats_tls_key"
    )]
    pub(crate) nats_tls_cert: Option<PathBuf>,
    /// Client key (PEM) for NATS mutual TLS.
    #[arg(long, env = "HERALD_NATS_TLS_KEY", global = true)]
    pub(crate) nats_tls_key: Option<PathBuf>,
    /// etcd user.
    #[arg(
        long,
        env = "HERALD_ETCD_USER",
        global = true,
        requires = "etcd_password"
    )]
    pub(crate) etcd_user: Option<String>,
    /// etcd password.
    #[arg(
        long,
        env = "HERALD_ETCD_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub(crate) etcd_password: Option<String>,
    /// CA certificate (PEM) to trust for etcd TLS.
    #[arg(long, env = "HERALD_ETCD_TLS_CA", global = true)]
    pub(crate) etcd_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd mutual TLS.
    #[arg(
        long,
        env = "HERALD_ETCD_TLS_CERT",
        global = true,
        requires = "etcd_tls_key"
    )]
    pub(crate) etcd_tls_cert: Option<PathBuf>,
    /// Client key (PEM) for etcd mutual TLS.
    #[arg(long, env = "HERALD_ETCD_TLS_KEY", global = true)]
    pub(crate) etcd_tls_key: Option<PathBuf>,
    /// With etcd, also list instances that announce without an etcd registration (by default
    /// their tokens are dropped: the registration is the identity).
    #[arg(long, env = "HERALD_ALLOW_UNREGISTERED", global = true)]
    pub(crate) allow_unregistered: bool,
    /// The subject where this NATS account receives disconnect advisories (the system
    /// account's `$SYS.ACCOUNT.<account>.DISCONNECT`, imported; see the README). A killed
    /// announcer then disappears when its connection closes, not after its TTL.
    #[arg(
        long,
        env = "HERALD_NATS_ADVISORIES",
        global = true,
        value_name = "SUBJECT"
    )]
    pub(crate) nats_advisories: Option<String>,
    /// With --nats-advisories: how long a closed connection's instances wait for a token over
    /// another connection (a reconnecting client) before they are removed.
    #[arg(long, env = "HERALD_DISCONNECT_GRACE", default_value = "200ms", value_parser = humantime::parse_duration, global = true)]
    pub(crate) disconnect_grace: Duration,
    /// How long connecting may take before the command gives up.
    #[arg(long, env = "HERALD_CONNECT_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration, global = true)]
    pub(crate) connect_timeout: Duration,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Announce a service that cannot embed the Rust announcer, until SIGINT or SIGTERM.
    #[command(after_help = ANNOUNCE_HELP)]
    Announce(Box<AnnounceArgs>),
    /// List the live instances: those that answered the probe (with etcd, the registered
    /// instances that answered; `--all` adds the silent ones).
    Ls(LsArgs),
    /// Stream Added / Updated / Removed events.
    Watch(WatchArgs),
    /// Run the per-host discovery agent (HTTP API, Prometheus discovery, metrics; xDS for gRPC
    /// clients and Envoy with --xds).
    Serve(ServeArgs),
    /// Print the xDS bootstrap JSON that grpcio, grpc-js-xds and grpc-go read
    /// (GRPC_XDS_BOOTSTRAP names a file holding it) to use `herald serve --xds`.
    XdsBootstrap(XdsBootstrapArgs),
}

/// `herald xds-bootstrap`.
#[derive(Debug, Args)]
pub(crate) struct XdsBootstrapArgs {
    /// Where the agent serves xDS: host:port, or unix:/path (as given to `herald serve --xds`).
    #[arg(long, env = "HERALD_XDS_LISTEN")]
    pub(crate) server: String,
    /// The client's node id, as the agent's logs name it.
    #[arg(long, default_value = "herald-client")]
    pub(crate) node_id: String,
    /// The client's zone.
    #[arg(long, value_parser = zone)]
    pub(crate) zone: Option<String>,
}

/// `herald announce`.
#[derive(Debug, Args)]
pub(crate) struct AnnounceArgs {
    /// Service name.
    #[arg(long, env = "HERALD_SERVICE", value_parser = service_name)]
    pub(crate) service: String,
    /// Address the service listens on (host:port).
    #[arg(long, env = "HERALD_ADDR", value_parser = addr)]
    pub(crate) addr: String,
    /// Instance id (default: generated).
    #[arg(long, env = "HERALD_INSTANCE", value_parser = instance_id)]
    pub(crate) instance: Option<String>,
    /// Broadcast interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) interval: Duration,
    /// Token TTL (default: 3 x interval).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) ttl: Option<Duration>,
    /// Every how many tokens one goes in full; the others, when nothing but the load
    /// changed, go as compact heartbeats. 1 while subscribers older than heartbeats run.
    #[arg(long, default_value_t = 10)]
    pub(crate) full_token_every: u32,
    /// etcd lease TTL (with --etcd).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) lease_ttl: Duration,
    /// Announced load (0 or more).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub(crate) load: f32,
    /// Weight for weighted picks (1 or more).
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    pub(crate) weight: u32,
    /// Take the instance id over when a live registration holds it (with --etcd): the
    /// other process is fenced and stops.
    #[arg(long)]
    pub(crate) takeover: bool,
    /// Zone.
    #[arg(long, env = "HERALD_ZONE", value_parser = zone)]
    pub(crate) zone: Option<String>,
    /// Metadata entry KEY=VALUE (repeatable).
    #[arg(long = "meta", value_parser = parse_meta)]
    pub(crate) meta: Vec<(String, String)>,
    /// Drain while a TCP connect to HOST:PORT fails.
    #[arg(long, conflicts_with = "check_http", value_parser = parse_host_port)]
    pub(crate) check_tcp: Option<String>,
    /// Drain while an HTTP GET of URL does not answer 2xx.
    #[arg(long, value_parser = http_url)]
    pub(crate) check_http: Option<String>,
    /// How often the check runs.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) check_interval: Duration,
    /// On SIGINT/SIGTERM, announce `draining` at once and leave only this long after: consumers
    /// stop picking the instance while the calls they already made finish; then goodbye,
    /// deregistration and, with a command, its stop. 0s leaves at once.
    #[arg(long, env = "HERALD_DRAIN_FOR", default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) drain_for: Duration,
    /// With a command: how long it has to exit after SIGTERM before it is killed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) stop_timeout: Duration,
    /// Run the service: announced once it accepts connections on --addr (or passes
    /// --check-*), stopped with SIGTERM after the instance has left; withdrawn at once if it
    /// exits on its own. It gets announce's stdin, stdout and stderr, in a process group of
    /// its own, and is killed if announce dies.
    #[arg(last = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

/// `herald ls`.
#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Only this service.
    #[arg(value_parser = service_name)]
    pub(crate) service: Option<String>,
    /// A JSON array instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also list registered instances that did not answer (marked `silent`): they may have
    /// crashed while their etcd lease still holds.
    #[arg(long)]
    pub(crate) all: bool,
    /// The longest to wait for probe answers. With etcd, listing ends as soon as every
    /// registered instance answered; without, once no new answer came for 200 ms.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) wait: Duration,
}

/// `herald watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Only this service.
    #[arg(value_parser = service_name)]
    pub(crate) service: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `herald serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:7411")]
    pub(crate) listen: String,
    /// Preferred zone for picks.
    #[arg(long, env = "HERALD_ZONE", value_parser = zone)]
    pub(crate) zone: Option<String>,
    /// Also serve xDS (aggregated, state of the world) on this address: host:port, or
    /// unix:/path. gRPC clients (`xds:///SERVICE`) and Envoy then balance over the agent's
    /// view; `herald xds-bootstrap` prints what they need to find it.
    #[arg(long, env = "HERALD_XDS_LISTEN")]
    pub(crate) xds: Option<String>,
    /// Follow only these services (comma-separated, or the flag repeated): the agent then
    /// takes in, lists and serves over xDS nothing else. Without it, every service is
    /// followed from the start, so any service a client asks for is answered from a full view.
    /// Empty items are ignored: `HERALD_SERVICES=` follows every service.
    #[arg(long, env = "HERALD_SERVICES", value_delimiter = ',', value_parser = service_name_or_empty)]
    pub(crate) services: Vec<String>,
}

/// The command-line flag that sets a library setting, for messages in the CLI's words.
pub(crate) fn flag_of(field: &str) -> String {
    let flag = match field {
        "service" => "--service",
        "addr" => "--addr",
        "instance" => "--instance",
        "interval" => "--interval",
        "ttl" | "ttl_ms" => "--ttl",
        "lease_ttl" => "--lease-ttl",
        "full_token_every" => "--full-token-every",
        "weight" => "--weight",
        "load" => "--load",
        "zone" => "--zone",
        "meta" => "--meta",
        "prefix" => "--prefix",
        "nats" | "nats.urls" => "--nats",
        "etcd.endpoints" => "--etcd",
        "nats.connect_timeout" | "etcd.connect_timeout" => "--connect-timeout",
        "disconnect_advisories" => "--nats-advisories",
        "disconnect_grace" => "--disconnect-grace",
        other => return format!("`{other}`"),
    };
    flag.to_owned()
}

// Names and addresses are checked as the command line is read, by the library's own rules, so
// that a bad one is a usage error (exit 2) that names its argument.

/// An `http://` URL, as `--check-http` takes.
fn http_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err("only http:// URLs are supported".to_owned());
    }
    Ok(s.to_owned())
}

fn service_name(s: &str) -> Result<String, &'static str> {
    checked(s, validate::service_name)
}

/// A service name, or nothing (an empty item of a list).
fn service_name_or_empty(s: &str) -> Result<String, &'static str> {
    match s.trim() {
        "" => Ok(String::new()),
        name => service_name(name),
    }
}

fn instance_id(s: &str) -> Result<String, &'static str> {
    checked(s, validate::instance_id)
}

fn zone(s: &str) -> Result<String, &'static str> {
    checked(s, validate::zone)
}

fn addr(s: &str) -> Result<String, &'static str> {
    checked(s, validate::addr)
}

fn prefix(s: &str) -> Result<String, &'static str> {
    herald_shared::Subjects::new(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.bound)
}

fn checked(
    s: &str,
    rule: fn(&str) -> Result<(), herald_shared::Invalid>,
) -> Result<String, &'static str> {
    rule(s).map(|()| s.to_owned()).map_err(|e| e.bound)
}

fn parse_host_port(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(s.to_owned())
        }
        _ => Err(format!("`{s}` is not HOST:PORT")),
    }
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn check_tcp_needs_a_host_and_a_port() {
        assert!(parse_host_port("db:5432").is_ok());
        assert!(parse_host_port("[::1]:80").is_ok());
        for bad in ["nohostport", ":80", "db:", "db:0", "db:99999"] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn negative_numbers_reach_validation() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "herald",
            "announce",
            "--service",
            "s",
            "--addr",
            "a:1",
            "--load",
            "-1",
        ])
        .expect("-1 is a value, not a flag");
        let Command::Announce(a) = cli.command else {
            panic!("announce")
        };
        assert_eq!(a.load, -1.0);
        let err = Cli::try_parse_from([
            "herald",
            "announce",
            "--service",
            "s",
            "--addr",
            "a:1",
            "--weight",
            "-5",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("'-5' for '--weight"), "{err}");
    }

    #[test]
    fn meta_needs_a_key() {
        assert_eq!(parse_meta("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_meta("=x").is_err());
        assert!(parse_meta("nokey").is_err());
    }
}
