//! Adobe IMS Service Account (JWT), legacy: an RS256 JWT signed with the credential's private key
//! is exchanged at `POST /ims/exchange/jwt`. The response's `expires_in` is in milliseconds.

use jiff::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Url;
use serde_json::{Map, Value, json};

use super::MintedToken;
use super::ims::ImsTokenResponse;
use super::response::{self, ExpiresInUnit};
use crate::error::{Error, Result};
use crate::secret_value::SecretValue;
use crate::source::ServiceAccountJwtInputs;

/// Lifetime of the signed JWT itself; Adobe's SDKs use five minutes.
const JWT_LIFETIME_SECONDS: i64 = 300;

/// Signs the JWT that proves the client holds the private key.
pub(super) fn sign(inputs: &ServiceAccountJwtInputs, now: Timestamp) -> Result<String> {
    let invalid_key = |detail: &str| Error::InvalidPrivateKey {
        location: inputs.private_key_location.clone(),
        detail: detail.to_owned(),
    };
    let pem = inputs.private_key_pem.expose();
    if pem.contains("ENCRYPTED") {
        return Err(invalid_key(
            "the key is encrypted with a passphrase, which is not supported; store it decrypted (openssl pkey -in key.pem -out plain.pem)",
        ));
    }
    if !pem.contains("-----BEGIN") {
        return Err(invalid_key(
            "not a PEM private key (expected -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)",
        ));
    }
    // from_rsa_pem reads PKCS#1 and PKCS#8; its error says nothing about the key material.
    let key =
        EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| invalid_key(&format!("not a usable RSA key ({e})")))?;
    let ims = inputs.ims_endpoint.trim_end_matches('/');
    let mut claims = Map::new();
    claims.insert("exp".into(), json!(now.as_second() + JWT_LIFETIME_SECONDS));
    claims.insert("iss".into(), json!(inputs.org_id));
    claims.insert("sub".into(), json!(inputs.technical_account_id));
    claims.insert("aud".into(), json!(format!("{ims}/c/{}", inputs.client.client_id)));
    for metascope in &inputs.metascopes {
        claims.insert(format!("{ims}/s/{metascope}"), Value::Bool(true));
    }
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key)
        .map_err(|e| invalid_key(&format!("signing failed ({e})")))
}

pub(super) async fn exchange(
    http: &reqwest::Client,
    url: Url,
    inputs: &ServiceAccountJwtInputs,
    client_secret: &SecretValue,
    jwt: &str,
) -> Result<MintedToken> {
    let form = [
        ("client_id", inputs.client.client_id.as_str()),
        ("client_secret", client_secret.expose()),
        ("jwt_token", jwt),
    ];
    let issued_at = Timestamp::now();
    let response = http.post(url).form(&form).send().await.map_err(response::transport_error)?;
    ImsTokenResponse::read(response, issued_at, ExpiresInUnit::Milliseconds).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::OAuthClient;

    fn inputs(pem: &str) -> ServiceAccountJwtInputs {
        ServiceAccountJwtInputs {
            ims_endpoint: "https://ims-na1.adobelogin.com".into(),
            client: OAuthClient { client_id: "cid".into(), secrets: vec![], notes: vec![] },
            private_key_pem: SecretValue::new(pem),
            private_key_location: "in Secret \"k\" key \"private.key\"".into(),
            org_id: "ORG@AdobeOrg".into(),
            technical_account_id: "TA@techacct.adobe.com".into(),
            metascopes: vec!["ent_cloudmgr_sdk".into()],
        }
    }

    #[test]
    fn bad_keys_are_reported_without_their_content() {
        for (pem, expected) in [
            ("just text", "not a PEM private key"),
            ("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----", "encrypted"),
            ("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----", "not a usable RSA key"),
        ] {
            let err = sign(&inputs(pem), Timestamp::now()).unwrap_err();
            assert_eq!(err.reason(), "InvalidPrivateKey");
            let text = err.to_string();
            assert!(text.contains(expected), "{text}");
            assert!(!text.contains("bm90IGEga2V5"), "{text}");
        }
    }
}
