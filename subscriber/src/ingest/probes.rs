//! Probes: asking every announcer, or those of some services, to answer now.

use std::sync::atomic::Ordering::Relaxed;

use tokio::time::Instant;

use super::Ingest;

impl Ingest {
    /// Asks every announcer of the followed services to answer now.
    pub(crate) async fn probe(&mut self) {
        self.probe_wanted = false;
        self.probe_pacing.probed(Instant::now());
        for subject in &self.probe_subjects {
            if let Err(e) = self
                .client
                .publish(subject.clone(), bytes::Bytes::new())
                .await
            {
                tracing::warn!(error = %e, subject, "probe not sent");
                self.probe_wanted = true;
                return;
            }
            self.counters.probes_sent.fetch_add(1, Relaxed);
        }
        tracing::debug!("probe sent");
    }

    /// Probes the services heartbeats asked for, each on its own subject.
    pub(super) async fn probe_services(&mut self) {
        self.probe_pacing.probed(Instant::now());
        while let Some(service) = self.services_to_probe.pop() {
            let subject = self.subjects.probe(&service);
            if let Err(e) = self.client.publish(subject, bytes::Bytes::new()).await {
                tracing::warn!(error = %e, %service, "probe not sent");
                self.services_to_probe.push(service);
                return;
            }
            self.counters.probes_sent.fetch_add(1, Relaxed);
            tracing::debug!(%service, "probe sent for a heartbeat of an unknown instance");
        }
    }
}
