//! What a client secret rotation does next, as pure functions of the persisted procedure state,
//! the spec, the trigger annotation and `now`; and how the facts the I/O Management API lists are
//! read (which secret is ours, which are leftovers of an interrupted add, whether the previous
//! secret may go). Everything here is tenant input or a remote answer: bounded, checked
//! arithmetic, no panics.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::persisted::{Cause, Procedure, SecretRef, Step};
use super::settings::Settings;

/// A scheduled rotation whose new secret failed verification is not tried again sooner.
pub const RETRY_AFTER_FAILED_ROTATION: SignedDuration = SignedDuration::from_hours(1);
/// Clock difference tolerated between Adobe's timestamps and ours where a larger value is the
/// safe side (which secret a lost add created, which secret was just used).
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);
/// A use of the previous secret later than this after the switch is someone else's. Small on
/// purpose: mistaking a late-stamped use of ours for someone else's only delays the deletion
/// (a hold), the other mistake would cut someone off.
pub const FOREIGN_USE_SLACK: SignedDuration = SignedDuration::from_secs(5);

/// What the reconcile should do about the rotation now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing until `until` (`None`: nothing is scheduled).
    Wait { until: Option<Timestamp> },
    /// No procedure persisted yet, or the source Secret holds another client secret than when
    /// the secret in use was identified: learn which secret is in use and how old it is.
    Observe,
    /// Start a rotation.
    Start { cause: Cause },
    /// Redo an add whose answer was lost.
    ResumeAdd,
    /// Mint with the new secret; on success write it to the source Secret. `give_up` once the
    /// verification window is over: a rejection then abandons the new secret.
    Verify { give_up: bool },
    /// Delete the new secret that never worked.
    Abandon,
    /// See whether the target holds a token minted with the new secret.
    ConfirmSwitch,
    /// The grace period is over: check the previous secret's last use, delete it.
    Finish,
    /// The credential is being deleted during an add: delete what the add created, start none.
    ForgetAdd,
    /// The credential is being deleted before the new secret reached the source Secret: abandon
    /// it (nobody would ever hold it).
    GiveUp,
}

/// When a scheduled rotation is due, if one is: `every` after the last rotation, else after the
/// current secret's creation, else after the first observation; never sooner than an hour after
/// a rotation failed.
pub fn due_at(procedure: &Procedure, settings: &Settings) -> Option<Timestamp> {
    let every = settings.every?;
    let base = procedure.last_rotation.or(procedure.current.as_ref().map(|c| c.created_at)).or(procedure.observed_at)?;
    let scheduled = base.checked_add(every).unwrap_or(Timestamp::MAX);
    let not_before = procedure
        .last_failure
        .as_ref()
        .map(|f| f.at.checked_add(RETRY_AFTER_FAILED_ROTATION).unwrap_or(Timestamp::MAX));
    Some(not_before.map_or(scheduled, |nb| scheduled.max(nb)))
}

/// Whether the trigger annotation asks for a rotation not yet made.
pub fn triggered(procedure: Option<&Procedure>, trigger_hash: Option<&str>) -> bool {
    trigger_hash.is_some_and(|hash| procedure.and_then(|p| p.handled_trigger.as_deref()) != Some(hash))
}

/// Whether the source Secret's first client secret (`source`, its fingerprint, when known) is
/// another than when the secret in use was identified (procedures saved before fingerprints
/// were kept are identified once).
pub fn source_changed(procedure: &Procedure, source: Option<&str>) -> bool {
    source.is_some_and(|now| procedure.identified_source.as_deref() != Some(now))
}

/// The next thing to do, from what is persisted, the fingerprint of the source Secret's first
/// client secret (`source`, looked at while idle) and `now`.
pub fn next(
    procedure: Option<&Procedure>,
    settings: &Settings,
    trigger_hash: Option<&str>,
    source: Option<&str>,
    verify_timeout: Duration,
    now: Timestamp,
) -> Next {
    let Some(procedure) = procedure else {
        return Next::Observe;
    };
    match &procedure.step {
        Step::Idle => {
            if source_changed(procedure, source) {
                return Next::Observe;
            }
            if triggered(Some(procedure), trigger_hash) {
                return Next::Start { cause: Cause::OnDemand };
            }
            match due_at(procedure, settings) {
                Some(at) if at <= now => Next::Start { cause: Cause::Scheduled },
                due => Next::Wait { until: due },
            }
        }
        Step::Adding { .. } => Next::ResumeAdd,
        Step::Verifying { added_at, .. } => {
            // Counted from the add, persisted: a restart does not restart the window.
            let window = SignedDuration::try_from(verify_timeout).unwrap_or(SignedDuration::MAX);
            let give_up = added_at.checked_add(window).is_ok_and(|end| end <= now);
            Next::Verify { give_up }
        }
        Step::Abandoning { .. } => Next::Abandon,
        Step::SourceWritten { .. } => Next::ConfirmSwitch,
        Step::Switched { switched_at, .. } => match grace_end(*switched_at, settings) {
            Some(end) if now < end => Next::Wait { until: Some(end) },
            _ => Next::Finish,
        },
    }
}

/// When the grace period after a switch at `switched_at` ends (`None`: beyond the calendar).
pub fn grace_end(switched_at: Timestamp, settings: &Settings) -> Option<Timestamp> {
    switched_at.checked_add(settings.grace).ok()
}

/// What a credential being deleted still does about its rotation, before its finalizer may go:
/// nothing new starts; a new secret not yet in the source Secret is deleted (so are the orphans
/// of an interrupted add); one already in the source Secret is finished (the switch confirmed,
/// the previous secret deleted after the grace period, as ever). `Wait { until: None }` once
/// idle: nothing is left at Adobe that nobody holds.
pub fn wind_down(procedure: Option<&Procedure>, settings: &Settings, verify_timeout: Duration, now: Timestamp) -> Next {
    match procedure.map(|p| &p.step) {
        None | Some(Step::Idle) => Next::Wait { until: None },
        Some(Step::Adding { .. }) => Next::ForgetAdd,
        Some(Step::Verifying { .. }) => Next::GiveUp,
        Some(Step::Abandoning { .. } | Step::SourceWritten { .. } | Step::Switched { .. }) => {
            next(procedure, settings, None, None, verify_timeout, now)
        }
    }
}

/// A client secret as the I/O Management API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub uuid: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

/// Which listed secret the source Secret holds now, whose first client secret has fingerprint
/// `source`: the known secret if its fingerprint is `source`; else, leaving out the known
/// secret when it holds another value, the only one left, or the only one used since
/// `used_since` (the operator minted with the source's secret just then). `None` when that
/// cannot be told. A uuid alone is never trusted: someone may have put another secret into
/// the source Secret since.
pub fn identify<'a>(
    listed: &'a [Listed],
    known: Option<&SecretRef>,
    source: &str,
    used_since: Option<Timestamp>,
) -> Option<&'a Listed> {
    let holds = |k: &SecretRef, l: &Listed, same: bool| {
        k.uuid == l.uuid && k.fingerprint.as_deref().is_some_and(|f| (f == source) == same)
    };
    if let Some(found) = listed.iter().find(|l| known.is_some_and(|k| holds(k, l, true))) {
        return Some(found);
    }
    let candidates: Vec<&Listed> = listed.iter().filter(|l| !known.is_some_and(|k| holds(k, l, false))).collect();
    if let [only] = candidates.as_slice() {
        return Some(only);
    }
    let since = used_since?.checked_sub(CLOCK_SKEW).ok()?;
    let mut recent = candidates.into_iter().filter(|l| l.last_used_at.is_some_and(|at| at >= since));
    match (recent.next(), recent.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// How a rotation can start, given the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPlan {
    /// Add a secret; `current` is the one in use, `delete_first` another one to delete before.
    Add { current: Listed, delete_first: Option<Listed> },
    /// The other secret may go (`deleteOtherSecret`) but was used within the grace period:
    /// wait until `until`.
    HoldOther { current: Listed, other: Listed, last_used: Timestamp, until: Timestamp },
    /// The rotation cannot start; the error says why.
    Refuse(String),
}

/// What the rotation's start needs to know besides the list.
#[derive(Debug, Clone, Copy)]
pub struct StartContext<'a> {
    /// The secret in use as last identified.
    pub known: Option<&'a SecretRef>,
    /// Fingerprint of the source Secret's first client secret now.
    pub source: &'a str,
    /// When the operator just minted with it, if it did.
    pub used_since: Option<Timestamp>,
    pub delete_other: bool,
    pub grace: SignedDuration,
    pub now: Timestamp,
}

pub fn plan_start(listed: &[Listed], at: StartContext<'_>) -> StartPlan {
    let describe = |l: &Listed| {
        let used = l.last_used_at.map_or("never used".to_owned(), |at| format!("last used {at}"));
        format!("{} created {}, {used}", l.uuid, l.created_at)
    };
    match listed {
        [] => StartPlan::Refuse("the credential lists no client secret".into()),
        [only] => StartPlan::Add { current: only.clone(), delete_first: None },
        [_, _] => {
            let Some(current) = identify(listed, at.known, at.source, at.used_since) else {
                let all: Vec<String> = listed.iter().map(describe).collect();
                return StartPlan::Refuse(format!(
                    "{}; the operator cannot tell which one the source Secret holds",
                    all.join("; ")
                ));
            };
            let other = listed.iter().find(|l| l.uuid != current.uuid).cloned();
            match other {
                Some(other) if at.delete_other => match other_secret(other.last_used_at, at.grace, at.now) {
                    OldSecret::Delete => StartPlan::Add { current: current.clone(), delete_first: Some(other) },
                    OldSecret::HoldUntil { last_used, until } => {
                        StartPlan::HoldOther { current: current.clone(), other, last_used, until }
                    }
                },
                Some(other) => {
                    StartPlan::Refuse(format!("{} is in use here, {} is not", current.uuid, describe(&other)))
                }
                None => StartPlan::Add { current: current.clone(), delete_first: None },
            }
        }
        _ => StartPlan::Refuse(format!("{} secrets listed", listed.len())),
    }
}

/// Secrets the lost answer of an add created: not among `before`, created after the request was
/// decided (less the clock skew). Their values were never seen, so nobody can use them.
pub fn orphans<'a>(listed: &'a [Listed], before: &[String], requested_at: Timestamp) -> Vec<&'a Listed> {
    let since = requested_at.checked_sub(CLOCK_SKEW).unwrap_or(requested_at);
    listed.iter().filter(|l| !before.contains(&l.uuid) && l.created_at >= since).collect()
}

/// Whether the previous secret may be deleted now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldSecret {
    Delete,
    /// Something other than the operator used it after the switch, at `last_used`: keep it
    /// until it has been unused for the grace period.
    HoldUntil {
        last_used: Timestamp,
        until: Timestamp,
    },
}

/// Whether the other secret (not the source Secret's) may be deleted to make room: the rule of
/// the previous secret, with no switch before which a use could have been the operator's own.
/// Any use within the grace period keeps it, so that even a secret identified wrongly, but in
/// use, is not deleted.
pub fn other_secret(last_used: Option<Timestamp>, grace: SignedDuration, now: Timestamp) -> OldSecret {
    old_secret(last_used, Timestamp::MIN, grace, now)
}

pub fn old_secret(
    last_used: Option<Timestamp>,
    switched_at: Timestamp,
    grace: SignedDuration,
    now: Timestamp,
) -> OldSecret {
    let after_switch = switched_at.checked_add(FOREIGN_USE_SLACK).unwrap_or(Timestamp::MAX);
    match last_used.filter(|used| *used > after_switch) {
        Some(used) => {
            let until = used.checked_add(grace).unwrap_or(Timestamp::MAX);
            if now < until { OldSecret::HoldUntil { last_used: used, until } } else { OldSecret::Delete }
        }
        None => OldSecret::Delete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::crd::ClientSecretRotation;
    use crate::rotation::persisted::FailedRotation;
    use crate::time_format::parse_duration;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn settings(every: Option<&str>, grace: Option<&str>) -> Settings {
        Settings::from_spec(&ClientSecretRotation {
            org_id: "123".into(),
            credential_id: "456".into(),
            every: every.map(str::to_owned),
            grace_period: grace.map(str::to_owned),
            management_endpoint: "https://api.adobe.io/".into(),
            delete_other_secret: false,
        })
        .expect("valid")
    }

    fn secret(uuid: &str, created: &str) -> SecretRef {
        SecretRef { uuid: uuid.into(), created_at: ts(created), fingerprint: None }
    }

    fn held(uuid: &str, fingerprint: &str) -> SecretRef {
        SecretRef { fingerprint: Some(fingerprint.into()), ..secret(uuid, "2025-01-01T00:00:00Z") }
    }

    fn listed(uuid: &str, created: &str, used: Option<&str>) -> Listed {
        Listed { uuid: uuid.into(), created_at: ts(created), last_used_at: used.map(ts) }
    }

    const VERIFY: Duration = Duration::from_secs(120);

    #[test]
    fn a_credential_being_deleted_starts_nothing_and_leaves_no_secret_nobody_holds() {
        let s = settings(Some("1d"), Some("1h"));
        let now = ts("2026-01-01T00:00:00Z");
        let at =
            |step: Step| Procedure { step, current: Some(secret("a", "2020-01-01T00:00:00Z")), ..Default::default() };
        let wind = |p: Option<&Procedure>| wind_down(p, &s, VERIFY, now);
        assert_eq!(wind(None), Next::Wait { until: None });
        let overdue = at(Step::Idle);
        assert_eq!(next(Some(&overdue), &s, Some("t"), None, VERIFY, now), Next::Start { cause: Cause::OnDemand });
        assert_eq!(wind(Some(&overdue)), Next::Wait { until: None }, "no rotation starts, the finalizer may go");
        let adding =
            at(Step::Adding { before: vec!["a".into()], requested_at: now, cause: Cause::OnDemand, started_at: now });
        assert_eq!(wind(Some(&adding)), Next::ForgetAdd);
        let new = secret("b", "2026-01-01T00:00:00Z");
        let verifying = at(Step::Verifying {
            new: new.clone(),
            old: Some("a".into()),
            added_at: now,
            cause: Cause::OnDemand,
            started_at: now,
        });
        assert_eq!(wind(Some(&verifying)), Next::GiveUp, "not yet in the source Secret: nobody would hold it");
        let abandoning = at(Step::Abandoning { new_uuid: "b".into(), message: "m".into(), cause: Cause::OnDemand });
        assert_eq!(wind(Some(&abandoning)), Next::Abandon);
        let written =
            at(Step::SourceWritten { new: new.clone(), old: Some("a".into()), written_at: now, started_at: now });
        assert_eq!(wind(Some(&written)), Next::ConfirmSwitch, "in the source Secret: finished");
        let switched = at(Step::Switched { new, old: Some("a".into()), switched_at: now, started_at: now });
        let end = now.checked_add(SignedDuration::from_hours(1)).expect("end");
        assert_eq!(
            wind(Some(&switched)),
            Next::Wait { until: Some(end) },
            "the previous secret after the grace period"
        );
        assert_eq!(wind_down(Some(&switched), &s, VERIFY, end), Next::Finish);
    }

    #[test]
    fn nothing_persisted_means_observe_first() {
        assert_eq!(
            next(None, &settings(Some("90d"), None), Some("h"), None, VERIFY, ts("2026-01-01T00:00:00Z")),
            Next::Observe
        );
    }

    #[test]
    fn a_secret_older_than_every_is_rotated_and_then_not_again_for_every() {
        let s = settings(Some("90d"), None);
        let mut p = Procedure {
            current: Some(secret("a", "2025-01-01T00:00:00Z")),
            observed_at: Some(ts("2026-01-01T00:00:00Z")),
            ..Default::default()
        };
        let now = ts("2026-01-01T00:00:00Z");
        assert_eq!(next(Some(&p), &s, None, None, VERIFY, now), Next::Start { cause: Cause::Scheduled });
        p.last_rotation = Some(now);
        let due = ts("2026-04-01T00:00:00Z");
        assert_eq!(due_at(&p, &s), Some(due));
        assert_eq!(next(Some(&p), &s, None, None, VERIFY, now), Next::Wait { until: Some(due) });
        assert_eq!(next(Some(&p), &s, None, None, VERIFY, due), Next::Start { cause: Cause::Scheduled });
        assert_eq!(
            next(Some(&p), &settings(None, None), None, None, VERIFY, due),
            Next::Wait { until: None },
            "on demand only"
        );
    }

    #[test]
    fn a_new_trigger_value_starts_a_rotation_once() {
        let s = settings(None, None);
        let mut p = Procedure { observed_at: Some(ts("2026-01-01T00:00:00Z")), ..Default::default() };
        let now = ts("2026-01-02T00:00:00Z");
        assert_eq!(next(Some(&p), &s, None, None, VERIFY, now), Next::Wait { until: None });
        assert_eq!(next(Some(&p), &s, Some("h1"), None, VERIFY, now), Next::Start { cause: Cause::OnDemand });
        p.handled_trigger = Some("h1".into());
        assert_eq!(next(Some(&p), &s, Some("h1"), None, VERIFY, now), Next::Wait { until: None });
        assert_eq!(next(Some(&p), &s, Some("h2"), None, VERIFY, now), Next::Start { cause: Cause::OnDemand });
    }

    #[test]
    fn a_failed_rotation_is_not_retried_by_the_schedule_for_an_hour() {
        let s = settings(Some("1h"), None);
        let failed_at = ts("2026-01-01T10:00:00Z");
        let p = Procedure {
            current: Some(secret("a", "2025-01-01T00:00:00Z")),
            last_failure: Some(FailedRotation {
                at: failed_at,
                reason: "NewSecretVerificationFailed".into(),
                message: String::new(),
            }),
            ..Default::default()
        };
        let retry = ts("2026-01-01T11:00:00Z");
        assert_eq!(next(Some(&p), &s, None, None, VERIFY, failed_at), Next::Wait { until: Some(retry) });
        assert_eq!(next(Some(&p), &s, Some("new"), None, VERIFY, failed_at), Next::Start { cause: Cause::OnDemand });
        assert_eq!(next(Some(&p), &s, None, None, VERIFY, retry), Next::Start { cause: Cause::Scheduled });
    }

    #[test]
    fn every_step_resumes() {
        let s = settings(Some("90d"), Some("1h"));
        let t = ts("2026-01-01T00:00:00Z");
        let with = |step| Procedure { step, ..Default::default() };
        let adding = Step::Adding { before: vec!["a".into()], requested_at: t, cause: Cause::Scheduled, started_at: t };
        assert_eq!(next(Some(&with(adding)), &s, None, None, VERIFY, t), Next::ResumeAdd);
        let verifying = Step::Verifying {
            new: secret("b", "2026-01-01T00:00:00Z"),
            old: Some("a".into()),
            added_at: t,
            cause: Cause::Scheduled,
            started_at: t,
        };
        assert_eq!(next(Some(&with(verifying.clone())), &s, None, None, VERIFY, t), Next::Verify { give_up: false });
        let late = ts("2026-01-01T00:02:00Z");
        assert_eq!(next(Some(&with(verifying)), &s, None, None, VERIFY, late), Next::Verify { give_up: true });
        let abandoning = Step::Abandoning { new_uuid: "b".into(), message: "x".into(), cause: Cause::OnDemand };
        assert_eq!(next(Some(&with(abandoning)), &s, None, None, VERIFY, t), Next::Abandon);
        let written =
            Step::SourceWritten { new: secret("b", "2026-01-01T00:00:00Z"), old: None, written_at: t, started_at: t };
        assert_eq!(next(Some(&with(written)), &s, None, None, VERIFY, t), Next::ConfirmSwitch);
        let switched = Step::Switched {
            new: secret("b", "2026-01-01T00:00:00Z"),
            old: Some("a".into()),
            switched_at: t,
            started_at: t,
        };
        let end = ts("2026-01-01T01:00:00Z");
        assert_eq!(
            next(Some(&with(switched.clone())), &s, Some("x"), None, VERIFY, t),
            Next::Wait { until: Some(end) }
        );
        assert_eq!(next(Some(&with(switched)), &s, None, None, VERIFY, end), Next::Finish);
    }

    #[test]
    fn the_verification_window_counts_from_the_add_on_the_operators_clock() {
        let s = settings(None, None);
        let added = ts("2026-01-01T00:00:00Z");
        // Adobe's clock far ahead changes nothing.
        let new = secret("b", "2030-01-01T00:00:00Z");
        let step = Step::Verifying { new, old: None, added_at: added, cause: Cause::OnDemand, started_at: added };
        let p = Procedure { step, ..Default::default() };
        assert_eq!(next(Some(&p), &s, None, None, VERIFY, ts("2026-01-01T00:01:59Z")), Next::Verify { give_up: false });
        assert_eq!(next(Some(&p), &s, None, None, VERIFY, ts("2026-01-01T00:02:00Z")), Next::Verify { give_up: true });
    }

    #[test]
    fn ours_is_the_one_whose_fingerprint_the_source_holds_the_only_other_or_the_just_used() {
        let a = listed("a", "2025-01-01T00:00:00Z", Some("2026-01-01T00:00:00Z"));
        let b = listed("b", "2025-06-01T00:00:00Z", Some("2025-12-01T00:00:00Z"));
        let both = [a.clone(), b.clone()];
        assert_eq!(identify(&both, Some(&held("b", "sha256:0b")), "sha256:0b", None), Some(&b), "by fingerprint");
        assert_eq!(
            identify(&both, Some(&held("a", "sha256:0a")), "sha256:0b", None),
            Some(&b),
            "the source holds another value than a's: the other one"
        );
        assert_eq!(identify(std::slice::from_ref(&b), Some(&held("gone", "sha256:0a")), "sha256:0b", None), Some(&b));
        assert_eq!(identify(&both, Some(&secret("a", "2025-01-01T00:00:00Z")), "sha256:0b", None), None, "a bare uuid");
        assert_eq!(identify(&both, None, "sha256:0b", None), None);
        assert_eq!(
            identify(&both, None, "sha256:0b", Some(ts("2026-01-01T00:00:30Z"))),
            Some(&a),
            "used within the skew"
        );
        assert_eq!(identify(&both, None, "sha256:0b", Some(ts("2026-01-02T00:00:00Z"))), None, "neither used since");
        let c = listed("c", "2025-06-01T00:00:00Z", Some("2026-01-01T00:00:10Z"));
        assert_eq!(
            identify(&[a, c], None, "sha256:0b", Some(ts("2026-01-01T00:00:00Z"))),
            None,
            "both used: ambiguous"
        );
    }

    fn start_at(known: Option<&SecretRef>, delete_other: bool) -> StartContext<'_> {
        StartContext {
            known,
            source: "sha256:0a",
            used_since: None,
            delete_other,
            grace: SignedDuration::from_hours(1),
            now: ts("2026-01-01T00:00:00Z"),
        }
    }

    #[test]
    fn two_secrets_are_refused_unless_deleting_the_other_is_allowed() {
        let a = listed("a", "2025-01-01T00:00:00Z", None);
        let b = listed("b", "2025-06-01T00:00:00Z", Some("2025-12-01T00:00:00Z"));
        let both = [a.clone(), b.clone()];
        let known = held("a", "sha256:0a");
        match plan_start(&both, start_at(Some(&known), false)) {
            StartPlan::Refuse(why) => {
                assert!(why.contains("a is in use here, b created") && why.contains("last used"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            plan_start(&both, start_at(Some(&known), true)),
            StartPlan::Add { current: a.clone(), delete_first: Some(b) }
        );
        let refused = plan_start(&both, start_at(None, true));
        assert!(matches!(refused, StartPlan::Refuse(why) if why.contains("cannot tell")));
        assert_eq!(
            plan_start(std::slice::from_ref(&a), start_at(None, false)),
            StartPlan::Add { current: a, delete_first: None }
        );
        assert!(matches!(plan_start(&[], start_at(None, false)), StartPlan::Refuse(_)));
    }

    #[test]
    fn the_other_secret_used_within_the_grace_period_is_kept() {
        let a = listed("a", "2025-01-01T00:00:00Z", None);
        let used = ts("2025-12-31T23:30:00Z");
        let b = Listed { last_used_at: Some(used), ..listed("b", "2025-06-01T00:00:00Z", None) };
        let known = held("a", "sha256:0a");
        assert_eq!(
            plan_start(&[a.clone(), b.clone()], start_at(Some(&known), true)),
            StartPlan::HoldOther { current: a, other: b, last_used: used, until: ts("2026-01-01T00:30:00Z") }
        );
        let now = ts("2026-01-01T00:00:00Z");
        assert_eq!(other_secret(None, SignedDuration::from_hours(1), now), OldSecret::Delete, "never used");
        let long_ago = ts("2025-12-31T22:00:00Z");
        assert_eq!(other_secret(Some(long_ago), SignedDuration::from_hours(1), now), OldSecret::Delete);
    }

    #[test]
    fn a_source_holding_another_secret_is_identified_again_once() {
        let s = settings(None, None);
        let now = ts("2026-01-02T00:00:00Z");
        let mut p = Procedure {
            current: Some(held("a", "sha256:0a")),
            identified_source: Some("sha256:0a".into()),
            observed_at: Some(ts("2026-01-01T00:00:00Z")),
            ..Default::default()
        };
        assert_eq!(next(Some(&p), &s, None, Some("sha256:0a"), VERIFY, now), Next::Wait { until: None });
        assert_eq!(next(Some(&p), &s, Some("t"), Some("sha256:0b"), VERIFY, now), Next::Observe, "before starting");
        assert_eq!(next(Some(&p), &s, None, None, VERIFY, now), Next::Wait { until: None }, "unknown");
        p.current = None;
        p.identified_source = Some("sha256:0b".into());
        assert_eq!(
            next(Some(&p), &s, None, Some("sha256:0b"), VERIFY, now),
            Next::Wait { until: None },
            "not identifiable: no second look until the source changes again"
        );
        p.identified_source = None;
        assert_eq!(next(Some(&p), &s, None, Some("sha256:0b"), VERIFY, now), Next::Observe, "saved without it");
    }

    #[test]
    fn orphans_are_new_secrets_created_after_the_lost_add() {
        let requested = ts("2026-01-01T00:00:00Z");
        let old = listed("a", "2025-01-01T00:00:00Z", None);
        let lost = listed("b", "2026-01-01T00:00:01Z", None);
        let foreign = listed("c", "2025-06-01T00:00:00Z", None);
        let list = [old.clone(), lost.clone(), foreign];
        assert_eq!(orphans(&list, &["a".into()], requested), vec![&lost]);
        assert!(orphans(&[old], &["a".into()], requested).is_empty());
    }

    #[test]
    fn the_old_secret_goes_unless_someone_else_used_it_after_the_switch() {
        let switched = ts("2026-01-01T00:00:00Z");
        let grace = SignedDuration::from_hours(1);
        let now = ts("2026-01-01T01:00:00Z");
        assert_eq!(old_secret(None, switched, grace, now), OldSecret::Delete);
        assert_eq!(old_secret(Some(ts("2025-12-31T23:59:00Z")), switched, grace, now), OldSecret::Delete);
        assert_eq!(
            old_secret(Some(ts("2026-01-01T00:00:03Z")), switched, grace, now),
            OldSecret::Delete,
            "within the slack: a late stamp of the operator's own last use"
        );
        let used = ts("2026-01-01T00:30:00Z");
        let until = ts("2026-01-01T01:30:00Z");
        assert_eq!(old_secret(Some(used), switched, grace, now), OldSecret::HoldUntil { last_used: used, until });
        assert_eq!(old_secret(Some(used), switched, grace, until), OldSecret::Delete, "unused for the grace period");
    }

    fn any_timestamp() -> impl Strategy<Value = Timestamp> {
        (-10_000_000_000_i64..10_000_000_000).prop_map(|s| Timestamp::from_second(s).expect("in range"))
    }

    fn any_step() -> impl Strategy<Value = Step> {
        (0..6_u8, any_timestamp(), any_timestamp(), any_timestamp()).prop_map(|(kind, a, b, c)| {
            let new = SecretRef { uuid: "n".into(), created_at: a, fingerprint: Some("sha256:0e".into()) };
            match kind {
                0 => Step::Idle,
                1 => Step::Adding { before: vec![], requested_at: a, cause: Cause::Scheduled, started_at: b },
                2 => Step::Verifying { new, old: None, added_at: c, cause: Cause::OnDemand, started_at: b },
                3 => Step::Abandoning { new_uuid: "n".into(), message: String::new(), cause: Cause::Scheduled },
                4 => Step::SourceWritten { new, old: Some("o".into()), written_at: b, started_at: c },
                _ => Step::Switched { new, old: Some("o".into()), switched_at: b, started_at: c },
            }
        })
    }

    proptest! {
        /// Whatever a tenant writes into the state Secret and the spec, deciding never panics,
        /// a waiting rotation never waits for a time already past, and an idle procedure whose
        /// trigger was handled starts only when its schedule is due.
        #[test]
        fn decisions_are_total_and_consistent(
            step in any_step(),
            current in proptest::option::of(any_timestamp()),
            last_rotation in proptest::option::of(any_timestamp()),
            failure in proptest::option::of(any_timestamp()),
            every_h in proptest::option::of(1_i64..=87_600),
            grace_s in 0_i64..=2_592_000,
            now in any_timestamp(),
        ) {
            let s = Settings {
                org_id: "1".into(),
                credential_id: "2".into(),
                every: every_h.map(SignedDuration::from_hours),
                grace: SignedDuration::from_secs(grace_s),
                endpoint: "https://api.adobe.io".into(),
                delete_other_secret: false,
            };
            let p = Procedure {
                current: current.map(|at| SecretRef { uuid: "c".into(), created_at: at, fingerprint: None }),
                identified_source: Some("sha256:0c".into()),
                observed_at: None,
                last_rotation,
                handled_trigger: Some("h".into()),
                last_failure: failure.map(|at| FailedRotation { at, reason: "x".into(), message: String::new() }),
                step: step.clone(),
            };
            let decided = next(Some(&p), &s, Some("h"), Some("sha256:0c"), VERIFY, now);
            if let Next::Wait { until: Some(until) } = decided {
                prop_assert!(until > now);
            }
            if step == Step::Idle
                && let Next::Start { cause } = decided
            {
                prop_assert_eq!(cause, Cause::Scheduled);
                prop_assert!(due_at(&p, &s).is_some_and(|due| due <= now));
            }
        }

        /// Whatever the operator remembers (a fingerprint, a stale one, a bare uuid, nothing) and
        /// however the two secrets were used, a rotation that starts takes the secret the source
        /// Secret holds for the one in use, and never deletes it to make room.
        #[test]
        fn the_secret_in_use_is_never_taken_for_the_other(
            in_use_first in any::<bool>(),
            remembered in 0..5_u8,
            other_used in proptest::option::of(-7_200_i64..7_200),
            minted in any::<bool>(),
            grace_s in 0_i64..=7_200,
        ) {
            let now = ts("2026-01-01T12:00:00Z");
            let (source, stale) = ("sha256:05", "sha256:0f");
            // The operator just minted with the source's secret, or used it long ago.
            let in_use_used = if minted { now } else { ts("2025-06-01T00:00:00Z") };
            let in_use = Listed { last_used_at: Some(in_use_used), ..listed("u", "2025-01-01T00:00:00Z", None) };
            let other_last = other_used.map(|s| now - SignedDuration::from_secs(s.abs()));
            let other = Listed { last_used_at: other_last, ..listed("o", "2025-02-01T00:00:00Z", None) };
            let listed = if in_use_first { [in_use.clone(), other.clone()] } else { [other.clone(), in_use.clone()] };
            // What the state Secret may remember; a uuid's fingerprint is that of its value.
            let known = match remembered {
                0 => None,
                1 => Some(held("u", source)),
                2 => Some(held("o", stale)),
                3 => Some(secret("u", "2025-01-01T00:00:00Z")),
                _ => Some(secret("o", "2025-02-01T00:00:00Z")),
            };
            let at = StartContext {
                known: known.as_ref(),
                source,
                used_since: minted.then_some(now),
                delete_other: true,
                grace: SignedDuration::from_secs(grace_s),
                now,
            };
            match plan_start(&listed, at) {
                StartPlan::Add { current, delete_first } => {
                    prop_assert_eq!(&current, &in_use);
                    prop_assert_eq!(delete_first, Some(other));
                }
                StartPlan::HoldOther { current, other: kept, .. } => {
                    prop_assert_eq!(current, in_use);
                    prop_assert_eq!(kept, other);
                }
                StartPlan::Refuse(_) => {}
            }
        }

        #[test]
        fn parsing_any_text_never_panics(text in ".{0,40}") {
            let _ = parse_duration(&text);
            let _ = Procedure::parse(text.as_bytes());
        }
    }
}
