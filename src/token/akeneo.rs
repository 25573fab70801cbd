//! OAuth2 password and refresh_token grants as Akeneo PIM speaks them: client authentication by
//! HTTP Basic, JSON bodies, `expires_in` in seconds, a new refresh token on every refresh (the
//! old one dies on use), errors as 422 `{code, message}`.

use jiff::Timestamp;
use reqwest::Url;
use serde::Deserialize;
use serde_json::json;

use super::MintedToken;
use super::response::{self, ExpiresInUnit};
use crate::error::{Error, Result};
use crate::secret_value::SecretValue;
use crate::source::PasswordGrantInputs;

#[derive(Deserialize)]
struct AkeneoTokenResponse {
    access_token: String,
    token_type: Option<String>,
    expires_in: serde_json::Value,
    refresh_token: Option<String>,
}

/// Uses the refresh token when there is one, and the password when there is none or it is
/// rejected (expired, already used, revoked).
pub(super) async fn mint(
    http: &reqwest::Client,
    url: Url,
    inputs: &PasswordGrantInputs,
    client_secret: &SecretValue,
    refresh_token: Option<&SecretValue>,
) -> Result<MintedToken> {
    if let Some(refresh_token) = refresh_token {
        let body = json!({ "grant_type": "refresh_token", "refresh_token": refresh_token.expose() });
        match request(http, url.clone(), inputs, client_secret, &body).await {
            Err(Error::RefreshTokenRejected { .. }) => {}
            other => return other,
        }
    }
    let body = json!({ "grant_type": "password", "username": inputs.username, "password": inputs.password.expose() });
    request(http, url, inputs, client_secret, &body).await.map_err(|err| with_password_hint(err, &inputs.password))
}

/// Passwords are sent as stored (white space may be part of one), but a rejected password that
/// ends in white space was most likely saved with `echo` or from a file: say so.
fn with_password_hint(err: Error, password: &SecretValue) -> Error {
    match err {
        Error::InvalidUserCredentials { description, debug_id } if password.expose().ends_with(char::is_whitespace) => {
            let hint = "; the password in the Secret ends in a newline or space, which was sent as part of it: store it without (kubectl create secret --from-literal, or echo -n)";
            Error::InvalidUserCredentials { description: format!("{description}{hint}"), debug_id }
        }
        other => other,
    }
}

async fn request(
    http: &reqwest::Client,
    url: Url,
    inputs: &PasswordGrantInputs,
    client_secret: &SecretValue,
    body: &serde_json::Value,
) -> Result<MintedToken> {
    let issued_at = Timestamp::now();
    let response = http
        .post(url)
        .basic_auth(&inputs.client.client_id, Some(client_secret.expose()))
        .json(body)
        .send()
        .await
        .map_err(response::transport_error)?;
    let (body, debug_id) = response::success_body(response).await?;
    let parsed: AkeneoTokenResponse = response::parse_json(&body, &debug_id)?;
    let lifetime = response::expires_in(&parsed.expires_in, ExpiresInUnit::Seconds, &debug_id)?;
    let refresh = parsed.refresh_token.filter(|t| !t.is_empty()).map(SecretValue::new);
    response::minted(parsed.access_token, parsed.token_type, issued_at, lifetime, refresh, &debug_id)
}
