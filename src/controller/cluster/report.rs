//! What a distribution round reports: the status (Ready from the minter, Distributed from the
//! copies, namespace counts and the first failures), Events on the cluster resource, metrics.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::plan::{Step, Wanted};
use super::{Distribution, MAX_LISTED_FAILURES};
use crate::crd::{
    AdobeCredential, ClusterAdobeCredential, ClusterAdobeCredentialStatus, NamespaceCounts, NamespaceFailure,
};
use crate::error::{Error, MAX_MESSAGE, one_line};
use crate::names::condition::{DISTRIBUTED, READY};
use crate::names::{FIELD_MANAGER, Reason};

/// What one distribution round read and did, as its report needs it.
pub(super) struct Round<'a> {
    pub minter: &'a AdobeCredential,
    pub selected: &'a BTreeSet<String>,
    pub wanted: Option<&'a Wanted>,
    pub failures: &'a [(String, Error)],
    pub steps: &'a [Step],
    /// When the round started.
    pub now: Timestamp,
}

/// Status, Events and metrics of one distribution round.
pub(super) async fn report(cc: &ClusterAdobeCredential, dist: &Distribution, round: Round<'_>) -> Result<(), Error> {
    let Round { minter, selected, wanted, failures, steps, now } = round;
    let failed: BTreeSet<&str> = failures.iter().map(|(ns, _)| ns.as_str()).collect();
    let counts = NamespaceCounts {
        selected: u32::try_from(selected.len()).unwrap_or(u32::MAX),
        written: u32::try_from(selected.iter().filter(|ns| wanted.is_some() && !failed.contains(ns.as_str())).count())
            .unwrap_or(u32::MAX),
        failed: u32::try_from(failures.len()).unwrap_or(u32::MAX),
    };
    dist.ctx.metrics.set_cluster_namespaces(&cc.name_any(), counts.selected, counts.written, counts.failed);
    let status = desired_status(cc, minter, &dist.namespace, counts, failures, wanted.is_some(), now);
    let previous = cc.status.as_ref().map(|s| s.failed_namespaces.clone()).unwrap_or_default();
    patch_status(cc, dist, status).await?;
    let writes = steps
        .iter()
        .filter(|s| matches!(s, Step::Create(ns) | Step::Update(ns) if !failed.contains(ns.as_str())))
        .count();
    if writes > 0 {
        let fingerprint = wanted.map(|w| w.fingerprint.as_str()).unwrap_or_default();
        let note = format!("wrote token {fingerprint} to {writes} namespaces");
        publish(cc, dist, EventType::Normal, Reason::TokenDistributed.as_str(), note).await;
    }
    for (namespace, error) in failures.iter().take(MAX_LISTED_FAILURES) {
        if !previous.iter().any(|f| f.namespace == *namespace && f.reason == error.reason()) {
            publish(cc, dist, EventType::Warning, error.reason(), error.to_string()).await;
        }
    }
    Ok(())
}

/// The status a distribution round calls for. Ready and the token's facts come from the minter.
pub(super) fn desired_status(
    cc: &ClusterAdobeCredential,
    minter: &AdobeCredential,
    minter_namespace: &str,
    counts: NamespaceCounts,
    failures: &[(String, Error)],
    has_token: bool,
    now: Timestamp,
) -> ClusterAdobeCredentialStatus {
    let token = minter.status.clone().unwrap_or_default();
    let (ready, reason, message) = match token.conditions.iter().find(|c| c.type_ == READY) {
        Some(c) => (c.status == "True", c.reason.clone(), c.message.clone()),
        None => (
            false,
            Reason::TokenPending.as_str().to_owned(),
            format!("waiting for the first token from AdobeCredential {minter_namespace}/{}", minter.name_any()),
        ),
    };
    let (distributed, dist_reason, dist_message) = distribution(counts, failures, has_token);
    ClusterAdobeCredentialStatus {
        conditions: vec![
            condition(cc, READY, ready, reason, &message, now),
            condition(cc, DISTRIBUTED, distributed, dist_reason, &dist_message, now),
        ],
        observed_generation: cc.metadata.generation,
        flow: token.flow,
        target_secret: Some(cc.target_name()),
        minted_by: Some(format!("{minter_namespace}/{}", minter.name_any())),
        expires_at: token.expires_at,
        renewal_time: token.renewal_time,
        last_mint_time: token.last_mint_time,
        token_fingerprint: token.token_fingerprint,
        namespaces: counts,
        failed_namespaces: failures.iter().take(MAX_LISTED_FAILURES).map(|(ns, e)| listed(ns, e)).collect(),
    }
}

/// The Distributed condition: True when every selected namespace holds the token.
fn distribution(counts: NamespaceCounts, failures: &[(String, Error)], has_token: bool) -> (bool, String, String) {
    match failures.first() {
        Some((namespace, error)) => {
            let message = format!("{} of {} namespaces failed; {namespace}: {error}", counts.failed, counts.selected);
            (false, error.reason().to_owned(), message)
        }
        None if !has_token => {
            (false, Reason::TokenPending.as_str().to_owned(), "no valid token to distribute yet".to_owned())
        }
        None => {
            let message = format!("{} namespaces hold the current token", counts.written);
            (true, Reason::AllNamespacesWritten.as_str().to_owned(), message)
        }
    }
}

fn listed(namespace: &str, error: &Error) -> NamespaceFailure {
    NamespaceFailure {
        namespace: namespace.to_owned(),
        reason: error.reason().to_owned(),
        message: one_line(&error.to_string(), MAX_MESSAGE),
    }
}

/// A condition of `cc`; its transition time moves only when its status flips.
fn condition(
    cc: &ClusterAdobeCredential,
    type_: &str,
    is_true: bool,
    reason: String,
    message: &str,
    now: Timestamp,
) -> Condition {
    let status = if is_true { "True" } else { "False" }.to_owned();
    let previous =
        cc.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == type_ && c.status == status));
    Condition {
        type_: type_.to_owned(),
        last_transition_time: previous
            .map_or_else(|| Time(crate::time_format::whole_seconds(now)), |p| p.last_transition_time.clone()),
        status,
        reason,
        message: one_line(message, MAX_MESSAGE),
        observed_generation: cc.metadata.generation,
    }
}

/// The status of a round that could not distribute: condition `type_` (Ready when the minter
/// could not be found, Distributed when a list is missing) False with why, the rest as it was.
pub(super) fn failed_status(
    cc: &ClusterAdobeCredential,
    type_: &str,
    error: &Error,
    now: Timestamp,
) -> ClusterAdobeCredentialStatus {
    let mut status = cc.status.clone().unwrap_or_default();
    let failed = condition(cc, type_, false, error.reason().to_owned(), &error.to_string(), now);
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(previous) => *previous = failed,
        None if type_ == READY => status.conditions.insert(0, failed),
        None => status.conditions.push(failed),
    }
    status.observed_generation = cc.metadata.generation;
    status
}

pub(super) async fn patch_status(
    cc: &ClusterAdobeCredential,
    dist: &Distribution,
    status: ClusterAdobeCredentialStatus,
) -> Result<(), Error> {
    let same = cc
        .status
        .as_ref()
        .is_some_and(|current| serde_json::to_value(current).ok() == serde_json::to_value(&status).ok());
    if same {
        return Ok(());
    }
    dist.ctx.leadership.check()?;
    let api: Api<ClusterAdobeCredential> = Api::all(dist.ctx.client.clone());
    let body = json!({
        "apiVersion": ClusterAdobeCredential::api_version(&()),
        "kind": ClusterAdobeCredential::kind(&()),
        "status": status,
    });
    api.patch_status(&cc.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(Error::kube("writing status"))?;
    Ok(())
}

async fn publish(cc: &ClusterAdobeCredential, dist: &Distribution, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(one_line(&note, MAX_MESSAGE)),
        action: "Distribute".to_owned(),
        secondary: None,
    };
    if let Err(err) = dist.ctx.recorder.publish(&event, &cc.object_ref(&())).await {
        warn!(error = %err, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::AdobeCredentialStatus;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn cluster() -> ClusterAdobeCredential {
        let mut cc = ClusterAdobeCredential::new("firefly", Default::default());
        cc.metadata.generation = Some(3);
        cc
    }

    fn minter(ready: Option<(&str, &str)>) -> AdobeCredential {
        let mut minter = AdobeCredential::new("cluster-firefly", Default::default());
        minter.status = ready.map(|(status, reason)| AdobeCredentialStatus {
            conditions: vec![Condition {
                type_: READY.into(),
                status: status.into(),
                reason: reason.into(),
                message: "token valid".into(),
                observed_generation: Some(1),
                last_transition_time: Time(ts("2026-12-01T00:00:00Z")),
            }],
            flow: Some("oauthServerToServer".into()),
            token_fingerprint: Some("sha256:0123456789abcdef".into()),
            ..Default::default()
        });
        minter
    }

    fn counts(selected: u32, written: u32, failed: u32) -> NamespaceCounts {
        NamespaceCounts { selected, written, failed }
    }

    fn conditions(status: &ClusterAdobeCredentialStatus) -> Vec<(&str, &str, &str)> {
        status.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str())).collect()
    }

    #[test]
    fn ready_mirrors_the_minter_and_distributed_says_where_the_token_is() {
        let now = ts("2026-12-01T01:00:00Z");
        let all = desired_status(
            &cluster(),
            &minter(Some(("True", "TokenMinted"))),
            "platform",
            counts(3, 3, 0),
            &[],
            true,
            now,
        );
        assert_eq!(
            conditions(&all),
            [("Ready", "True", "TokenMinted"), ("Distributed", "True", "AllNamespacesWritten")]
        );
        assert_eq!(all.minted_by.as_deref(), Some("platform/cluster-firefly"));
        assert_eq!(all.token_fingerprint.as_deref(), Some("sha256:0123456789abcdef"));
        assert_eq!(all.observed_generation, Some(3));

        let pending = desired_status(&cluster(), &minter(None), "platform", counts(3, 0, 0), &[], false, now);
        assert_eq!(
            conditions(&pending),
            [("Ready", "False", "TokenPending"), ("Distributed", "False", "TokenPending")]
        );
    }

    #[test]
    fn failures_are_counted_and_listed_up_to_a_bound_in_one_line() {
        let failures: Vec<(String, Error)> = (0..25)
            .map(|i| {
                let ns = format!("team-{i}");
                (ns.clone(), Error::NamespaceConflict { namespace: ns, name: "adobe-token".into() })
            })
            .collect();
        let status = desired_status(
            &cluster(),
            &minter(Some(("True", "TokenMinted"))),
            "platform",
            counts(30, 5, 25),
            &failures,
            true,
            ts("2026-12-01T01:00:00Z"),
        );
        assert_eq!(conditions(&status)[1], ("Distributed", "False", "NamespaceConflict"));
        assert_eq!(status.failed_namespaces.len(), MAX_LISTED_FAILURES);
        assert_eq!(status.namespaces, counts(30, 5, 25));
        let message = &status.conditions[1].message;
        assert!(message.starts_with("25 of 30 namespaces failed; team-0:"), "{message}");
        assert!(!message.contains('\n'));
    }

    #[test]
    fn the_transition_time_moves_only_when_a_condition_flips() {
        let mut cc = cluster();
        let first = desired_status(
            &cc,
            &minter(Some(("True", "TokenMinted"))),
            "p",
            counts(1, 1, 0),
            &[],
            true,
            ts("2026-12-01T01:00:00Z"),
        );
        cc.status = Some(first.clone());
        let later = desired_status(
            &cc,
            &minter(Some(("True", "TokenMinted"))),
            "p",
            counts(2, 2, 0),
            &[],
            true,
            ts("2026-12-01T02:00:00Z"),
        );
        assert_eq!(later.conditions[1].last_transition_time, first.conditions[1].last_transition_time);
    }
}
