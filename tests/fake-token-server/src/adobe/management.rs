//! The client-secret part of Adobe's I/O Management API, tied to the fake IMS: a secret added
//! here is one more secret IMS accepts for the client (after an optional activation delay), a
//! deleted one stops working at once, every successful token request updates the secret's
//! `secret_usages.last_used_at`, and a credential has at most two secrets.
//!
//! - `GET  /console/organizations/{org}/credentials/{credential}/secrets` → 200
//!   `{client_id, client_secrets: [{uuid, created_at, created_at_str, expires_at: "PERMANENT",
//!   expires_at_str, secret_usages: [{last_used_at, grant_type}] | null}]}` (milliseconds; never
//!   the values)
//! - `POST …/secrets` (no body) → 201 `{client_secret, uuid, created_at, …}`: the only time the
//!   value is shown
//! - `DELETE …/secrets/{uuid}` → 204
//!
//! (Adobe's API description lists 200 for POST and DELETE; [`crate::FakeTokenServer`] can answer
//! that way too.) Requests need `Authorization: Bearer <token>` with a token this server issued
//! to the credential's client, with scope `read_client_secret` (list) or
//! `manage_client_secrets` (add, delete), and `x-api-key: <client_id>`. Refusals use the Adobe
//! I/O gateway's shape `{"error_code", "message"}`: 401 for a missing, unknown or expired token,
//! 403 for a wrong API key, missing scope or a project without the I/O Management API, 404 for
//! an unknown organization/credential pair ("Credential Not Found") or secret uuid. A client
//! registered [`with_organization_wide_management`](super::AdobeClient::with_organization_wide_management)
//! reaches the other credentials of its organization too, as a technical account with
//! organization-wide rights does: the list then names that credential's `client_id`.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode, Uri, header},
    response::Response,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::Rng;
use serde_json::{Value, json};

use super::{AdobeClients, ClientSecret, MAX_SECRETS, RegisteredClient};
use crate::{
    Error,
    log::EndpointKind,
    pipeline::{self, Reply, TokenRequest},
    state::{Registry, Secret, ServerState},
};

const READ_SCOPE: &str = "read_client_secret";
const MANAGE_SCOPE: &str = "manage_client_secrets";

/// A client secret as the I/O Management API lists it (the value is never listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSecretInfo {
    /// The secret's id in the Developer Console.
    pub uuid: String,
    /// When it was created.
    pub created_at: SystemTime,
    /// Its last successful use at IMS, if any.
    pub last_used_at: Option<SystemTime>,
    /// Whether IMS accepts it now (a new secret may wait for its activation delay).
    pub active: bool,
}

/// Settings of the whole API.
#[derive(Debug, Default)]
pub(crate) struct ManagementSettings {
    /// Answer POST and DELETE with 200, as Adobe's API description says, instead of 201/204.
    pub(crate) answer_200: bool,
}

impl AdobeClients {
    fn managed(&mut self, client_id: &str) -> Result<&mut RegisteredClient, Error> {
        let client = self.get_mut(client_id)?;
        if client.console.is_none() {
            return Err(Error::NotManaged(client_id.to_owned()));
        }
        Ok(client)
    }

    pub(crate) fn set_api_in_project(&mut self, client_id: &str, in_project: bool) -> Result<(), Error> {
        if let Some(console) = self.managed(client_id)?.console.as_mut() {
            console.api_in_project = in_project;
        }
        Ok(())
    }

    pub(crate) fn set_activation_delay(&mut self, client_id: &str, delay: Duration) -> Result<(), Error> {
        if let Some(console) = self.managed(client_id)?.console.as_mut() {
            console.activation_delay = delay;
        }
        Ok(())
    }

    pub(crate) fn set_secret_created_at(&mut self, client_id: &str, uuid: &str, at: SystemTime) -> Result<(), Error> {
        let client = self.get_mut(client_id)?;
        let secret = client
            .secrets
            .iter_mut()
            .find(|secret| secret.uuid == uuid)
            .ok_or_else(|| Error::UnknownSecret(client_id.to_owned()))?;
        secret.created_at = at;
        secret.active_from = secret.active_from.min(at);
        Ok(())
    }

    pub(crate) fn secret_infos(&self, client_id: &str) -> Vec<ClientSecretInfo> {
        let now = SystemTime::now();
        self.get(client_id)
            .into_iter()
            .flat_map(|client| &client.secrets)
            .map(|secret| ClientSecretInfo {
                uuid: secret.uuid.clone(),
                created_at: secret.created_at,
                last_used_at: secret.last_used.map(|(at, _)| at),
                active: secret.active_from <= now,
            })
            .collect()
    }

    /// The client whose Developer Console credential has these IDs.
    fn console_client(&self, org_id: &str, credential_id: &str) -> Option<String> {
        self.clients.iter().find_map(|(client_id, client)| {
            let console = client.console.as_ref()?;
            (console.org_id == org_id && console.credential_id == credential_id).then(|| client_id.clone())
        })
    }

    pub(crate) fn uuid_of(&self, client_id: &str, value: &str) -> Option<String> {
        self.get(client_id)?.secret_uuid(value)
    }

    pub(crate) fn created_secret_values(&self, client_id: &str) -> Vec<String> {
        self.created.get(client_id).into_iter().flatten().map(|secret| secret.expose().to_owned()).collect()
    }
}

/// `{"error_code", "message"}`, the Adobe I/O gateway's error shape; `code` is for the log.
fn refusal(status: StatusCode, code: &str, message: &str) -> Reply {
    Reply::rejected(status, code, json!({ "error_code": status.as_u16().to_string(), "message": message }))
}

/// The credential the request may act on and its client id, or the refusal.
fn authorize<'a>(
    registry: &'a mut Registry,
    headers: &HeaderMap,
    org_id: &str,
    credential_id: &str,
    scope: &str,
) -> Result<(&'a mut RegisteredClient, String), Reply> {
    let api_key = header_value(headers, "x-api-key")
        .ok_or_else(|| refusal(StatusCode::FORBIDDEN, "api_key_missing", "Api Key is required"))?;
    let token = header_value(headers, header::AUTHORIZATION.as_str())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
        })
        .ok_or_else(|| refusal(StatusCode::UNAUTHORIZED, "invalid_token", "Oauth token is not valid"))?;
    let bearer = registry
        .bearer(&token, SystemTime::now())
        .cloned()
        .ok_or_else(|| refusal(StatusCode::UNAUTHORIZED, "invalid_token", "Oauth token is not valid"))?;
    if bearer.client_id != api_key {
        return Err(refusal(StatusCode::FORBIDDEN, "invalid_api_key", "Api Key is invalid"));
    }
    let caller = registry
        .adobe
        .get(&api_key)
        .ok_or_else(|| refusal(StatusCode::FORBIDDEN, "invalid_api_key", "Api Key is invalid"))?;
    let Some(console) = &caller.console else {
        return Err(refusal(StatusCode::FORBIDDEN, "api_not_in_project", "Api Key is not subscribed to this API"));
    };
    if !console.api_in_project {
        return Err(refusal(StatusCode::FORBIDDEN, "api_not_in_project", "Api Key is not subscribed to this API"));
    }
    if !bearer.scopes.contains(scope) {
        return Err(refusal(StatusCode::FORBIDDEN, "insufficient_scope", "The access token lacks a required scope"));
    }
    // The path names the credential acted on: the caller's own, or, for a token with
    // organization-wide rights, another credential of the same organization. Any other
    // credential is as unknown to this client as one that does not exist.
    let own = console.org_id == org_id && console.credential_id == credential_id;
    let target = if own {
        Some(api_key)
    } else if console.org_wide && console.org_id == org_id {
        registry.adobe.console_client(org_id, credential_id)
    } else {
        None
    };
    let not_found = || refusal(StatusCode::NOT_FOUND, "credential_not_found", "Credential Not Found");
    let target = target.ok_or_else(not_found)?;
    let client = registry.adobe.get_mut(&target).map_err(|_| not_found())?;
    Ok((client, target))
}

fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

fn request(endpoint: EndpointKind, uri: &Uri, headers: &HeaderMap) -> TokenRequest {
    TokenRequest {
        endpoint,
        path: uri.path().to_owned(),
        client_id: header_value(headers, "x-api-key"),
        grant_type: None,
        scope: None,
    }
}

pub(crate) async fn list(
    State(state): State<Arc<ServerState>>,
    Path((org_id, credential_id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let request = request(EndpointKind::ManagementList, &uri, &headers);
    pipeline::handle(&state, request, |registry, _| {
        let (client, client_id) = match authorize(registry, &headers, &org_id, &credential_id, READ_SCOPE) {
            Ok(found) => found,
            Err(refused) => return refused,
        };
        let secrets: Vec<Value> = client.secrets.iter().map(listed).collect();
        Reply::served(StatusCode::OK, json!({ "client_id": client_id, "client_secrets": secrets }))
    })
    .await
}

pub(crate) async fn add(
    State(state): State<Arc<ServerState>>,
    Path((org_id, credential_id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let request = request(EndpointKind::ManagementAdd, &uri, &headers);
    pipeline::handle(&state, request, |registry, _| {
        let answer_200 = registry.adobe.management.answer_200;
        let (client, client_id) = match authorize(registry, &headers, &org_id, &credential_id, MANAGE_SCOPE) {
            Ok(found) => found,
            Err(refused) => return refused,
        };
        if client.secrets.len() >= MAX_SECRETS {
            return refusal(
                StatusCode::BAD_REQUEST,
                "too_many_secrets",
                "A credential can have at most 2 client secrets; delete one first",
            );
        }
        let now = SystemTime::now();
        let delay = client.console.as_ref().map_or(Duration::ZERO, |console| console.activation_delay);
        let value = new_secret_value();
        let mut secret = ClientSecret::new(value.clone(), now);
        secret.active_from = now + delay;
        let mut body = listed(&secret);
        if let Value::Object(members) = &mut body {
            members.remove("secret_usages");
            members.insert("client_secret".into(), Value::String(value.expose().to_owned()));
        }
        let uuid = secret.uuid.clone();
        client.secrets.push(secret);
        registry.adobe.created.entry(client_id).or_default().push(value);
        let status = if answer_200 { StatusCode::OK } else { StatusCode::CREATED };
        Reply::served(status, body).with_secret_uuid(Some(uuid))
    })
    .await
}

pub(crate) async fn delete(
    State(state): State<Arc<ServerState>>,
    Path((org_id, credential_id, uuid)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let request = request(EndpointKind::ManagementDelete, &uri, &headers);
    pipeline::handle(&state, request, |registry, _| {
        let answer_200 = registry.adobe.management.answer_200;
        let (client, _) = match authorize(registry, &headers, &org_id, &credential_id, MANAGE_SCOPE) {
            Ok(found) => found,
            Err(refused) => return refused,
        };
        let Some(index) = client.secrets.iter().position(|secret| secret.uuid == uuid) else {
            return refusal(StatusCode::NOT_FOUND, "secret_not_found", "Client secret not found");
        };
        // The Developer Console keeps at least one secret per credential.
        if client.secrets.len() == 1 {
            return refusal(
                StatusCode::BAD_REQUEST,
                "last_secret",
                "The last client secret of a credential cannot be deleted",
            );
        }
        client.secrets.remove(index);
        let reply = if answer_200 {
            Reply::served(StatusCode::OK, json!({}))
        } else {
            Reply::served(StatusCode::NO_CONTENT, Value::Null)
        };
        reply.with_secret_uuid(Some(uuid))
    })
    .await
}

/// A secret as the list shows it.
fn listed(secret: &ClientSecret) -> Value {
    let usages = secret
        .last_used
        .map(|(at, grant_type)| json!([{ "last_used_at": millis(at), "grant_type": grant_type }]))
        .unwrap_or(Value::Null);
    json!({
        "uuid": secret.uuid,
        "created_at": millis(secret.created_at),
        "created_at_str": utc(secret.created_at),
        "expires_at": "PERMANENT",
        "expires_at_str": "PERMANENT",
        "secret_usages": usages,
    })
}

/// New secrets look like the console's: `p8e-` and 32 random characters.
fn new_secret_value() -> Secret {
    let mut bytes = [0_u8; 24];
    rand::rng().fill(&mut bytes[..]);
    Secret::new(format!("p8e-{}", URL_SAFE_NO_PAD.encode(bytes)))
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), from days since the epoch by the civil calendar algorithm.
fn utc(at: SystemTime) -> String {
    let ms = millis(at);
    let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap_day = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(utc(leap_day), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn listed_secrets_never_show_the_value() {
        let mut secret = ClientSecret::new(Secret::new("p8e-hidden"), UNIX_EPOCH + Duration::from_secs(1));
        let body = listed(&secret);
        assert!(!body.to_string().contains("p8e-hidden"));
        assert_eq!(body["created_at"], 1000);
        assert_eq!(body["secret_usages"], Value::Null);
        secret.last_used = Some((UNIX_EPOCH + Duration::from_secs(2), "client_credentials"));
        assert_eq!(
            listed(&secret)["secret_usages"],
            json!([{"last_used_at": 2000, "grant_type": "client_credentials"}])
        );
    }
}
