//! Akeneo PIM: `POST /api/oauth/v1/token` with the password and refresh_token grants.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::Response,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::json;

use crate::{
    expiry::whole_seconds,
    log::EndpointKind,
    pipeline::{self, FORM_MEDIA_TYPE, Params, Reply, TokenRequest},
    state::{Secret, ServerState},
};

const DEFAULT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);
const DEFAULT_REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 24 * 60 * 60);

const INVALID_CLIENT: &str = r#"Parameter "client_id" is missing or does not match any client, or secret is invalid"#;
const INVALID_USER: &str = "No user found for the given username and password";
const INVALID_REFRESH_TOKEN: &str = "Refresh token is invalid or has expired";

#[derive(Debug)]
struct RefreshGrant {
    client_id: String,
    username: String,
    expires_at: Instant,
}

/// Akeneo's API connections (clients), users and live refresh tokens.
#[derive(Debug)]
pub(crate) struct AkeneoAccounts {
    clients: HashMap<String, Secret>,
    users: HashMap<String, Secret>,
    refresh_tokens: HashMap<Secret, RefreshGrant>,
    pub(crate) access_token_lifetime: Duration,
    pub(crate) refresh_token_lifetime: Duration,
}

impl Default for AkeneoAccounts {
    fn default() -> Self {
        Self {
            clients: HashMap::new(),
            users: HashMap::new(),
            refresh_tokens: HashMap::new(),
            access_token_lifetime: DEFAULT_ACCESS_TOKEN_LIFETIME,
            refresh_token_lifetime: DEFAULT_REFRESH_TOKEN_LIFETIME,
        }
    }
}

/// Client credentials from the `Authorization: Basic` header, the only way Akeneo accepts them.
struct BasicCredentials {
    client_id: String,
    secret: Secret,
}

/// Why a body could not be read.
enum BodyError {
    UnsupportedMediaType(Option<String>),
    InvalidJson,
}

impl AkeneoAccounts {
    /// Adds the client or replaces its secret.
    pub(crate) fn register_client(&mut self, client_id: String, secret: String) {
        self.clients.insert(client_id, Secret::new(secret));
    }

    /// Adds the user or replaces their password.
    pub(crate) fn register_user(&mut self, username: String, password: String) {
        self.users.insert(username, Secret::new(password));
    }

    pub(crate) fn revoke_refresh_tokens(&mut self) {
        self.refresh_tokens.clear();
    }

    fn issue(&mut self, credentials: Option<&BasicCredentials>, body: Result<&Params, &BodyError>) -> Reply {
        let params = match body {
            Ok(params) => params,
            Err(BodyError::UnsupportedMediaType(None)) => {
                return error_reply(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    r#"The "Content-Type" header is missing. "application/json" has to be specified as value."#,
                );
            }
            Err(BodyError::UnsupportedMediaType(Some(media_type))) => {
                return error_reply(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    &format!(
                        r#""{media_type}" in "Content-Type" header is not valid. Only "application/json" or "application/x-www-form-urlencoded" are allowed."#
                    ),
                );
            }
            Err(BodyError::InvalidJson) => {
                return error_reply(StatusCode::BAD_REQUEST, "invalid_json", "Invalid json message received");
            }
        };
        let Some(client_id) = credentials
            .filter(|credentials| {
                self.clients.get(&credentials.client_id).is_some_and(|secret| *secret == credentials.secret)
            })
            .map(|credentials| credentials.client_id.as_str())
        else {
            return unprocessable("invalid_client", INVALID_CLIENT);
        };

        match params.get("grant_type") {
            Some("password") => {
                let (Some(username), Some(password)) = (params.get("username"), params.get("password")) else {
                    return unprocessable(
                        "invalid_request",
                        r#"Missing parameters. "username" and "password" required"#,
                    );
                };
                let known = self.users.get(username).is_some_and(|known| known.expose() == password);
                if !known {
                    return unprocessable("invalid_grant", INVALID_USER);
                }
                self.issue_pair(client_id, username)
            }
            Some("refresh_token") => {
                let Some(token) = params.get("refresh_token") else {
                    return unprocessable("invalid_request", r#"No "refresh_token" parameter found"#);
                };
                let token = Secret::new(token);
                // Another client's token is refused without being consumed; this client's dies
                // on use, even if it turns out to have expired.
                let grant = match self.refresh_tokens.get(&token) {
                    Some(grant) if grant.client_id == client_id => self.refresh_tokens.remove(&token),
                    _ => None,
                };
                match grant {
                    Some(grant) if grant.expires_at > Instant::now() => self.issue_pair(client_id, &grant.username),
                    _ => unprocessable("invalid_grant", INVALID_REFRESH_TOKEN),
                }
            }
            _ => unprocessable("unsupported_grant_type", "Invalid grant_type parameter or parameter missing"),
        }
    }

    fn issue_pair(&mut self, client_id: &str, username: &str) -> Reply {
        let now = Instant::now();
        self.refresh_tokens.retain(|_, grant| grant.expires_at > now);
        let access_token = Secret::random();
        let refresh_token = Secret::random();
        let body = json!({
            "access_token": access_token.expose(),
            "expires_in": whole_seconds(self.access_token_lifetime),
            "token_type": "bearer",
            "scope": null,
            "refresh_token": refresh_token.expose(),
        });
        self.refresh_tokens.insert(
            refresh_token,
            RefreshGrant {
                client_id: client_id.to_owned(),
                username: username.to_owned(),
                expires_at: now + self.refresh_token_lifetime,
            },
        );
        Reply::issued(body, access_token)
    }
}

pub(crate) async fn token(
    State(state): State<Arc<ServerState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let credentials = basic_credentials(&headers);
    let params = read_body(&headers, &body);
    let grant_type = params.as_ref().ok().and_then(|params| params.get("grant_type")).map(str::to_owned);
    let endpoint = if grant_type.as_deref() == Some("refresh_token") {
        EndpointKind::AkeneoRefresh
    } else {
        EndpointKind::AkeneoPassword
    };
    let request = TokenRequest {
        endpoint,
        path: uri.path().to_owned(),
        client_id: credentials.as_ref().map(|credentials| credentials.client_id.clone()),
        grant_type,
        scope: None,
    };
    pipeline::handle(&state, request, |registry, _| registry.akeneo.issue(credentials.as_ref(), params.as_ref())).await
}

fn basic_credentials(headers: &HeaderMap) -> Option<BasicCredentials> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (client_id, secret) = decoded.split_once(':')?;
    Some(BasicCredentials { client_id: client_id.to_owned(), secret: Secret::new(secret) })
}

fn read_body(headers: &HeaderMap, body: &[u8]) -> Result<Params, BodyError> {
    match pipeline::media_type(headers).as_deref() {
        Some("application/json") => Params::from_json(body).ok_or(BodyError::InvalidJson),
        Some(FORM_MEDIA_TYPE) => Ok(Params::from_form(body)),
        other => Err(BodyError::UnsupportedMediaType(other.map(str::to_owned))),
    }
}

/// Akeneo's error shape, `{"code","message"}`; `error_code` is only for the request log.
fn error_reply(status: StatusCode, error_code: &str, message: &str) -> Reply {
    Reply::rejected(status, error_code, json!({ "code": status.as_u16(), "message": message }))
}

/// Akeneo refuses every OAuth failure with 422.
fn unprocessable(error_code: &str, message: &str) -> Reply {
    error_reply(StatusCode::UNPROCESSABLE_ENTITY, error_code, message)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn basic(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        // base64("id:se:cret")
        let credentials = basic_credentials(&basic("Basic aWQ6c2U6Y3JldA==")).expect("valid");
        assert_eq!(credentials.client_id, "id");
        assert_eq!(credentials.secret.expose(), "se:cret");
        assert!(basic_credentials(&basic("Bearer aWQ6c2U6Y3JldA==")).is_none());
        assert!(basic_credentials(&basic("Basic !!!")).is_none());
        assert!(basic_credentials(&HeaderMap::new()).is_none());
    }
}
