//! Restarting consumers that read the token once at start-up: the pod template of each rollout
//! restart target gets the annotations `kubectl rollout restart` uses, plus the fingerprint of
//! the token it was restarted for. The fingerprint makes the restart happen exactly once per
//! token change, also across operator restarts.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::crd::{RolloutRestartStatus, RolloutRestartTarget, WorkloadKind};
use crate::error::{Error, Result};
use crate::names::annotation::{RESTARTED_AT, RESTARTED_FOR};
use crate::names::{FIELD_MANAGER, Reason};
use crate::target::StoredToken;

/// The outcome for one target.
#[derive(Debug)]
pub struct Restart {
    pub status: RolloutRestartStatus,
    /// Patched in this call (an Event is due).
    pub restarted: bool,
    /// Why it could not be restarted.
    pub problem: Option<Problem>,
}

/// Why a rollout restart target was not restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    NotFound,
    /// The operator's RBAC does not let it patch workloads (the chart's default).
    Forbidden,
    /// Any other API error (reported, retried on the next token change or reconcile).
    Failed,
}

impl Problem {
    pub fn reason(self) -> Reason {
        match self {
            Problem::NotFound => Reason::RolloutTargetNotFound,
            Problem::Forbidden => Reason::RolloutRestartForbidden,
            Problem::Failed => Reason::RolloutRestartFailed,
        }
    }

    fn of(err: &Error) -> Self {
        match err {
            Error::Kube { source: kube::Error::Api(status), .. } if status.code == 403 => Problem::Forbidden,
            _ => Problem::Failed,
        }
    }

    fn message(self, err: Option<&Error>) -> String {
        match (self, err) {
            (Problem::NotFound, _) => "not found".to_owned(),
            (Problem::Forbidden, _) => {
                "forbidden: the operator may not patch workloads; install the chart with rolloutRestart.enabled=true"
                    .to_owned()
            }
            (Problem::Failed, Some(err)) => err.to_string(),
            (Problem::Failed, None) => "failed".to_owned(),
        }
    }
}

/// Restarts every target whose pods do not run with `token` yet. Problems (a missing workload,
/// missing permissions) are reported in the target's status entry, never as a failure: the token
/// itself is fine and its status must still be written.
pub async fn restart_consumers(
    client: &Client,
    namespace: &str,
    targets: &[RolloutRestartTarget],
    token: &StoredToken,
) -> Vec<Restart> {
    let mut outcomes = Vec::with_capacity(targets.len());
    for target in targets {
        let outcome = match target.kind {
            WorkloadKind::Deployment => {
                restart::<Deployment>(client, namespace, target, token, |d| d.spec.as_ref().map(|s| &s.template)).await
            }
            WorkloadKind::StatefulSet => {
                restart::<StatefulSet>(client, namespace, target, token, |s| s.spec.as_ref().map(|s| &s.template)).await
            }
            WorkloadKind::DaemonSet => {
                restart::<DaemonSet>(client, namespace, target, token, |d| d.spec.as_ref().map(|s| &s.template)).await
            }
        };
        outcomes.push(outcome.unwrap_or_else(|err| {
            let problem = Problem::of(&err);
            let status = RolloutRestartStatus {
                kind: target.kind,
                name: target.name.clone(),
                restarted_at: None,
                message: Some(problem.message(Some(&err))),
            };
            Restart { status, restarted: false, problem: Some(problem) }
        }));
    }
    outcomes
}

async fn restart<K>(
    client: &Client,
    namespace: &str,
    target: &RolloutRestartTarget,
    token: &StoredToken,
    template: impl Fn(&K) -> Option<&PodTemplateSpec>,
) -> Result<Restart>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let status = |restarted_at: Option<String>, message: Option<&str>| RolloutRestartStatus {
        kind: target.kind,
        name: target.name.clone(),
        restarted_at,
        message: message.map(str::to_owned),
    };
    let Some(workload) = api.get_opt(&target.name).await.map_err(Error::kube("reading a rollout restart target"))?
    else {
        let message = Problem::NotFound.message(None);
        return Ok(Restart {
            status: status(None, Some(&message)),
            restarted: false,
            problem: Some(Problem::NotFound),
        });
    };
    let annotations = template(&workload).and_then(|t| t.metadata.as_ref()).and_then(|m| m.annotations.as_ref());
    let fingerprint = token.fingerprint();
    if annotations.and_then(|a| a.get(RESTARTED_FOR)) == Some(&fingerprint) {
        let restarted_at = annotations.and_then(|a| a.get(RESTARTED_AT)).cloned();
        return Ok(Restart { status: status(restarted_at, None), restarted: false, problem: None });
    }
    let now = crate::time_format::rfc3339(Timestamp::now());
    let patch = json!({
        "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: now, RESTARTED_FOR: fingerprint } } } }
    });
    api.patch(&target.name, &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube("restarting a rollout restart target"))?;
    Ok(Restart { status: status(Some(now), None), restarted: true, problem: None })
}
