//! Adobe IMS user authentication (OAuth Web App): `GET /ims/authorize/v1|v2` with automatic
//! consent, and the `authorization_code` (PKCE S256) and `refresh_token` grants of
//! `POST /ims/token/v1|v2|v3`.
//!
//! Refresh tokens rotate: each refresh returns a new one and the presented one dies on use, even
//! if the answer never reaches the client. They live [`DEFAULT_REFRESH_TOKEN_LIFETIME`] from
//! issue (the 14 days do not slide) and are only issued when `offline_access` was granted.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::EncodingKey;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    AdobeClients,
    access_token::{self, Grant},
    error_reply, internal_error,
};
use crate::{
    expiry::whole_seconds,
    pipeline::{Params, Reply},
    state::{Secret, ServerState},
};

/// The lifetime IMS gives refresh tokens.
pub(crate) const DEFAULT_REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 24 * 60 * 60);
/// How long an authorization code may wait for its exchange.
const CODE_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// RFC 7636 §4.1: a verifier has 43 to 128 characters.
const MIN_VERIFIER_LEN: usize = 43;
const MAX_VERIFIER_LEN: usize = 128;
/// The scope without which IMS issues no refresh token.
const OFFLINE_ACCESS: &str = "offline_access";
/// The user the automatic consent signs in, unless a test chooses another.
pub(crate) const DEFAULT_USER: &str = "test-user@AdobeID";

/// The OAuth Web App side of a credential: its redirect URI and refresh-token lifetime.
#[derive(Debug, Clone)]
pub(crate) struct WebApp {
    pub(crate) redirect_uri: String,
    pub(crate) refresh_token_lifetime: Duration,
}

#[derive(Debug)]
struct PendingCode {
    client_id: String,
    redirect_uri: String,
    user: String,
    scope: String,
    challenge: String,
    expires_at: SystemTime,
}

#[derive(Debug)]
struct RefreshGrant {
    client_id: String,
    user: String,
    scope: String,
    expires_at: SystemTime,
}

/// Codes waiting for their exchange, live refresh tokens and the signed-in user.
#[derive(Debug)]
pub(crate) struct UserSessions {
    codes: HashMap<Secret, PendingCode>,
    refresh_tokens: HashMap<Secret, RefreshGrant>,
    pub(crate) signed_in_user: String,
    /// How many refresh tokens each (client, user) was issued: the chain's length, for tests.
    issued_refresh_tokens: HashMap<(String, String), usize>,
}

impl Default for UserSessions {
    fn default() -> Self {
        Self {
            codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            signed_in_user: DEFAULT_USER.to_owned(),
            issued_refresh_tokens: HashMap::new(),
        }
    }
}

impl UserSessions {
    /// The user withdrew consent (account.adobe.com → Connected applications): every refresh
    /// token of theirs for this client dies. A new authorization consents again.
    pub(crate) fn revoke(&mut self, client_id: &str, user: &str) -> usize {
        let before = self.refresh_tokens.len();
        self.refresh_tokens.retain(|_, grant| !(grant.client_id == client_id && grant.user == user));
        self.codes.retain(|_, code| !(code.client_id == client_id && code.user == user));
        before - self.refresh_tokens.len()
    }

    /// Live refresh tokens of this client (at most one per authorization, as they rotate).
    pub(crate) fn live_refresh_tokens(&self, client_id: &str) -> usize {
        let now = SystemTime::now();
        self.refresh_tokens.values().filter(|grant| grant.client_id == client_id && grant.expires_at > now).count()
    }

    pub(crate) fn issued_refresh_tokens(&self, client_id: &str, user: &str) -> usize {
        self.issued_refresh_tokens.get(&(client_id.to_owned(), user.to_owned())).copied().unwrap_or(0)
    }
}

/// `GET /ims/authorize/v1|v2`: the consent screen, answered at once for the signed-in user.
pub(crate) async fn authorize(State(state): State<Arc<ServerState>>, RawQuery(query): RawQuery) -> Response {
    let params = Params::from_form(query.unwrap_or_default().as_bytes());
    let mut registry = state.registry();
    let registry = &mut *registry;
    authorize_with(&mut registry.adobe, &params, SystemTime::now())
}

fn authorize_with(clients: &mut AdobeClients, params: &Params, now: SystemTime) -> Response {
    // Before the redirect URI is known to be the client's, errors are shown, not redirected.
    let shown = |error: &str, description: &str| {
        (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": error, "error_description": description })))
            .into_response()
    };
    let Some(client_id) = params.get("client_id") else {
        return shown("invalid_request", "missing client_id parameter");
    };
    let Some(web_app) = clients.get(client_id).and_then(|client| client.web_app.clone()) else {
        return shown("invalid_client", "invalid client_id parameter");
    };
    let Some(redirect_uri) = params.get("redirect_uri") else {
        return shown("invalid_request", "missing redirect_uri parameter");
    };
    if !redirect_uri.starts_with("https://") || redirect_uri != web_app.redirect_uri {
        return shown("invalid_request", "redirect_uri does not match the registered redirect URI");
    }
    let state = params.get("state");
    let redirect = |pairs: &[(&str, &str)]| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        let separator = if redirect_uri.contains('?') { '&' } else { '?' };
        let location = format!("{redirect_uri}{separator}{}", query.finish());
        (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
    };
    let error = |error: &str, description: &str| redirect(&[("error", error), ("error_description", description)]);
    if params.get("response_type") != Some("code") {
        return error("unsupported_response_type", "response_type must be code");
    }
    let Some(challenge) = params.get("code_challenge") else {
        return error("invalid_request", "missing code_challenge parameter");
    };
    if params.get("code_challenge_method") != Some("S256") {
        return error("invalid_request", "code_challenge_method must be S256");
    }
    let requested = scopes(params.get("scope").unwrap_or_default());
    if requested.is_empty() {
        return error("invalid_scope", "invalid scope");
    }
    let client = clients.get(client_id);
    if let Some(allowed) = client.and_then(|client| client.allowed_scopes.as_ref())
        && let Some(refused) = requested.iter().find(|scope| !allowed.contains(**scope))
    {
        return error("invalid_scope", &format!("invalid scope ({refused})"));
    }
    let code = Secret::random();
    let pending = PendingCode {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        user: clients.users.signed_in_user.clone(),
        scope: requested.into_iter().collect::<Vec<_>>().join(","),
        challenge: challenge.to_owned(),
        expires_at: now + CODE_LIFETIME,
    };
    clients.users.codes.retain(|_, code| code.expires_at > now);
    clients.users.codes.insert(code.clone(), pending);
    redirect(&[("code", code.expose())])
}

/// IMS separates scopes with commas; spaces are accepted too.
fn scopes(scope: &str) -> BTreeSet<&str> {
    scope.split([',', ' ']).map(str::trim).filter(|scope| !scope.is_empty()).collect()
}

/// Client authentication by `client_secret_post` or `client_secret_basic`.
pub(crate) fn client_credentials(headers: &HeaderMap, params: &Params) -> Option<(String, String)> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok())
        && let Some((scheme, encoded)) = value.trim().split_once(' ')
        && scheme.eq_ignore_ascii_case("basic")
    {
        let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        return Some((id.to_owned(), secret.to_owned()));
    }
    Some((params.get("client_id")?.to_owned(), params.get("client_secret")?.to_owned()))
}

/// The `authorization_code` and `refresh_token` grants; `credentials` from
/// [`client_credentials`].
pub(crate) fn issue(
    clients: &mut AdobeClients,
    params: &Params,
    credentials: Option<(String, String)>,
    key: &EncodingKey,
) -> Reply {
    let bad_request = |error, description: &str| error_reply(StatusCode::BAD_REQUEST, error, description);
    let Some((client_id, secret)) = credentials else {
        return bad_request("invalid_request", "missing client_id or client_secret parameter");
    };
    let now = SystemTime::now();
    let Some(client) = clients.get(&client_id) else {
        return error_reply(StatusCode::UNAUTHORIZED, "invalid_client", "invalid client_id parameter");
    };
    let Some(secret_index) = client.accepted_secret(&secret, now) else {
        return error_reply(StatusCode::UNAUTHORIZED, "invalid_client", "invalid client_secret parameter");
    };
    let Some(web_app) = client.web_app.clone() else {
        return bad_request("unauthorized_client", "the client is not an OAuth Web App credential");
    };
    let lifetime = client.token_lifetime;
    let grant_type =
        if params.get("grant_type") == Some("refresh_token") { "refresh_token" } else { "authorization_code" };
    let users = &mut clients.users;
    let (user, scope) = match grant_type {
        "authorization_code" => {
            let Some(code) = params.get("code") else {
                return bad_request("invalid_request", "missing code parameter");
            };
            let Some(verifier) = params.get("code_verifier") else {
                return bad_request("invalid_request", "missing code_verifier parameter");
            };
            // A code is single-use: it dies on the first attempt, right or wrong.
            let Some(pending) = users.codes.remove(&Secret::new(code)) else {
                return bad_request("invalid_grant", "invalid authorization code");
            };
            if pending.client_id != client_id || pending.expires_at <= now {
                return bad_request("invalid_grant", "invalid authorization code");
            }
            if params.get("redirect_uri").is_some_and(|uri| uri != pending.redirect_uri) {
                return bad_request("invalid_grant", "redirect_uri does not match");
            }
            if !(MIN_VERIFIER_LEN..=MAX_VERIFIER_LEN).contains(&verifier.len())
                || URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != pending.challenge
            {
                return bad_request("invalid_grant", "code_verifier does not match the code_challenge");
            }
            (pending.user, pending.scope)
        }
        _ => {
            let Some(token) = params.get("refresh_token") else {
                return bad_request("invalid_request", "missing refresh_token parameter");
            };
            let token = Secret::new(token);
            // Another client's token is refused without being consumed; this client's dies on use.
            let grant = match users.refresh_tokens.get(&token) {
                Some(grant) if grant.client_id == client_id => users.refresh_tokens.remove(&token),
                _ => None,
            };
            match grant {
                Some(grant) if grant.expires_at > now => (grant.user, grant.scope),
                _ => return bad_request("invalid_grant", "invalid refresh token"),
            }
        }
    };
    let grant = Grant { client_id: &client_id, user_id: &user, scope: &scope, lifetime };
    let Ok(access_token) = access_token::mint(key, &grant) else {
        return internal_error();
    };
    let mut body = json!({
        "access_token": access_token.expose(),
        "token_type": "bearer",
        "expires_in": whole_seconds(lifetime),
    });
    if scopes(&scope).contains(OFFLINE_ACCESS) {
        let refresh_token = Secret::random();
        body["refresh_token"] = json!(refresh_token.expose());
        users.refresh_tokens.retain(|_, grant| grant.expires_at > now);
        users.refresh_tokens.insert(
            refresh_token,
            RefreshGrant {
                client_id: client_id.clone(),
                user: user.clone(),
                scope: scope.clone(),
                expires_at: now + web_app.refresh_token_lifetime,
            },
        );
        *users.issued_refresh_tokens.entry((client_id.clone(), user)).or_default() += 1;
    }
    if let Ok(client) = clients.get_mut(&client_id) {
        client.used(secret_index, grant_type, now);
    }
    Reply::issued(body, access_token).with_logged_scope(scope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AdobeClient;

    const REDIRECT: &str = "https://localhost:8443/callback";
    const VERIFIER: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ";

    fn challenge(verifier: &str) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
    }

    fn clients(refresh_lifetime: Duration) -> AdobeClients {
        let mut clients = AdobeClients::default();
        clients
            .register(
                AdobeClient::new("web", "secret").with_web_app(REDIRECT).with_refresh_token_lifetime(refresh_lifetime),
            )
            .expect("register");
        clients.register(AdobeClient::new("s2s", "secret")).expect("register");
        clients
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
        Params::from_form(query.finish().as_bytes())
    }

    fn location(response: &Response) -> String {
        assert_eq!(response.status(), StatusCode::FOUND);
        response.headers()[header::LOCATION].to_str().expect("ascii").to_owned()
    }

    fn query_value(location: &str, name: &str) -> Option<String> {
        let (_, query) = location.split_once('?')?;
        form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
    }

    fn authorize(clients: &mut AdobeClients, scope: &str) -> String {
        let challenge = challenge(VERIFIER);
        let response = authorize_with(
            clients,
            &params(&[
                ("client_id", "web"),
                ("redirect_uri", REDIRECT),
                ("scope", scope),
                ("response_type", "code"),
                ("state", "xyz"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ]),
            SystemTime::now(),
        );
        let location = location(&response);
        assert!(location.starts_with(REDIRECT));
        assert_eq!(query_value(&location, "state").as_deref(), Some("xyz"));
        query_value(&location, "code").expect("a code")
    }

    fn key() -> EncodingKey {
        EncodingKey::from_secret(b"k")
    }

    fn creds() -> Option<(String, String)> {
        Some(("web".into(), "secret".into()))
    }

    fn exchange(clients: &mut AdobeClients, code: &str, verifier: &str) -> Reply {
        let params = params(&[("grant_type", "authorization_code"), ("code", code), ("code_verifier", verifier)]);
        issue(clients, &params, creds(), &key())
    }

    fn refresh(clients: &mut AdobeClients, token: &str) -> Reply {
        issue(clients, &params(&[("grant_type", "refresh_token"), ("refresh_token", token)]), creds(), &key())
    }

    fn refresh_token(reply: &Reply) -> String {
        assert_eq!(reply.status(), StatusCode::OK, "{:?}", reply.body());
        reply.body()["refresh_token"].as_str().expect("a refresh token").to_owned()
    }

    fn error_of(reply: &Reply) -> (StatusCode, String) {
        (reply.status(), reply.body()["error"].as_str().unwrap_or_default().to_owned())
    }

    #[test]
    fn code_exchange_verifies_pkce_and_is_single_use() {
        let mut clients = clients(DEFAULT_REFRESH_TOKEN_LIFETIME);
        let code = authorize(&mut clients, "openid,offline_access");
        let wrong = "x".repeat(43);
        assert_eq!(error_of(&exchange(&mut clients, &code, &wrong)), (StatusCode::BAD_REQUEST, "invalid_grant".into()));
        // The failed attempt used the code up.
        assert_eq!(error_of(&exchange(&mut clients, &code, VERIFIER)).1, "invalid_grant");

        let code = authorize(&mut clients, "openid,offline_access");
        let reply = exchange(&mut clients, &code, VERIFIER);
        let _ = refresh_token(&reply);
        assert_eq!(reply.body()["expires_in"], 24 * 60 * 60);
        assert_eq!(error_of(&exchange(&mut clients, &code, VERIFIER)).1, "invalid_grant");
    }

    #[test]
    fn short_verifiers_are_refused_even_when_they_match() {
        let mut clients = clients(DEFAULT_REFRESH_TOKEN_LIFETIME);
        let short = "short-verifier";
        let challenge = challenge(short);
        let response = authorize_with(
            &mut clients,
            &params(&[
                ("client_id", "web"),
                ("redirect_uri", REDIRECT),
                ("scope", "openid,offline_access"),
                ("response_type", "code"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ]),
            SystemTime::now(),
        );
        let code = query_value(&location(&response), "code").expect("code");
        assert_eq!(error_of(&exchange(&mut clients, &code, short)).1, "invalid_grant");
    }

    #[test]
    fn authorize_refuses_http_redirects_plain_pkce_and_non_web_apps() {
        let mut clients = clients(DEFAULT_REFRESH_TOKEN_LIFETIME);
        let base = |client: &'static str, redirect: &'static str, method: &'static str| {
            params(&[
                ("client_id", client),
                ("redirect_uri", redirect),
                ("scope", "openid"),
                ("response_type", "code"),
                ("code_challenge", "abc"),
                ("code_challenge_method", method),
            ])
        };
        let now = SystemTime::now();
        let http = authorize_with(&mut clients, &base("web", "http://localhost:8443/callback", "S256"), now);
        assert_eq!(http.status(), StatusCode::BAD_REQUEST);
        let s2s = authorize_with(&mut clients, &base("s2s", REDIRECT, "S256"), now);
        assert_eq!(s2s.status(), StatusCode::BAD_REQUEST);
        let plain = authorize_with(&mut clients, &base("web", REDIRECT, "plain"), now);
        assert_eq!(query_value(&location(&plain), "error").as_deref(), Some("invalid_request"));
    }

    #[test]
    fn refresh_rotates_and_the_old_token_dies_on_use() {
        let mut clients = clients(DEFAULT_REFRESH_TOKEN_LIFETIME);
        let code = authorize(&mut clients, "openid,offline_access");
        let first = refresh_token(&exchange(&mut clients, &code, VERIFIER));
        let second = refresh_token(&refresh(&mut clients, &first));
        assert_ne!(first, second);
        assert_eq!(error_of(&refresh(&mut clients, &first)), (StatusCode::BAD_REQUEST, "invalid_grant".into()));
        let third = refresh_token(&refresh(&mut clients, &second));
        assert_eq!(clients.users.live_refresh_tokens("web"), 1);
        assert_eq!(clients.users.issued_refresh_tokens("web", DEFAULT_USER), 3);
        let _ = third;
    }

    #[test]
    fn no_refresh_token_without_offline_access() {
        let mut clients = clients(DEFAULT_REFRESH_TOKEN_LIFETIME);
        let code = authorize(&mut clients, "openid");
        let reply = exchange(&mut clients, &code, VERIFIER);
        assert_eq!(reply.status(), StatusCode::OK);
        assert!(reply.body().get("refresh_token").is_none());
    }

    #[test]
    fn expired_and_revoked_refresh_tokens_are_invalid_grants() {
        let mut clients = clients(Duration::ZERO);
        let code = authorize(&mut clients, "openid,offline_access");
        let expired = refresh_token(&exchange(&mut clients, &code, VERIFIER));
        assert_eq!(error_of(&refresh(&mut clients, &expired)).1, "invalid_grant");

        let mut clients = clients_with_default();
        let code = authorize(&mut clients, "openid,offline_access");
        let token = refresh_token(&exchange(&mut clients, &code, VERIFIER));
        assert_eq!(clients.users.revoke("web", DEFAULT_USER), 1);
        assert_eq!(error_of(&refresh(&mut clients, &token)).1, "invalid_grant");
    }

    fn clients_with_default() -> AdobeClients {
        clients(DEFAULT_REFRESH_TOKEN_LIFETIME)
    }

    #[test]
    fn client_authentication_by_basic_or_post() {
        let headers = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, axum::http::HeaderValue::from_static(value));
            headers
        };
        let post = params(&[("client_id", "a"), ("client_secret", "b")]);
        assert_eq!(client_credentials(&HeaderMap::new(), &post), Some(("a".into(), "b".into())));
        // base64("web:se:cret")
        assert_eq!(
            client_credentials(&headers("Basic d2ViOnNlOmNyZXQ="), &params(&[])),
            Some(("web".into(), "se:cret".into()))
        );
        assert_eq!(client_credentials(&HeaderMap::new(), &params(&[("client_id", "a")])), None);
        let wrong = issue(
            &mut clients_with_default(),
            &params(&[("grant_type", "refresh_token")]),
            Some(("web".into(), "nope".into())),
            &key(),
        );
        assert_eq!(error_of(&wrong), (StatusCode::UNAUTHORIZED, "invalid_client".into()));
    }
}
