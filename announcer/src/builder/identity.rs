//! What the tokens say about the instance: prefix, id, zone, weight, metadata and load.

use std::sync::Arc;

use super::AnnouncerBuilder;
use crate::plan::LoadFn;

impl AnnouncerBuilder {
    /// The subject prefix (default `herald`), one subject token `[A-Za-z0-9_-]{1,64}`.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .prefix("staging");
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The instance id, `[A-Za-z0-9_.:-]{1,128}`, unique within the service. Defaults to
    /// `{host}-{16 random hex digits}`, new at every start.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .instance("billing-1");
    /// ```
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// The zone or rack, `[A-Za-z0-9_.-]{1,64}`, for zone-preferring picks.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .zone("eu-1");
    /// ```
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// The weight for weighted picks (default 100, at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .weight(200);
    /// ```
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Adds a metadata entry (at most 32 entries, keys 1..=64 bytes, values up to 256 bytes,
    /// and the whole token within 4 KiB).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .meta("version", "1.4.2")
    ///     .meta("protocol", "grpc");
    /// ```
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }

    /// The initial load (default 0), finite and `>= 0`.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .load(0.3);
    /// ```
    pub fn load(mut self, load: f32) -> Self {
        self.load = load;
        self
    }

    /// A load source, sampled every
    /// [`load_sample_interval`](AnnouncerBuilder::load_sample_interval) on tokio's blocking
    /// pool: a slow or blocking one delays this announcer's load only (the next sample waits
    /// for it), never the tokens of the other announcers on the connection. Samples that are
    /// not finite and `>= 0` are ignored, and so is a sample whose call panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// let in_flight = Arc::new(AtomicU32::new(0));
    /// let gauge = in_flight.clone();
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .load_fn(move || gauge.load(Ordering::Relaxed) as f32)
    ///     .load_delta(5.0);
    /// ```
    pub fn load_fn(mut self, load_fn: impl Fn() -> f32 + Send + Sync + 'static) -> Self {
        self.load_fn = Some(LoadFn(Arc::new(load_fn)));
        self
    }
}
