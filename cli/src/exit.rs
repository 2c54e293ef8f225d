//! How the process ends: the exit codes of `herald announce`'s stop reasons, and what counts
//! as a normal end of the output.

use std::io::IsTerminal;

/// `announce`: its etcd registration was deleted (deregistered by an operator).
pub(crate) const DEREGISTERED: u8 = 3;
/// `announce`: another process took over its instance id.
pub(crate) const FENCED: u8 = 4;
/// `announce`: the announcer was closed otherwise.
pub(crate) const CLOSED: u8 = 5;

/// A value the command line gave that the library refused before connecting: a usage error,
/// which exits 2 like the values clap refuses.
#[derive(Debug)]
pub(crate) struct BadValue(pub(crate) String);

impl std::fmt::Display for BadValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadValue {}

/// `invalid FLAG: BOUND`, as a usage error.
pub(crate) fn bad_value(flag: &str, bound: &str) -> anyhow::Error {
    anyhow::Error::new(BadValue(format!("invalid {flag}: {bound}")))
}

/// Whether `e` is a usage error (exit 2).
pub(crate) fn is_bad_value(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.is::<BadValue>())
}

/// A command a signal stopped before it could start: it exits 128 + the signal, without a
/// message (the user asked for it).
#[derive(Debug)]
pub(crate) struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped by a signal while starting")
    }
}

impl std::error::Error for Interrupted {}

/// Whether `e` is [`Interrupted`].
pub(crate) fn is_interrupted(e: &anyhow::Error) -> bool {
    e.is::<Interrupted>()
}

/// Whether `e` is a write to a closed pipe (the reader, e.g. `head`, has gone).
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == std::io::ErrorKind::BrokenPipe)
    })
}

/// Colours in the logs only for a terminal, and not when `NO_COLOR` is set.
pub(crate) fn colours_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
