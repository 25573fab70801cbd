//! Operator-owned state of flows that chain refresh tokens (Akeneo): the refresh token lives in a
//! Secret of its own, never in the target Secret that workloads mount. Such servers delete a
//! refresh token when it is used, so the new one is persisted before the access token is
//! written: a crash in between loses at most the refresh token, and the flow's first grant takes
//! over.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::crd::AdobeCredential;
use crate::error::{Error, Result};
use crate::names::{FIELD_MANAGER, MANAGED_BY_LABEL, annotation};
use crate::secret_value::SecretValue;

const REFRESH_TOKEN_KEY: &str = "refresh_token";

pub fn secret_name(cred: &AdobeCredential) -> String {
    format!("{}-refresh-state", cred.name_any())
}

/// The persisted refresh token, if it was issued for the current inputs and is young enough.
pub async fn load(
    secrets: &Api<Secret>,
    cred: &AdobeCredential,
    revision: &str,
    lifetime: SignedDuration,
    now: Timestamp,
) -> Result<Option<SecretValue>> {
    let Some(secret) = secrets.get_opt(&secret_name(cred)).await.map_err(Error::kube("reading the refresh state"))?
    else {
        return Ok(None);
    };
    if !is_ours(cred, &secret) {
        return Err(Error::RefreshStateConflict { name: secret_name(cred) });
    }
    let annotations = secret.annotations();
    let issued_at: Option<Timestamp> = annotations.get(annotation::ISSUED_AT).and_then(|t| t.parse().ok());
    // The annotation is tenant-writable: a time in the future or past any range is "not fresh".
    let fresh = issued_at.is_some_and(|at| at <= now && at.checked_add(lifetime).is_ok_and(|expires| now < expires));
    let same_inputs = annotations.get(annotation::SOURCE_REVISION).map(String::as_str) == Some(revision);
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(REFRESH_TOKEN_KEY))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|t| !t.is_empty());
    Ok(token.filter(|_| fresh && same_inputs).map(SecretValue::new))
}

/// An operator-owned state Secret (refresh state, rotation state) created for this very
/// credential: never overwrite or trust anything else.
pub(crate) fn is_ours(cred: &AdobeCredential, secret: &Secret) -> bool {
    secret.annotations().get(annotation::CREDENTIAL) == Some(&cred.name_any())
        && secret.owner_references().iter().any(|o| Some(&o.uid) == cred.uid().as_ref())
}

pub async fn save(
    secrets: &Api<Secret>,
    cred: &AdobeCredential,
    refresh_token: &SecretValue,
    revision: &str,
    issued_at: Timestamp,
) -> Result<()> {
    let name = secret_name(cred);
    let existing = secrets.get_opt(&name).await.map_err(Error::kube("reading the refresh state"))?;
    if existing.is_some_and(|s| !is_ours(cred, &s)) {
        return Err(Error::RefreshStateConflict { name });
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "labels": { MANAGED_BY_LABEL: FIELD_MANAGER },
            "annotations": {
                annotation::CREDENTIAL: cred.name_any(),
                annotation::ISSUED_AT: issued_at.to_string(),
                annotation::SOURCE_REVISION: revision,
            },
            "ownerReferences": cred.controller_owner_ref(&()).into_iter().collect::<Vec<_>>(),
        },
        "type": "Opaque",
        "stringData": { REFRESH_TOKEN_KEY: refresh_token.expose() },
    });
    secrets
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(Error::kube("persisting the refresh token"))?;
    Ok(())
}
