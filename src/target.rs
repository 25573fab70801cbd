//! The target Secret: what goes into it, whether an existing one is ours and still holds a good
//! token, and the server-side apply that writes it.

use std::collections::BTreeMap;

use base64::Engine;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::crd::{AdobeCredential, CreationPolicy};
use crate::error::{Error, Result};
use crate::source::{FlowInputs, SecretValue, hex};

/// The one field manager of every write this operator makes.
pub const FIELD_MANAGER: &str = "adobe-credential-operator";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Annotations on the target Secret. They let a restarted operator adopt a still-valid token
/// instead of minting again, and they never contain secret material.
pub mod annotation {
    pub const CREDENTIAL: &str = "credentials.adobe-operator.io/credential";
    pub const EXPIRES_AT: &str = "credentials.adobe-operator.io/expires-at";
    pub const ISSUED_AT: &str = "credentials.adobe-operator.io/issued-at";
    pub const SOURCE_REVISION: &str = "credentials.adobe-operator.io/source-revision";
    pub const TOKEN_FINGERPRINT: &str = "credentials.adobe-operator.io/token-fingerprint";
    pub const CLIENT_SECRET_KEY: &str = "credentials.adobe-operator.io/client-secret-key";
}

pub const ACCESS_TOKEN_KEY: &str = "access_token";
pub const TOKEN_TYPE_KEY: &str = "token_type";

/// A token as stored in (or about to be written to) the target Secret.
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub access_token: SecretValue,
    pub token_type: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// Revision of the inputs the token was minted from.
    pub revision: String,
    /// Key of the client secret the token endpoint accepted (a rotation may add a second one).
    pub client_secret_key: Option<String>,
}

impl StoredToken {
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.access_token)
    }
}

/// `sha256:<16 hex>` of a token: enough to tell tokens apart, useless to an attacker.
pub fn fingerprint(token: &SecretValue) -> String {
    let digest = Sha256::digest(token.expose().as_bytes());
    format!("sha256:{}", &hex(&digest)[..16])
}

/// What the target Secret currently is, from this credential's point of view.
#[derive(Debug)]
pub enum TargetState {
    Missing,
    /// Exists, is not ours, and the policy forbids taking it over.
    Conflict,
    /// Ours (or open to merging); `token` is the stored token when it is intact (present, with
    /// annotations that match its fingerprint).
    Present {
        token: Option<StoredToken>,
        secret: Box<Secret>,
    },
}

pub fn inspect(cred: &AdobeCredential, existing: Option<Secret>) -> TargetState {
    let Some(secret) = existing else { return TargetState::Missing };
    let name = cred.name_any();
    let ours = secret.annotations().get(annotation::CREDENTIAL) == Some(&name)
        || secret.owner_references().iter().any(|o| Some(&o.uid) == cred.uid().as_ref());
    if !ours && cred.creation_policy() != CreationPolicy::Merge {
        return TargetState::Conflict;
    }
    let token = if ours { stored_token(&secret) } else { None };
    TargetState::Present { token, secret: Box::new(secret) }
}

fn stored_token(secret: &Secret) -> Option<StoredToken> {
    let annotations = secret.annotations();
    let data = secret.data.as_ref()?;
    let text = |key: &str| data.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok());
    let token = StoredToken {
        access_token: SecretValue::new(text(ACCESS_TOKEN_KEY)?),
        token_type: text(TOKEN_TYPE_KEY).unwrap_or_else(|| "bearer".into()),
        issued_at: annotations.get(annotation::ISSUED_AT)?.parse().ok()?,
        expires_at: annotations.get(annotation::EXPIRES_AT)?.parse().ok()?,
        revision: annotations.get(annotation::SOURCE_REVISION)?.clone(),
        client_secret_key: annotations.get(annotation::CLIENT_SECRET_KEY).cloned(),
    };
    // A token edited by hand no longer matches the fingerprint we recorded with it.
    (annotations.get(annotation::TOKEN_FINGERPRINT) == Some(&token.fingerprint())).then_some(token)
}

/// Renders every key the target Secret gets: the default keys plus template keys.
pub fn render_data(
    cred: &AdobeCredential,
    token: &StoredToken,
    inputs: &FlowInputs,
) -> Result<BTreeMap<String, String>> {
    // The lifetime, not the time left: rendered values must not change between reconciles.
    let expires_in = token.expires_at.duration_since(token.issued_at).as_secs().max(0);
    let mut data = BTreeMap::from([
        (ACCESS_TOKEN_KEY.to_owned(), token.access_token.expose().to_owned()),
        (TOKEN_TYPE_KEY.to_owned(), token.token_type.clone()),
        ("expires_at".to_owned(), rfc3339(token.expires_at)),
        ("client_id".to_owned(), inputs.client_id().to_owned()),
    ]);
    if let Some(org) = inputs.org_id() {
        data.insert("org_id".to_owned(), org.to_owned());
    }
    let spec = cred.spec.target.as_ref();
    if let Some(key) = spec.and_then(|t| t.env_file_key.as_ref()) {
        data.insert(key.clone(), env_file(token, inputs));
    }
    if let Some(key) = spec.and_then(|t| t.json_key.as_ref()) {
        let document = serde_json::json!({
            "access_token": token.access_token.expose(),
            "token_type": token.token_type,
            "expires_at": rfc3339(token.expires_at),
            "expires_in": expires_in,
            "client_id": inputs.client_id(),
            "org_id": inputs.org_id(),
        });
        data.insert(key.clone(), document.to_string());
    }
    let templates = spec.and_then(|t| t.template.as_ref());
    if let Some(template) = templates.filter(|t| !t.data.is_empty()) {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let context = minijinja::context! {
            access_token => token.access_token.expose(),
            token_type => &token.token_type,
            expires_at => rfc3339(token.expires_at),
            expires_in => expires_in,
            client_id => inputs.client_id(),
            org_id => inputs.org_id().unwrap_or_default(),
        };
        for (key, source) in &template.data {
            // The template error names the problem, never the rendered (secret) text.
            let invalid =
                |e: minijinja::Error| Error::InvalidTemplate { key: key.clone(), detail: e.kind().to_string() };
            let rendered = env.render_str(source, &context).map_err(invalid)?;
            data.insert(key.clone(), rendered);
        }
    }
    Ok(data)
}

/// `KEY=value` lines; values are quoted only when they need it (tokens and IDs never do).
fn env_file(token: &StoredToken, inputs: &FlowInputs) -> String {
    let mut lines = vec![
        format!("ADOBE_ACCESS_TOKEN={}", token.access_token.expose()),
        format!("ADOBE_API_KEY={}", inputs.client_id()),
    ];
    if let Some(org) = inputs.org_id() {
        lines.push(format!("ADOBE_ORG_ID={org}"));
    }
    lines.push(format!("ADOBE_TOKEN_EXPIRES_AT={}", rfc3339(token.expires_at)));
    lines.join("\n") + "\n"
}

pub fn rfc3339(at: Timestamp) -> String {
    // Whole seconds: the value is read by people and by SDKs that dislike fractions.
    Timestamp::from_second(at.as_second()).unwrap_or(at).to_string()
}

/// Annotations recorded with a token.
fn token_annotations(cred: &AdobeCredential, token: &StoredToken) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([
        (annotation::CREDENTIAL.to_owned(), cred.name_any()),
        (annotation::EXPIRES_AT.to_owned(), token.expires_at.to_string()),
        (annotation::ISSUED_AT.to_owned(), token.issued_at.to_string()),
        (annotation::SOURCE_REVISION.to_owned(), token.revision.clone()),
        (annotation::TOKEN_FINGERPRINT.to_owned(), token.fingerprint()),
    ]);
    if let Some(key) = &token.client_secret_key {
        annotations.insert(annotation::CLIENT_SECRET_KEY.to_owned(), key.clone());
    }
    annotations
}

/// True when the existing Secret already holds exactly what an apply would write.
pub fn is_up_to_date(
    cred: &AdobeCredential,
    secret: &Secret,
    token: &StoredToken,
    data: &BTreeMap<String, String>,
) -> bool {
    let existing = secret.data.clone().unwrap_or_default();
    let data_ok = data.iter().all(|(k, v)| existing.get(k).map(|b| b.0.as_slice()) == Some(v.as_bytes()));
    let annotations = secret.annotations();
    let annotations_ok = token_annotations(cred, token).iter().all(|(k, v)| annotations.get(k) == Some(v));
    let owner_ok = match cred.creation_policy() {
        CreationPolicy::Owner => secret.owner_references().iter().any(|o| Some(&o.uid) == cred.uid().as_ref()),
        _ => true,
    };
    data_ok && annotations_ok && owner_ok
}

/// Writes the token with server-side apply. Returns the new resourceVersion.
pub async fn apply(
    secrets: &Api<Secret>,
    cred: &AdobeCredential,
    token: &StoredToken,
    data: &BTreeMap<String, String>,
) -> Result<Option<String>> {
    let name = cred.target_name();
    let b64 = base64::engine::general_purpose::STANDARD;
    let encoded: BTreeMap<&String, String> = data.iter().map(|(k, v)| (k, b64.encode(v))).collect();
    let mut metadata = json!({
        "name": name,
        "labels": { MANAGED_BY_LABEL: FIELD_MANAGER },
        "annotations": token_annotations(cred, token),
    });
    let policy = cred.creation_policy();
    if policy == CreationPolicy::Owner
        && let Some(owner) = cred.controller_owner_ref(&())
    {
        metadata["ownerReferences"] = json!([owner]);
    }
    let mut body = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": metadata, "data": encoded });
    // A merged Secret keeps its own type (immutable after creation).
    if policy != CreationPolicy::Merge {
        body["type"] = json!("Opaque");
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written =
        secrets.patch(&name, &params, &Patch::Apply(&body)).await.map_err(Error::kube("writing the target Secret"))?;
    Ok(written.resource_version())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AdobeCredentialSpec, TargetSpec, TargetTemplate};
    use crate::source::ServerToServerInputs;
    use k8s_openapi::ByteString;

    fn cred(policy: CreationPolicy, template: &[(&str, &str)]) -> AdobeCredential {
        let mut c = AdobeCredential::new(
            "firefly",
            AdobeCredentialSpec {
                target: Some(TargetSpec {
                    name: None,
                    creation_policy: policy,
                    template: Some(TargetTemplate {
                        data: template.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    }),
                    env_file_key: Some("adobe.env".into()),
                    json_key: Some("token.json".into()),
                }),
                ..Default::default()
            },
        );
        c.metadata.uid = Some("uid-1".into());
        c.metadata.namespace = Some("team-a".into());
        c
    }

    fn token() -> StoredToken {
        StoredToken {
            access_token: SecretValue::new("eyJ.token.sig"),
            token_type: "bearer".into(),
            issued_at: "2026-11-24T00:00:00Z".parse().expect("ts"),
            expires_at: "2026-11-25T00:00:00Z".parse().expect("ts"),
            revision: "sha256:rev".into(),
            client_secret_key: Some("client_secret".into()),
        }
    }

    fn inputs() -> FlowInputs {
        FlowInputs::OAuthServerToServer(ServerToServerInputs {
            ims_endpoint: "https://ims-na1.adobelogin.com".into(),
            client: crate::source::OAuthClient {
                client_id: "client-1".into(),
                secrets: vec![("client_secret".into(), SecretValue::new("s"))],
            },
            scopes: vec!["openid".into()],
            org_id: Some("ORG@AdobeOrg".into()),
        })
    }

    fn secret_with(cred: &AdobeCredential, data: &BTreeMap<String, String>, tok: &StoredToken) -> Secret {
        let mut s = Secret::default();
        s.metadata.annotations = Some(token_annotations(cred, tok));
        s.metadata.owner_references = cred.controller_owner_ref(&()).map(|o| vec![o]);
        s.data = Some(data.iter().map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec()))).collect());
        s
    }

    #[test]
    fn renders_default_and_template_keys() {
        let c = cred(CreationPolicy::Owner, &[("authorization", "Bearer {{ access_token }}")]);
        let data = render_data(&c, &token(), &inputs()).expect("render");
        assert_eq!(data["access_token"], "eyJ.token.sig");
        assert_eq!(data["token_type"], "bearer");
        assert_eq!(data["expires_at"], "2026-11-25T00:00:00Z");
        assert_eq!(data["client_id"], "client-1");
        assert_eq!(data["org_id"], "ORG@AdobeOrg");
        assert_eq!(data["authorization"], "Bearer eyJ.token.sig");
        assert_eq!(
            data["adobe.env"],
            "ADOBE_ACCESS_TOKEN=eyJ.token.sig\nADOBE_API_KEY=client-1\nADOBE_ORG_ID=ORG@AdobeOrg\nADOBE_TOKEN_EXPIRES_AT=2026-11-25T00:00:00Z\n"
        );
        let json: serde_json::Value = serde_json::from_str(&data["token.json"]).expect("json");
        assert_eq!(json["access_token"], "eyJ.token.sig");
        assert_eq!(json["expires_in"], 86400);
        assert_eq!(json["org_id"], "ORG@AdobeOrg");
    }

    #[test]
    fn template_errors_name_the_key_not_the_token() {
        let c = cred(CreationPolicy::Owner, &[("bad", "{{ access_token }} {{ nope }}")]);
        let err = render_data(&c, &token(), &inputs()).unwrap_err();
        assert_eq!(err.reason(), "InvalidTemplate");
        assert!(err.to_string().contains("\"bad\""));
        assert!(!err.to_string().contains("eyJ.token.sig"));
    }

    #[test]
    fn ours_is_adopted_and_tampering_is_detected() {
        let c = cred(CreationPolicy::Owner, &[]);
        let tok = token();
        let data = render_data(&c, &tok, &inputs()).expect("render");
        let secret = secret_with(&c, &data, &tok);
        match inspect(&c, Some(secret.clone())) {
            TargetState::Present { token: Some(t), secret } => {
                assert_eq!(t.fingerprint(), tok.fingerprint());
                assert!(is_up_to_date(&c, &secret, &t, &data));
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut tampered = secret.clone();
        tampered.data.as_mut().expect("data").insert(ACCESS_TOKEN_KEY.into(), ByteString(b"forged".to_vec()));
        assert!(matches!(inspect(&c, Some(tampered)), TargetState::Present { token: None, .. }));
        let mut edited = secret;
        edited.data.as_mut().expect("data").insert("client_id".into(), ByteString(b"other".to_vec()));
        assert!(!is_up_to_date(&c, &edited, &tok, &data));
    }

    #[test]
    fn foreign_secret_conflicts_unless_merge() {
        let foreign = Secret::default();
        assert!(matches!(inspect(&cred(CreationPolicy::Owner, &[]), Some(foreign.clone())), TargetState::Conflict));
        assert!(matches!(inspect(&cred(CreationPolicy::Orphan, &[]), Some(foreign.clone())), TargetState::Conflict));
        assert!(matches!(
            inspect(&cred(CreationPolicy::Merge, &[]), Some(foreign)),
            TargetState::Present { token: None, .. }
        ));
        assert!(matches!(inspect(&cred(CreationPolicy::Owner, &[]), None), TargetState::Missing));
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        let f = fingerprint(&SecretValue::new("abc"));
        assert_eq!(f, "sha256:ba7816bf8f01cfea");
    }
}
