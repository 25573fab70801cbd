//! Adobe IMS: the OAuth Server-to-Server (client credentials) endpoint and the legacy service
//! account JWT exchange, with the clients a test registers for them.

mod access_token;
pub(crate) mod client_credentials;
pub(crate) mod jwt_exchange;
pub(crate) mod management;
pub(crate) mod user_auth;

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    time::{Duration, SystemTime},
};

use axum::http::StatusCode;
use jsonwebtoken::DecodingKey;
use rand::Rng;
use serde_json::json;

use crate::{Error, pipeline::Reply, state::Secret};

pub use management::ClientSecretInfo;

/// Adobe lets a credential have at most two client secrets at once, so that one can be rotated
/// while the other still works.
const MAX_SECRETS: usize = 2;

/// The lifetime IMS gives access tokens.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// An Adobe Developer Console credential as IMS knows it.
///
/// ```
/// use std::time::Duration;
/// use fake_token_server::AdobeClient;
///
/// let client = AdobeClient::new("my-client", "p8e-secret")
///     .with_scopes(["openid", "AdobeID", "firefly_api"])
///     .with_token_lifetime(Duration::from_secs(3));
/// # let _ = client;
/// ```
#[derive(Debug, Clone)]
pub struct AdobeClient {
    client_id: String,
    secrets: Vec<Secret>,
    allowed_scopes: Option<BTreeSet<String>>,
    token_lifetime: Duration,
    service_account: Option<ServiceAccount>,
    console: Option<ConsoleCredential>,
    web_app: Option<user_auth::WebApp>,
}

impl AdobeClient {
    /// A client with one secret, any scope allowed and 24-hour tokens.
    pub fn new(client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            secrets: vec![Secret::new(secret)],
            allowed_scopes: None,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            service_account: None,
            console: None,
            web_app: None,
        }
    }

    /// Makes the client an OAuth Web App credential (user authentication) with this registered
    /// redirect URI, which must be HTTPS: it may use `/ims/authorize/v2` and the
    /// `authorization_code` and `refresh_token` grants. Refresh tokens live 14 days.
    pub fn with_web_app(mut self, redirect_uri: impl Into<String>) -> Self {
        self.web_app = Some(user_auth::WebApp {
            redirect_uri: redirect_uri.into(),
            refresh_token_lifetime: user_auth::DEFAULT_REFRESH_TOKEN_LIFETIME,
        });
        self
    }

    /// How long refresh tokens live from issue (not sliding); only for a
    /// [`with_web_app`](Self::with_web_app) client.
    pub fn with_refresh_token_lifetime(mut self, lifetime: Duration) -> Self {
        if let Some(web_app) = &mut self.web_app {
            web_app.refresh_token_lifetime = lifetime;
        }
        self
    }

    /// Makes the credential reachable through the I/O Management API under the Developer
    /// Console's numeric IDs (`/console/organizations/{org_id}/credentials/{credential_id}/…`),
    /// with the API added to its project.
    pub fn with_management(mut self, org_id: impl Into<String>, credential_id: impl Into<String>) -> Self {
        self.console = Some(ConsoleCredential {
            org_id: org_id.into(),
            credential_id: credential_id.into(),
            api_in_project: true,
            activation_delay: Duration::ZERO,
            org_wide: false,
        });
        self
    }

    /// Lets the credential's token reach every managed credential of its organization through
    /// the I/O Management API, as a technical account with organization-wide developer rights
    /// can: a path naming another credential of the same organization acts on that credential's
    /// secrets, and its list names that credential's `client_id`. Only after
    /// [`with_management`](Self::with_management).
    pub fn with_organization_wide_management(mut self) -> Self {
        if let Some(console) = &mut self.console {
            console.org_wide = true;
        }
        self
    }

    /// Adds another valid secret (registration fails with more than two).
    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        self.secrets.push(Secret::new(secret));
        self
    }

    /// Restricts the scopes the client may request; without this any scope is allowed.
    pub fn with_scopes<I>(mut self, scopes: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.allowed_scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// How long issued access tokens live.
    pub fn with_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// Makes the client a service account that may use the JWT exchange.
    pub fn with_service_account(mut self, service_account: ServiceAccount) -> Self {
        self.service_account = Some(service_account);
        self
    }
}

/// The service account (JWT) binding of a legacy Adobe credential.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    org_id: String,
    technical_account_id: String,
    metascopes: BTreeSet<String>,
    public_key_pem: String,
}

impl ServiceAccount {
    /// `org_id` (`…@AdobeOrg`) must match the JWT's `iss`, `technical_account_id`
    /// (`…@techacct.adobe.com`) its `sub`; `public_key_pem` is the RSA public key (SPKI or PKCS#1)
    /// or X.509 certificate the JWT must be signed for.
    pub fn new(
        org_id: impl Into<String>,
        technical_account_id: impl Into<String>,
        public_key_pem: impl Into<String>,
    ) -> Self {
        Self {
            org_id: org_id.into(),
            technical_account_id: technical_account_id.into(),
            metascopes: BTreeSet::new(),
            public_key_pem: public_key_pem.into(),
        }
    }

    /// The metascopes (e.g. `ent_cloudmgr_sdk`) the JWT may claim.
    pub fn with_metascopes<I>(mut self, metascopes: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.metascopes = metascopes.into_iter().map(Into::into).collect();
        self
    }
}

/// An RSA public key parsed once, when it is registered.
#[derive(Clone)]
struct VerifyingKey(DecodingKey);

impl VerifyingKey {
    fn from_pem(pem: &str) -> Result<Self, Error> {
        DecodingKey::from_rsa_pem(pem.as_bytes()).map(Self).map_err(|err| Error::InvalidPublicKey(err.to_string()))
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerifyingKey(RSA)")
    }
}

#[derive(Debug)]
struct RegisteredServiceAccount {
    org_id: String,
    technical_account_id: String,
    metascopes: BTreeSet<String>,
    key: VerifyingKey,
}

/// Where a credential lives in the Developer Console, for the I/O Management API.
#[derive(Debug, Clone)]
struct ConsoleCredential {
    org_id: String,
    credential_id: String,
    /// The I/O Management API is part of the credential's project (else the API answers 403).
    api_in_project: bool,
    /// How long a secret added through the API takes before IMS accepts it.
    activation_delay: Duration,
    /// The token reaches the other managed credentials of the organization too.
    org_wide: bool,
}

/// One client secret as IMS and the Developer Console know it.
#[derive(Debug)]
struct ClientSecret {
    value: Secret,
    uuid: String,
    created_at: SystemTime,
    /// IMS rejects the secret before this time (a secret added through the API may take a
    /// moment to work).
    active_from: SystemTime,
    /// The last successful use and its grant type (`secret_usages`).
    last_used: Option<(SystemTime, &'static str)>,
}

impl ClientSecret {
    fn new(value: Secret, created_at: SystemTime) -> Self {
        Self { value, uuid: new_uuid(), created_at, active_from: created_at, last_used: None }
    }
}

/// Shaped like the secret uuids of the Developer Console: 32 lower-case hex digits.
fn new_uuid() -> String {
    let bits: u128 = rand::rng().random();
    format!("{bits:032x}")
}

#[derive(Debug)]
struct RegisteredClient {
    secrets: Vec<ClientSecret>,
    allowed_scopes: Option<BTreeSet<String>>,
    token_lifetime: Duration,
    service_account: Option<RegisteredServiceAccount>,
    console: Option<ConsoleCredential>,
    web_app: Option<user_auth::WebApp>,
}

impl RegisteredClient {
    /// The secret with this value, if IMS accepts it now.
    fn accepted_secret(&self, secret: &str, now: SystemTime) -> Option<usize> {
        self.secrets.iter().position(|known| known.value.expose() == secret && known.active_from <= now)
    }

    /// The uuid of the secret with this value, active or not (for the request log).
    fn secret_uuid(&self, secret: &str) -> Option<String> {
        self.secrets.iter().find(|known| known.value.expose() == secret).map(|known| known.uuid.clone())
    }

    /// Records a successful use of secret `index` (its `secret_usages.last_used_at`).
    fn used(&mut self, index: usize, grant_type: &'static str, now: SystemTime) {
        if let Some(secret) = self.secrets.get_mut(index) {
            secret.last_used = Some((now, grant_type));
        }
    }
}

/// The Adobe credentials IMS knows, by client id.
#[derive(Debug, Default)]
pub(crate) struct AdobeClients {
    clients: HashMap<String, RegisteredClient>,
    /// Every secret the I/O Management API created, by client id, also deleted ones.
    created: HashMap<String, Vec<Secret>>,
    pub(crate) management: management::ManagementSettings,
    /// Authorization codes, refresh tokens and the signed-in user of OAuth Web App clients.
    pub(crate) users: user_auth::UserSessions,
}

impl AdobeClients {
    /// Adds the client, replacing one with the same id.
    pub(crate) fn register(&mut self, client: AdobeClient) -> Result<(), Error> {
        if client.secrets.len() > MAX_SECRETS {
            return Err(Error::TooManySecrets(client.client_id));
        }
        let service_account = client
            .service_account
            .map(|account| {
                Ok::<_, Error>(RegisteredServiceAccount {
                    key: VerifyingKey::from_pem(&account.public_key_pem)?,
                    org_id: account.org_id,
                    technical_account_id: account.technical_account_id,
                    metascopes: account.metascopes,
                })
            })
            .transpose()?;
        let now = SystemTime::now();
        self.clients.insert(
            client.client_id,
            RegisteredClient {
                secrets: client.secrets.into_iter().map(|value| ClientSecret::new(value, now)).collect(),
                allowed_scopes: client.allowed_scopes,
                token_lifetime: client.token_lifetime,
                service_account,
                console: client.console,
                web_app: client.web_app,
            },
        );
        Ok(())
    }

    pub(crate) fn add_secret(&mut self, client_id: &str, secret: String) -> Result<(), Error> {
        let client = self.get_mut(client_id)?;
        if client.secrets.len() >= MAX_SECRETS {
            return Err(Error::TooManySecrets(client_id.to_owned()));
        }
        client.secrets.push(ClientSecret::new(Secret::new(secret), SystemTime::now()));
        Ok(())
    }

    /// Removing the last secret is allowed: the credential then authenticates nobody, like a
    /// credential whose secret was deleted in the console.
    pub(crate) fn remove_secret(&mut self, client_id: &str, secret: &str) -> Result<(), Error> {
        let client = self.get_mut(client_id)?;
        let before = client.secrets.len();
        client.secrets.retain(|known| known.value.expose() != secret);
        if client.secrets.len() == before {
            return Err(Error::UnknownSecret(client_id.to_owned()));
        }
        Ok(())
    }

    pub(crate) fn set_public_key(&mut self, client_id: &str, pem: &str) -> Result<(), Error> {
        let key = VerifyingKey::from_pem(pem)?;
        let client = self.get_mut(client_id)?;
        let account = client.service_account.as_mut().ok_or_else(|| Error::NotServiceAccount(client_id.to_owned()))?;
        account.key = key;
        Ok(())
    }

    pub(crate) fn set_token_lifetime(&mut self, client_id: &str, lifetime: Duration) -> Result<(), Error> {
        self.get_mut(client_id)?.token_lifetime = lifetime;
        Ok(())
    }

    fn get(&self, client_id: &str) -> Option<&RegisteredClient> {
        self.clients.get(client_id)
    }

    fn get_mut(&mut self, client_id: &str) -> Result<&mut RegisteredClient, Error> {
        self.clients.get_mut(client_id).ok_or_else(|| Error::UnknownClient(client_id.to_owned()))
    }
}

/// An RFC 6749 §5.2 error, the shape IMS uses for every refusal.
fn error_reply(status: StatusCode, error: &str, description: impl Into<String>) -> Reply {
    let description = description.into();
    Reply::rejected(status, error, json!({ "error": error, "error_description": description }))
}

/// Minting a JWT with an HMAC key cannot fail in practice; if it somehow does, answer like IMS
/// in trouble rather than panicking in a request handler.
fn internal_error() -> Reply {
    error_reply(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "Please try again later")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_two_secrets() {
        let mut clients = AdobeClients::default();
        let three = AdobeClient::new("c", "a").with_secret("b").with_secret("c");
        assert!(matches!(clients.register(three), Err(Error::TooManySecrets(_))));

        clients.register(AdobeClient::new("c", "a")).expect("one secret is fine");
        clients.add_secret("c", "b".into()).expect("second secret");
        assert!(matches!(clients.add_secret("c", "x".into()), Err(Error::TooManySecrets(_))));
        clients.remove_secret("c", "a").expect("known secret");
        assert!(matches!(clients.remove_secret("c", "a"), Err(Error::UnknownSecret(_))));
        assert!(matches!(clients.add_secret("nobody", "x".into()), Err(Error::UnknownClient(_))));
    }

    #[test]
    fn garbage_public_key_is_refused_at_registration() {
        let mut clients = AdobeClients::default();
        let client = AdobeClient::new("c", "s").with_service_account(ServiceAccount::new(
            "org@AdobeOrg",
            "tech@techacct.adobe.com",
            "not a pem",
        ));
        assert!(matches!(clients.register(client), Err(Error::InvalidPublicKey(_))));
    }

    #[test]
    fn public_key_needs_a_service_account() {
        let mut clients = AdobeClients::default();
        clients.register(AdobeClient::new("c", "s")).expect("plain client");
        // The PEM is checked first, so use one that parses: an SPKI RSA public key.
        let pem = "-----BEGIN PUBLIC KEY-----\n\
            MCAwDQYJKoZIhvcNAQEBBQADDwAwDAIFAMNQ1bECAwEAAQ==\n\
            -----END PUBLIC KEY-----\n";
        assert!(matches!(clients.set_public_key("c", pem), Err(Error::NotServiceAccount(_))));
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let client = AdobeClient::new("visible-id", "hidden-secret").with_secret("other-hidden");
        let shown = format!("{client:?}");
        assert!(shown.contains("visible-id"));
        assert!(!shown.contains("hidden"));
    }
}
