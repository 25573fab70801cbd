//! What every token endpoint does around its own logic: apply injected faults, log the request,
//! and build the HTTP response.

use std::{collections::HashMap, fmt, time::SystemTime};

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use jsonwebtoken::EncodingKey;
use rand::Rng;
use serde_json::Value;

use crate::{
    faults::FaultKind,
    log::{EndpointKind, Outcome, RequestRecord},
    state::{Bearer, Registry, Secret, ServerState},
};

/// Marks a response that must not be sent: the connection layer closes the connection instead.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

/// The parameters of a form-encoded or JSON request body. Values may be credentials, so `Debug`
/// shows only the names.
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    pub(crate) fn from_form(body: &[u8]) -> Self {
        let mut params = HashMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            // RFC 6749 forbids repeating a parameter; keep the first rather than guess.
            params.entry(name.into_owned()).or_insert_with(|| value.into_owned());
        }
        Self(params)
    }

    /// The parameters of a form-encoded body; `None` for any other media type (IMS reads only
    /// forms).
    pub(crate) fn from_form_request(headers: &HeaderMap, body: &[u8]) -> Option<Self> {
        (media_type(headers).as_deref() == Some(FORM_MEDIA_TYPE)).then(|| Self::from_form(body))
    }

    /// The value of parameter `name`, owned, for the request log.
    pub(crate) fn owned(params: Option<&Self>, name: &str) -> Option<String> {
        params.and_then(|p| p.get(name)).map(str::to_owned)
    }

    /// Only string members count: a JSON number or object is no valid value for any of the
    /// parameters the endpoints read. `None` when the body is not a JSON object.
    pub(crate) fn from_json(body: &[u8]) -> Option<Self> {
        let Value::Object(members) = serde_json::from_slice(body).ok()? else {
            return None;
        };
        Some(Self(
            members
                .into_iter()
                .filter_map(|(name, value)| match value {
                    Value::String(value) => Some((name, value)),
                    _ => None,
                })
                .collect(),
        ))
    }

    /// The parameter's value; an empty value counts as missing, as OAuth servers treat it.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|value| !value.is_empty())
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The media type of the request body, lower-cased and without parameters such as `charset`.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    Some(essence.to_ascii_lowercase())
}

pub(crate) const FORM_MEDIA_TYPE: &str = "application/x-www-form-urlencoded";

/// What the request log needs to know about a request before it is processed.
#[derive(Debug)]
pub(crate) struct TokenRequest {
    pub(crate) endpoint: EndpointKind,
    pub(crate) path: String,
    pub(crate) client_id: Option<String>,
    pub(crate) grant_type: Option<String>,
    pub(crate) scope: Option<String>,
}

/// An endpoint's answer. No `Debug`: the body holds the issued tokens (or a new client secret).
pub(crate) struct Reply {
    status: StatusCode,
    body: Value,
    outcome: Outcome,
    access_token: Option<Secret>,
    /// Replaces the logged scope when the endpoint learnt it from a verified credential.
    scope: Option<String>,
    /// Rarely set, boxed to keep replies small.
    details: Option<Box<ReplyDetails>>,
}

#[derive(Default)]
struct ReplyDetails {
    /// The client secret the request presented (or created, or deleted), by uuid.
    secret_uuid: Option<String>,
    /// What the issued access token allows at the I/O Management API.
    bearer: Option<Bearer>,
}

impl Reply {
    fn new(status: StatusCode, body: Value, outcome: Outcome) -> Self {
        Self { status, body, outcome, access_token: None, scope: None, details: None }
    }

    pub(crate) fn issued(body: Value, access_token: Secret) -> Self {
        Self { access_token: Some(access_token), ..Self::new(StatusCode::OK, body, Outcome::Issued) }
    }

    pub(crate) fn rejected(status: StatusCode, error_code: &str, body: Value) -> Self {
        Self::new(status, body, Outcome::Rejected(error_code.to_owned()))
    }

    /// A successful answer of an endpoint that issues no token (the I/O Management API); a
    /// `204 No Content` is sent without a body.
    pub(crate) fn served(status: StatusCode, body: Value) -> Self {
        Self::new(status, body, Outcome::Served)
    }

    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    #[cfg(test)]
    pub(crate) fn body(&self) -> &Value {
        &self.body
    }

    pub(crate) fn with_logged_scope(mut self, scope: String) -> Self {
        self.scope = Some(scope);
        self
    }

    pub(crate) fn with_secret_uuid(mut self, uuid: Option<String>) -> Self {
        self.details.get_or_insert_default().secret_uuid = uuid;
        self
    }

    pub(crate) fn with_bearer(mut self, bearer: Bearer) -> Self {
        self.details.get_or_insert_default().bearer = Some(bearer);
        self
    }
}

/// Runs one token request: applies the first matching fault, otherwise (or after a delay) runs
/// `process` on the locked registry, logs the request and builds the response.
///
/// `process` gets the key that signs access tokens rather than the whole state, so that it
/// cannot try to lock the registry a second time.
pub(crate) async fn handle(
    state: &ServerState,
    request: TokenRequest,
    process: impl FnOnce(&mut Registry, &EncodingKey) -> Reply,
) -> Response {
    let received_at = SystemTime::now();
    state.arrived(request.endpoint, request.client_id.as_deref());
    let debug_id = request.endpoint.is_adobe().then(new_debug_id);
    let fault = state.registry().faults.take(request.endpoint, request.client_id.as_deref(), request.scope.as_deref());
    let record = |status, outcome, scope: Option<String>, secret_uuid: Option<String>| RequestRecord {
        endpoint: request.endpoint,
        path: request.path.clone(),
        client_id: request.client_id.clone(),
        grant_type: request.grant_type.clone(),
        scope: scope.or_else(|| request.scope.clone()),
        status,
        outcome,
        fault: fault.clone(),
        debug_id: debug_id.clone(),
        received_at,
        secret_uuid,
    };

    let mut response = match &fault {
        Some(FaultKind::Hang) => {
            state.record(record(None, Outcome::Faulted, None, None), None, None);
            return std::future::pending().await;
        }
        Some(FaultKind::DropConnection) => {
            state.record(record(None, Outcome::Faulted, None, None), None, None);
            let mut response = Response::default();
            response.extensions_mut().insert(DropConnection);
            return response;
        }
        Some(FaultKind::Respond { status, body, retry_after }) => {
            state.record(record(Some(*status), Outcome::Faulted, None, None), None, None);
            let mut response = (*status, json_content_type(), body.clone()).into_response();
            if let Some(retry_after) = retry_after
                && let Ok(value) = HeaderValue::from_str(&retry_after.header_value())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Some(FaultKind::MalformedJson) => {
            state.record(record(Some(StatusCode::OK), Outcome::Faulted, None, None), None, None);
            let truncated = r#"{"access_token":"eyJhbGciOiJSUzI1NiIsIng1dSI6Imltc19uYTEta2V5"#;
            (StatusCode::OK, json_content_type(), truncated).into_response()
        }
        Some(FaultKind::Delay(_) | FaultKind::MissingFields(_) | FaultKind::HangAfterProcessing) | None => {
            if let Some(FaultKind::Delay(delay)) = &fault {
                tokio::time::sleep(*delay).await;
            }
            let reply = process(&mut state.registry(), &state.access_token_key);
            let mut body = reply.body;
            if let (Some(FaultKind::MissingFields(fields)), Value::Object(members)) = (&fault, &mut body)
                && reply.status.is_success()
            {
                for field in fields {
                    members.remove(field);
                }
            }
            let details = reply.details.map(|details| *details).unwrap_or_default();
            let logged = record(Some(reply.status), reply.outcome, reply.scope, details.secret_uuid);
            state.record(logged, reply.access_token, details.bearer);
            if fault == Some(FaultKind::HangAfterProcessing) {
                // Done, but the answer never leaves: the client cannot know what happened.
                return std::future::pending().await;
            }
            if reply.status == StatusCode::NO_CONTENT {
                reply.status.into_response()
            } else {
                (reply.status, Json(body)).into_response()
            }
        }
    };
    if let Some(debug_id) = debug_id
        && let Ok(value) = HeaderValue::from_str(&debug_id)
    {
        response.headers_mut().insert("x-debug-id", value);
    }
    response
}

fn json_content_type() -> [(header::HeaderName, &'static str); 1] {
    [(header::CONTENT_TYPE, "application/json")]
}

/// Shaped like the UUIDs IMS sends, so that clients which parse or log them see the real thing.
fn new_debug_id() -> String {
    let bits: u128 = rand::rng().random();
    let hex = format!("{bits:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_params_keep_first_value_and_treat_empty_as_missing() {
        let params = Params::from_form(b"a=1&a=2&b=&c=x%2By+z");
        assert_eq!(params.get("a"), Some("1"));
        assert_eq!(params.get("b"), None);
        assert_eq!(params.get("c"), Some("x+y z"));
        assert_eq!(params.get("d"), None);
    }

    #[test]
    fn json_params_need_an_object_and_keep_only_strings() {
        let params = Params::from_json(br#"{"a":"1","n":2}"#).expect("object");
        assert_eq!(params.get("a"), Some("1"));
        assert_eq!(params.get("n"), None);
        assert!(Params::from_json(b"[1]").is_none());
        assert!(Params::from_json(b"{").is_none());
    }

    #[test]
    fn params_debug_shows_names_only() {
        let params = Params::from_form(b"client_secret=hunter2");
        let shown = format!("{params:?}");
        assert!(shown.contains("client_secret"));
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn media_type_ignores_parameters_and_case() {
        let mut headers = HeaderMap::new();
        assert_eq!(media_type(&headers), None);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("Application/JSON; charset=utf-8"));
        assert_eq!(media_type(&headers).as_deref(), Some("application/json"));
    }

    #[test]
    fn debug_ids_look_like_uuids_and_differ() {
        let first = new_debug_id();
        assert_eq!(first.len(), 36);
        assert_eq!(first.matches('-').count(), 4);
        assert_ne!(first, new_debug_id());
    }
}
