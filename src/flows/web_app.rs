//! Adobe IMS user authentication (OAuth Web App): `POST /ims/token/v3` with the refresh_token
//! grant, client authentication by `client_secret_post`. Every refresh returns a new refresh
//! token and the one used dies, so the chain is kept in operator-owned state; the user's Secret
//! only holds the refresh token that starts it. The sign-in that creates that first refresh
//! token (authorize with PKCE, then the code exchange) is here too, for `login`.

use base64::Engine;
use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use rand::Rng;
use reqwest::Url;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Flow, FlowSpec};
use crate::crd::OAuthWebApp;
use crate::error::{Error, Result};
use crate::secret_value::SecretValue;
use crate::source::{CredentialName, OAuthClient, SecretReader};
use crate::token::response::{self, ExpiresInUnit};
use crate::token::{MintedToken, TokenClient, with_each_secret};

const NAME: &str = "oauthWebApp";

/// Adobe refresh tokens live 14 days from issue; one hour less leaves room for clock skew.
const REFRESH_TOKEN_LIFETIME: SignedDuration = SignedDuration::from_hours(14 * 24 - 1);

/// Everything a refresh of a user's token needs.
#[derive(Debug, Clone, PartialEq)]
pub struct WebAppInputs {
    pub ims_endpoint: String,
    pub client: OAuthClient,
    pub scopes: Vec<String>,
    /// The refresh token the user put into their Secret: it starts the chain.
    pub initial_refresh_token: SecretValue,
    /// Where it lives, for the message of a dead chain.
    pub refresh_token_secret: String,
    pub refresh_token_key: String,
    /// The credential, for the command a dead chain asks the user to run.
    pub credential: CredentialName,
}

impl FlowSpec for OAuthWebApp {
    fn name(&self) -> &'static str {
        NAME
    }

    fn mint_spends_inputs(&self) -> bool {
        true
    }

    fn source_secrets(&self) -> Vec<&str> {
        vec![&self.client_secret_ref.name, &self.refresh_token_ref.name]
    }

    fn resolve<'a>(&'a self, reader: &'a mut SecretReader<'_>) -> BoxFuture<'a, Result<Box<dyn Flow>>> {
        async move {
            let token_ref = &self.refresh_token_ref;
            let raw = reader.value(&token_ref.name, &token_ref.key).await?;
            let inputs = WebAppInputs {
                ims_endpoint: self.ims_endpoint.trim_end_matches('/').to_owned(),
                client: reader.client(&self.client_secret_ref).await?,
                scopes: self.scopes.clone(),
                // A refresh token never contains white space; a trailing newline comes from echo.
                initial_refresh_token: SecretValue::new(raw.trim()),
                refresh_token_secret: token_ref.name.clone(),
                refresh_token_key: token_ref.key.clone(),
                credential: reader.credential().clone(),
            };
            Ok(Box::new(inputs) as Box<dyn Flow>)
        }
        .boxed()
    }
}

impl Flow for WebAppInputs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn client(&self) -> &OAuthClient {
        &self.client
    }

    fn endpoint(&self) -> &str {
        &self.ims_endpoint
    }

    /// The initial refresh token is an input (a new one from the user starts a new chain); the
    /// persisted chain is state, so refreshes leave the revision alone.
    fn hash_inputs(&self, field: &mut dyn FnMut(&str)) {
        field(&self.ims_endpoint);
        field(&self.scopes.join(","));
        field(self.initial_refresh_token.expose());
    }

    /// A user's refresh token is bound to the client ID and the consented scopes, not to the
    /// client secret: a new or added client secret refreshes the same chain.
    fn chain_revision(&self) -> String {
        super::digest(|field| {
            field(NAME);
            field(&self.client.client_id);
            self.hash_inputs(field);
        })
    }

    fn refresh_token_lifetime(&self) -> Option<SignedDuration> {
        Some(REFRESH_TOKEN_LIFETIME)
    }

    fn refused_chain(&self) -> Option<Error> {
        let description = "refused before; not sent again until the Secret holds a new one".to_owned();
        Some(reauthorize(self, description, None))
    }

    fn mint<'a>(
        &'a self,
        tokens: &'a TokenClient,
        refresh_token: Option<&'a SecretValue>,
    ) -> BoxFuture<'a, Result<MintedToken>> {
        async move {
            let url = tokens.checked_url(&self.ims_endpoint, "/ims/token/v3")?;
            // Without a persisted refresh token for the current inputs, the chain starts over.
            let refresh_token = refresh_token.unwrap_or(&self.initial_refresh_token);
            with_each_secret(&self.client, |secret| {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("client_id", self.client.client_id.as_str()),
                    ("client_secret", secret.expose()),
                    ("refresh_token", refresh_token.expose()),
                ];
                let url = url.clone();
                async move { user_token(tokens.http(), url, &form).await }
            })
            .await
            .map_err(|err| dead_chain(err, self))
        }
        .boxed()
    }
}

/// A refusal of the refresh token itself (rather than of the client or the scopes) means the
/// chain is dead: expired, revoked consent, or already used.
fn dead_chain(err: Error, inputs: &WebAppInputs) -> Error {
    match err {
        Error::TokenRequestRejected { code, description, debug_id } => {
            reauthorize(inputs, format!("{code}: {description}"), debug_id)
        }
        Error::RefreshTokenRejected { description, debug_id } => reauthorize(inputs, description, debug_id),
        other => other,
    }
}

fn reauthorize(inputs: &WebAppInputs, description: String, debug_id: Option<String>) -> Error {
    Error::ReauthorizationRequired {
        description,
        debug_id,
        secret: inputs.refresh_token_secret.clone(),
        key: inputs.refresh_token_key.clone(),
        login: login_command(&inputs.credential),
    }
}

#[derive(Deserialize)]
struct ImsUserTokenResponse {
    access_token: String,
    token_type: Option<String>,
    expires_in: serde_json::Value,
    refresh_token: Option<String>,
}

/// The command that signs the user in again and writes the new refresh token.
pub fn login_command(credential: &CredentialName) -> String {
    format!("adobe-credential-operator login {} -n {} --apply", credential.name, credential.namespace)
}

/// A token request of user authentication (`client_secret_post`): its answer carries the access
/// token and the refresh token to use next.
async fn user_token(http: &reqwest::Client, url: Url, form: &[(&str, &str)]) -> Result<MintedToken> {
    let issued_at = Timestamp::now();
    let response = http.post(url).form(&form).send().await.map_err(response::transport_error)?;
    let (body, debug_id) = response::success_body(response).await?;
    let parsed: ImsUserTokenResponse = response::parse_json(&body, &debug_id)?;
    let lifetime = response::expires_in(&parsed.expires_in, ExpiresInUnit::Seconds, &debug_id)?;
    let Some(next) = parsed.refresh_token.filter(|t| !t.is_empty()).map(SecretValue::new) else {
        // The used refresh token is dead now; without a new one the chain ends here.
        return Err(Error::MalformedTokenResponse {
            detail: "no refresh_token in the response (does the credential's scope include offline_access?)".into(),
            debug_id,
        });
    };
    response::minted(parsed.access_token, parsed.token_type, issued_at, lifetime, Some(next), &debug_id)
}

/// What one sign-in is bound to: the PKCE verifier, sent only with the code exchange, its S256
/// challenge, sent through the browser, and the `state` that ties the redirect to this sign-in.
pub struct SignIn {
    verifier: SecretValue,
    challenge: String,
    pub state: String,
}

impl SignIn {
    pub fn new() -> Self {
        let random = |len: usize| -> String {
            rand::rng().sample_iter(rand::distr::Alphanumeric).take(len).map(char::from).collect()
        };
        // RFC 7636: 43 to 128 characters; 64 alphanumerics carry 381 bits.
        let verifier = random(64);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self { verifier: SecretValue::new(verifier), challenge, state: random(32) }
    }

    /// IMS's consent page for the credential's client and scopes, where the user signs in.
    pub fn authorize_url(
        &self,
        tokens: &TokenClient,
        spec: &OAuthWebApp,
        client_id: &str,
        redirect_uri: &str,
    ) -> Result<Url> {
        let mut url = tokens.checked_url(&spec.ims_endpoint, "/ims/authorize/v2")?;
        url.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &spec.scopes.join(","))
            .append_pair("response_type", "code")
            .append_pair("state", &self.state)
            .append_pair("code_challenge", &self.challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url)
    }

    /// Redeems the code the sign-in returned for the first access token and refresh token.
    pub async fn redeem(
        &self,
        tokens: &TokenClient,
        spec: &OAuthWebApp,
        client: &OAuthClient,
        code: &SecretValue,
    ) -> Result<MintedToken> {
        let url = tokens.checked_url(&spec.ims_endpoint, "/ims/token/v3")?;
        with_each_secret(client, |secret| {
            let form = [
                ("grant_type", "authorization_code"),
                ("client_id", client.client_id.as_str()),
                ("client_secret", secret.expose()),
                ("code", code.expose()),
                ("code_verifier", self.verifier.expose()),
            ];
            let url = url.clone();
            async move { user_token(tokens.http(), url, &form).await }
        })
        .await
    }
}

impl Default for SignIn {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(initial: &str) -> WebAppInputs {
        WebAppInputs {
            ims_endpoint: "https://ims-na1.adobelogin.com".into(),
            client: OAuthClient {
                client_id: "cid".into(),
                secrets: vec![("client_secret".into(), SecretValue::new("p8e-s"))],
                notes: vec![],
            },
            scopes: vec!["openid".into(), "offline_access".into()],
            initial_refresh_token: SecretValue::new(initial),
            refresh_token_secret: "user-token".into(),
            refresh_token_key: "refresh_token".into(),
            credential: CredentialName { namespace: "team-a".into(), name: "user-api".into() },
        }
    }

    #[test]
    fn a_sign_in_is_bound_to_a_fresh_pkce_verifier_and_state() {
        let (one, two) = (SignIn::new(), SignIn::new());
        assert_eq!(one.verifier.expose().len(), 64);
        assert!(one.verifier.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(one.verifier.expose()));
        assert_eq!(one.challenge, expected, "S256 of the verifier");
        assert_ne!(one.verifier, two.verifier);
        assert_ne!(one.state, two.state);

        let tokens = TokenClient::new(crate::token::TokenClientConfig {
            allowed_hosts: crate::token::HostAllowlist::new(["*.adobelogin.com"]),
            extra_ca_pem: None,
            request_timeout: std::time::Duration::from_secs(1),
        })
        .expect("client");
        let mut spec: OAuthWebApp = serde_json::from_value(serde_json::json!({
            "clientSecretRef": { "name": "web" },
            "refreshTokenRef": { "name": "user-token" },
            "scopes": ["openid", "AdobeID", "offline_access"],
        }))
        .expect("spec");
        let url = one.authorize_url(&tokens, &spec, "cid", "https://localhost:8443/callback").expect("url");
        assert_eq!(url.path(), "/ims/authorize/v2");
        let params: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(params["scope"], "openid,AdobeID,offline_access");
        assert_eq!(params["redirect_uri"], "https://localhost:8443/callback");
        assert_eq!(
            (params["code_challenge"].as_str(), params["code_challenge_method"].as_str()),
            (one.challenge.as_str(), "S256")
        );
        assert_eq!(params["state"], one.state);
        assert!(!url.as_str().contains(one.verifier.expose()), "the verifier never goes through the browser");
        spec.ims_endpoint = "https://ims.evil.example".into();
        let refused = one.authorize_url(&tokens, &spec, "cid", "https://localhost:8443/callback").expect_err("host");
        assert_eq!(refused.reason(), "TokenHostNotAllowed");
    }

    #[test]
    fn a_new_initial_refresh_token_changes_the_revision() {
        assert_eq!(inputs("rt-1").revision(), inputs("rt-1").revision());
        assert_ne!(inputs("rt-1").revision(), inputs("rt-2").revision());
        assert!(!format!("{:?}", inputs("rt-very-secret")).contains("rt-very-secret"));
    }

    #[test]
    fn the_chain_survives_a_new_client_secret_but_not_a_new_client_scope_or_sign_in() {
        let chain = inputs("rt-1").chain_revision();
        let mut new_secret = inputs("rt-1");
        new_secret.client.secrets = vec![
            ("client_secret".into(), SecretValue::new("p8e-new")),
            ("client_secret_2".into(), SecretValue::new("p8e-old")),
        ];
        assert_eq!(new_secret.chain_revision(), chain, "a client secret is not part of the chain");
        assert_ne!(new_secret.revision(), inputs("rt-1").revision(), "but it is an input of the mint");
        let mut other_client = inputs("rt-1");
        other_client.client.client_id = "other".into();
        let mut other_scopes = inputs("rt-1");
        other_scopes.scopes.push("openid".into());
        for changed in [other_client, other_scopes, inputs("rt-2")] {
            assert_ne!(changed.chain_revision(), chain);
        }
    }

    #[test]
    fn refused_refresh_tokens_ask_for_reauthorization_naming_the_secret() {
        let err = dead_chain(
            Error::TokenRequestRejected {
                code: "invalid_grant".into(),
                description: "invalid refresh token".into(),
                debug_id: Some("d-1".into()),
            },
            &inputs("rt"),
        );
        assert_eq!(err.reason(), "ReauthorizationRequired");
        assert_eq!(err.retry(), crate::error::Retry::AfterInputChange);
        let message = err.to_string();
        assert!(message.contains("Secret user-token, key refresh_token"), "{message}");
        assert!(message.contains("`adobe-credential-operator login user-api -n team-a --apply`"), "{message}");
        assert!(message.contains("invalid_grant") && message.contains("d-1"), "{message}");
        assert!(!message.contains('\n'));
        let client = dead_chain(Error::InvalidClient { description: "x".into(), debug_id: None }, &inputs("rt"));
        assert_eq!(client.reason(), "InvalidClient");
    }
}
