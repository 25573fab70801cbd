//! `POST /ims/exchange/jwt` (and `/ims/exchange/v1/jwt`, each with or without a trailing slash):
//! the legacy service account flow, where the client proves itself with an RS256 JWT.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::Response,
};
use jsonwebtoken::{Algorithm, EncodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value, json};

use super::{
    AdobeClients, RegisteredServiceAccount,
    access_token::{self, Grant},
    error_reply, internal_error,
};
use crate::{
    expiry::whole_millis,
    log::EndpointKind,
    pipeline::{self, Params, Reply, TokenRequest},
    state::ServerState,
};

pub(crate) async fn token(
    State(state): State<Arc<ServerState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::from_form_request(&headers, &body);
    let request = TokenRequest {
        endpoint: EndpointKind::JwtExchange,
        path: uri.path().to_owned(),
        client_id: Params::owned(params.as_ref(), "client_id"),
        grant_type: None,
        scope: None,
    };
    pipeline::handle(&state, request, |registry, key| {
        exchange(&mut registry.adobe, &registry.issuer_base_url, params.as_ref(), key)
    })
    .await
}

fn bad_request(error: &str, description: impl Into<String>) -> Reply {
    error_reply(StatusCode::BAD_REQUEST, error, description)
}

fn exchange(clients: &mut AdobeClients, issuer_base_url: &str, params: Option<&Params>, key: &EncodingKey) -> Reply {
    let Some(params) = params else {
        return bad_request("invalid_request", "Content-Type must be application/x-www-form-urlencoded");
    };
    let Some(client_id) = params.get("client_id") else {
        return bad_request("invalid_request", "missing client_id parameter");
    };
    // IMS answers an unknown client of this flow with 401 (and a wrong secret with 400), so
    // clients must treat both statuses as a credential problem.
    let Some(client) = clients.get(client_id) else {
        return error_reply(StatusCode::UNAUTHORIZED, "invalid_client", "invalid client_id parameter");
    };
    let now = SystemTime::now();
    let secret_uuid = params.get("client_secret").and_then(|secret| client.secret_uuid(secret));
    let Some(secret_index) = params.get("client_secret").and_then(|secret| client.accepted_secret(secret, now)) else {
        return bad_request("invalid_client", "invalid client_secret parameter").with_secret_uuid(secret_uuid);
    };
    let Some(account) = &client.service_account else {
        return bad_request("invalid_client", "client is not a service account (JWT) credential");
    };
    let Some(jwt) = params.get("jwt_token") else {
        return bad_request("invalid_token", "missing jwt_token parameter");
    };
    let claims = match verify(jwt, account, client_id, issuer_base_url) {
        Ok(claims) => claims,
        Err(refusal) => return refusal,
    };
    let metascopes = match granted_metascopes(&claims, account, issuer_base_url) {
        Ok(metascopes) => metascopes,
        Err(refusal) => return refusal,
    };

    let scope = metascopes.join(",");
    let grant =
        Grant { client_id, user_id: &account.technical_account_id, scope: &scope, lifetime: client.token_lifetime };
    let Ok(token) = access_token::mint(key, &grant) else {
        return internal_error();
    };
    // Milliseconds, unlike the client credentials endpoint.
    let body = json!({
        "access_token": token.expose(),
        "token_type": "bearer",
        "expires_in": whole_millis(client.token_lifetime),
    });
    if let Ok(client) = clients.get_mut(client_id) {
        client.used(secret_index, "urn:ietf:params:oauth:grant-type:jwt-bearer", now);
    }
    Reply::issued(body, token).with_logged_scope(scope).with_secret_uuid(secret_uuid)
}

/// Checks the signature and the standard claims, returning all claims.
fn verify(
    jwt: &str,
    account: &RegisteredServiceAccount,
    client_id: &str,
    issuer_base_url: &str,
) -> Result<Map<String, Value>, Reply> {
    let header =
        jsonwebtoken::decode_header(jwt).map_err(|_| bad_request("invalid_token", "could not decode the JWT"))?;
    if header.alg != Algorithm::RS256 {
        return Err(bad_request("invalid_signature", "the JWT must be signed with RS256"));
    }
    // Only the signature is checked here; the claims are checked below so that each failure
    // gets the error code IMS uses for it.
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Map<String, Value>>(jwt, &account.key.0, &validation)
        .map_err(|err| match err.kind() {
            ErrorKind::InvalidSignature => {
                bad_request("invalid_signature", "Could not match JWT signature to any of the bindings")
            }
            _ => bad_request("invalid_token", "could not decode the JWT"),
        })?
        .claims;

    let expires_at = match claims.get("exp") {
        None => return Err(bad_request("invalid_token", "the JWT has no exp claim")),
        Some(exp) => exp.as_f64().ok_or_else(|| bad_request("bad_request", "exp must be a number of seconds"))?,
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    if expires_at <= now {
        return Err(bad_request("invalid_token", "the JWT has expired"));
    }
    if claims.get("iss").and_then(Value::as_str) != Some(account.org_id.as_str()) {
        return Err(bad_request("bad_request", "iss must be the organization ID of the credential"));
    }
    if claims.get("sub").and_then(Value::as_str) != Some(account.technical_account_id.as_str()) {
        return Err(bad_request("bad_request", "sub must be the technical account ID of the credential"));
    }
    let audience = format!("{issuer_base_url}/c/{client_id}");
    let audience_matches = match claims.get("aud") {
        Some(Value::String(aud)) => *aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(&audience)),
        _ => false,
    };
    if !audience_matches {
        return Err(bad_request("invalid_token", format!("aud must be {audience}")));
    }
    Ok(claims)
}

/// The metascopes the JWT claims (`"{ims}/s/{name}": true`), which must all be bound to the
/// credential. A metascope claim for another IMS host is refused, as the real IMS does.
fn granted_metascopes(
    claims: &Map<String, Value>,
    account: &RegisteredServiceAccount,
    issuer_base_url: &str,
) -> Result<Vec<String>, Reply> {
    let prefix = format!("{issuer_base_url}/s/");
    let mut requested = BTreeSet::new();
    for (name, value) in claims {
        if let Some(metascope) = name.strip_prefix(&prefix) {
            if *value == Value::Bool(true) {
                requested.insert(metascope);
            }
        } else if name.starts_with("http") && name.contains("/s/") {
            return Err(bad_request(
                "invalid_scope",
                format!("metascope claim {name} does not belong to {issuer_base_url}"),
            ));
        }
    }
    if requested.is_empty() {
        return Err(bad_request("invalid_scope", "the JWT claims no metascope"));
    }
    if let Some(unbound) = requested.iter().find(|metascope| !account.metascopes.contains(**metascope)) {
        return Err(bad_request("invalid_scope", format!("metascope {unbound} is not bound to this credential")));
    }
    Ok(requested.into_iter().map(str::to_owned).collect())
}
