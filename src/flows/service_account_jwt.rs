//! Adobe IMS Service Account (JWT), legacy: an RS256 JWT signed with the credential's private key
//! is exchanged at `POST /ims/exchange/jwt`. The response's `expires_in` is in milliseconds.

use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Url;
use serde_json::{Map, Value, json};

use super::{Deprecation, Flow, FlowSpec};
use crate::crd::ServiceAccountJwt;
use crate::error::{Error, Result};
use crate::names::Reason;
use crate::secret_value::SecretValue;
use crate::source::{OAuthClient, SecretReader};
use crate::token::ims::ImsTokenResponse;
use crate::token::response::{self, ExpiresInUnit};
use crate::token::{MintedToken, TokenClient, with_each_secret};

const NAME: &str = "serviceAccountJWT";

const DEPRECATION: Deprecation = Deprecation {
    reason: Reason::ServiceAccountJWTDeprecated,
    message: "Adobe retired Service Account (JWT) credentials (end of life 2025-06-30) and converts them to OAuth Server-to-Server with the same client ID; replace spec.serviceAccountJWT with spec.oauthServerToServer (same clientSecretRef, the scopes of the converted credential) and delete the private key Secret",
};

/// Everything a Service Account (JWT) exchange needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceAccountJwtInputs {
    pub ims_endpoint: String,
    pub client: OAuthClient,
    pub private_key_pem: SecretValue,
    /// `Secret "name" key "key"`, for error messages.
    pub private_key_location: String,
    pub org_id: String,
    pub technical_account_id: String,
    pub metascopes: Vec<String>,
}

impl FlowSpec for ServiceAccountJwt {
    fn name(&self) -> &'static str {
        NAME
    }

    fn source_secrets(&self) -> Vec<&str> {
        vec![&self.client_secret_ref.name, &self.private_key_ref.name]
    }

    fn resolve<'a>(&'a self, reader: &'a mut SecretReader<'_>) -> BoxFuture<'a, Result<Box<dyn Flow>>> {
        async move {
            let key = &self.private_key_ref;
            let inputs = ServiceAccountJwtInputs {
                ims_endpoint: self.ims_endpoint.trim_end_matches('/').to_owned(),
                client: reader.client(&self.client_secret_ref).await?,
                private_key_pem: SecretValue::new(reader.value(&key.name, &key.key).await?),
                private_key_location: format!("in Secret {:?} key {:?}", key.name, key.key),
                org_id: self.org_id.clone(),
                technical_account_id: self.technical_account_id.clone(),
                metascopes: self.metascopes.clone(),
            };
            Ok(Box::new(inputs) as Box<dyn Flow>)
        }
        .boxed()
    }

    fn deprecation(&self) -> Option<Deprecation> {
        Some(DEPRECATION)
    }
}

impl Flow for ServiceAccountJwtInputs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn client(&self) -> &OAuthClient {
        &self.client
    }

    fn endpoint(&self) -> &str {
        &self.ims_endpoint
    }

    fn org_id(&self) -> Option<&str> {
        Some(&self.org_id)
    }

    fn hash_inputs(&self, field: &mut dyn FnMut(&str)) {
        field(&self.ims_endpoint);
        field(self.private_key_pem.expose());
        field(&self.org_id);
        field(&self.technical_account_id);
        field(&self.metascopes.join(","));
    }

    fn mint<'a>(&'a self, tokens: &'a TokenClient, _: Option<&'a SecretValue>) -> BoxFuture<'a, Result<MintedToken>> {
        async move {
            let url = tokens.checked_url(&self.ims_endpoint, "/ims/exchange/jwt")?;
            let jwt = sign(self, Timestamp::now())?;
            with_each_secret(&self.client, |secret| exchange(tokens.http(), url.clone(), self, secret, &jwt)).await
        }
        .boxed()
    }
}

/// Lifetime of the signed JWT itself; Adobe's SDKs use five minutes.
const JWT_LIFETIME_SECONDS: i64 = 300;

/// Signs the JWT that proves the client holds the private key.
fn sign(inputs: &ServiceAccountJwtInputs, now: Timestamp) -> Result<String> {
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

async fn exchange(
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
