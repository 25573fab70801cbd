//! OAuth2 password and refresh_token grants as Akeneo PIM speaks them: client authentication by
//! HTTP Basic, JSON bodies, `expires_in` in seconds, a new refresh token on every refresh (the
//! old one dies on use), errors as 422 `{code, message}`.

use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use reqwest::Url;
use serde::Deserialize;
use serde_json::json;

use super::{Flow, FlowSpec};
use crate::crd::PasswordGrant;
use crate::error::{Error, Result};
use crate::secret_value::SecretValue;
use crate::source::{OAuthClient, SecretReader, clean};
use crate::token::response::{self, ExpiresInUnit};
use crate::token::{MintedToken, TokenClient, with_each_secret};

const NAME: &str = "passwordGrant";

/// Akeneo refresh tokens live 14 days; one hour less leaves room for clock skew.
const REFRESH_TOKEN_LIFETIME: SignedDuration = SignedDuration::from_hours(14 * 24 - 1);

/// Everything an OAuth2 password grant (Akeneo) needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PasswordGrantInputs {
    pub token_url: String,
    pub client: OAuthClient,
    pub username: String,
    pub password: SecretValue,
}

impl FlowSpec for PasswordGrant {
    fn name(&self) -> &'static str {
        NAME
    }

    fn source_secrets(&self) -> Vec<&str> {
        vec![&self.client_secret_ref.name, &self.user_secret_ref.name]
    }

    fn resolve<'a>(&'a self, reader: &'a mut SecretReader<'_>) -> BoxFuture<'a, Result<Box<dyn Flow>>> {
        async move {
            let user = &self.user_secret_ref;
            let inputs = PasswordGrantInputs {
                token_url: self.token_url.clone(),
                client: reader.client(&self.client_secret_ref).await?,
                username: clean(&reader.value(&user.name, &user.username_key).await?).0.to_owned(),
                password: SecretValue::new(reader.value(&user.name, &user.password_key).await?),
            };
            Ok(Box::new(inputs) as Box<dyn Flow>)
        }
        .boxed()
    }
}

impl Flow for PasswordGrantInputs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn client(&self) -> &OAuthClient {
        &self.client
    }

    fn endpoint(&self) -> &str {
        &self.token_url
    }

    fn hash_inputs(&self, field: &mut dyn FnMut(&str)) {
        field(&self.token_url);
        field(&self.username);
        field(self.password.expose());
    }

    fn refresh_token_lifetime(&self) -> Option<SignedDuration> {
        Some(REFRESH_TOKEN_LIFETIME)
    }

    fn mint<'a>(
        &'a self,
        tokens: &'a TokenClient,
        refresh_token: Option<&'a SecretValue>,
    ) -> BoxFuture<'a, Result<MintedToken>> {
        async move {
            let url = tokens.checked_url(&self.token_url, "")?;
            with_each_secret(&self.client, |secret| mint(tokens.http(), url.clone(), self, secret, refresh_token)).await
        }
        .boxed()
    }
}

#[derive(Deserialize)]
struct AkeneoTokenResponse {
    access_token: String,
    token_type: Option<String>,
    expires_in: serde_json::Value,
    refresh_token: Option<String>,
}

/// Uses the refresh token when there is one, and the password when there is none or it is
/// rejected (expired, already used, revoked).
async fn mint(
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
