//! The operator-owned Secret `<name>-rotation-state` that carries a rotation across restarts: the
//! procedure's step (`plan::Procedure`, JSON without secret material) and, between the add and
//! the end of the rotation, the new client secret's value, which Adobe shows only once. Written
//! with server-side apply by the operator's field manager, owned by the AdobeCredential; a Secret
//! of that name the operator did not create is neither read nor overwritten.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::persisted::Procedure;
use crate::crd::AdobeCredential;
use crate::error::{Error, Result};
use crate::names::FIELD_MANAGER;
use crate::refresh_state::{is_ours, state_metadata};
use crate::secret_value::SecretValue;

const PROCEDURE_KEY: &str = "procedure";
const NEW_SECRET_KEY: &str = "new_client_secret";

pub fn secret_name(cred: &AdobeCredential) -> String {
    format!("{}-rotation-state", cred.name_any())
}

/// What the state Secret holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub procedure: Procedure,
    /// The new client secret, in the steps that have one.
    pub new_secret: Option<SecretValue>,
}

/// The persisted procedure; `None` when there is no state Secret yet.
pub async fn load(secrets: &Api<Secret>, cred: &AdobeCredential) -> Result<Option<Stored>> {
    let name = secret_name(cred);
    let Some(secret) = secrets.get_opt(&name).await.map_err(Error::kube("reading the rotation state"))? else {
        return Ok(None);
    };
    if !is_ours(cred, &secret) {
        return Err(Error::RotationStateConflict { name });
    }
    read(&secret).map(Some).map_err(|detail| Error::RotationStateInvalid { name, detail })
}

fn read(secret: &Secret) -> std::result::Result<Stored, String> {
    let data = secret.data.as_ref();
    let bytes = data.and_then(|d| d.get(PROCEDURE_KEY)).ok_or("it has no procedure")?;
    let procedure = Procedure::parse(&bytes.0)?;
    let new_secret = if procedure.step.holds_new_value() {
        let value = data
            .and_then(|d| d.get(NEW_SECRET_KEY))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|v| !v.trim().is_empty() && v.len() <= 1024)
            .ok_or("the new client secret of the rotation in progress is missing")?;
        Some(SecretValue::new(value))
    } else {
        None
    };
    Ok(Stored { procedure, new_secret })
}

/// Persists the procedure (and the new secret, when its step has one; applying without it
/// removes it). Refuses to touch a Secret of that name the operator did not create.
pub async fn save(
    secrets: &Api<Secret>,
    cred: &AdobeCredential,
    procedure: &Procedure,
    new_secret: Option<&SecretValue>,
) -> Result<()> {
    let name = secret_name(cred);
    let existing = secrets.get_opt(&name).await.map_err(Error::kube("reading the rotation state"))?;
    if existing.is_some_and(|s| !is_ours(cred, &s)) {
        return Err(Error::RotationStateConflict { name });
    }
    let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    // Serializing plain data cannot fail; an empty object would still be a valid Idle state.
    let procedure_json = serde_json::to_vec(procedure).unwrap_or_else(|_| b"{}".to_vec());
    let mut data = BTreeMap::from([(PROCEDURE_KEY, encode(&procedure_json))]);
    if let Some(secret) = new_secret.filter(|_| procedure.step.holds_new_value()) {
        data.insert(NEW_SECRET_KEY, encode(secret.expose().as_bytes()));
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": state_metadata(cred, &name, serde_json::Map::new()),
        "type": "Opaque",
        "data": data,
    });
    secrets
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(Error::kube("persisting the rotation state"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::persisted::{SecretRef, Step};
    use k8s_openapi::ByteString;

    fn secret_with(data: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.to_vec()))).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn a_step_with_a_new_secret_needs_its_value() {
        let t: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("ts");
        let procedure = Procedure {
            step: Step::SourceWritten {
                new: SecretRef { uuid: "b".into(), created_at: t, fingerprint: Some("sha256:0b".into()) },
                old: Some("a".into()),
                written_at: t,
                started_at: t,
            },
            ..Default::default()
        };
        let json = serde_json::to_vec(&procedure).expect("json");
        let stored = read(&secret_with(&[(PROCEDURE_KEY, &json), (NEW_SECRET_KEY, b"p8e-new")])).expect("reads");
        assert_eq!(stored.new_secret.as_ref().map(SecretValue::expose), Some("p8e-new"));
        assert!(read(&secret_with(&[(PROCEDURE_KEY, &json)])).unwrap_err().contains("missing"));
        let idle = read(&secret_with(&[(PROCEDURE_KEY, b"{}"), (NEW_SECRET_KEY, b"stale")])).expect("idle");
        assert_eq!(idle.new_secret, None, "an idle procedure has no new secret");
        assert!(read(&secret_with(&[])).is_err());
        assert!(read(&secret_with(&[(PROCEDURE_KEY, b"\xff\xfe")])).is_err());
    }
}
