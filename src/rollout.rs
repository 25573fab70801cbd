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
use crate::target::{FIELD_MANAGER, StoredToken};

/// Pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Pod-template annotation naming the token the pods were restarted for.
pub const RESTARTED_FOR: &str = "credentials.adobe-operator.io/restarted-for-token";

/// The outcome for one target.
#[derive(Debug)]
pub struct Restart {
    pub status: RolloutRestartStatus,
    /// Patched in this call (an Event is due).
    pub restarted: bool,
}

/// Restarts every target whose pods do not run with `token` yet. A missing workload is reported
/// in its status entry, not as an error: the credential itself is fine.
pub async fn restart_consumers(
    client: &Client,
    namespace: &str,
    targets: &[RolloutRestartTarget],
    token: &StoredToken,
) -> Result<Vec<Restart>> {
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
        }?;
        outcomes.push(outcome);
    }
    Ok(outcomes)
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
        return Ok(Restart { status: status(None, Some("not found")), restarted: false });
    };
    let annotations = template(&workload).and_then(|t| t.metadata.as_ref()).and_then(|m| m.annotations.as_ref());
    let fingerprint = token.fingerprint();
    if annotations.and_then(|a| a.get(RESTARTED_FOR)) == Some(&fingerprint) {
        let restarted_at = annotations.and_then(|a| a.get(RESTARTED_AT)).cloned();
        return Ok(Restart { status: status(restarted_at, None), restarted: false });
    }
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now()).to_string();
    let patch = json!({
        "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: now, RESTARTED_FOR: fingerprint } } } }
    });
    api.patch(&target.name, &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube("restarting a rollout restart target"))?;
    Ok(Restart { status: status(Some(now), None), restarted: true })
}
