//! One module per subcommand.

pub(crate) mod announce;
pub(crate) mod ls;
pub(crate) mod serve;
pub(crate) mod watch;
