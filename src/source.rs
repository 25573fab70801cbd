//! Reading the inputs of a mint from the Secrets a resource references, and the revision hash
//! that tells whether the token in the target Secret was minted from exactly these inputs.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use sha2::{Digest, Sha256};

use crate::crd::{AdobeCredential, ClientSecretRef};
use crate::error::{Error, Result};
use crate::secret_value::{SecretValue, hex};

/// An OAuth client: its ID and one or two secrets (two during a rotation).
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthClient {
    pub client_id: String,
    /// `(key in the source Secret, value)`, primary first.
    pub secrets: Vec<(String, SecretValue)>,
    /// What was cleaned off the values (a trailing newline from `echo`, a byte order mark), for
    /// the people who made the Secret. Never the values themselves.
    pub notes: Vec<String>,
}

/// A value from a Secret without the characters editors and shells add around it (white space,
/// CR/LF line ends, a UTF-8 byte order mark), and what was removed, if anything.
pub fn clean(value: &str) -> (&str, Option<&'static str>) {
    let without_bom = value.strip_prefix('\u{feff}');
    let body = without_bom.unwrap_or(value);
    let trimmed = body.trim();
    let note = if without_bom.is_some() {
        Some("a UTF-8 byte order mark")
    } else if body.ends_with("\r\n") {
        Some("a trailing CR/LF line end")
    } else if body.ends_with('\n') {
        Some("a trailing newline")
    } else if trimmed.len() != body.len() {
        Some("leading or trailing white space")
    } else {
        None
    };
    (trimmed, note)
}

/// Everything an OAuth Server-to-Server mint needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerToServerInputs {
    pub ims_endpoint: String,
    pub client: OAuthClient,
    pub scopes: Vec<String>,
    pub org_id: Option<String>,
}

/// Everything a Service Account (JWT) exchange needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceAccountJwtInputs {
    pub ims_endpoint: String,
    pub client: OAuthClient,
    pub private_key_pem: SecretValue,
    /// `Secret "name" key "key"`, for error messages.
    pub private_key_location: String,
    pub org_id: String,
    pub technical_account_id: String,
    pub metascopes: Vec<String>,
}

/// Everything an OAuth2 password grant (Akeneo) needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PasswordGrantInputs {
    pub token_url: String,
    pub client: OAuthClient,
    pub username: String,
    pub password: SecretValue,
}

/// The inputs of one flow, resolved from the spec and the source Secrets.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowInputs {
    OAuthServerToServer(ServerToServerInputs),
    ServiceAccountJwt(ServiceAccountJwtInputs),
    PasswordGrant(PasswordGrantInputs),
}

impl FlowInputs {
    /// Name of the flow block, as in the spec and in `status.flow`.
    pub fn flow_name(&self) -> &'static str {
        match self {
            FlowInputs::OAuthServerToServer(_) => "oauthServerToServer",
            FlowInputs::ServiceAccountJwt(_) => "serviceAccountJWT",
            FlowInputs::PasswordGrant(_) => "passwordGrant",
        }
    }

    pub fn client(&self) -> &OAuthClient {
        match self {
            FlowInputs::OAuthServerToServer(i) => &i.client,
            FlowInputs::ServiceAccountJwt(i) => &i.client,
            FlowInputs::PasswordGrant(i) => &i.client,
        }
    }

    /// Base URL of the token endpoint (IMS) or the token URL itself (password grant).
    pub fn endpoint(&self) -> &str {
        match self {
            FlowInputs::OAuthServerToServer(i) => &i.ims_endpoint,
            FlowInputs::ServiceAccountJwt(i) => &i.ims_endpoint,
            FlowInputs::PasswordGrant(i) => &i.token_url,
        }
    }

    /// Client ID written to the target Secret (Adobe APIs want it as `x-api-key`).
    pub fn client_id(&self) -> &str {
        &self.client().client_id
    }

    pub fn org_id(&self) -> Option<&str> {
        match self {
            FlowInputs::OAuthServerToServer(i) => i.org_id.as_deref(),
            FlowInputs::ServiceAccountJwt(i) => Some(&i.org_id),
            FlowInputs::PasswordGrant(_) => None,
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
        let client = self.client();
        field(&client.client_id);
        for (key, secret) in &client.secrets {
            field(key);
            field(secret.expose());
        }
        match self {
            FlowInputs::OAuthServerToServer(i) => {
                field(&i.ims_endpoint);
                field(&i.scopes.join(","));
                field(i.org_id.as_deref().unwrap_or_default());
            }
            FlowInputs::ServiceAccountJwt(i) => {
                field(&i.ims_endpoint);
                field(i.private_key_pem.expose());
                field(&i.org_id);
                field(&i.technical_account_id);
                field(&i.metascopes.join(","));
            }
            FlowInputs::PasswordGrant(i) => {
                field(&i.token_url);
                field(&i.username);
                field(i.password.expose());
            }
        }
        format!("sha256:{}", hex(&hasher.finalize()))
    }
}

/// Names of the Secrets a resource reads its inputs from (all in its own namespace).
pub fn source_secret_names(cred: &AdobeCredential) -> Vec<String> {
    let spec = &cred.spec;
    let mut names = Vec::new();
    if let Some(flow) = &spec.oauth_server_to_server {
        names.push(flow.client_secret_ref.name.clone());
    }
    if let Some(flow) = &spec.service_account_jwt {
        names.push(flow.client_secret_ref.name.clone());
        names.push(flow.private_key_ref.name.clone());
    }
    if let Some(flow) = &spec.password_grant {
        names.push(flow.client_secret_ref.name.clone());
        names.push(flow.user_secret_ref.name.clone());
    }
    names
}

/// Reads the referenced Secrets and resolves the flow's inputs.
pub async fn resolve(secrets: &Api<Secret>, cred: &AdobeCredential) -> Result<FlowInputs> {
    let spec = &cred.spec;
    let mut reader = SecretReader { api: secrets, read: Vec::new() };
    if let Some(flow) = &spec.oauth_server_to_server {
        return Ok(FlowInputs::OAuthServerToServer(ServerToServerInputs {
            ims_endpoint: flow.ims_endpoint.trim_end_matches('/').to_owned(),
            client: reader.client(&flow.client_secret_ref).await?,
            scopes: flow.scopes.clone(),
            org_id: flow.org_id.clone(),
        }));
    }
    if let Some(flow) = &spec.service_account_jwt {
        return Ok(FlowInputs::ServiceAccountJwt(ServiceAccountJwtInputs {
            ims_endpoint: flow.ims_endpoint.trim_end_matches('/').to_owned(),
            client: reader.client(&flow.client_secret_ref).await?,
            private_key_pem: SecretValue::new(
                reader.value(&flow.private_key_ref.name, &flow.private_key_ref.key).await?,
            ),
            private_key_location: format!(
                "in Secret {:?} key {:?}",
                flow.private_key_ref.name, flow.private_key_ref.key
            ),
            org_id: flow.org_id.clone(),
            technical_account_id: flow.technical_account_id.clone(),
            metascopes: flow.metascopes.clone(),
        }));
    }
    if let Some(flow) = &spec.password_grant {
        let user = &flow.user_secret_ref;
        return Ok(FlowInputs::PasswordGrant(PasswordGrantInputs {
            token_url: flow.token_url.clone(),
            client: reader.client(&flow.client_secret_ref).await?,
            username: clean(&reader.value(&user.name, &user.username_key).await?).0.to_owned(),
            password: SecretValue::new(reader.value(&user.name, &user.password_key).await?),
        }));
    }
    // The CRD's CEL rule makes this unreachable for objects the API server admitted.
    Err(Error::NoFlow)
}

/// Reads each referenced Secret once per reconcile, however many keys come from it.
struct SecretReader<'a> {
    api: &'a Api<Secret>,
    read: Vec<(String, Secret)>,
}

impl SecretReader<'_> {
    async fn value(&mut self, name: &str, key: &str) -> Result<String> {
        if !self.read.iter().any(|(n, _)| n == name) {
            let secret = read_secret(self.api, name).await?;
            self.read.push((name.to_owned(), secret));
        }
        let secret = self.read.iter().find(|(n, _)| n == name).map(|(_, s)| s);
        secret_string(secret.ok_or_else(|| Error::SourceSecretNotFound { name: name.to_owned() })?, name, key)
    }

    async fn client(&mut self, r: &ClientSecretRef) -> Result<OAuthClient> {
        let mut notes = Vec::new();
        let mut cleaned = |key: &str, value: String| {
            let (value, note) = clean(&value);
            if let Some(note) = note {
                notes.push(format!("{key} in Secret {:?} had {note}; it was ignored", r.name));
            }
            value.to_owned()
        };
        let client_id = cleaned(&r.client_id_key, self.value(&r.name, &r.client_id_key).await?);
        let primary = cleaned(&r.client_secret_key, self.value(&r.name, &r.client_secret_key).await?);
        let mut secrets = vec![(r.client_secret_key.clone(), SecretValue::new(primary))];
        if let Some(key) = &r.secondary_client_secret_key {
            // The second secret is optional by nature: it exists only during a rotation.
            match self.value(&r.name, key).await {
                Ok(value) => secrets.push((key.clone(), SecretValue::new(cleaned(key, value)))),
                Err(Error::SourceKeyMissing { .. } | Error::SourceValueInvalid { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(OAuthClient { client_id, secrets, notes })
    }
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
            client: OAuthClient {
                client_id: "abc".into(),
                secrets: vec![("client_secret".into(), SecretValue::new(secret))],
                notes: vec![],
            },
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
    fn cleaning_says_what_it_removed() {
        assert_eq!(clean("p8e-abc\n"), ("p8e-abc", Some("a trailing newline")));
        assert_eq!(clean("p8e-abc\r\n"), ("p8e-abc", Some("a trailing CR/LF line end")));
        assert_eq!(clean("\u{feff}p8e-abc"), ("p8e-abc", Some("a UTF-8 byte order mark")));
        assert_eq!(clean(" p8e-abc"), ("p8e-abc", Some("leading or trailing white space")));
        assert_eq!(clean("p8e-abc"), ("p8e-abc", None));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let printed = format!("{:?}", inputs("p8e-very-secret"));
        assert!(!printed.contains("p8e-very-secret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn missing_and_empty_keys_are_named() {
        let secret = Secret {
            data: Some([("client_id".to_string(), k8s_openapi::ByteString(b"  ".to_vec()))].into_iter().collect()),
            ..Default::default()
        };
        let missing = secret_string(&secret, "src", "client_secret").unwrap_err();
        assert_eq!(missing.reason(), "SourceKeyMissing");
        assert!(missing.to_string().contains("\"client_secret\""));
        let empty = secret_string(&secret, "src", "client_id").unwrap_err();
        assert_eq!(empty.reason(), "SourceValueInvalid");
    }
}
