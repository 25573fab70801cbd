//! The status a reconcile outcome calls for. Pure: the reconciler compares the result with the
//! current status and writes only when they differ, so a quiet credential causes no API writes.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{AdobeCredential, AdobeCredentialStatus, ClientSecretRotationStatus};
use crate::error::{Error, MAX_MESSAGE, Retry, one_line};
use crate::flows;
use crate::names::Reason;
use crate::names::condition::{CLIENT_SECRET_ROTATION, DEPRECATED, READY, ROLLOUT_RESTART};
use crate::rollout::Restart;
use crate::schedule::Renewal;
use crate::target::StoredToken;

/// What the last reconcile achieved.
pub enum Outcome<'a> {
    /// The target holds a valid token for the current inputs. `fallback_secret_key` names the
    /// client secret key that worked when it is not the first one; `notes` say what was cleaned
    /// off the inputs.
    Valid { token: &'a StoredToken, renewal: Renewal, fallback_secret_key: Option<&'a str>, notes: &'a [String] },
    /// Minting (or reading the inputs) failed. `last_good` is the token still in the target
    /// with its renewal time.
    Failed {
        error: &'a Error,
        last_good: Option<(&'a StoredToken, Timestamp)>,
        current_inputs: bool,
        consecutive_failures: u32,
    },
}

pub fn desired(cred: &AdobeCredential, outcome: &Outcome<'_>, now: Timestamp) -> AdobeCredentialStatus {
    let current = cred.status.clone().unwrap_or_default();
    let (described, (ready, reason, message), failures) = match outcome {
        Outcome::Valid { token, renewal, fallback_secret_key, notes } => {
            let message = valid_message(token, renewal, fallback_secret_key.as_deref(), notes);
            (Some((*token, Some(renewal.at))), (true, Reason::TokenMinted.as_str().to_owned(), message), 0)
        }
        Outcome::Failed { error, last_good, current_inputs, consecutive_failures } => {
            let ready = failed_ready(error, last_good.map(|(t, _)| t), *current_inputs, now);
            // Status keeps describing the token that is really in the target Secret.
            (last_good.map(|(t, at)| (t, Some(at))), ready, *consecutive_failures)
        }
    };
    let flow = flows::of(&cred.spec);
    let mut conditions =
        vec![condition(cred, current.conditions.iter().find(|c| c.type_ == READY), READY, ready, reason, message, now)];
    if let Some(deprecation) = flow.and_then(|f| f.deprecation()) {
        let previous = current.conditions.iter().find(|c| c.type_ == DEPRECATED);
        let (reason, message) = (deprecation.reason.as_str().to_owned(), deprecation.message.to_owned());
        conditions.push(condition(cred, previous, DEPRECATED, true, reason, message, now));
    }
    // The rollout restart outcome is decided only after a token is written (see
    // `set_rollout_restarts`); a failed reconcile leaves it as it was.
    conditions.extend(current.conditions.iter().find(|c| c.type_ == ROLLOUT_RESTART).cloned());
    // The rotation reports after the token (`set_client_secret_rotation`); until then, and when
    // it had nothing new to say, what it said last stays while the spec asks for rotation.
    let rotating = flows::rotation_of(&cred.spec).is_some();
    if rotating {
        conditions.extend(current.conditions.iter().find(|c| c.type_ == CLIENT_SECRET_ROTATION).cloned());
    }
    let mut status = AdobeCredentialStatus {
        conditions,
        observed_generation: cred.metadata.generation,
        flow: flow.map(|f| f.name().to_owned()).or(current.flow),
        target_secret: Some(cred.target_name()),
        consecutive_failures: failures,
        rollout_restarts: current.rollout_restarts.clone(),
        client_secret_rotation: current.client_secret_rotation.clone().filter(|_| rotating),
        ..Default::default()
    };
    if let Some((token, renewal)) = described {
        status.expires_at = Some(Time(token.expires_at));
        status.renewal_time = renewal.map(Time);
        status.last_mint_time = Some(Time(token.issued_at));
        status.source_revision = Some(token.revision.clone());
        status.token_fingerprint = Some(token.fingerprint());
    }
    status
}

/// The Ready message of a valid token: until when, its renewal, and what the operator noticed.
fn valid_message(
    token: &StoredToken,
    renewal: &Renewal,
    fallback_secret_key: Option<&str>,
    notes: &[String],
) -> String {
    let mut message = format!("token valid until {}, renewal at {}", token.expires_at, renewal.at);
    if renewal.clamped {
        message.push_str(
            " (the renewal settings would renew sooner after minting than the operator's minimum interval between mints allows, or not before expiry: renewal moved to the minimum)",
        );
    }
    if let Some(key) = fallback_secret_key {
        message.push_str(&format!(
            "; the first client secret was rejected and the one in key {key:?} works: finish the rotation by making it the first"
        ));
    }
    for note in notes {
        message.push_str("; ");
        message.push_str(note);
    }
    message
}

/// The Ready rule of a failure: True while the token in place is valid for the current inputs
/// and a retry can mend the failure; False (with the failure's reason) when only a person can
/// (a dead refresh-token chain) or no token for the current inputs is there; `TokenExpired` once
/// the token in place has expired.
fn failed_ready(
    error: &Error,
    token: Option<&StoredToken>,
    current_inputs: bool,
    now: Timestamp,
) -> (bool, String, String) {
    match (token.filter(|t| now < t.expires_at), token) {
        (Some(t), _) if current_inputs => (
            error.retry() != Retry::AfterInputChange,
            error.reason().to_owned(),
            format!("renewal failing: {error}; the current token stays valid until {}", t.expires_at),
        ),
        (None, Some(t)) => (
            false,
            Reason::TokenExpired.as_str().to_owned(),
            format!("token expired at {} and cannot be renewed: {error}", t.expires_at),
        ),
        _ => (false, error.reason().to_owned(), error.to_string()),
    }
}

fn condition(
    cred: &AdobeCredential,
    previous: Option<&Condition>,
    type_: &str,
    is_true: bool,
    reason: String,
    message: String,
    now: Timestamp,
) -> Condition {
    let status = if is_true { "True" } else { "False" }.to_owned();
    // Conditions carry one human line of bounded length, whatever an error's text was.
    let message = one_line(&message, MAX_MESSAGE);
    // lastTransitionTime moves only when the status flips (Kubernetes API conventions).
    let last_transition_time = previous
        .filter(|p| p.status == status)
        .map(|p| p.last_transition_time.clone())
        .unwrap_or_else(|| Time(crate::time_format::whole_seconds(now)));
    Condition {
        type_: type_.to_owned(),
        status,
        reason,
        message,
        observed_generation: cred.metadata.generation,
        last_transition_time,
    }
}

/// The rollout restart entries and their condition: True while every target runs the current
/// token, False with the first problem's reason otherwise. Ready is not affected: the token is
/// fine even when its consumers cannot be restarted.
pub fn set_rollout_restarts(
    status: &mut AdobeCredentialStatus,
    cred: &AdobeCredential,
    restarts: &[Restart],
    now: Timestamp,
) {
    status.rollout_restarts = restarts.iter().map(|r| r.status.clone()).collect();
    status.conditions.retain(|c| c.type_ != ROLLOUT_RESTART);
    if restarts.is_empty() {
        return;
    }
    let problem = restarts.iter().find_map(|r| r.problem.map(|p| (p, r)));
    let (ok, reason, message) = match problem {
        Some((p, r)) => (
            false,
            p.reason().as_str().to_owned(),
            format!("{:?} {}: {}", r.status.kind, r.status.name, r.status.message.as_deref().unwrap_or_default()),
        ),
        None => (
            true,
            Reason::RolloutCurrent.as_str().to_owned(),
            "every rollout restart target runs with the current token".to_owned(),
        ),
    };
    let previous = cred.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == ROLLOUT_RESTART));
    status.conditions.push(condition(cred, previous, ROLLOUT_RESTART, ok, reason, message, now));
}

/// Where the client secret rotation stands and its condition: True while it works (idle or
/// under way), False with the reason when it is refused, failing or holding. The Ready condition
/// is not affected: the token path keeps a working secret throughout.
pub fn set_client_secret_rotation(
    status: &mut AdobeCredentialStatus,
    cred: &AdobeCredential,
    rotation: ClientSecretRotationStatus,
    healthy: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    status.client_secret_rotation = Some(rotation);
    status.conditions.retain(|c| c.type_ != CLIENT_SECRET_ROTATION);
    let previous = cred.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == CLIENT_SECRET_ROTATION));
    let condition = condition(cred, previous, CLIENT_SECRET_ROTATION, healthy, reason.to_owned(), message, now);
    status.conditions.push(condition);
}

/// Whether two statuses are the same once written. Compared as serialized: `Time` fields are
/// written in whole seconds, so a status built from a token's sub-second timestamps never equals
/// the stored one as a struct, and comparing structs would patch status on every reconcile.
pub fn same_when_written(current: &AdobeCredentialStatus, desired: &AdobeCredentialStatus) -> bool {
    match (serde_json::to_value(current), serde_json::to_value(desired)) {
        (Ok(current), Ok(desired)) => current == desired,
        _ => false,
    }
}

/// The Ready condition of a resource, if any.
pub fn ready_condition(cred: &AdobeCredential) -> Option<&Condition> {
    cred.status.as_ref()?.conditions.iter().find(|c| c.type_ == READY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::AdobeCredentialSpec;
    use crate::secret_value::SecretValue;

    fn cred() -> AdobeCredential {
        let mut c = AdobeCredential::new("c", AdobeCredentialSpec::default());
        c.metadata.generation = Some(2);
        c
    }

    fn token(expires: &str) -> StoredToken {
        StoredToken {
            access_token: SecretValue::new("tok"),
            token_type: "bearer".into(),
            issued_at: "2026-11-24T00:00:00Z".parse().expect("ts"),
            expires_at: expires.parse().expect("ts"),
            revision: "sha256:r".into(),
            client_secret_key: None,
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("ts")
    }

    #[test]
    fn sub_second_times_do_not_make_a_status_differ_from_its_stored_form() {
        let mut t = token("2026-11-25T00:00:00.123456Z");
        t.issued_at = ts("2026-11-24T00:00:00.987654Z");
        let renewal = Renewal { at: ts("2026-11-24T16:00:00.5Z"), clamped: false };
        let outcome = Outcome::Valid { token: &t, renewal, fallback_secret_key: None, notes: &[] };
        let desired = desired(&cred(), &outcome, ts("2026-11-24T00:00:01.25Z"));
        // What the API server hands back: the same status, read from its whole-second JSON.
        let stored: AdobeCredentialStatus =
            serde_json::from_value(serde_json::to_value(&desired).expect("json")).expect("status");
        assert_ne!(stored, desired, "the struct comparison alone would see a change");
        assert!(same_when_written(&stored, &desired));
        let mut changed = stored.clone();
        changed.consecutive_failures = 1;
        assert!(!same_when_written(&changed, &desired));
    }

    #[test]
    fn valid_token_is_ready_and_described() {
        let t = token("2026-11-25T00:00:00Z");
        let s = desired(
            &cred(),
            &Outcome::Valid {
                token: &t,
                renewal: Renewal { at: ts("2026-11-24T16:00:00Z"), clamped: false },
                fallback_secret_key: None,
                notes: &[],
            },
            ts("2026-11-24T00:00:01Z"),
        );
        let c = &s.conditions[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "TokenMinted"));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.token_fingerprint, Some(t.fingerprint()));
        assert_eq!(s.target_secret.as_deref(), Some("c-token"));
    }

    #[test]
    fn a_deprecated_flow_says_so_in_its_own_condition() {
        use crate::crd::{ClientSecretRef, PrivateKeyRef, ServiceAccountJwt};
        let mut c = cred();
        c.spec.service_account_jwt = Some(ServiceAccountJwt {
            client_secret_ref: ClientSecretRef {
                name: "src".into(),
                client_id_key: "client_id".into(),
                client_secret_key: "client_secret".into(),
                secondary_client_secret_key: None,
            },
            private_key_ref: PrivateKeyRef { name: "key".into(), key: "private.key".into() },
            org_id: "ORG@AdobeOrg".into(),
            technical_account_id: "TA@techacct.adobe.com".into(),
            metascopes: vec!["ent_cloudmgr_sdk".into()],
            ims_endpoint: "https://ims-na1.adobelogin.com".into(),
        });
        let t = token("2026-11-25T00:00:00Z");
        let renewal = Renewal { at: ts("2026-11-24T16:00:00Z"), clamped: false };
        let outcome = Outcome::Valid { token: &t, renewal, fallback_secret_key: None, notes: &[] };
        let s = desired(&c, &outcome, ts("2026-11-24T00:00:01Z"));
        assert_eq!(s.flow.as_deref(), Some("serviceAccountJWT"));
        let deprecated = s.conditions.iter().find(|c| c.type_ == DEPRECATED).expect("Deprecated condition");
        assert_eq!((deprecated.status.as_str(), deprecated.reason.as_str()), ("True", "ServiceAccountJWTDeprecated"));
        let plain = desired(&cred(), &outcome, ts("2026-11-24T00:00:01Z"));
        assert!(plain.conditions.iter().all(|c| c.type_ != DEPRECATED));
    }

    #[test]
    fn failure_keeps_ready_while_the_token_for_current_inputs_is_valid() {
        let t = token("2026-11-25T00:00:00Z");
        let err = Error::TokenEndpointUnavailable { detail: "HTTP 500".into(), retry_after: None, debug_id: None };
        let out = Outcome::Failed {
            error: &err,
            last_good: Some((&t, ts("2026-11-24T16:00:00Z"))),
            current_inputs: true,
            consecutive_failures: 2,
        };
        let s = desired(&cred(), &out, ts("2026-11-24T17:00:00Z"));
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.conditions[0].reason, "TokenEndpointUnavailable");
        assert_eq!(s.consecutive_failures, 2);
        assert_eq!(s.expires_at, Some(Time(t.expires_at)));

        let expired = desired(&cred(), &out, ts("2026-11-25T00:00:01Z"));
        assert_eq!(expired.conditions[0].status, "False");
        assert_eq!(expired.conditions[0].reason, "TokenExpired");
    }

    #[test]
    fn a_dead_refresh_chain_is_not_ready_at_once_and_still_describes_the_token_in_place() {
        let t = token("2026-11-25T00:00:00Z");
        let err = Error::ReauthorizationRequired {
            description: "invalid_grant: invalid refresh token".into(),
            debug_id: None,
            secret: "user-token".into(),
            key: "refresh_token".into(),
            login: "adobe-credential-operator login user-api -n team-a --apply".into(),
        };
        let out = Outcome::Failed {
            error: &err,
            last_good: Some((&t, ts("2026-11-24T16:00:00Z"))),
            current_inputs: true,
            consecutive_failures: 1,
        };
        let s = desired(&cred(), &out, ts("2026-11-24T17:00:00Z"));
        let ready = &s.conditions[0];
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "ReauthorizationRequired"));
        assert!(ready.message.contains("login user-api -n team-a --apply"), "{}", ready.message);
        assert!(ready.message.ends_with("stays valid until 2026-11-25T00:00:00Z"), "{}", ready.message);
        assert_eq!(s.expires_at, Some(Time(t.expires_at)), "the token in the target is still described");
    }

    #[test]
    fn a_failure_keeps_the_rollout_restart_condition() {
        let t = token("2026-11-25T00:00:00Z");
        let mut c = cred();
        let rollout = condition(
            &c,
            None,
            ROLLOUT_RESTART,
            false,
            "RolloutRestartForbidden".into(),
            "x".into(),
            ts("2026-11-24T00:00:00Z"),
        );
        c.status = Some(AdobeCredentialStatus { conditions: vec![rollout.clone()], ..Default::default() });
        let err = Error::TokenEndpointUnavailable { detail: "HTTP 500".into(), retry_after: None, debug_id: None };
        let out = Outcome::Failed {
            error: &err,
            last_good: Some((&t, ts("2026-11-24T16:00:00Z"))),
            current_inputs: true,
            consecutive_failures: 1,
        };
        let s = desired(&c, &out, ts("2026-11-24T17:00:00Z"));
        assert_eq!(s.conditions.iter().find(|c| c.type_ == ROLLOUT_RESTART), Some(&rollout));
        let mut valid = desired(&c, &out, ts("2026-11-24T17:00:00Z"));
        set_rollout_restarts(&mut valid, &c, &[], ts("2026-11-24T17:00:00Z"));
        assert!(valid.conditions.iter().all(|c| c.type_ != ROLLOUT_RESTART), "no targets, no condition");
    }

    #[test]
    fn failure_with_new_inputs_is_not_ready_and_transition_time_is_kept_while_status_holds() {
        let t = token("2026-11-25T00:00:00Z");
        let err = Error::InvalidClient { description: "invalid client_secret parameter".into(), debug_id: None };
        let out = Outcome::Failed {
            error: &err,
            last_good: Some((&t, ts("2026-11-24T16:00:00Z"))),
            current_inputs: false,
            consecutive_failures: 1,
        };
        let mut c = cred();
        let first = desired(&c, &out, ts("2026-11-24T01:00:00Z"));
        assert_eq!(
            (first.conditions[0].status.as_str(), first.conditions[0].reason.as_str()),
            ("False", "InvalidClient")
        );
        c.status = Some(first.clone());
        let again = desired(&c, &out, ts("2026-11-24T02:00:00Z"));
        assert_eq!(again, first, "same outcome, same status: nothing to write");
    }
}
