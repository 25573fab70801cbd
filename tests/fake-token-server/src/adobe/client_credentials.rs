//! `POST /ims/token/v2|v3|v4`: OAuth Server-to-Server.

use std::{collections::BTreeSet, sync::Arc, time::SystemTime};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::Response,
};
use jsonwebtoken::EncodingKey;
use serde_json::json;

use super::{
    AdobeClients,
    access_token::{self, Grant},
    error_reply, internal_error, user_auth,
};
use crate::{
    expiry::whole_seconds,
    log::EndpointKind,
    pipeline::{self, Params, Reply, TokenRequest},
    state::Bearer,
    state::ServerState,
};

pub(crate) async fn token(
    State(state): State<Arc<ServerState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::from_form_request(&headers, &body);
    let param = |name| Params::owned(params.as_ref(), name);
    // The same endpoint serves user authentication (OAuth Web App), told apart by grant type.
    let user_grant = match param("grant_type").as_deref() {
        Some("authorization_code") => Some(EndpointKind::AuthorizationCode),
        Some("refresh_token") => Some(EndpointKind::UserRefresh),
        _ => None,
    };
    if let (Some(endpoint), Some(params)) = (user_grant, params.as_ref()) {
        let credentials = user_auth::client_credentials(&headers, params);
        let request = TokenRequest {
            endpoint,
            path: uri.path().to_owned(),
            client_id: credentials.as_ref().map(|(client_id, _)| client_id.clone()),
            grant_type: param("grant_type"),
            scope: None,
        };
        return pipeline::handle(&state, request, |registry, key| {
            user_auth::issue(&mut registry.adobe, params, credentials.clone(), key)
        })
        .await;
    }
    let request = TokenRequest {
        endpoint: EndpointKind::ClientCredentials,
        path: uri.path().to_owned(),
        client_id: param("client_id"),
        grant_type: param("grant_type"),
        scope: param("scope"),
    };
    pipeline::handle(&state, request, |registry, key| issue(&mut registry.adobe, params.as_ref(), key)).await
}

fn issue(clients: &mut AdobeClients, params: Option<&Params>, key: &EncodingKey) -> Reply {
    let bad_request = |error, description: &str| error_reply(StatusCode::BAD_REQUEST, error, description);
    let Some(params) = params else {
        return bad_request("invalid_request", "Content-Type must be application/x-www-form-urlencoded");
    };
    if params.get("grant_type") != Some("client_credentials") {
        return bad_request("unsupported_grant_type", "unsupported grant_type parameter");
    }
    let Some(client_id) = params.get("client_id") else {
        return bad_request("invalid_request", "missing client_id parameter");
    };
    let Some(client) = clients.get(client_id) else {
        return bad_request("invalid_client", "invalid client_id parameter");
    };
    let Some(secret) = params.get("client_secret") else {
        return bad_request("invalid_request", "missing client_secret parameter");
    };
    let now = SystemTime::now();
    let secret_uuid = client.secret_uuid(secret);
    let Some(secret_index) = client.accepted_secret(secret, now) else {
        return bad_request("invalid_client", "invalid client_secret parameter").with_secret_uuid(secret_uuid);
    };
    let Some(scope) = params.get("scope") else {
        return bad_request("invalid_request", "missing scope parameter");
    };
    // IMS separates scopes with commas, not the spaces RFC 6749 prescribes.
    let requested: BTreeSet<&str> = scope.split(',').map(str::trim).filter(|scope| !scope.is_empty()).collect();
    if requested.is_empty() {
        return bad_request("invalid_scope", "invalid scope");
    }
    if let Some(allowed) = &client.allowed_scopes
        && let Some(refused) = requested.iter().find(|scope| !allowed.contains(**scope))
    {
        return bad_request("invalid_scope", &format!("invalid scope ({refused})"));
    }

    let user_id = client
        .service_account
        .as_ref()
        .map_or_else(|| format!("{client_id}@techacct.adobe.com"), |account| account.technical_account_id.clone());
    let scope = requested.into_iter().collect::<Vec<_>>().join(",");
    let grant = Grant { client_id, user_id: &user_id, scope: &scope, lifetime: client.token_lifetime };
    let Ok(token) = access_token::mint(key, &grant) else {
        return internal_error();
    };
    let body = json!({
        "access_token": token.expose(),
        "token_type": "bearer",
        "expires_in": whole_seconds(client.token_lifetime),
    });
    let bearer = Bearer {
        client_id: client_id.to_owned(),
        scopes: scope.split(',').map(str::to_owned).collect(),
        expires_at: now + client.token_lifetime,
    };
    let client_id = client_id.to_owned();
    if let Ok(client) = clients.get_mut(&client_id) {
        client.used(secret_index, "client_credentials", now);
    }
    Reply::issued(body, token).with_secret_uuid(secret_uuid).with_bearer(bearer)
}
