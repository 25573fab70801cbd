//! Adobe IMS OAuth Server-to-Server: `POST /ims/token/v3` with the client_credentials grant.

use jiff::Timestamp;
use reqwest::Url;
use serde::Deserialize;

use super::MintedToken;
use super::response::{self, ExpiresInUnit};
use crate::error::Result;
use crate::secret_value::SecretValue;
use crate::source::ServerToServerInputs;

/// The success body of both IMS endpoints (client credentials and JWT exchange).
#[derive(Deserialize)]
pub(super) struct ImsTokenResponse {
    access_token: String,
    // Absent in some Adobe samples: bearer is the only type IMS issues.
    token_type: Option<String>,
    expires_in: serde_json::Value,
}

impl ImsTokenResponse {
    /// Reads a 2xx IMS response; `unit` differs between the two IMS flows.
    pub(super) async fn read(
        response: reqwest::Response,
        issued_at: Timestamp,
        unit: ExpiresInUnit,
    ) -> Result<MintedToken> {
        let (body, debug_id) = response::success_body(response).await?;
        let parsed: Self = response::parse_json(&body, &debug_id)?;
        let lifetime = response::expires_in(&parsed.expires_in, unit, &debug_id)?;
        response::minted(parsed.access_token, parsed.token_type, issued_at, lifetime, None, &debug_id)
    }
}

pub(super) async fn client_credentials(
    http: &reqwest::Client,
    url: Url,
    inputs: &ServerToServerInputs,
    client_secret: &SecretValue,
) -> Result<MintedToken> {
    // Adobe IMS wants the scopes comma-separated, not space-separated as RFC 6749 says.
    let scope = inputs.scopes.join(",");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", inputs.client.client_id.as_str()),
        ("client_secret", client_secret.expose()),
        ("scope", scope.as_str()),
    ];
    let issued_at = Timestamp::now();
    let response = http.post(url).form(&form).send().await.map_err(response::transport_error)?;
    ImsTokenResponse::read(response, issued_at, ExpiresInUnit::Seconds).await
}
