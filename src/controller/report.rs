//! Reporting: every reconcile outcome passes through here and becomes status, Events, metrics,
//! log lines and the remembered state. What to say is decided by pure functions (unit-tested
//! below); the async functions only write it out.

use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Event;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::Context;
use super::provide::{Done, Failure};
use super::rotate::Rotation;
use crate::crd::{AdobeCredential, AdobeCredentialStatus};
use crate::decision;
use crate::error::{Error, MAX_MESSAGE, one_line};
use crate::names::{FIELD_MANAGER, Reason};
use crate::notice::Notice;
use crate::rollout::{self, Restart};
use crate::schedule::{self, RenewalPolicy};
use crate::status::{self, Outcome};
use crate::target::StoredToken;
use crate::time_format::rfc3339;

/// A valid token is in the target: status, consumers restarted, Events, quiet until renewal.
pub(super) async fn success(
    cred: &AdobeCredential,
    ctx: &Context,
    done: Done,
    rotation: Rotation,
    now: Timestamp,
) -> Result<Action, Error> {
    let fallback_secret_key =
        done.token.client_secret_key.as_deref().filter(|k| Some(*k) != done.primary_secret_key.as_deref());
    let outcome = Outcome::Valid { token: &done.token, renewal: done.renewal, fallback_secret_key, notes: &done.notes };
    let mut desired = status::desired(cred, &outcome, now);
    let restarts = restart_consumers(cred, ctx, &done.token).await;
    ctx.metrics.consumers_restarted(cred, &restarts);
    status::set_rollout_restarts(&mut desired, cred, &restarts, now);
    let mut notices = success_notices(cred, &done, &restarts);
    // The next look: the renewal, or sooner for the rotation.
    let wake_at = rotation.wake_at().map_or(done.renewal.at, |at| at.min(done.renewal.at));
    notices.extend(apply_rotation(&mut desired, cred, ctx, rotation, now));
    patch_status_if_changed(cred, ctx, desired).await?;
    for notice in notices {
        publish(cred, ctx, notice).await;
    }
    ctx.finish(cred, Some(done.token.expires_at), |s| s.succeeded(cred.metadata.generation, wake_at));
    Ok(Action::requeue(time_until(wake_at, now)))
}

/// Only once the token is in the target may its consumers restart.
async fn restart_consumers(cred: &AdobeCredential, ctx: &Context, token: &StoredToken) -> Vec<Restart> {
    if cred.spec.rollout_restart_targets.is_empty() || !ctx.leadership.may_write() {
        return Vec::new();
    }
    let namespace = cred.namespace().unwrap_or_default();
    rollout::restart_consumers(&ctx.client, &namespace, &cred.spec.rollout_restart_targets, token).await
}

/// No valid token for the current inputs: status says why (keeping the last good token's
/// facts), an Event when the reason is new, a retry after the backoff.
pub(super) async fn failure(
    cred: &AdobeCredential,
    ctx: &Context,
    failure: Failure,
    rotation: Rotation,
    failures_so_far: u32,
    now: Timestamp,
    renewal: &RenewalPolicy,
) -> Result<Action, Error> {
    let failures = failures_so_far.saturating_add(1);
    let error = &failure.error;
    ctx.metrics.reconcile_failed(error.reason());
    let delay = failure_delay(error, failures, failure.last_good.as_ref(), now, rand::random());
    warn!(
        reason = error.reason(),
        error = %error,
        consecutive_failures = failures,
        retry_in_ms = delay.as_millis() as u64,
        "could not provide a token"
    );
    let renewal_of = |t: &StoredToken| decision::renewal_of(t, renewal).at;
    let outcome = Outcome::Failed {
        error,
        last_good: failure.last_good.as_ref().map(|t| (t, renewal_of(t))),
        current_inputs: failure.current_inputs,
        consecutive_failures: failures,
    };
    let mut desired = status::desired(cred, &outcome, now);
    let previous_reason = status::ready_condition(cred).map(|c| c.reason.clone());
    let rotation_wake = rotation.wake_at();
    let rotation_notices = apply_rotation(&mut desired, cred, ctx, rotation, now);
    patch_status_if_changed(cred, ctx, desired).await?;
    if let Some(notice) = failure_notice(error, failures, previous_reason.as_deref()) {
        publish(cred, ctx, notice).await;
    }
    for notice in rotation_notices {
        publish(cred, ctx, notice).await;
    }
    // The one clock read besides the reconcile's `now`: Retry-After and the backoff count from
    // the failure's arrival, which a slow endpoint may have kept waiting long after `now`.
    let failed_at = Timestamp::now();
    let not_before = error.retry_after().map(|wait| failed_at + wait);
    let retry_at = rotation_wake.map_or(failed_at + delay, |at| at.min(failed_at + delay));
    ctx.finish(cred, failure.last_good.as_ref().map(|t| t.expires_at), |s| {
        s.failed(cred.metadata.generation, failures, retry_at, not_before)
    });
    Ok(Action::requeue(time_until(retry_at, failed_at)))
}

/// The wait from `now` until `at`; none for a time already past.
fn time_until(at: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// A reconcile that failed before it could report: counted and logged, retried with backoff.
pub(super) fn unreported(ctx: &Context, err: &Error, failures: u32) -> Action {
    ctx.metrics.reconcile_failed(err.reason());
    let delay = schedule::failure_backoff(failures.max(1), err.retry(), err.retry_after(), rand::random());
    warn!(reason = err.reason(), error = %err, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

/// The backoff for the `failures`-th failure in a row, but no later than the expiry of the
/// token left in place: TokenExpired is reported on time.
fn failure_delay(
    error: &Error,
    failures: u32,
    last_good: Option<&StoredToken>,
    now: Timestamp,
    jitter: f64,
) -> Duration {
    let delay = schedule::failure_backoff(failures, error.retry(), error.retry_after(), jitter);
    let to_expiry = last_good.map(|t| t.expires_at.duration_since(now)).filter(|d| d.is_positive());
    to_expiry.map_or(delay, |left| delay.min(left.unsigned_abs()))
}

/// The Events of a success: a mint or a restore, cleaned inputs, consumers restarted or not.
fn success_notices(cred: &AdobeCredential, done: &Done, restarts: &[Restart]) -> Vec<Notice> {
    let mut notices = Vec::new();
    let expiry = rfc3339(done.token.expires_at);
    let fingerprint = done.token.fingerprint();
    if done.minted {
        let why = if done.inputs_changed { "source inputs changed" } else { "no valid token for the current inputs" };
        info!(token = %fingerprint, expires_at = %expiry, why, "minted token");
        let note = format!("minted token {fingerprint} valid until {expiry} ({why})");
        notices.push(Notice::normal(Reason::TokenMinted, "Mint", note));
    } else if done.repaired {
        info!(token = %fingerprint, "restored the target Secret");
        let note = format!("restored the target Secret with the current token {fingerprint}");
        notices.push(Notice::normal(Reason::TargetRestored, "Write", note));
    }
    let new_revision = cred.status.as_ref().and_then(|s| s.source_revision.as_ref()) != Some(&done.token.revision);
    if done.minted && new_revision && !done.notes.is_empty() {
        notices.push(Notice::warning(Reason::InputCleaned.as_str(), "Mint", done.notes.join("; ")));
    }
    let previous = cred.status.as_ref().map(|s| s.rollout_restarts.as_slice()).unwrap_or_default();
    for restart in restarts {
        let target = format!("{:?} {:?}", restart.status.kind, restart.status.name);
        if restart.restarted {
            info!(%target, "restarted a consumer for the new token");
            let note = format!("restarted {target} for the new token");
            notices.push(Notice::normal(Reason::RolloutRestarted, "Restart", note));
        } else if let Some(problem) = restart.problem.filter(|_| !previous.contains(&restart.status)) {
            // Reported once when it appears, not on every reconcile.
            let detail = restart.status.message.as_deref().unwrap_or_default();
            let note = format!("rollout restart target {target}: {detail}");
            notices.push(Notice::warning(problem.reason().as_str(), "Restart", note));
        }
    }
    notices
}

/// The Event of a failure: on the first one, and whenever the reason changes.
fn failure_notice(error: &Error, failures: u32, previous_reason: Option<&str>) -> Option<Notice> {
    (failures == 1 || previous_reason != Some(error.reason()))
        .then(|| Notice::warning(error.reason(), "Mint", error.to_string()))
}

async fn patch_status_if_changed(
    cred: &AdobeCredential,
    ctx: &Context,
    desired: AdobeCredentialStatus,
) -> Result<(), Error> {
    ctx.metrics.set_status(&cred.namespace().unwrap_or_default(), &cred.name_any(), &desired);
    if cred.status.as_ref().is_some_and(|current| status::same_when_written(current, &desired)) {
        return Ok(());
    }
    ctx.leadership.check()?;
    let api: Api<AdobeCredential> = Api::namespaced(ctx.client.clone(), &cred.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": AdobeCredential::api_version(&()),
        "kind": AdobeCredential::kind(&()),
        "status": desired,
    });
    api.patch_status(&cred.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(Error::kube("writing status"))?;
    Ok(())
}

async fn publish(cred: &AdobeCredential, ctx: &Context, notice: Notice) {
    // Event notes are bounded by the API server (1 KiB): one human line, cut well below.
    let note = one_line(&notice.note, MAX_MESSAGE);
    let event = Event {
        type_: notice.type_,
        reason: notice.reason.to_owned(),
        note: Some(note),
        action: notice.action.to_owned(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &cred.object_ref(&())).await {
        warn!(error = %err, "could not publish an Event");
    }
}

/// Writes the rotation's report into the desired status and returns its Events.
fn apply_rotation(
    status: &mut AdobeCredentialStatus,
    cred: &AdobeCredential,
    ctx: &Context,
    rotation: Rotation,
    now: Timestamp,
) -> Vec<Notice> {
    let (namespace, name) = (cred.namespace().unwrap_or_default(), cred.name_any());
    match rotation {
        Rotation::None => {
            ctx.metrics.set_client_secret_created(&namespace, &name, None);
            Vec::new()
        }
        Rotation::Unchanged { .. } => Vec::new(),
        Rotation::Report(report) => {
            ctx.metrics.set_client_secret_created(&namespace, &name, report.secret_created_at);
            status::set_client_secret_rotation(
                status,
                cred,
                report.status,
                report.healthy,
                report.reason,
                report.message,
                now,
            );
            report.notices
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::events::EventType;

    use super::*;
    use crate::crd::{AdobeCredentialSpec, RolloutRestartStatus, WorkloadKind};
    use crate::rollout::Problem;
    use crate::schedule::Renewal;
    use crate::secret_value::SecretValue;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn token(revision: &str) -> StoredToken {
        StoredToken {
            access_token: SecretValue::new("eyJ-secret-token"),
            token_type: "bearer".into(),
            issued_at: ts("2026-12-01T00:00:00Z"),
            expires_at: ts("2026-12-02T00:00:00Z"),
            revision: revision.into(),
            client_secret_key: Some("client_secret".into()),
        }
    }

    fn done(minted: bool, repaired: bool, notes: &[&str]) -> Done {
        Done {
            token: token("sha256:new"),
            renewal: Renewal { at: ts("2026-12-01T16:00:00Z"), clamped: false },
            minted,
            repaired,
            inputs_changed: false,
            primary_secret_key: Some("client_secret".into()),
            notes: notes.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn cred_with_revision(revision: Option<&str>) -> AdobeCredential {
        let mut cred = AdobeCredential::new("c", AdobeCredentialSpec::default());
        cred.status =
            Some(AdobeCredentialStatus { source_revision: revision.map(str::to_owned), ..Default::default() });
        cred
    }

    fn reasons(notices: &[Notice]) -> Vec<&str> {
        notices.iter().map(|n| n.reason).collect()
    }

    #[test]
    fn a_mint_is_announced_with_its_fingerprint_never_the_token() {
        let notices = success_notices(&cred_with_revision(None), &done(true, false, &[]), &[]);
        assert_eq!(reasons(&notices), ["TokenMinted"]);
        assert_eq!(notices[0].type_, EventType::Normal);
        assert!(notices[0].note.contains(&token("x").fingerprint()), "{}", notices[0].note);
        assert!(!notices[0].note.contains("eyJ-secret-token"));
    }

    #[test]
    fn a_kept_token_says_nothing_and_a_repair_says_restored() {
        assert!(success_notices(&cred_with_revision(Some("sha256:new")), &done(false, false, &[]), &[]).is_empty());
        let repaired = success_notices(&cred_with_revision(Some("sha256:new")), &done(false, true, &[]), &[]);
        assert_eq!(reasons(&repaired), ["TargetRestored"]);
    }

    #[test]
    fn cleaned_inputs_are_reported_once_per_new_revision() {
        let notes = ["client_secret in Secret \"src\" had a trailing newline; it was ignored"];
        let first = success_notices(&cred_with_revision(Some("sha256:old")), &done(true, false, &notes), &[]);
        assert_eq!(reasons(&first), ["TokenMinted", "InputCleaned"]);
        assert_eq!(first[1].type_, EventType::Warning);
        let renewal = success_notices(&cred_with_revision(Some("sha256:new")), &done(true, false, &notes), &[]);
        assert_eq!(reasons(&renewal), ["TokenMinted"], "same inputs, already reported");
    }

    #[test]
    fn restart_problems_are_reported_when_they_appear_not_on_every_reconcile() {
        let status = RolloutRestartStatus {
            kind: WorkloadKind::Deployment,
            name: "api".into(),
            restarted_at: None,
            message: Some("forbidden".into()),
        };
        let forbidden = Restart { status: status.clone(), restarted: false, problem: Some(Problem::Forbidden) };
        let cred = cred_with_revision(Some("sha256:new"));
        let first = success_notices(&cred, &done(false, false, &[]), std::slice::from_ref(&forbidden));
        assert_eq!(reasons(&first), ["RolloutRestartForbidden"]);
        let mut known = cred.clone();
        known.status.as_mut().expect("status").rollout_restarts = vec![status.clone()];
        assert!(success_notices(&known, &done(false, false, &[]), &[forbidden]).is_empty());
        let restarted = Restart { status, restarted: true, problem: None };
        assert_eq!(
            reasons(&success_notices(&known, &done(true, false, &[]), &[restarted])),
            ["TokenMinted", "RolloutRestarted"]
        );
    }

    #[test]
    fn a_failure_is_announced_first_and_when_its_reason_changes() {
        let err = Error::InvalidClient { description: "invalid client_secret parameter".into(), debug_id: None };
        assert_eq!(failure_notice(&err, 1, Some("InvalidClient")).map(|n| n.reason), Some("InvalidClient"));
        assert_eq!(failure_notice(&err, 2, Some("InvalidClient")), None);
        assert_eq!(failure_notice(&err, 5, Some("TokenMinted")).map(|n| n.type_), Some(EventType::Warning));
    }

    #[test]
    fn a_failure_retries_no_later_than_the_expiry_of_the_token_in_place() {
        let err = Error::InvalidClient { description: "rejected".into(), debug_id: None };
        let t = token("sha256:r");
        let near_expiry = ts("2026-12-01T23:59:50Z");
        assert_eq!(failure_delay(&err, 10, Some(&t), near_expiry, 0.5), Duration::from_secs(10));
        let without = failure_delay(&err, 10, None, near_expiry, 0.5);
        assert!(without > Duration::from_secs(10), "{without:?}");
        let expired = failure_delay(&err, 10, Some(&t), ts("2026-12-03T00:00:00Z"), 0.5);
        assert_eq!(expired, without, "an expired token does not shorten the backoff");
    }
}
