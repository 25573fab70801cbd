//! The `clientSecretRotation` block of a spec, checked once into [`Settings`].

use jiff::SignedDuration;

use crate::crd::ClientSecretRotation;
use crate::error::{Error, Result};
use crate::time_format::parse_duration;

/// Shortest and longest rotation period.
pub const MIN_EVERY: SignedDuration = SignedDuration::from_hours(1);
pub const MAX_EVERY: SignedDuration = SignedDuration::from_hours(3650 * 24);
/// Longest grace period, and the default.
pub const MAX_GRACE: SignedDuration = SignedDuration::from_hours(30 * 24);
pub const DEFAULT_GRACE: SignedDuration = SignedDuration::from_hours(1);

/// The rotation settings of a spec, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub org_id: String,
    pub credential_id: String,
    pub every: Option<SignedDuration>,
    pub grace: SignedDuration,
    pub endpoint: String,
    pub delete_other_secret: bool,
}

impl Settings {
    pub fn from_spec(spec: &ClientSecretRotation) -> Result<Self> {
        let invalid = |field: &'static str, reason: String| Error::InvalidRotationSpec { field, reason };
        for (field, value) in [("orgId", &spec.org_id), ("credentialId", &spec.credential_id)] {
            if value.is_empty() || value.len() > 32 || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(field, "must be the numeric ID from the Developer Console URL".into()));
            }
        }
        let every = match spec.every.as_deref() {
            None => None,
            Some(text) => match parse_duration(text) {
                Some(d) if (MIN_EVERY..=MAX_EVERY).contains(&d) => Some(d),
                _ => return Err(invalid("every", "must be a duration between 1h and 3650d, e.g. 90d".into())),
            },
        };
        let grace = match spec.grace_period.as_deref() {
            None => DEFAULT_GRACE,
            Some(text) => match parse_duration(text) {
                Some(d) if d <= MAX_GRACE => d,
                _ => return Err(invalid("gracePeriod", "must be a duration between 0s and 30d, e.g. 1h".into())),
            },
        };
        Ok(Self {
            org_id: spec.org_id.clone(),
            credential_id: spec.credential_id.clone(),
            every,
            grace,
            endpoint: spec.management_endpoint.trim_end_matches('/').to_owned(),
            delete_other_secret: spec.delete_other_secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let spec = |every: &str| ClientSecretRotation {
            org_id: "123".into(),
            credential_id: "456".into(),
            every: Some(every.into()),
            grace_period: None,
            management_endpoint: "https://api.adobe.io/".into(),
            delete_other_secret: false,
        };
        let s = Settings::from_spec(&spec("90d")).expect("valid");
        assert_eq!(s.every, Some(SignedDuration::from_hours(2160)));
        assert_eq!(s.grace, DEFAULT_GRACE);
        assert_eq!(s.endpoint, "https://api.adobe.io");
        let mut spec = spec("30m");
        assert_eq!(Settings::from_spec(&spec).unwrap_err().reason(), "InvalidRotationSpec");
        spec.every = Some("90d".into());
        spec.grace_period = Some("31d".into());
        assert!(Settings::from_spec(&spec).unwrap_err().to_string().contains("gracePeriod"));
        spec.grace_period = None;
        spec.org_id = "12@AdobeOrg".into();
        assert!(Settings::from_spec(&spec).unwrap_err().to_string().contains("orgId"));
    }
}
