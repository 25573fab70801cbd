//! Writing the copies: many at once, each created or applied (on the copy this replica saw, by
//! its UID), and taken away by acting on the copy as it is now.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info};

use super::super::json_patch;
use super::caches::Remembered;
use super::plan::{Known, Step};
use super::{COPY_MANAGER, Distribution, Minted, WRITE_CONCURRENCY, creation_policy};
use crate::crd::{ClusterAdobeCredential, CreationPolicy};
use crate::error::Error;
use crate::names::{CLUSTER_CREDENTIAL_LABEL, FIELD_MANAGER, MANAGED_BY_LABEL, annotation};
use crate::target::{self, StoredToken};

/// Carries out the steps, many at once; returns the namespaces that failed, with why.
pub(super) async fn execute(
    cc: &ClusterAdobeCredential,
    dist: &Distribution,
    steps: &[Step],
    minted: Option<&Minted>,
) -> Result<Vec<(String, Error)>, Error> {
    if !steps.is_empty() {
        dist.ctx.leadership.check()?;
    }
    let results: Vec<(String, Result<(), Error>)> = stream::iter(steps.iter().cloned())
        .map(|step| run_step(cc, dist, step, minted))
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    // In namespace order, whatever order the writes finished in: status lists the first ones.
    let mut failures: Vec<_> = results.into_iter().filter_map(|(ns, r)| r.err().map(|e| (ns, e))).collect();
    failures.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(failures)
}

/// One step; returns its namespace and outcome.
async fn run_step(
    cc: &ClusterAdobeCredential,
    dist: &Distribution,
    step: Step,
    minted: Option<&Minted>,
) -> (String, Result<(), Error>) {
    match (step, minted) {
        (Step::Create(ns), Some(minted)) => {
            let written = write_copy(cc, dist, &ns, true, minted).await;
            (ns, written)
        }
        (Step::Update(ns), Some(minted)) => {
            let written = write_copy(cc, dist, &ns, false, minted).await;
            (ns, written)
        }
        // The plan writes only when there is a token to write.
        (Step::Create(ns) | Step::Update(ns), None) => (ns, Ok(())),
        (Step::Remove(ns), _) => {
            let removed = remove_copy(cc, dist, &ns).await;
            (ns, removed)
        }
    }
}

async fn write_copy(
    cc: &ClusterAdobeCredential,
    dist: &Distribution,
    namespace: &str,
    create: bool,
    minted: &Minted,
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(dist.ctx.client.clone(), namespace);
    let mut copy = copy_secret(cc, namespace, minted);
    let name = cc.target_name();
    if !create {
        // The copy this replica saw, not another Secret created under its name since: the API
        // server refuses an apply whose UID is not the object's.
        copy.metadata.uid = dist.copies.get(&ObjectRef::new(&name).within(namespace)).and_then(|c| c.uid());
    }
    let wanted = &minted.wanted;
    let known = Known::Written { fingerprint: wanted.fingerprint.clone(), data_hash: wanted.data_hash.clone() };
    dist.remember(cc, namespace, Some(Remembered { resource_version: None, known: known.clone() }));
    let written = if create {
        let params = PostParams { field_manager: Some(COPY_MANAGER.into()), ..Default::default() };
        secrets.create(&params, &copy).await
    } else {
        secrets.patch(&name, &PatchParams::apply(COPY_MANAGER).force(), &Patch::Apply(&copy)).await
    };
    let written = match written {
        Ok(written) => {
            debug!(namespace, create, version = ?written.resource_version(), "wrote a namespace's copy");
            written
        }
        Err(err) => {
            dist.remember(cc, namespace, None);
            return Err(match err {
                kube::Error::Api(status) if create && status.code == 409 => {
                    Error::NamespaceConflict { namespace: namespace.to_owned(), name }
                }
                other => Error::kube("writing a namespace's copy of the token")(other),
            });
        }
    };
    dist.remember(cc, namespace, Some(Remembered { resource_version: written.resource_version(), known }));
    restart_consumers(cc, dist, namespace, &minted.token).await;
    Ok(())
}

/// The rollout restart targets that exist in `namespace`, restarted for a new token.
async fn restart_consumers(cc: &ClusterAdobeCredential, dist: &Distribution, namespace: &str, token: &StoredToken) {
    let targets = &cc.spec.credential.rollout_restart_targets;
    if targets.is_empty() {
        return;
    }
    let restarts = crate::rollout::restart_consumers(&dist.ctx.client, namespace, targets, token).await;
    for restart in restarts.iter().filter(|r| r.restarted) {
        info!(namespace, kind = ?restart.status.kind, name = %restart.status.name, "restarted a consumer for the new token");
    }
}

/// The annotations of a copy, in the order `copy_secret` fills them.
const COPY_ANNOTATIONS: [&str; 5] = [
    annotation::CLUSTER_CREDENTIAL,
    annotation::TOKEN_FINGERPRINT,
    annotation::DATA_HASH,
    annotation::ISSUED_AT,
    annotation::EXPIRES_AT,
];

/// A namespace's copy: the minter's keys, with the token's annotations and this resource's name.
fn copy_secret(cc: &ClusterAdobeCredential, namespace: &str, minted: &Minted) -> Secret {
    let Minted { token, data, wanted } = minted;
    let mut secret = Secret { data: Some(data.clone()), type_: Some("Opaque".into()), ..Default::default() };
    let meta = &mut secret.metadata;
    meta.name = Some(cc.target_name());
    meta.namespace = Some(namespace.to_owned());
    meta.labels = Some(BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned()),
        (CLUSTER_CREDENTIAL_LABEL.to_owned(), target::bounded(&cc.name_any(), 63)),
    ]));
    let values = [
        cc.name_any(),
        wanted.fingerprint.clone(),
        wanted.data_hash.clone(),
        token.issued_at.to_string(),
        token.expires_at.to_string(),
    ];
    meta.annotations = Some(COPY_ANNOTATIONS.iter().map(|k| k.to_string()).zip(values).collect());
    if creation_policy(cc) == CreationPolicy::Owner {
        meta.owner_references = cc.controller_owner_ref(&()).map(|o| vec![o]);
    }
    secret
}

/// Takes this resource's copy out of `namespace`, acting on the copy as it is now: deleted (with
/// UID and resourceVersion preconditions) when it holds only what the operator wrote; released
/// when someone else has written keys into it, which stay; left alone when it is no longer ours.
pub(super) async fn remove_copy(
    cc: &ClusterAdobeCredential,
    dist: &Distribution,
    namespace: &str,
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(dist.ctx.client.clone(), namespace);
    dist.remember(cc, namespace, None);
    let name = cc.target_name();
    const REMOVING: &str = "removing a namespace's copy of the token";
    let Some(copy) = secrets.get_opt(&name).await.map_err(Error::kube(REMOVING))? else { return Ok(()) };
    if copy.annotations().get(annotation::CLUSTER_CREDENTIAL) != Some(&cc.name_any()) {
        return Ok(());
    }
    let theirs = keys_written_by_others(&copy);
    let removed = if theirs.is_empty() {
        let preconditions = Preconditions { uid: copy.uid(), resource_version: copy.resource_version() };
        secrets
            .delete(&name, &DeleteParams { preconditions: Some(preconditions), ..Default::default() })
            .await
            .map(drop)
    } else {
        let params = PatchParams { field_manager: Some(COPY_MANAGER.into()), ..Default::default() };
        match json_patch(release(cc, &copy, &theirs)) {
            Ok(patch) => secrets.patch(&name, &params, &patch).await.map(drop),
            Err(err) => Err(err),
        }
    };
    match removed {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        // 409: changed since it was read; the next round acts on what is there then.
        Err(err) => Err(Error::kube(REMOVING)(err)),
    }
}

/// The data keys of a Secret that field managers other than the copies' own have written.
fn keys_written_by_others(secret: &Secret) -> BTreeSet<String> {
    secret
        .managed_fields()
        .iter()
        .filter(|entry| entry.manager.as_deref() != Some(COPY_MANAGER))
        .filter_map(|entry| entry.fields_v1.as_ref()?.0.get("f:data")?.as_object())
        .flat_map(|fields| fields.keys().filter_map(|f| f.strip_prefix("f:")).map(str::to_owned))
        .collect()
}

/// The patch that takes from `copy` what `cc` wrote: only the keys in `theirs` stay, and none
/// of the copy's labels, annotations and owner. It applies only to the copy as it was read.
fn release(cc: &ClusterAdobeCredential, copy: &Secret, theirs: &BTreeSet<String>) -> serde_json::Value {
    let mut data = copy.data.clone().unwrap_or_default();
    data.retain(|key, _| theirs.contains(key));
    let mut labels = copy.labels().clone();
    labels.retain(|key, _| ![MANAGED_BY_LABEL, CLUSTER_CREDENTIAL_LABEL].contains(&key.as_str()));
    let mut annotations = copy.annotations().clone();
    annotations.retain(|key, _| !COPY_ANNOTATIONS.contains(&key.as_str()));
    let mut owners = copy.owner_references().to_vec();
    owners.retain(|o| Some(&o.uid) != cc.uid().as_ref());
    json!([
        { "op": "test", "path": "/metadata/uid", "value": copy.uid() },
        { "op": "test", "path": "/metadata/resourceVersion", "value": copy.resource_version() },
        { "op": "add", "path": "/data", "value": data },
        { "op": "add", "path": "/metadata/labels", "value": labels },
        { "op": "add", "path": "/metadata/annotations", "value": annotations },
        { "op": "add", "path": "/metadata/ownerReferences", "value": owners },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releasing_a_copy_keeps_only_what_others_wrote() {
        let mut cc = ClusterAdobeCredential::new("mg", Default::default());
        cc.metadata.uid = Some("uid-mg".into());
        let copy: Secret = serde_json::from_value(json!({
            "metadata": {
                "name": "adobe-token",
                "uid": "copy-uid",
                "resourceVersion": "42",
                "labels": { MANAGED_BY_LABEL: FIELD_MANAGER, CLUSTER_CREDENTIAL_LABEL: "mg", "team": "a" },
                "annotations": { annotation::CLUSTER_CREDENTIAL: "mg", annotation::DATA_HASH: "sha256:d", "note": "x" },
                "ownerReferences": [
                    { "apiVersion": "v1", "kind": "ClusterAdobeCredential", "name": "mg", "uid": "uid-mg" },
                    { "apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "uid-other" },
                ],
                "managedFields": [
                    { "manager": COPY_MANAGER, "operation": "Apply", "fieldsType": "FieldsV1",
                      "fieldsV1": { "f:data": { "f:access_token": {}, "f:client_id": {} } } },
                    { "manager": "team-tool", "operation": "Update", "fieldsType": "FieldsV1",
                      "fieldsV1": { "f:data": { "f:team_note": {} }, "f:metadata": { "f:labels": { "f:team": {} } } } },
                ],
            },
            "data": { "access_token": "dG9r", "client_id": "Y2lk", "team_note": "a2VwdA==" },
        }))
        .expect("copy");
        let theirs = keys_written_by_others(&copy);
        assert_eq!(theirs, BTreeSet::from(["team_note".to_owned()]));
        let mut document = serde_json::to_value(&copy).expect("json");
        let operations: json_patch::Patch = serde_json::from_value(release(&cc, &copy, &theirs)).expect("patch");
        json_patch::patch(&mut document, &operations).expect("applies to the copy as read");
        let released: Secret = serde_json::from_value(document).expect("secret");
        assert_eq!(
            released.data.as_ref().map(|d| d.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["team_note".into()])
        );
        assert_eq!(released.labels(), &BTreeMap::from([("team".to_owned(), "a".to_owned())]));
        assert_eq!(released.annotations(), &BTreeMap::from([("note".to_owned(), "x".to_owned())]));
        assert_eq!(released.owner_references().len(), 1, "only the resource's own owner reference goes");
        let mut changed = serde_json::to_value(&copy).expect("json");
        changed["metadata"]["resourceVersion"] = json!("43");
        assert!(json_patch::patch(&mut changed, &operations).is_err(), "not to a copy changed since");
    }
}
