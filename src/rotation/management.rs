//! The client-secret calls of Adobe's I/O Management API (`protocols.md` §3): list, add, delete,
//! with `Authorization: Bearer` and `x-api-key`. Same HTTP client as token requests (https only,
//! allowlisted host, no redirects, bounded time), bodies read up to 64 KiB, every refusal turned
//! into a reason a person can act on.

use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use super::persisted::valid_uuid;
use super::plan::Listed;
use super::settings::Settings;
use crate::error::{Error, Result};
use crate::secret_value::SecretValue;
use crate::token::TokenClient;
use crate::token::response::{MAX_BODY_BYTES, parse_retry_after, transport_detail, truncate};

/// Scopes of the token the I/O Management API wants (Adobe's documented set).
pub const SCOPES: [&str; 8] = [
    "AdobeID",
    "openid",
    "read_organizations",
    "additional_info.projectedProductContext",
    "additional_info.roles",
    "adobeio_api",
    "read_client_secret",
    "manage_client_secrets",
];

/// Adobe allows two secrets; a list longer than this is not an answer to trust.
const MAX_LISTED: usize = 16;
/// Longest client secret value accepted from an add (Adobe's are 36 characters).
const MAX_SECRET_BYTES: usize = 1024;

/// Proof that a list of this credential named the credential's own client ID. Only
/// [`Listing::checked`] makes one, and [`add`] and [`delete`] need it: nothing is added to or
/// deleted from a credential whose list was not checked first (a wrong `credentialId` may name
/// another project's credential that the management token can reach).
///
/// [`add`]: ManagementApi::add
/// [`delete`]: ManagementApi::delete
#[derive(Debug)]
pub struct Checked(());

/// A list of a credential's secrets, as the API answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    /// The client ID the list names: whose secrets these are.
    pub client_id: String,
    pub secrets: Vec<Listed>,
}

impl Listing {
    /// The secrets, refused unless the list is of the credential whose client ID the source
    /// Secret holds (`client_id`). Client IDs are compared without regard to case (IMS does not
    /// mind it); a different credential has a different ID altogether.
    pub fn checked(self, settings: &Settings, client_id: &str) -> Result<(Vec<Listed>, Checked)> {
        if self.client_id.eq_ignore_ascii_case(client_id.trim()) {
            return Ok((self.secrets, Checked(())));
        }
        Err(Error::CredentialMismatch {
            org_id: settings.org_id.clone(),
            credential_id: settings.credential_id.clone(),
            client_id: client_id.to_owned(),
            listed_client_id: self.client_id,
        })
    }
}

/// A secret the add created: shown this once.
#[derive(Debug)]
pub struct Added {
    pub uuid: String,
    pub created_at: Timestamp,
    pub secret: SecretValue,
}

/// The client-secret endpoints of one credential.
pub struct ManagementApi<'a> {
    http: &'a reqwest::Client,
    secrets_url: Url,
    client_id: &'a str,
    token: &'a SecretValue,
    settings: &'a Settings,
}

impl<'a> ManagementApi<'a> {
    /// Refuses a management endpoint that is not https to an allowed host.
    pub fn new(
        tokens: &'a TokenClient,
        settings: &'a Settings,
        client_id: &'a str,
        token: &'a SecretValue,
    ) -> Result<Self> {
        let path = format!("/console/organizations/{}/credentials/{}/secrets", settings.org_id, settings.credential_id);
        let secrets_url = tokens.checked_url(&settings.endpoint, &path)?;
        Ok(Self { http: tokens.http(), secrets_url, client_id, token, settings })
    }

    /// The credential's secrets (never their values), and whose they are.
    pub async fn list(&self) -> Result<Listing> {
        let body = self.send(Method::GET, self.secrets_url.clone()).await?.ok_or_else(not_found(self.settings))?;
        parse_list(&body)
    }

    /// Adds a secret; the answer is the only time its value is shown.
    pub async fn add(&self, _checked: &Checked) -> Result<Added> {
        let body = self.send(Method::POST, self.secrets_url.clone()).await?.ok_or_else(not_found(self.settings))?;
        parse_added(&body)
    }

    /// Deletes a secret by uuid; `false` when it was not there (already deleted).
    pub async fn delete(&self, uuid: &str, _checked: &Checked) -> Result<bool> {
        if !valid_uuid(uuid) {
            return Err(malformed("a secret uuid is not usable in a URL"));
        }
        let mut url = self.secrets_url.clone();
        url.path_segments_mut().map_err(|_| malformed("the endpoint cannot carry a path"))?.push(uuid);
        Ok(self.send(Method::DELETE, url).await?.is_some())
    }

    /// One request: the body of a 2xx answer, `None` for a 404, or the error the answer means.
    async fn send(&self, method: Method, url: Url) -> Result<Option<String>> {
        let response = self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose())
            .header("x-api-key", self.client_id)
            .send()
            .await
            .map_err(|e| Error::ManagementApiUnavailable { detail: transport_detail(&e), retry_after: None })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_capped(response).await?;
        if status.is_success() {
            return Ok(Some(body));
        }
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Err(classify(status, &headers, &body))
    }
}

fn not_found(settings: &Settings) -> impl FnOnce() -> Error + '_ {
    || Error::ManagementCredentialNotFound {
        org_id: settings.org_id.clone(),
        credential_id: settings.credential_id.clone(),
    }
}

fn malformed(detail: &str) -> Error {
    Error::MalformedManagementResponse { detail: detail.to_owned() }
}

async fn read_capped(mut response: reqwest::Response) -> Result<String> {
    let too_large = || malformed(&format!("the response body is larger than {} KiB", MAX_BODY_BYTES / 1024));
    if response.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Error::ManagementApiUnavailable { detail: transport_detail(&e), retry_after: None })?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    message: Option<String>,
    error_description: Option<String>,
    error: Option<String>,
}

/// A refusal other than 404, by status; the server's own words (cut short) go with it.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Error {
    let parsed: ErrorBody = serde_json::from_str(body).unwrap_or_default();
    let description = truncate(
        parsed
            .message
            .or(parsed.error_description)
            .or(parsed.error)
            .as_deref()
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("no description")),
    );
    let retry_after =
        headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, Timestamp::now()));
    match status.as_u16() {
        401 => Error::ManagementUnauthorized { description },
        403 => Error::ManagementApiNotInProject { description },
        429 => Error::ManagementApiThrottled { status: 429, retry_after },
        503 if retry_after.is_some() => Error::ManagementApiThrottled { status: 503, retry_after },
        code @ 500..=599 => {
            Error::ManagementApiUnavailable { detail: format!("HTTP {code}: {description}"), retry_after }
        }
        code => Error::ManagementRequestRejected { status: code, description },
    }
}

#[derive(Deserialize)]
struct ListBody {
    #[serde(default)]
    client_id: Option<String>,
    client_secrets: Vec<ListedBody>,
}

#[derive(Deserialize)]
struct ListedBody {
    uuid: String,
    created_at: serde_json::Value,
    #[serde(default)]
    secret_usages: Option<Vec<UsageBody>>,
}

#[derive(Deserialize)]
struct UsageBody {
    #[serde(default)]
    last_used_at: serde_json::Value,
}

/// Longest client ID taken from a list (Adobe's are 32 characters); it may go into a message.
const MAX_CLIENT_ID_BYTES: usize = 128;

/// The list's `client_id` and its secrets.
fn parse_list(body: &str) -> Result<Listing> {
    let parsed: ListBody =
        serde_json::from_str(body).map_err(|_| malformed("the secret list is not the documented JSON"))?;
    if parsed.client_secrets.len() > MAX_LISTED {
        return Err(malformed("the secret list is implausibly long"));
    }
    // Without it nobody can tell whose secrets these are, so nothing may be changed on them.
    let client_id = parsed
        .client_id
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty() && id.len() <= MAX_CLIENT_ID_BYTES && !id.chars().any(char::is_control))
        .ok_or_else(|| malformed("the secret list names no usable client_id"))?;
    let listed = parsed
        .client_secrets
        .into_iter()
        .map(|secret| {
            if !valid_uuid(&secret.uuid) {
                return Err(malformed("a listed secret has an unusable uuid"));
            }
            let created_at =
                millis(&secret.created_at).ok_or_else(|| malformed("a listed secret has no created_at"))?;
            let last_used_at =
                secret.secret_usages.iter().flatten().filter_map(|usage| millis(&usage.last_used_at)).max();
            Ok(Listed { uuid: secret.uuid, created_at, last_used_at })
        })
        .collect::<Result<_>>()?;
    Ok(Listing { client_id, secrets: listed })
}

#[derive(Deserialize)]
struct AddedBody {
    client_secret: String,
    uuid: String,
    #[serde(default)]
    created_at: serde_json::Value,
}

fn parse_added(body: &str) -> Result<Added> {
    let parsed: AddedBody =
        serde_json::from_str(body).map_err(|_| malformed("the added secret is not the documented JSON"))?;
    if !valid_uuid(&parsed.uuid) {
        return Err(malformed("the added secret has an unusable uuid"));
    }
    let secret = parsed.client_secret.trim();
    if secret.is_empty() || secret.len() > MAX_SECRET_BYTES || secret.chars().any(char::is_control) {
        return Err(malformed("the added secret's value is empty, too long or not text"));
    }
    Ok(Added {
        created_at: millis(&parsed.created_at).unwrap_or_else(Timestamp::now),
        uuid: parsed.uuid,
        secret: SecretValue::new(secret),
    })
}

/// Milliseconds since the epoch (a number or a numeric string), if plausible.
fn millis(value: &serde_json::Value) -> Option<Timestamp> {
    let ms = match value {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }?;
    Timestamp::from_millisecond(ms).ok()
}

/// How long a management call may make the rotation wait at most (a hostile `Retry-After`).
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn lists_are_read_with_their_units() {
        let body = r#"{"client_id":"c","client_secrets":[
            {"uuid":"aa11","created_at":1700000000000,"created_at_str":"x","expires_at":"PERMANENT","secret_usages":null},
            {"uuid":"bb22","created_at":"1700000001000","secret_usages":[{"last_used_at":1700000005000,"grant_type":"client_credentials"},{"last_used_at":1700000009000}]}]}"#;
        let Listing { client_id, secrets: listed } = parse_list(body).expect("parses");
        assert_eq!(client_id, "c");
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].created_at, Timestamp::from_second(1_700_000_000).expect("ts"));
        assert_eq!(listed[0].last_used_at, None);
        assert_eq!(listed[1].last_used_at, Some(Timestamp::from_second(1_700_000_009).expect("ts")), "latest use");
    }

    #[test]
    fn hostile_lists_are_refused() {
        for body in [
            "not json",
            r#"{"client_secrets":[]}"#,
            r#"{"client_id":" ","client_secrets":[]}"#,
            r#"{"client_id":"c","client_secrets":[{"uuid":"../x","created_at":1}]}"#,
            r#"{"client_id":"c","client_secrets":[{"uuid":"a","created_at":"soon"}]}"#,
            r#"{"client_id":"c","client_secrets":[{"uuid":"a","created_at":99999999999999999}]}"#,
        ] {
            assert_eq!(parse_list(body).unwrap_err().reason(), "MalformedManagementResponse", "{body}");
        }
        let many: Vec<String> = (0..17).map(|i| format!(r#"{{"uuid":"u{i}","created_at":1}}"#)).collect();
        let body = format!(r#"{{"client_id":"c","client_secrets":[{}]}}"#, many.join(","));
        assert!(parse_list(&body).is_err());
    }

    #[test]
    fn a_list_of_another_clients_credential_is_refused() {
        let settings = Settings {
            org_id: "4242".into(),
            credential_id: "777".into(),
            every: None,
            grace: jiff::SignedDuration::ZERO,
            endpoint: "https://api.adobe.io".into(),
            delete_other_secret: false,
        };
        let listing = |client_id: &str| Listing { client_id: client_id.into(), secrets: vec![] };
        assert!(listing("abc123").checked(&settings, "abc123").is_ok());
        assert!(listing("abc123").checked(&settings, "ABC123").is_ok(), "IMS ignores the case");
        let err = listing("def456").checked(&settings, "abc123").unwrap_err();
        assert_eq!(err.reason(), "CredentialMismatch");
        assert_eq!(err.retry(), crate::error::Retry::Permanent);
        let message = err.to_string();
        for part in
            ["credential 777 in organization 4242", "def456", "abc123", "credentialId", "nothing was added or deleted"]
        {
            assert!(message.contains(part), "{part}: {message}");
        }
    }

    #[test]
    fn an_added_secret_is_kept_redacted_and_errors_never_echo_it() {
        let added =
            parse_added(r#"{"client_secret":"p8e-new-value","uuid":"cc33","created_at":1700000000000}"#).expect("ok");
        assert_eq!(added.uuid, "cc33");
        assert_eq!(added.secret.expose(), "p8e-new-value");
        assert!(!format!("{added:?}").contains("p8e-new-value"));
        let err = parse_added(r#"{"client_secret":"p8e-new-value","uuid":"x/y"}"#).unwrap_err();
        assert!(!err.to_string().contains("p8e-new-value"));
        assert!(parse_added(r#"{"client_secret":"","uuid":"a"}"#).is_err());
        let err = parse_added(r#"{"client_secret":12345678,"uuid":"a"}"#).unwrap_err();
        assert!(!err.to_string().contains("12345678"));
    }

    #[test]
    fn refusals_get_reasons_a_person_can_act_on() {
        let headers = HeaderMap::new();
        let body = r#"{"error_code":"403003","message":"Api Key is not subscribed to this API"}"#;
        let err = classify(StatusCode::FORBIDDEN, &headers, body);
        assert_eq!(err.reason(), "ManagementApiNotInProject");
        assert!(err.to_string().contains("add the I/O Management API") && err.to_string().contains("subscribed"));
        assert_eq!(classify(StatusCode::UNAUTHORIZED, &headers, "").reason(), "ManagementUnauthorized");
        assert_eq!(classify(StatusCode::BAD_REQUEST, &headers, "{}").reason(), "ManagementRequestRejected");
        assert_eq!(classify(StatusCode::BAD_GATEWAY, &headers, "<html>").reason(), "ManagementApiUnavailable");
        let mut throttled = HeaderMap::new();
        throttled.insert(RETRY_AFTER, HeaderValue::from_static("9"));
        let err = classify(StatusCode::TOO_MANY_REQUESTS, &throttled, "");
        assert_eq!((err.reason(), err.retry_after()), ("ManagementApiThrottled", Some(Duration::from_secs(9))));
        assert_eq!(err.retry(), crate::error::Retry::Transient);
        let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(5000));
        assert!(classify(StatusCode::BAD_REQUEST, &headers, &long).to_string().len() < 400, "server text is cut");
    }
}
