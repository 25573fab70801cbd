//! What the Adobe IMS token endpoints answer, shared by the IMS flows.

use jiff::Timestamp;
use serde::Deserialize;

use super::MintedToken;
use super::response::{self, ExpiresInUnit};
use crate::error::Result;

/// The success body of both IMS endpoints (client credentials and JWT exchange).
#[derive(Deserialize)]
pub struct ImsTokenResponse {
    access_token: String,
    // Absent in some Adobe samples: bearer is the only type IMS issues.
    token_type: Option<String>,
    expires_in: serde_json::Value,
}

impl ImsTokenResponse {
    /// Reads a 2xx IMS response; `unit` differs between the two IMS flows.
    pub async fn read(response: reqwest::Response, issued_at: Timestamp, unit: ExpiresInUnit) -> Result<MintedToken> {
        let (body, debug_id) = response::success_body(response).await?;
        let parsed: Self = response::parse_json(&body, &debug_id)?;
        let lifetime = response::expires_in(&parsed.expires_in, unit, &debug_id)?;
        response::minted(parsed.access_token, parsed.token_type, issued_at, lifetime, None, &debug_id)
    }
}
