//! IMS access tokens are JWTs. Clients should treat them as opaque, but some read the payload,
//! so it carries the fields real ones do, with their odd encodings (millisecond strings).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::Rng;
use serde::Serialize;

use crate::{expiry::whole_millis, state::Secret};

#[derive(Serialize)]
struct Claims<'a> {
    /// Unique per token, so that two mints never yield the same string.
    id: String,
    #[serde(rename = "type")]
    token_type: &'static str,
    client_id: &'a str,
    user_id: &'a str,
    #[serde(rename = "as")]
    authorization_server: &'static str,
    created_at: String,
    expires_in: String,
    scope: &'a str,
}

/// Who a token is for and what it allows.
pub(super) struct Grant<'a> {
    pub(super) client_id: &'a str,
    pub(super) user_id: &'a str,
    pub(super) scope: &'a str,
    pub(super) lifetime: Duration,
}

pub(super) fn mint(key: &EncodingKey, grant: &Grant<'_>) -> jsonwebtoken::errors::Result<Secret> {
    let created_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let nonce: u64 = rand::rng().random();
    let claims = Claims {
        id: format!("{created_at_ms}_{nonce:016x}"),
        token_type: "access_token",
        client_id: grant.client_id,
        user_id: grant.user_id,
        authorization_server: "ims-na1",
        created_at: created_at_ms.to_string(),
        expires_in: whole_millis(grant.lifetime).to_string(),
        scope: grant.scope,
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("fake-ims-key-at-1".into());
    jsonwebtoken::encode(&header, &claims, key).map(Secret::new)
}
