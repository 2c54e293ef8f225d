//! When tokens go out: the interval, the TTL, load sampling, early tokens, and the shutdown
//! deadline.

use std::time::Duration;

use super::AnnouncerBuilder;

impl AnnouncerBuilder {
    /// The broadcast interval (default 1 s, within 50 ms ..= 20 min); each token goes out
    /// `interval` +-10 % after the previous one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .interval(Duration::from_millis(500));
    /// ```
    pub fn interval(mut self, interval: Duration) -> Self {
        self.requested.interval = interval;
        self
    }

    /// How long subscribers keep the instance without a newer token (default 3 x interval;
    /// within 100 ms ..= 1 h and greater than the interval). Twice the interval or more
    /// survives one lost token.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .interval(Duration::from_secs(1))
    ///     .ttl(Duration::from_secs(5));
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.requested.ttl = Some(ttl);
        self
    }

    /// How often `load_fn` is sampled (default interval / 4, at least 25 ms).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .load_fn(|| 0.5)
    ///     .load_sample_interval(Duration::from_millis(100));
    /// ```
    pub fn load_sample_interval(mut self, every: Duration) -> Self {
        self.requested.load_sample_interval = Some(every);
        self
    }

    /// The load change that sends a token early (default 0.1, for a load expressed as
    /// utilisation): when `|load - last sent load| > delta`.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .load_delta(0.05);
    /// ```
    pub fn load_delta(mut self, delta: f32) -> Self {
        self.requested.load_delta = delta;
        self
    }

    /// The smallest spacing of early tokens (default 100 ms, capped by the interval; within
    /// 10 ms ..= interval). A change that comes sooner is sent at the end of the gap.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .min_early_gap(Duration::from_millis(250));
    /// ```
    pub fn min_early_gap(mut self, gap: Duration) -> Self {
        self.requested.min_early_gap = Some(gap);
        self
    }

    /// How often a periodic token goes out in full (default every 10th; within 1 ..= 1000).
    ///
    /// Between full tokens, a periodic or early token that changes nothing but freshness and
    /// load goes out as a heartbeat ([`herald_shared::Heartbeat`]): instance, epoch, seq and
    /// load, a third of the bytes. The first token, the answer to a probe, the token after a
    /// reconnect and every change (state, metadata, epoch), with the periodic token after it,
    /// go out in full. Subscribers older than heartbeats refuse them: while such subscribers
    /// run, set 1 (every token full).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .full_token_every(1);
    /// ```
    pub fn full_token_every(mut self, n: u32) -> Self {
        self.requested.full_token_every = n;
        self
    }

    /// How long [`AnnouncerHandle::shutdown`](crate::AnnouncerHandle::shutdown) may take to send its goodbye (default 2 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = herald_announcer::Announcer::builder("billing", "10.0.0.7:8080")
    ///     .shutdown_timeout(Duration::from_millis(500));
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.requested.shutdown_timeout = timeout;
        self
    }
}
