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

/// What the refresh state holds for the current chain.
#[derive(Debug, PartialEq)]
pub enum Chain {
    /// Nothing usable: the chain starts from the flow's first grant.
    Start,
    /// The refresh token to use next.
    Continue(SecretValue),
    /// The token endpoint refused this chain for good: asking again with the same inputs can
    /// only be refused again.
    Refused,
}

/// The persisted refresh token, if it was issued for the current chain and is young enough.
/// `chains` lists the revisions the current chain is saved under (see [`Flow::chain_revision`];
/// releases before it saved the chain under the mint's revision).
///
/// [`Flow::chain_revision`]: crate::flows::Flow::chain_revision
pub async fn load(
    secrets: &Api<Secret>,
    cred: &AdobeCredential,
    chains: &[&str],
    lifetime: SignedDuration,
    now: Timestamp,
) -> Result<Chain> {
    let Some(secret) = secrets.get_opt(&secret_name(cred)).await.map_err(Error::kube("reading the refresh state"))?
    else {
        return Ok(Chain::Start);
    };
    if !is_ours(cred, &secret) {
        return Err(Error::RefreshStateConflict { name: secret_name(cred) });
    }
    let annotations = secret.annotations();
    let of_chain = |key: &str| annotations.get(key).is_some_and(|saved| chains.contains(&saved.as_str()));
    if of_chain(annotation::REFUSED_CHAIN) {
        return Ok(Chain::Refused);
    }
    let issued_at: Option<Timestamp> = annotations.get(annotation::ISSUED_AT).and_then(|t| t.parse().ok());
    // The annotation is tenant-writable: a time in the future or past any range is "not fresh".
    let fresh = issued_at.is_some_and(|at| at <= now && at.checked_add(lifetime).is_ok_and(|expires| now < expires));
    let same_chain = of_chain(annotation::SOURCE_REVISION);
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(REFRESH_TOKEN_KEY))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|t| !t.is_empty());
    Ok(token.filter(|_| fresh && same_chain).map_or(Chain::Start, |t| Chain::Continue(SecretValue::new(t))))
}

/// An operator-owned state Secret (refresh state, rotation state) created for this very
/// credential: never overwrite or trust anything else.
pub(crate) fn is_ours(cred: &AdobeCredential, secret: &Secret) -> bool {
    secret.annotations().get(annotation::CREDENTIAL) == Some(&cred.name_any())
        && secret.owner_references().iter().any(|o| Some(&o.uid) == cred.uid().as_ref())
}

/// The metadata that makes a state Secret `name` ours by [`is_ours`]: the credential's
/// annotation (besides `annotations`) and the credential as its controlling owner.
pub(crate) fn state_metadata(
    cred: &AdobeCredential,
    name: &str,
    mut annotations: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    annotations.insert(annotation::CREDENTIAL.to_owned(), cred.name_any().into());
    json!({
        "name": name,
        "labels": { MANAGED_BY_LABEL: FIELD_MANAGER },
        "annotations": annotations,
        "ownerReferences": cred.controller_owner_ref(&()).into_iter().collect::<Vec<_>>(),
    })
}

pub async fn save(
    secrets: &Api<Secret>,
    cred: &AdobeCredential,
    refresh_token: &SecretValue,
    chain: &str,
    issued_at: Timestamp,
) -> Result<()> {
    let annotations = serde_json::Map::from_iter([
        (annotation::ISSUED_AT.to_owned(), issued_at.to_string().into()),
        (annotation::SOURCE_REVISION.to_owned(), chain.into()),
    ]);
    write(secrets, cred, annotations, json!({ REFRESH_TOKEN_KEY: refresh_token.expose() })).await
}

/// Remembers that the token endpoint refused `chain` for good, so that no further request is
/// made for it; a new chain (another initial refresh token, client or scopes) starts afresh.
pub async fn mark_refused(secrets: &Api<Secret>, cred: &AdobeCredential, chain: &str) -> Result<()> {
    let annotations = serde_json::Map::from_iter([(annotation::REFUSED_CHAIN.to_owned(), chain.into())]);
    write(secrets, cred, annotations, json!({})).await
}

/// Applies the whole state: what the operator applied before and leaves out here goes.
async fn write(
    secrets: &Api<Secret>,
    cred: &AdobeCredential,
    annotations: serde_json::Map<String, serde_json::Value>,
    string_data: serde_json::Value,
) -> Result<()> {
    let name = secret_name(cred);
    let existing = secrets.get_opt(&name).await.map_err(Error::kube("reading the refresh state"))?;
    if existing.is_some_and(|s| !is_ours(cred, &s)) {
        return Err(Error::RefreshStateConflict { name });
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": state_metadata(cred, &name, annotations),
        "type": "Opaque",
        "stringData": string_data,
    });
    secrets
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(Error::kube("persisting the refresh state"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_operators_own_state_secret_is_trusted() {
        let mut cred = AdobeCredential::new("c", Default::default());
        cred.metadata.uid = Some("uid-1".into());
        let mut secret = Secret::default();
        assert!(!is_ours(&cred, &secret));
        secret.metadata.annotations = Some([(annotation::CREDENTIAL.to_owned(), "c".to_owned())].into());
        assert!(!is_ours(&cred, &secret), "an annotation alone is not enough");
        let metadata = state_metadata(&cred, "c-refresh-state", serde_json::Map::new());
        let written: Secret = serde_json::from_value(json!({ "metadata": metadata })).expect("secret");
        assert!(is_ours(&cred, &written), "what the operator writes is its own");
        let mut recreated = cred.clone();
        recreated.metadata.uid = Some("uid-2".into());
        assert!(!is_ours(&recreated, &written), "a credential recreated under the same name does not own it");
    }
}
