//! Reading the inputs of a mint from the Secrets a resource references, and the revision hash
//! that tells whether the token in the target Secret was minted from exactly these inputs.

use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use sha2::{Digest, Sha256};

use crate::crd::{AdobeCredential, OAuthServerToServer};
use crate::error::{Error, Result};

/// A secret value (client secret, password, key). Its `Debug` never shows the value, so it cannot
/// reach a log line through `{:?}` by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Everything an OAuth Server-to-Server mint needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerToServerInputs {
    pub ims_endpoint: String,
    pub client_id: String,
    pub client_secret: SecretValue,
    pub scopes: Vec<String>,
    pub org_id: Option<String>,
}

/// The inputs of one flow, resolved from the spec and the source Secrets.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowInputs {
    OAuthServerToServer(ServerToServerInputs),
}

impl FlowInputs {
    /// Name of the flow block, as in the spec and in `status.flow`.
    pub fn flow_name(&self) -> &'static str {
        match self {
            FlowInputs::OAuthServerToServer(_) => "oauthServerToServer",
        }
    }

    /// Client ID written to the target Secret (Adobe APIs want it as `x-api-key`).
    pub fn client_id(&self) -> &str {
        match self {
            FlowInputs::OAuthServerToServer(i) => &i.client_id,
        }
    }

    pub fn org_id(&self) -> Option<&str> {
        match self {
            FlowInputs::OAuthServerToServer(i) => i.org_id.as_deref(),
        }
    }

    /// `sha256:<hex>` over every input of the mint. The inputs always include a high-entropy
    /// client secret, so the hash reveals nothing about any of them.
    pub fn revision(&self) -> String {
        let mut hasher = Sha256::new();
        let mut field = |value: &str| {
            // Length-prefixed so that ("ab","c") and ("a","bc") hash differently.
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
        };
        field(self.flow_name());
        match self {
            FlowInputs::OAuthServerToServer(i) => {
                field(&i.ims_endpoint);
                field(&i.client_id);
                field(i.client_secret.expose());
                field(&i.scopes.join(","));
                field(i.org_id.as_deref().unwrap_or_default());
            }
        }
        format!("sha256:{}", hex(&hasher.finalize()))
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Names of the Secrets a resource reads its inputs from (all in its own namespace).
pub fn source_secret_names(cred: &AdobeCredential) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(flow) = &cred.spec.oauth_server_to_server {
        names.push(flow.client_secret_ref.name.clone());
    }
    names
}

/// Reads the referenced Secrets and resolves the flow's inputs.
pub async fn resolve(secrets: &Api<Secret>, cred: &AdobeCredential) -> Result<FlowInputs> {
    match &cred.spec.oauth_server_to_server {
        Some(flow) => resolve_server_to_server(secrets, flow).await,
        // The CRD's CEL rule makes this unreachable for objects the API server admitted.
        None => Err(Error::SourceSecretNotFound { name: String::new() }),
    }
}

async fn resolve_server_to_server(secrets: &Api<Secret>, flow: &OAuthServerToServer) -> Result<FlowInputs> {
    let secret = read_secret(secrets, &flow.client_secret_ref.name).await?;
    let r = &flow.client_secret_ref;
    Ok(FlowInputs::OAuthServerToServer(ServerToServerInputs {
        ims_endpoint: flow.ims_endpoint.trim_end_matches('/').to_owned(),
        client_id: secret_string(&secret, &r.name, &r.client_id_key)?.trim().to_owned(),
        client_secret: SecretValue::new(secret_string(&secret, &r.name, &r.client_secret_key)?.trim()),
        scopes: flow.scopes.clone(),
        org_id: flow.org_id.clone(),
    }))
}

async fn read_secret(secrets: &Api<Secret>, name: &str) -> Result<Secret> {
    secrets
        .get_opt(name)
        .await
        .map_err(Error::kube("reading a source Secret"))?
        .ok_or_else(|| Error::SourceSecretNotFound { name: name.to_owned() })
}

/// A key of a Secret as UTF-8 text; `stringData` is folded into `data` by the API server.
fn secret_string(secret: &Secret, secret_name: &str, key: &str) -> Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| Error::SourceKeyMissing { secret: secret_name.to_owned(), key: key.to_owned() })?;
    match String::from_utf8(bytes.0.clone()) {
        Ok(text) if !text.trim().is_empty() => Ok(text),
        _ => Err(Error::SourceValueInvalid { secret: secret_name.to_owned(), key: key.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(secret: &str) -> FlowInputs {
        FlowInputs::OAuthServerToServer(ServerToServerInputs {
            ims_endpoint: "https://ims-na1.adobelogin.com".into(),
            client_id: "abc".into(),
            client_secret: SecretValue::new(secret),
            scopes: vec!["openid".into(), "AdobeID".into()],
            org_id: None,
        })
    }

    #[test]
    fn revision_changes_with_every_input_and_hides_the_secret() {
        let a = inputs("p8e-secret-one").revision();
        assert_eq!(a, inputs("p8e-secret-one").revision());
        assert_ne!(a, inputs("p8e-secret-two").revision());
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64);
        assert!(!a.contains("p8e-secret-one"));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let printed = format!("{:?}", inputs("p8e-very-secret"));
        assert!(!printed.contains("p8e-very-secret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn missing_and_empty_keys_are_named() {
        let mut secret = Secret::default();
        secret.data = Some(
            [("client_id".to_string(), k8s_openapi::ByteString(b"  ".to_vec()))].into_iter().collect(),
        );
        let missing = secret_string(&secret, "src", "client_secret").unwrap_err();
        assert_eq!(missing.reason(), "SourceKeyMissing");
        assert!(missing.to_string().contains("\"client_secret\""));
        let empty = secret_string(&secret, "src", "client_id").unwrap_err();
        assert_eq!(empty.reason(), "SourceValueInvalid");
    }
}
