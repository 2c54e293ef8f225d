//! Proof that the server has handled what this connection sent: its subscriptions are in
//! force, its messages routed.
//!
//! async-nats's `flush()` only proves that bytes left the socket: a message published from
//! another connection right after `subscribe()` + `flush()` can still miss the new
//! subscription, and a message flushed here may still sit unread in the server's socket.
//! A NATS server handles one connection's protocol lines in order, so once a message this
//! connection publishes to its own fresh inbox comes back, every `SUB` sent before it is in
//! force and every `PUB` sent before it has been handed to its subscribers.

use std::time::Duration;

use futures::StreamExt;

/// Why the round trip did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RoundTripError {
    /// Subscribing or publishing failed.
    #[error("nats round trip failed: {0}")]
    Nats(String),
    /// The echo did not come back in time.
    #[error("nats round trip timed out")]
    TimedOut,
}

/// Waits until every subscription made before this call is active on the server.
///
/// # Errors
///
/// [`RoundTripError::TimedOut`] when no echo arrives within `timeout`.
pub async fn confirm_subscriptions(
    client: &async_nats::Client,
    timeout: Duration,
) -> Result<(), RoundTripError> {
    server_handled(client, timeout).await
}

/// Waits until the server has handled everything this connection sent before this call:
/// its subscriptions are active, and its messages are on their way to every subscriber.
///
/// # Errors
///
/// [`RoundTripError::TimedOut`] when no echo arrives within `timeout`.
pub async fn server_handled(
    client: &async_nats::Client,
    timeout: Duration,
) -> Result<(), RoundTripError> {
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| RoundTripError::Nats(e.to_string()))?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .map_err(|e| RoundTripError::Nats(e.to_string()))?;
    let got = tokio::time::timeout(timeout, echo.next()).await;
    let _ = echo.unsubscribe().await;
    match got {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(RoundTripError::Nats("subscription closed".to_owned())),
        Err(_) => Err(RoundTripError::TimedOut),
    }
}
