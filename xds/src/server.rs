//! The ADS service over tonic, and where it listens: `host:port`, or `unix:/path`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use herald_subscriber::Subscriber;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use crate::hub::Hub;
use crate::stats::{Counters, XdsStats};
use crate::stream;

/// An xDS server over one subscriber's views.
#[derive(Debug, Clone)]
pub struct XdsServer {
    hub: Arc<Hub>,
}

impl XdsServer {
    /// A server of `subscriber`'s views. Nothing listens until [`XdsServer::serve`].
    pub fn new(subscriber: Arc<Subscriber>) -> XdsServer {
        XdsServer {
            hub: Hub::new(subscriber, Arc::new(Counters::default())),
        }
    }

    /// The counters: connected clients, responses, NACKs.
    pub fn stats(&self) -> XdsStats {
        self.hub.counters.snapshot()
    }

    /// The tonic service, for a program that runs its own gRPC server. It serves changes
    /// only while [`XdsServer::serve`] runs, or [`XdsServer::follow`] does.
    pub fn service(&self) -> AggregatedDiscoveryServiceServer<impl AggregatedDiscoveryService> {
        AggregatedDiscoveryServiceServer::new(Ads {
            hub: self.hub.clone(),
        })
    }

    /// Follows the subscriber's changes until `cancel`, telling open streams.
    pub async fn follow(&self, cancel: CancellationToken) {
        self.hub.clone().follow(cancel).await;
    }

    /// Serves on `bound` until `shutdown` completes.
    ///
    /// # Errors
    ///
    /// When the gRPC server fails.
    pub async fn serve(
        &self,
        bound: Bound,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let cancel = CancellationToken::new();
        let follow = tokio::spawn(self.hub.clone().follow(cancel.clone()));
        let router = tonic::transport::Server::builder().add_service(self.service());
        let closing = self.hub.closing.clone();
        // Open streams end first: a graceful stop waits for every open call.
        let signal = async move {
            shutdown.await;
            closing.cancel();
        };
        let served = match bound {
            Bound::Tcp(l) => {
                // Without TCP_NODELAY a response written in more than one segment waits for
                // the client's delayed ACK: 40 ms, measured, on a first call after a join.
                let incoming = TcpIncoming::from(l).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
            Bound::Unix(l, _) => {
                router
                    .serve_with_incoming_shutdown(UnixListenerStream::new(l), signal)
                    .await
            }
        };
        cancel.cancel();
        let _ = follow.await;
        served
    }
}

/// A listening socket for [`XdsServer::serve`]: bound first, so that an address in use fails
/// before anything connects.
#[derive(Debug)]
pub enum Bound {
    /// A TCP listener.
    Tcp(tokio::net::TcpListener),
    /// A Unix socket listener, and its path (removed when dropped).
    Unix(tokio::net::UnixListener, UnixPath),
}

/// A Unix socket's path, removed when the listener goes.
#[derive(Debug)]
pub struct UnixPath(pub std::path::PathBuf);

impl Drop for UnixPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Bound {
    /// Binds `addr`: `host:port`, or `unix:/path` for a Unix socket.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn bind(addr: &str) -> std::io::Result<Bound> {
        match addr.strip_prefix("unix:") {
            Some(path) => {
                remove_if_stale(path).await;
                let listener = tokio::net::UnixListener::bind(path)?;
                Ok(Bound::Unix(listener, UnixPath(path.into())))
            }
            None => Ok(Bound::Tcp(tokio::net::TcpListener::bind(addr).await?)),
        }
    }

    /// Where it listens, as a bootstrap's `server_uri` names it.
    pub fn uri(&self) -> String {
        match self {
            Bound::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string()),
            Bound::Unix(_, path) => format!("unix:{}", path.0.display()),
        }
    }
}

/// Removes the socket file at `path` when nothing listens on it any more (a server that was
/// killed leaves it behind), so that a restart can bind again. A live socket stays: binding
/// then fails as the address is in use.
async fn remove_if_stale(path: &str) {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket
        && let Err(e) = tokio::net::UnixStream::connect(path).await
        && e.kind() == std::io::ErrorKind::ConnectionRefused
    {
        tracing::info!(path, "removing the stale socket of an earlier run");
        let _ = std::fs::remove_file(path);
    }
}

struct Ads {
    hub: Arc<Hub>,
}

type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaResponses = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Responses;
    type DeltaAggregatedResourcesStream = DeltaResponses;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let stream = stream::Stream::new(self.hub.clone(), request.into_inner());
        let responses = futures::stream::unfold(stream, |mut s| async move {
            let next = s.next().await?;
            Some((next, s))
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaResponses>, Status> {
        Err(Status::unimplemented(
            "herald serves xDS state of the world only",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_kept() {
        let dir = std::env::temp_dir().join(format!("herald-xds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("xds.sock");
        let addr = format!("unix:{}", path.display());
        // A server killed without cleaning up: the file stays, nothing listens.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let bound = Bound::bind(&addr)
            .await
            .expect("a stale socket is replaced");
        let err = Bound::bind(&addr)
            .await
            .expect_err("a live socket is not taken over");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        drop(bound);
        assert!(
            !path.exists(),
            "the server removes its socket when it stops"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
