//! Every NATS subject and etcd key Herald uses is formatted here, and only here.
//!
//! - `{prefix}.announce.{service}`: tokens;
//! - `{prefix}.probe.{service}` and `{prefix}.probe`: probes asking announcers to answer now;
//! - `/{prefix}/services/{service}/{instance}`: the instance's registration in etcd.

use crate::validate::Invalid;

/// The default prefix of subjects and keys.
pub const DEFAULT_PREFIX: &str = "herald";

/// Subject and key names under one prefix.
///
/// # Examples
///
/// ```
/// use herald_shared::Subjects;
///
/// let s = Subjects::new("herald").unwrap();
/// assert_eq!(s.announce("billing"), "herald.announce.billing");
/// assert_eq!(s.service_of_announce("herald.announce.billing"), Some("billing"));
/// assert_eq!(s.key("billing", "b-1"), "/herald/services/billing/b-1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
    announce_head: String,
}

impl Subjects {
    /// Names under `prefix` (`[A-Za-z0-9_-]{1,64}`, like a service name).
    ///
    /// # Errors
    ///
    /// When the prefix is not a single safe subject token.
    pub fn new(prefix: &str) -> Result<Self, Invalid> {
        crate::validate::service_name(prefix).map_err(|_| Invalid {
            field: crate::validate::Field::Service,
            bound: "prefix must match [A-Za-z0-9_-]{1,64}",
        })?;
        Ok(Subjects {
            prefix: prefix.to_owned(),
            announce_head: format!("{prefix}.announce."),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}.announce.{service}`
    pub fn announce(&self, service: &str) -> String {
        format!("{}{service}", self.announce_head)
    }

    /// `{prefix}.announce.*`: tokens of every service.
    pub fn announce_all(&self) -> String {
        format!("{}*", self.announce_head)
    }

    /// The service named by an announce subject, or `None` for any other subject.
    pub fn service_of_announce<'s>(&self, subject: &'s str) -> Option<&'s str> {
        subject
            .strip_prefix(self.announce_head.as_str())
            .filter(|s| !s.is_empty() && !s.contains('.'))
    }

    /// `{prefix}.probe.{service}`
    pub fn probe(&self, service: &str) -> String {
        format!("{}.probe.{service}", self.prefix)
    }

    /// `{prefix}.probe`: a probe of every service.
    pub fn probe_all(&self) -> String {
        format!("{}.probe", self.prefix)
    }

    /// `/{prefix}/services/`: the etcd prefix of every registration.
    pub fn services_prefix(&self) -> String {
        format!("/{}/services/", self.prefix)
    }

    /// `/{prefix}/services/{service}/`: the etcd prefix of one service's registrations.
    pub fn service_prefix(&self, service: &str) -> String {
        format!("/{}/services/{service}/", self.prefix)
    }

    /// `/{prefix}/services/{service}/{instance}`: one instance's registration key.
    pub fn key(&self, service: &str, instance: &str) -> String {
        format!("/{}/services/{service}/{instance}", self.prefix)
    }

    /// Splits a registration key into `(service, instance)`.
    pub fn parse_key<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key
            .strip_prefix('/')?
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("/services/")?;
        let (service, instance) = rest.split_once('/')?;
        (!service.is_empty() && !instance.is_empty() && !instance.contains('/'))
            .then_some((service, instance))
    }
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects::new(DEFAULT_PREFIX).expect("the default prefix is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announce_subjects_round_trip() {
        let s = Subjects::new("p1").unwrap();
        assert_eq!(s.service_of_announce(&s.announce("a_b")), Some("a_b"));
        assert_eq!(s.service_of_announce("p1.announce."), None);
        assert_eq!(s.service_of_announce("p1.announce.a.b"), None);
        assert_eq!(s.service_of_announce("p2.announce.a"), None);
        assert_eq!(s.probe("a"), "p1.probe.a");
        assert_eq!(s.probe_all(), "p1.probe");
    }

    #[test]
    fn keys_round_trip() {
        let s = Subjects::new("p1").unwrap();
        assert_eq!(s.parse_key(&s.key("svc", "i:1")), Some(("svc", "i:1")));
        assert_eq!(s.parse_key("/p1/services/svc"), None);
        assert_eq!(s.parse_key("/p2/services/svc/i"), None);
    }

    #[test]
    fn prefix_must_be_one_subject_token() {
        assert!(Subjects::new("a.b").is_err());
        assert!(Subjects::new("").is_err());
    }
}
