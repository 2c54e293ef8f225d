//! Why etcd could not be used, sorted by gRPC status code into what the user must fix: the
//! credentials, or the reachability of the cluster. The cause stays typed in `source()`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

/// What etcd answers to a wrong user name or password (status `InvalidArgument`).
const AUTH_FAILED: &str = "etcdserver: authentication failed";
/// What etcd with authentication on answers a client that gave no credentials
/// (`InvalidArgument` too).
const USER_EMPTY: &str = "etcdserver: user name is empty";

/// Why etcd could not be used. `Display` names this layer only; the cause is in `source()`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// A setting is wrong; the message names it.
    #[error("invalid {0}")]
    Config(&'static str),
    /// A TLS file could not be read.
    #[error("cannot read etcd tls file")]
    Tls(#[source] Arc<EtcdCause>),
    /// The credentials were refused (wrong user or password, or no permission).
    #[error("etcd refused the credentials")]
    Auth(#[source] Arc<EtcdCause>),
    /// No endpoint answered in time, or etcd failed the call.
    #[error("etcd unreachable")]
    Unreachable(#[source] Arc<EtcdCause>),
}

impl EtcdError {
    /// An [`EtcdError::Unreachable`] for a call that got no answer within `within`.
    pub fn no_answer(within: Duration) -> EtcdError {
        EtcdError::Unreachable(Arc::new(EtcdCause::NoAnswer { within, last: None }))
    }

    /// An [`EtcdError::Unreachable`] that says what went wrong in words (no answer, or an
    /// answer that makes no sense).
    pub fn unreachable(why: &'static str) -> EtcdError {
        EtcdError::Unreachable(Arc::new(EtcdCause::Other(why)))
    }

    /// The cause, when there is one.
    pub fn cause(&self) -> Option<&EtcdCause> {
        match self {
            EtcdError::Config(_) => None,
            EtcdError::Tls(c) | EtcdError::Auth(c) | EtcdError::Unreachable(c) => Some(c),
        }
    }
}

/// What an [`EtcdError`] comes from.
#[derive(Debug)]
#[non_exhaustive]
pub enum EtcdCause {
    /// etcd-client failed the call: a gRPC status from etcd, or a transport failure.
    Client(etcd_client::Error),
    /// No answer within `within`; the last failure seen, if any, is the source.
    NoAnswer {
        /// The deadline that passed.
        within: Duration,
        /// The last failure seen before the deadline.
        last: Option<Arc<EtcdCause>>,
    },
    /// A file could not be read.
    File {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        error: std::io::Error,
    },
    /// What went wrong, in words.
    Other(&'static str),
}

impl fmt::Display for EtcdCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdCause::Client(etcd_client::Error::GRpcStatus(status)) => {
                if status.message().is_empty() {
                    write!(f, "status {:?}", status.code())
                } else {
                    write!(f, "{} (status {:?})", status.message(), status.code())
                }
            }
            EtcdCause::Client(etcd_client::Error::TransportError(_)) => {
                f.write_str("the connection failed")
            }
            EtcdCause::Client(etcd_client::Error::IoError(_)) => f.write_str("i/o failed"),
            EtcdCause::Client(other) => other.fmt(f),
            EtcdCause::NoAnswer { within, .. } => write!(f, "no answer within {within:?}"),
            EtcdCause::File { path, .. } => write!(f, "{}", path.display()),
            EtcdCause::Other(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for EtcdCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // tonic and hyper wrap a transport failure in layers that say the same words
            // ("tcp connect error" three times): the root cause is what is worth reading.
            EtcdCause::Client(etcd_client::Error::GRpcStatus(status)) => status.source().map(root),
            EtcdCause::Client(etcd_client::Error::TransportError(e)) => Some(e),
            EtcdCause::Client(etcd_client::Error::IoError(e)) => Some(e),
            EtcdCause::Client(_) | EtcdCause::Other(_) => None,
            EtcdCause::NoAnswer { last, .. } => last.as_deref().map(|c| c as _),
            EtcdCause::File { error, .. } => Some(error),
        }
    }
}

/// The innermost cause of `e`.
fn root<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> &'a (dyn std::error::Error + 'static) {
    while let Some(next) = e.source() {
        e = next;
    }
    e
}

/// Sorts an etcd-client error, by its gRPC status code, into what the user must fix:
/// [`EtcdError::Auth`] for refused credentials or permissions, [`EtcdError::Unreachable`]
/// for everything else (no answer, a broken transport, a failed call).
pub fn classify(e: etcd_client::Error) -> EtcdError {
    let auth = is_auth(&e);
    let cause = Arc::new(EtcdCause::Client(e));
    if auth {
        EtcdError::Auth(cause)
    } else {
        EtcdError::Unreachable(cause)
    }
}

/// Whether etcd refused the credentials or the permission: `Unauthenticated` (a bad or
/// expired token), `PermissionDenied`, or a failed authentication, which etcd answers with
/// `InvalidArgument`, the code of every malformed request, so only its message tells it apart.
pub fn is_auth(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => true,
            Code::InvalidArgument => {
                let message = status.message();
                message.starts_with(AUTH_FAILED) || message.starts_with(USER_EMPTY)
            }
            _ => false,
        },
        _ => false,
    }
}

/// Whether etcd says the lease of the call is unknown to it (expired, revoked, or never
/// granted by this cluster): `NotFound` from the server, or the zero TTL etcd-client's
/// keep-alive reports as an error when it opens its stream.
pub fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => status.code() == Code::NotFound,
        // etcd-client's own words for a first keep-alive answer with TTL 0.
        etcd_client::Error::LeaseKeepAliveError(why) => why == "lease not found",
        _ => false,
    }
}

/// Whether etcd-client refused a response for its size (over the 4 MiB it decodes):
/// `OutOfRange`, raised on the client's side.
pub fn is_too_large(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(status) if status.code() == Code::OutOfRange)
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn status(code: Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn only_out_of_range_is_too_large() {
        let big = "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes";
        assert!(is_too_large(&status(Code::OutOfRange, big)));
        assert!(!is_too_large(&status(Code::Unavailable, "gone")));
    }

    #[test]
    fn refused_credentials_are_sorted_by_code() {
        for e in [
            status(Code::Unauthenticated, "etcdserver: invalid auth token"),
            status(Code::PermissionDenied, "etcdserver: permission denied"),
            status(
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            // Authentication on, and no credentials given.
            status(Code::InvalidArgument, "etcdserver: user name is empty"),
        ] {
            assert!(
                matches!(classify(e), EtcdError::Auth(_)),
                "a refusal must be an auth error"
            );
        }
    }

    #[test]
    fn everything_else_is_unreachable() {
        for e in [
            status(Code::Unavailable, "etcdserver: leader changed"),
            status(Code::DeadlineExceeded, "context deadline exceeded"),
            status(Code::InvalidArgument, "etcdserver: request is too large"),
            // Words of a refusal under a code that is not one must not count.
            status(Code::Unknown, "permission denied"),
        ] {
            assert!(
                matches!(classify(e), EtcdError::Unreachable(_)),
                "only codes of a refusal may make an auth error"
            );
        }
    }

    #[test]
    fn display_says_its_own_layer_and_the_source_gives_the_status_message() {
        let e = classify(status(
            Code::InvalidArgument,
            "etcdserver: authentication failed, invalid user ID or password",
        ));
        assert_eq!(e.to_string(), "etcd refused the credentials");
        let source = e.source().expect("the cause must be kept").to_string();
        assert_eq!(
            source,
            "etcdserver: authentication failed, invalid user ID or password (status InvalidArgument)"
        );
        assert!(
            matches!(e.cause(), Some(EtcdCause::Client(_))),
            "the cause stays typed"
        );
    }

    #[test]
    fn a_missed_deadline_names_the_deadline_and_keeps_the_last_failure() {
        let last = Arc::new(EtcdCause::Client(status(Code::Unavailable, "no leader")));
        let e = EtcdError::Unreachable(Arc::new(EtcdCause::NoAnswer {
            within: Duration::from_secs(1),
            last: Some(last),
        }));
        let mut chain = Vec::new();
        let mut layer: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(l) = layer {
            chain.push(l.to_string());
            layer = l.source();
        }
        assert_eq!(
            chain,
            [
                "etcd unreachable",
                "no answer within 1s",
                "no leader (status Unavailable)"
            ],
            "each layer says its own words once"
        );
    }

    #[test]
    fn a_lost_lease_is_recognised() {
        assert!(is_lease_not_found(&status(
            Code::NotFound,
            "etcdserver: requested lease not found"
        )));
        assert!(is_lease_not_found(
            &etcd_client::Error::LeaseKeepAliveError("lease not found".into())
        ));
        assert!(!is_lease_not_found(&status(Code::Unavailable, "")));
    }
}
