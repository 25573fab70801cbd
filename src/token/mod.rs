//! Token clients: one module per flow, sharing one HTTP client, the host allowlist and the
//! parsing of token-endpoint errors.

mod ims;
mod response;

use std::time::Duration;

use jiff::Timestamp;
use reqwest::Url;

use crate::error::{Error, Result};
use crate::source::{FlowInputs, SecretValue};

/// A freshly minted access token.
#[derive(Debug, Clone)]
pub struct MintedToken {
    pub access_token: SecretValue,
    pub token_type: String,
    /// When the request was sent: the token cannot have been issued earlier.
    pub issued_at: Timestamp,
    /// `issued_at + expires_in` in the flow's unit: expiry is never later than the server's.
    pub expires_at: Timestamp,
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

/// Mints tokens for every flow.
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

    /// Mints one token. Never retries: scheduling and backoff belong to the reconciler.
    pub async fn mint(&self, inputs: &FlowInputs) -> Result<MintedToken> {
        match inputs {
            FlowInputs::OAuthServerToServer(i) => {
                let url = self.checked_url(&i.ims_endpoint, "/ims/token/v3")?;
                ims::client_credentials(&self.http, url, i).await
            }
        }
    }

    /// Joins `base` and `path`, and refuses anything but https to an allowed host.
    fn checked_url(&self, base: &str, path: &str) -> Result<Url> {
        let invalid = |reason: &str| Error::InvalidTokenEndpoint { url: base.to_owned(), reason: reason.to_owned() };
        let url = Url::parse(&format!("{}{path}", base.trim_end_matches('/'))).map_err(|e| invalid(&e.to_string()))?;
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
}
