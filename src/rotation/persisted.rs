//! What the rotation procedure persists in its state Secret between steps (never a secret's
//! value): the step, the secret in use, the last rotation and failure. Read back from a Secret a
//! tenant can write, so parsing is bounded and checked.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A client secret as the operator remembers it (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    pub uuid: String,
    pub created_at: Timestamp,
    /// `SecretValue::fingerprint` of its value, when the operator has held it: what ties the
    /// uuid to what a source Secret holds (Adobe lists uuids, never values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// Why a rotation started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Cause {
    Scheduled,
    OnDemand,
}

impl Cause {
    pub fn describe(self) -> &'static str {
        match self {
            Cause::Scheduled => "scheduled",
            Cause::OnDemand => "on demand",
        }
    }
}

/// The step of the procedure, persisted (in the operator's state Secret) before the next one
/// starts, so that a restarted operator resumes where the last one stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "step", rename_all = "camelCase")]
pub enum Step {
    /// No rotation in progress.
    #[default]
    Idle,
    /// About to add a secret (persisted before the request): the credential's secrets before it
    /// were `before`. A secret that shows up later and is not among them was created by this
    /// request whose answer was lost; its value is unknown, so it is deleted and the add redone.
    #[serde(rename_all = "camelCase")]
    Adding { before: Vec<String>, requested_at: Timestamp, cause: Cause, started_at: Timestamp },
    /// The new secret exists (added at `added_at`) and its value is in the state Secret; IMS
    /// must accept it before it is used (a new secret may take a moment to work).
    #[serde(rename_all = "camelCase")]
    Verifying { new: SecretRef, old: Option<String>, added_at: Timestamp, cause: Cause, started_at: Timestamp },
    /// The new secret never worked (`message` says how): it is deleted, the current one stays.
    #[serde(rename_all = "camelCase")]
    Abandoning { new_uuid: String, message: String, cause: Cause },
    /// The source Secret holds the new secret first and the previous one under the secondary
    /// key, since `written_at`; a token minted with the new secret must reach the target.
    #[serde(rename_all = "camelCase")]
    SourceWritten { new: SecretRef, old: Option<String>, written_at: Timestamp, started_at: Timestamp },
    /// The target holds a token minted with the new secret since `switched_at`; the previous
    /// secret is deleted once nothing used it for the grace period.
    #[serde(rename_all = "camelCase")]
    Switched { new: SecretRef, old: Option<String>, switched_at: Timestamp, started_at: Timestamp },
}

impl Step {
    /// The name in `status.clientSecretRotation.step`.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Idle => "Idle",
            Step::Adding { .. } => "Adding",
            Step::Verifying { .. } => "Verifying",
            Step::Abandoning { .. } => "Abandoning",
            Step::SourceWritten { .. } => "SwitchingSource",
            Step::Switched { .. } => "WaitingForGrace",
        }
    }

    /// The secret being rotated in, if one exists.
    pub fn new_secret(&self) -> Option<&SecretRef> {
        match self {
            Step::Verifying { new, .. } | Step::SourceWritten { new, .. } | Step::Switched { new, .. } => Some(new),
            _ => None,
        }
    }

    /// Whether the state Secret holds the new secret's value in this step.
    pub fn holds_new_value(&self) -> bool {
        self.new_secret().is_some()
    }
}

/// The last rotation that failed after adding a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedRotation {
    pub at: Timestamp,
    /// The status reason, e.g. `NewSecretVerificationFailed`.
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

/// The reason a rotation is remembered with when IMS never accepted its new secret.
pub const VERIFICATION_FAILED: &str = "NewSecretVerificationFailed";

/// Everything the procedure persists besides the new secret's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Procedure {
    /// The secret the source Secret holds, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<SecretRef>,
    /// Fingerprint of the source Secret's first client secret when the secret in use was last
    /// identified: once the source holds another value, it is identified again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identified_source: Option<String>,
    /// When the operator first listed the credential's secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<Timestamp>,
    /// SHA-256 of the last trigger annotation value acted on (the value itself is tenant text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<FailedRotation>,
    #[serde(default)]
    pub step: Step,
}

/// Largest persisted procedure accepted: a few uuids and timestamps take well under 2 KiB.
pub const MAX_PROCEDURE_BYTES: usize = 16 * 1024;

impl Procedure {
    /// Reads a persisted procedure; anything implausible is an error (the procedure holds
    /// rather than guess).
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() > MAX_PROCEDURE_BYTES {
            return Err(format!("larger than {} KiB", MAX_PROCEDURE_BYTES / 1024));
        }
        let procedure: Procedure = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "not JSON".to_owned(),
            _ => "fields of the wrong shape".to_owned(),
        })?;
        procedure.check()?;
        Ok(procedure)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let uuids: Vec<&str> = [self.current.as_ref().map(|c| c.uuid.as_str())]
            .into_iter()
            .chain(match &self.step {
                Step::Idle => vec![],
                Step::Adding { before, .. } => before.iter().map(|u| Some(u.as_str())).collect(),
                Step::Verifying { new, old, .. }
                | Step::SourceWritten { new, old, .. }
                | Step::Switched { new, old, .. } => vec![Some(new.uuid.as_str()), old.as_deref()],
                Step::Abandoning { new_uuid, .. } => vec![Some(new_uuid.as_str())],
            })
            .flatten()
            .collect();
        if let Step::Adding { before, .. } = &self.step
            && before.len() > 2
        {
            return Err("more than two secrets recorded".into());
        }
        if uuids.iter().any(|u| !valid_uuid(u)) {
            return Err("a secret uuid is malformed".into());
        }
        let mut fingerprints = [self.current.as_ref(), self.step.new_secret()]
            .into_iter()
            .flatten()
            .filter_map(|s| s.fingerprint.as_deref())
            .chain(self.identified_source.as_deref());
        if fingerprints.any(|f| !valid_fingerprint(f)) {
            return Err("a secret fingerprint is malformed".into());
        }
        Ok(())
    }
}

/// Developer Console secret uuids are hex; accepted: 1–64 ASCII letters, digits and dashes (it
/// goes into a URL path).
pub fn valid_uuid(uuid: &str) -> bool {
    !uuid.is_empty() && uuid.len() <= 64 && uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `sha256:` and 1–64 lower-case hex digits.
fn valid_fingerprint(fingerprint: &str) -> bool {
    fingerprint.strip_prefix("sha256:").is_some_and(|hex| {
        !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn persisted_procedures_round_trip_and_garbage_is_refused() {
        let t = ts("2026-01-01T00:00:00Z");
        let p = Procedure {
            current: Some(SecretRef { uuid: "a1".into(), created_at: t, fingerprint: Some("sha256:0a".into()) }),
            identified_source: Some("sha256:0a".into()),
            handled_trigger: Some("abc".into()),
            step: Step::Switched {
                new: SecretRef { uuid: "b2".into(), created_at: t, fingerprint: None },
                old: Some("a1".into()),
                switched_at: t,
                started_at: t,
            },
            ..Default::default()
        };
        let bytes = serde_json::to_vec(&p).expect("json");
        assert_eq!(Procedure::parse(&bytes), Ok(p));
        assert_eq!(Procedure::parse(b"{}"), Ok(Procedure::default()));
        assert_eq!(Procedure::parse(b"nope"), Err("not JSON".into()));
        assert_eq!(Procedure::parse(br#"{"step":{"step":"rocket"}}"#), Err("fields of the wrong shape".into()));
        let path = br#"{"current":{"uuid":"../../x","createdAt":"2026-01-01T00:00:00Z"}}"#;
        assert_eq!(Procedure::parse(path), Err("a secret uuid is malformed".into()));
        let fingerprint = br#"{"identifiedSource":"p8e-a-value"}"#;
        assert_eq!(Procedure::parse(fingerprint), Err("a secret fingerprint is malformed".into()));
        assert!(Procedure::parse(&vec![b' '; MAX_PROCEDURE_BYTES + 1]).is_err());
    }
}
