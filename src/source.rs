//! Reading the inputs of a mint from the Secrets a resource references: each Secret read once,
//! values checked and cleaned of what editors and shells add around them.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::crd::{AdobeCredential, ClientSecretRef};
use crate::error::{Error, Result};
use crate::secret_value::SecretValue;

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

/// The resource whose inputs are read, for messages that say what to run about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialName {
    pub namespace: String,
    pub name: String,
}

impl CredentialName {
    pub fn of(cred: &AdobeCredential) -> Self {
        use kube::ResourceExt;
        Self { namespace: cred.namespace().unwrap_or_default(), name: cred.name_any() }
    }
}

/// Reads each referenced Secret once per reconcile, however many keys come from it.
pub struct SecretReader<'a> {
    /// Where Secrets not given up front are read from (none: they are missing).
    api: Option<&'a Api<Secret>>,
    read: Vec<(String, Secret)>,
    credential: CredentialName,
}

impl<'a> SecretReader<'a> {
    pub fn new(api: &'a Api<Secret>, credential: CredentialName) -> Self {
        Self { api: Some(api), read: Vec::new(), credential }
    }

    /// A reader of the `given` Secrets (as written, `stringData` folded into `data`), and of the
    /// API's for the others when there is one.
    pub fn with(given: Vec<Secret>, api: Option<&'a Api<Secret>>, credential: CredentialName) -> Self {
        let read =
            given.into_iter().map(|s| (s.metadata.name.clone().unwrap_or_default(), fold_string_data(s))).collect();
        Self { api, read, credential }
    }

    /// The resource whose inputs these are.
    pub fn credential(&self) -> &CredentialName {
        &self.credential
    }

    /// A key of a Secret as text (not cleaned: white space may be part of a password).
    pub async fn value(&mut self, name: &str, key: &str) -> Result<String> {
        if !self.read.iter().any(|(n, _)| n == name) {
            let api = self.api.ok_or_else(|| Error::SourceSecretNotFound { name: name.to_owned() })?;
            let secret = read_secret(api, name).await?;
            self.read.push((name.to_owned(), secret));
        }
        let secret = self.read.iter().find(|(n, _)| n == name).map(|(_, s)| s);
        secret_string(secret.ok_or_else(|| Error::SourceSecretNotFound { name: name.to_owned() })?, name, key)
    }

    /// An OAuth client from the keys `r` names, cleaned of white space editors add.
    pub async fn client(&mut self, r: &ClientSecretRef) -> Result<OAuthClient> {
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

/// `stringData` moved into `data`, as the API server does on write.
fn fold_string_data(mut secret: Secret) -> Secret {
    if let Some(strings) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        data.extend(strings.into_iter().map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes()))));
    }
    secret
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

    #[test]
    fn cleaning_says_what_it_removed() {
        assert_eq!(clean("p8e-abc\n"), ("p8e-abc", Some("a trailing newline")));
        assert_eq!(clean("p8e-abc\r\n"), ("p8e-abc", Some("a trailing CR/LF line end")));
        assert_eq!(clean("\u{feff}p8e-abc"), ("p8e-abc", Some("a UTF-8 byte order mark")));
        assert_eq!(clean(" p8e-abc"), ("p8e-abc", Some("leading or trailing white space")));
        assert_eq!(clean("p8e-abc"), ("p8e-abc", None));
    }

    #[tokio::test]
    async fn given_secrets_are_read_as_the_api_server_would_store_them() {
        let given: Secret = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "src" },
            "data": { "client_id": "YWJj" },
            "stringData": { "client_secret": "p8e-s\n" },
        }))
        .expect("secret");
        let name = CredentialName { namespace: "team-a".into(), name: "c".into() };
        let mut reader = SecretReader::with(vec![given], None, name);
        assert_eq!(reader.value("src", "client_id").await.expect("data"), "abc");
        assert_eq!(reader.value("src", "client_secret").await.expect("stringData"), "p8e-s\n");
        let missing = reader.value("other", "client_id").await.unwrap_err();
        assert_eq!(missing.reason(), "SourceSecretNotFound", "without an API, a Secret not given is missing");
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
