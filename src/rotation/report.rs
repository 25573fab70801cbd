//! What a rotation reports (pure): where the procedure stopped becomes the `clientSecretRotation`
//! status, the `ClientSecretRotation` condition, Events and when to look again. Rotation problems
//! do not touch Ready: the token path keeps a working secret throughout.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::persisted::{FailedRotation, Procedure, Step, VERIFICATION_FAILED};
use super::plan;
use super::procedure::{Halt, Held, Progress};
use super::settings::Settings;
use crate::crd::ClientSecretRotationStatus;
use crate::error::Error;
use crate::names::{Reason, annotation};
use crate::notice::Notice;
use crate::time_format::{rfc3339, whole_seconds};

/// What the rotation reports for a reconcile.
#[derive(Debug)]
pub struct RotationReport {
    pub status: ClientSecretRotationStatus,
    pub healthy: bool,
    pub reason: &'static str,
    pub message: String,
    pub notices: Vec<Notice>,
    /// When to look again for the rotation's sake.
    pub wake_at: Option<Timestamp>,
    /// Creation time of the secret in use, for `client_secret_age_seconds`.
    pub secret_created_at: Option<Timestamp>,
}

/// The report of a run that stopped at `progress.halt`. `previous_reason` is the condition's
/// reason before (an Event goes out when it changes); `retry_at` is when a failed step is tried
/// again.
pub fn report(
    progress: Progress,
    settings: Option<&Settings>,
    previous_reason: Option<&str>,
    retry_at: Timestamp,
) -> RotationReport {
    let procedure = progress.stored.as_ref().map(|s| &s.procedure);
    let described = describe(procedure, settings, &progress.halt);
    let mut notices = progress.notices;
    let wake_at = match &progress.halt {
        Halt::Failed(err) => {
            if previous_reason != Some(err.reason()) {
                notices.push(Notice::warning(err.reason(), "Rotate", err.to_string()));
            }
            // Only a change of the spec or of the operator's flags helps these, and either
            // brings a reconcile of its own.
            let needs_a_change = matches!(err, Error::ClientSecretRotationDisabled | Error::InvalidRotationSpec { .. });
            (!needs_a_change).then_some(retry_at)
        }
        Halt::Held { held, until, .. } => {
            if previous_reason != Some(held.reason().as_str()) {
                notices.push(Notice::warning(held.reason().as_str(), "Rotate", described.message.clone()));
            }
            Some(*until)
        }
        Halt::Wait(until) => *until,
        Halt::VerifyPending(at) => Some(*at),
        Halt::AwaitingToken => None,
    };
    RotationReport {
        secret_created_at: procedure.and_then(|p| p.current.as_ref()).map(|c| c.created_at),
        status: described.status,
        healthy: described.healthy,
        reason: described.reason,
        message: described.message,
        notices,
        wake_at,
    }
}

/// The status and condition of a rotation (pure).
#[derive(Debug, PartialEq)]
struct Described {
    status: ClientSecretRotationStatus,
    healthy: bool,
    reason: &'static str,
    message: String,
}

fn describe(procedure: Option<&Procedure>, settings: Option<&Settings>, halt: &Halt) -> Described {
    let time = |t: Timestamp| Time(whole_seconds(t));
    let step = procedure.map_or(&Step::Idle, |p| &p.step);
    let idle = *step == Step::Idle;
    let due = procedure.zip(settings).and_then(|(p, s)| plan::due_at(p, s)).filter(|_| idle);
    let status = ClientSecretRotationStatus {
        step: step.name().to_owned(),
        current_secret_uuid: procedure.and_then(|p| p.current.as_ref()).map(|c| c.uuid.clone()),
        current_secret_created_at: procedure.and_then(|p| p.current.as_ref()).map(|c| time(c.created_at)),
        new_secret_uuid: step.new_secret().map(|n| n.uuid.clone()),
        last_rotation_time: procedure.and_then(|p| p.last_rotation).map(time),
        next_rotation_time: due.map(time),
    };
    let next = match due {
        Some(at) => format!("next rotation at {}", rfc3339(at)),
        None => format!("rotations on demand only: set annotation {} to a new value", annotation::ROTATE_CLIENT_SECRET),
    };
    let (healthy, reason, message) = match (halt, step) {
        (Halt::Failed(err), _) => (false, err.reason(), err.to_string()),
        (Halt::Held { held: held @ Held::Previous, uuid, last_used, until }, _) => (
            false,
            held.reason().as_str(),
            format!(
                "the previous client secret {uuid} was used at {} after the switch, by something other than this operator; it is kept, and deleted once unused until {}",
                rfc3339(*last_used),
                rfc3339(*until)
            ),
        ),
        (Halt::Held { held: held @ Held::Other { current }, uuid, last_used, until }, _) => (
            false,
            held.reason().as_str(),
            format!(
                "the source Secret holds client secret {current}; the other one, {uuid}, was used at {}, so deleteOtherSecret deletes it only once unused for the grace period: the rotation waits until {}",
                rfc3339(*last_used),
                rfc3339(*until)
            ),
        ),
        (_, Step::Idle) => match procedure.and_then(|p| p.last_failure.as_ref()) {
            Some(FailedRotation { reason, message, .. }) => {
                let reason =
                    if reason == VERIFICATION_FAILED { VERIFICATION_FAILED } else { Reason::RotationIdle.as_str() };
                (false, reason, format!("{message}; {next}"))
            }
            None => {
                let current = match procedure.and_then(|p| p.current.as_ref()) {
                    Some(c) => format!("client secret {} (created {}) in use", c.uuid, rfc3339(c.created_at)),
                    None => "the client secret in use is not identified yet".to_owned(),
                };
                (true, Reason::RotationIdle.as_str(), format!("{current}; {next}"))
            }
        },
        (_, step) => (true, Reason::RotationInProgress.as_str(), in_progress(step, settings)),
    };
    Described { status, healthy, reason, message }
}

fn in_progress(step: &Step, settings: Option<&Settings>) -> String {
    match step {
        Step::Idle => "idle".to_owned(),
        Step::Adding { cause, .. } => format!("{} rotation: adding a new client secret", cause.describe()),
        Step::Verifying { new, .. } => format!("waiting for IMS to accept the new client secret {}", new.uuid),
        Step::Abandoning { new_uuid, .. } => {
            format!("deleting the new client secret {new_uuid}, which IMS did not accept")
        }
        Step::SourceWritten { new, .. } => {
            format!("the new client secret {} is in the source Secret; waiting for a token minted with it", new.uuid)
        }
        Step::Switched { new, old, switched_at, .. } => {
            let end = settings.and_then(|s| plan::grace_end(*switched_at, s));
            let old = old.as_deref().unwrap_or("(unknown)");
            match end {
                Some(end) => format!(
                    "client secret {} in use since {}; the previous one {old} is deleted after the grace period, at {}",
                    new.uuid,
                    rfc3339(*switched_at),
                    rfc3339(end)
                ),
                None => format!("client secret {} in use; the previous one {old} is deleted next", new.uuid),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ClientSecretRotation;
    use crate::rotation::persisted::SecretRef;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn settings(every: Option<&str>) -> Settings {
        Settings::from_spec(&ClientSecretRotation {
            org_id: "1".into(),
            credential_id: "2".into(),
            every: every.map(str::to_owned),
            grace_period: Some("1h".into()),
            management_endpoint: "https://api.adobe.io".into(),
            delete_other_secret: false,
        })
        .expect("valid")
    }

    fn procedure(step: Step) -> Procedure {
        Procedure {
            current: Some(SecretRef { uuid: "aa".into(), created_at: ts("2026-01-01T00:00:00Z"), fingerprint: None }),
            step,
            ..Default::default()
        }
    }

    #[test]
    fn idle_says_which_secret_is_in_use_and_when_the_next_rotation_is() {
        let d = describe(Some(&procedure(Step::Idle)), Some(&settings(Some("90d"))), &Halt::Wait(None));
        assert!(d.healthy);
        assert_eq!(d.reason, "RotationIdle");
        assert_eq!(
            d.message,
            "client secret aa (created 2026-01-01T00:00:00Z) in use; next rotation at 2026-04-01T00:00:00Z"
        );
        assert_eq!(d.status.step, "Idle");
        assert_eq!(d.status.current_secret_uuid.as_deref(), Some("aa"));
        assert_eq!(d.status.next_rotation_time, Some(Time(ts("2026-04-01T00:00:00Z"))));
        let on_demand = describe(Some(&procedure(Step::Idle)), Some(&settings(None)), &Halt::Wait(None));
        assert!(on_demand.message.contains("on demand only"), "{}", on_demand.message);
        assert_eq!(on_demand.status.next_rotation_time, None);
    }

    #[test]
    fn steps_in_progress_are_healthy_and_name_the_new_secret() {
        let t = ts("2026-01-01T00:00:00Z");
        let new = SecretRef { uuid: "bb".into(), created_at: t, fingerprint: None };
        let switched = Step::Switched { new, old: Some("aa".into()), switched_at: t, started_at: t };
        let d = describe(Some(&procedure(switched)), Some(&settings(Some("90d"))), &Halt::Wait(Some(t)));
        assert_eq!((d.healthy, d.reason), (true, "RotationInProgress"));
        assert_eq!(d.status.step, "WaitingForGrace");
        assert_eq!(d.status.new_secret_uuid.as_deref(), Some("bb"));
        assert_eq!(d.status.next_rotation_time, None, "no next rotation while one is under way");
        assert!(d.message.contains("at 2026-01-01T01:00:00Z"), "{}", d.message);
    }

    #[test]
    fn failures_holds_and_abandoned_rotations_are_not_healthy() {
        let err = Error::ManagementCredentialNotFound { org_id: "1".into(), credential_id: "2".into() };
        let d = describe(Some(&procedure(Step::Idle)), Some(&settings(None)), &Halt::Failed(err));
        assert_eq!((d.healthy, d.reason), (false, "ManagementCredentialNotFound"));
        assert!(d.message.contains("check clientSecretRotation.orgId and credentialId"));
        let (last_used, until) = (ts("2026-01-01T00:30:00Z"), ts("2026-01-01T01:30:00Z"));
        let held = Halt::Held { held: Held::Previous, uuid: "aa".into(), last_used, until };
        let d = describe(Some(&procedure(Step::Idle)), Some(&settings(None)), &held);
        assert_eq!((d.healthy, d.reason), (false, "OldSecretStillInUse"));
        let other = Held::Other { current: "bb".into() };
        let d = describe(
            Some(&procedure(Step::Idle)),
            Some(&settings(None)),
            &Halt::Held { held: other, uuid: "aa".into(), last_used, until },
        );
        assert_eq!((d.healthy, d.reason), (false, "OtherSecretStillInUse"));
        assert!(d.message.contains("holds client secret bb; the other one, aa, was used"), "{}", d.message);
        let mut abandoned = procedure(Step::Idle);
        abandoned.last_failure = Some(FailedRotation {
            at: ts("2026-01-01T00:00:00Z"),
            reason: "NewSecretVerificationFailed".into(),
            message: "IMS did not accept the new client secret bb".into(),
        });
        let d = describe(Some(&abandoned), Some(&settings(Some("90d"))), &Halt::Wait(None));
        assert_eq!((d.healthy, d.reason), (false, "NewSecretVerificationFailed"));
        assert!(d.message.starts_with("IMS did not accept") && d.message.contains("next rotation at"), "{}", d.message);
    }
}
