//! Adobe IMS OAuth Server-to-Server: `POST /ims/token/v3` with the client_credentials grant.

use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::Timestamp;
use reqwest::Url;

use super::{Flow, FlowSpec, Rotatable};
use crate::crd::OAuthServerToServer;
use crate::error::Result;
use crate::secret_value::SecretValue;
use crate::source::{OAuthClient, SecretReader};
use crate::token::ims::ImsTokenResponse;
use crate::token::response::{self, ExpiresInUnit};
use crate::token::{MintedToken, TokenClient, with_each_secret};

const NAME: &str = "oauthServerToServer";

/// Everything an OAuth Server-to-Server mint needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerToServerInputs {
    pub ims_endpoint: String,
    pub client: OAuthClient,
    pub scopes: Vec<String>,
    pub org_id: Option<String>,
}

impl FlowSpec for OAuthServerToServer {
    fn name(&self) -> &'static str {
        NAME
    }

    fn source_secrets(&self) -> Vec<&str> {
        vec![&self.client_secret_ref.name]
    }

    fn resolve<'a>(&'a self, reader: &'a mut SecretReader<'_>) -> BoxFuture<'a, Result<Box<dyn Flow>>> {
        async move {
            let inputs = ServerToServerInputs {
                ims_endpoint: self.ims_endpoint.trim_end_matches('/').to_owned(),
                client: reader.client(&self.client_secret_ref).await?,
                scopes: self.scopes.clone(),
                org_id: self.org_id.clone(),
            };
            Ok(Box::new(inputs) as Box<dyn Flow>)
        }
        .boxed()
    }

    fn client_secret_rotation(&self) -> Option<Rotatable<'_>> {
        let rotation = self.client_secret_rotation.as_ref()?;
        Some(Rotatable { rotation, client_secret_ref: &self.client_secret_ref, ims_endpoint: &self.ims_endpoint })
    }
}

impl ServerToServerInputs {
    /// A client_credentials mint at `ims_endpoint` with one client secret, for other callers
    /// than a credential's token path (the rotation's management tokens and verification).
    pub fn with_secret(ims_endpoint: &str, client_id: &str, secret: SecretValue, scopes: Vec<String>) -> Self {
        Self {
            ims_endpoint: ims_endpoint.trim_end_matches('/').to_owned(),
            client: OAuthClient {
                client_id: client_id.to_owned(),
                secrets: vec![("rotation".into(), secret)],
                notes: vec![],
            },
            scopes,
            org_id: None,
        }
    }
}

impl Flow for ServerToServerInputs {
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
        self.org_id.as_deref()
    }

    fn hash_inputs(&self, field: &mut dyn FnMut(&str)) {
        field(&self.ims_endpoint);
        field(&self.scopes.join(","));
        field(self.org_id.as_deref().unwrap_or_default());
    }

    fn mint<'a>(&'a self, tokens: &'a TokenClient, _: Option<&'a SecretValue>) -> BoxFuture<'a, Result<MintedToken>> {
        async move {
            let url = tokens.checked_url(&self.ims_endpoint, "/ims/token/v3")?;
            with_each_secret(&self.client, |secret| client_credentials(tokens.http(), url.clone(), self, secret)).await
        }
        .boxed()
    }
}

async fn client_credentials(
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
