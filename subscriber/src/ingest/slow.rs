//! A test hook that slows ingest down (feature `internals` only).

use std::time::Duration;

/// A test hook (feature `internals`) that slows ingest down by a fixed time per token, to
/// exercise overload. The
/// time is owed per token and paid in sleeps of at least a millisecond (the timer's
/// granularity) after each batch, so that no runtime worker is ever blocked.
#[derive(Debug)]
pub(crate) struct SlowIngest {
    per_token: Duration,
    owed: Duration,
}

impl SlowIngest {
    pub(crate) fn new(per_token: Duration) -> Self {
        SlowIngest {
            per_token,
            owed: Duration::ZERO,
        }
    }

    pub(super) fn owe(&mut self) {
        self.owed += self.per_token;
    }

    pub(super) async fn pay(&mut self) {
        if self.owed >= Duration::from_millis(1) {
            tokio::time::sleep(std::mem::take(&mut self.owed)).await;
        }
    }
}
