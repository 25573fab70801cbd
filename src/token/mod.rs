//! What every flow's token request shares: one HTTP client, the host allowlist, the fallback to
//! a second client secret and the parsing of token-endpoint responses. The requests themselves
//! live with their flows (`crate::flows`).

pub mod ims;
pub mod response;

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::Url;

use crate::error::{Error, Result};
use crate::secret_value::SecretValue;
use crate::source::OAuthClient;

/// A freshly minted access token.
#[derive(Debug, Clone)]
pub struct MintedToken {
    pub access_token: SecretValue,
    pub token_type: String,
    /// When the request was sent: the token cannot have been issued earlier.
    pub issued_at: Timestamp,
    /// `issued_at + expires_in` in the flow's unit: expiry is never later than the server's.
    pub expires_at: Timestamp,
    /// Refresh token of flows that issue one (Akeneo); the next mint should use it.
    pub refresh_token: Option<SecretValue>,
    /// Key (in the source Secret) of the client secret the endpoint accepted.
    pub client_secret_key: String,
}

/// Host patterns token requests may go to: exact host names, or `*.example.com` for any
/// subdomain. Guards against a resource pointing the operator at an internal service (SSRF).
#[derive(Debug, Clone)]
pub struct HostAllowlist(Vec<String>);

impl HostAllowlist {
    pub fn new(patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self(patterns.into_iter().map(|p| p.into().to_ascii_lowercase()).collect())
    }

    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.0.iter().any(|pattern| match pattern.strip_prefix("*.") {
            Some(domain) => host.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            None => *pattern == host,
        })
    }
}

/// Settings of the HTTP client that talks to token endpoints.
#[derive(Debug, Clone)]
pub struct TokenClientConfig {
    pub allowed_hosts: HostAllowlist,
    /// PEM bundle of extra CA certificates trusted besides the built-in roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    pub request_timeout: Duration,
}

/// Sends the token requests of every flow.
#[derive(Clone)]
pub struct TokenClient {
    http: reqwest::Client,
    allowed_hosts: HostAllowlist,
}

impl TokenClient {
    pub fn new(config: TokenClientConfig) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(true)
            // A redirect could lead past the host allowlist.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5).min(config.request_timeout))
            .timeout(config.request_timeout)
            .user_agent(concat!("adobe-credential-operator/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.extra_ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self { http: builder.build()?, allowed_hosts: config.allowed_hosts })
    }

    /// The HTTP client of token requests (https only, no redirects, bounded time).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Joins `base` and `path`, and refuses anything but https to an allowed host.
    pub fn checked_url(&self, base: &str, path: &str) -> Result<Url> {
        let invalid = |reason: &str| Error::InvalidTokenEndpoint { url: base.to_owned(), reason: reason.to_owned() };
        let joined = if path.is_empty() { base.to_owned() } else { format!("{}{path}", base.trim_end_matches('/')) };
        let url = Url::parse(&joined).map_err(|e| invalid(&e.to_string()))?;
        if url.scheme() != "https" {
            return Err(invalid("only https is allowed"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("credentials in the URL are not allowed"));
        }
        let host = url.host_str().ok_or_else(|| invalid("no host"))?;
        if !self.allowed_hosts.allows(host) {
            return Err(Error::TokenHostNotAllowed { host: host.to_owned() });
        }
        Ok(url)
    }
}

/// Tries the client's secrets in order while the endpoint answers `invalid_client`: during a
/// rotation the source Secret may hold the new secret next to the old one.
pub async fn with_each_secret<'a, F, Fut>(client: &'a OAuthClient, mut attempt: F) -> Result<MintedToken>
where
    F: FnMut(&'a SecretValue) -> Fut,
    Fut: Future<Output = Result<MintedToken>>,
{
    let mut outcome = Err(Error::NoFlow);
    for (key, secret) in &client.secrets {
        outcome = attempt(secret).await.map(|mut token| {
            token.client_secret_key = key.clone();
            token
        });
        if !matches!(outcome, Err(Error::InvalidClient { .. })) {
            break;
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_exact_hosts_and_subdomains_only() {
        let list = HostAllowlist::new(["*.adobelogin.com", "127.0.0.1"]);
        assert!(list.allows("ims-na1.adobelogin.com"));
        assert!(list.allows("IMS-NA1.AdobeLogin.com"));
        assert!(list.allows("127.0.0.1"));
        assert!(!list.allows("adobelogin.com"));
        assert!(!list.allows("evil-adobelogin.com"));
        assert!(!list.allows("adobelogin.com.evil.io"));
        assert!(!list.allows("169.254.169.254"));
    }

    #[test]
    fn urls_must_be_https_to_allowed_hosts() {
        let client = TokenClient::new(TokenClientConfig {
            allowed_hosts: HostAllowlist::new(["*.adobelogin.com"]),
            extra_ca_pem: None,
            request_timeout: Duration::from_secs(5),
        })
        .expect("client");
        let ok = client.checked_url("https://ims-na1.adobelogin.com/", "/ims/token/v3").expect("allowed");
        assert_eq!(ok.as_str(), "https://ims-na1.adobelogin.com/ims/token/v3");
        let err = client.checked_url("https://metadata.internal", "/ims/token/v3").unwrap_err();
        assert_eq!(err.reason(), "TokenHostNotAllowed");
        let err = client.checked_url("http://ims-na1.adobelogin.com", "/ims/token/v3").unwrap_err();
        assert_eq!(err.reason(), "InvalidTokenEndpoint");
        let err = client.checked_url("https://u:p@ims-na1.adobelogin.com", "/x").unwrap_err();
        assert_eq!(err.reason(), "InvalidTokenEndpoint");
    }

    fn minted() -> MintedToken {
        MintedToken {
            access_token: SecretValue::new("t"),
            token_type: "bearer".into(),
            issued_at: Timestamp::UNIX_EPOCH,
            expires_at: Timestamp::UNIX_EPOCH,
            refresh_token: None,
            client_secret_key: String::new(),
        }
    }

    #[tokio::test]
    async fn second_secret_is_tried_only_after_invalid_client() {
        let client = OAuthClient {
            client_id: "c".into(),
            secrets: vec![("old".into(), SecretValue::new("s1")), ("new".into(), SecretValue::new("s2"))],
            notes: vec![],
        };
        let token = with_each_secret(&client, |secret| async move {
            match secret.expose() {
                "s1" => {
                    Err(Error::InvalidClient { description: "invalid client_secret parameter".into(), debug_id: None })
                }
                _ => Ok(minted()),
            }
        })
        .await
        .expect("second secret works");
        assert_eq!(token.client_secret_key, "new");

        let mut attempts = 0;
        let err = with_each_secret(&client, |_| {
            attempts += 1;
            async { Err(Error::TokenEndpointUnavailable { detail: "down".into(), retry_after: None, debug_id: None }) }
        })
        .await
        .unwrap_err();
        assert_eq!(err.reason(), "TokenEndpointUnavailable");
        assert_eq!(attempts, 1, "an outage is not a reason to try another secret");
    }
}
