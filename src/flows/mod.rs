//! Token flows as plug-ins. Each flow is one module that owns everything particular to it: how
//! its spec block reads the source Secrets, which inputs its revision covers, the token request
//! and its response, whether it chains refresh tokens, and what it reports besides Ready (a
//! vendor's deprecation). The reconciler, status and target code see only [`FlowSpec`] and
//! [`Flow`]; adding a flow means a block in `crd.rs`, a module here, and a line in [`of`].

mod password_grant;
mod server_to_server;
mod service_account_jwt;
pub mod web_app;

use std::fmt;

use futures::future::BoxFuture;
use jiff::SignedDuration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use sha2::{Digest, Sha256};

use crate::crd::{AdobeCredential, AdobeCredentialSpec, ClientSecretRef, ClientSecretRotation};
use crate::error::{Error, Result};
use crate::names::Reason;
use crate::secret_value::{SecretValue, hex};
use crate::source::{CredentialName, OAuthClient, SecretReader};
use crate::token::{MintedToken, TokenClient};

pub use password_grant::PasswordGrantInputs;
pub use server_to_server::ServerToServerInputs;
pub use service_account_jwt::ServiceAccountJwtInputs;
pub use web_app::WebAppInputs;

/// A flow block of the spec, before its Secrets are read.
pub trait FlowSpec: Sync {
    /// Name of the flow block, as in the spec and in `status.flow`.
    fn name(&self) -> &'static str;

    /// Names of the Secrets the flow reads, all in the resource's namespace.
    fn source_secrets(&self) -> Vec<&str>;

    /// Reads the source Secrets and resolves the inputs of a mint.
    fn resolve<'a>(&'a self, reader: &'a mut SecretReader<'_>) -> BoxFuture<'a, Result<Box<dyn Flow>>>;

    /// A condition `Deprecated` the flow always carries, if its vendor retired it.
    fn deprecation(&self) -> Option<Deprecation> {
        None
    }

    /// Whether one mint spends an input the operator needs afterwards (a refresh token the
    /// server rotates on use): `check` then refuses to mint.
    fn mint_spends_inputs(&self) -> bool {
        false
    }

    /// For flows whose client secret the operator can rotate (Adobe's I/O Management API manages
    /// it), when the spec asks for it: what the rotation needs. None for other flows.
    fn client_secret_rotation(&self) -> Option<Rotatable<'_>> {
        None
    }
}

/// A client secret rotation a flow block asks for.
#[derive(Debug, Clone, Copy)]
pub struct Rotatable<'a> {
    pub rotation: &'a ClientSecretRotation,
    /// The source Secret whose client secret is rotated.
    pub client_secret_ref: &'a ClientSecretRef,
    /// Where tokens for the I/O Management API are minted with the client credentials.
    pub ims_endpoint: &'a str,
}

/// Why a flow is deprecated and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deprecation {
    pub reason: Reason,
    pub message: &'static str,
}

/// The resolved inputs of one mint, and the request that mints with them.
pub trait Flow: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;

    fn client(&self) -> &OAuthClient;

    /// URL of the token endpoint (the per-host rate limit applies to its host).
    fn endpoint(&self) -> &str;

    /// Organization ID written to the target Secret, for flows that have one.
    fn org_id(&self) -> Option<&str> {
        None
    }

    /// Feeds every input besides the client to the revision hash, in a fixed order.
    fn hash_inputs(&self, field: &mut dyn FnMut(&str));

    /// For flows whose every token response carries the refresh token to use next: how long a
    /// persisted refresh token stays usable. Such flows keep it in operator-owned state.
    fn refresh_token_lifetime(&self) -> Option<SignedDuration> {
        None
    }

    /// For flows whose chain the endpoint can refuse for good (a user's revoked consent): what to
    /// report instead of asking again, once the refusal is persisted. None for other flows.
    fn refused_chain(&self) -> Option<Error> {
        None
    }

    /// One token request (each client secret in turn while the endpoint rejects the client).
    /// Never retries: scheduling and backoff belong to the reconciler.
    fn mint<'a>(
        &'a self,
        tokens: &'a TokenClient,
        refresh_token: Option<&'a SecretValue>,
    ) -> BoxFuture<'a, Result<MintedToken>>;

    /// Client ID written to the target Secret (Adobe APIs want it as `x-api-key`).
    fn client_id(&self) -> &str {
        &self.client().client_id
    }

    /// `sha256:<hex>` over every input of the mint. The inputs always include a high-entropy
    /// client secret, so the hash reveals nothing about any of them.
    fn revision(&self) -> String {
        digest(|field| {
            field(self.name());
            let client = self.client();
            field(&client.client_id);
            for (key, secret) in &client.secrets {
                field(key);
                field(secret.expose());
            }
            self.hash_inputs(field);
        })
    }

    /// The inputs a persisted refresh-token chain belongs to: when they change, the chain starts
    /// over from the flow's first grant. By default every input of the mint.
    fn chain_revision(&self) -> String {
        self.revision()
    }
}

/// `sha256:<hex>` over the fields `feed` passes, each length-prefixed so that ("ab","c") and
/// ("a","bc") hash differently.
pub(crate) fn digest(feed: impl FnOnce(&mut dyn FnMut(&str))) -> String {
    let mut hasher = Sha256::new();
    feed(&mut |value: &str| {
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
    });
    format!("sha256:{}", hex(&hasher.finalize()))
}

/// The flow block a spec sets. The CRD's CEL rule admits exactly one.
pub fn of(spec: &AdobeCredentialSpec) -> Option<&dyn FlowSpec> {
    let blocks: [Option<&dyn FlowSpec>; 4] = [
        spec.oauth_server_to_server.as_ref().map(|f| f as &dyn FlowSpec),
        spec.service_account_jwt.as_ref().map(|f| f as &dyn FlowSpec),
        spec.password_grant.as_ref().map(|f| f as &dyn FlowSpec),
        spec.oauth_web_app.as_ref().map(|f| f as &dyn FlowSpec),
    ];
    blocks.into_iter().flatten().next()
}

/// The client secret rotation the spec's flow asks for, if it does and can.
pub fn rotation_of(spec: &AdobeCredentialSpec) -> Option<Rotatable<'_>> {
    of(spec)?.client_secret_rotation()
}

/// Names of the Secrets a resource reads its inputs from (all in its own namespace).
pub fn source_secret_names(cred: &AdobeCredential) -> Vec<String> {
    of(&cred.spec).map(|flow| flow.source_secrets().into_iter().map(str::to_owned).collect()).unwrap_or_default()
}

/// Reads the referenced Secrets and resolves the flow's inputs.
pub async fn resolve(secrets: &Api<Secret>, cred: &AdobeCredential) -> Result<Box<dyn Flow>> {
    let flow = of(&cred.spec).ok_or(Error::NoFlow)?;
    flow.resolve(&mut SecretReader::new(secrets, CredentialName::of(cred))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(secret: &str) -> ServerToServerInputs {
        ServerToServerInputs {
            ims_endpoint: "https://ims-na1.adobelogin.com".into(),
            client: OAuthClient {
                client_id: "abc".into(),
                secrets: vec![("client_secret".into(), SecretValue::new(secret))],
                notes: vec![],
            },
            scopes: vec!["openid".into(), "AdobeID".into()],
            org_id: None,
        }
    }

    #[test]
    fn revision_changes_with_every_input_and_hides_the_secret() {
        let a = inputs("p8e-secret-one").revision();
        assert_eq!(a, inputs("p8e-secret-one").revision());
        assert_ne!(a, inputs("p8e-secret-two").revision());
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64);
        assert!(!a.contains("p8e-secret-one"));
    }

    #[test]
    fn revision_is_stable_across_releases() {
        // Tokens in target Secrets carry this hash: a new formula would re-mint every token on
        // upgrade. Recorded from the release before flows became modules.
        assert_eq!(
            inputs("p8e-secret-one").revision(),
            "sha256:f14ae38cbe199b457c2e6f9be799200585a5c4aa0e6e3610788bac5616df8f9c"
        );
        let client = OAuthClient {
            client_id: "cid".into(),
            secrets: vec![("client_secret".into(), SecretValue::new("p8e-s"))],
            notes: vec![],
        };
        let jwt = ServiceAccountJwtInputs {
            ims_endpoint: "https://ims-na1.adobelogin.com".into(),
            client: client.clone(),
            private_key_pem: SecretValue::new("PEM"),
            private_key_location: "loc".into(),
            org_id: "ORG@AdobeOrg".into(),
            technical_account_id: "TA".into(),
            metascopes: vec!["ent_a".into(), "ent_b".into()],
        };
        assert_eq!(jwt.revision(), "sha256:fcb0bde0d0e14f272c723b5f79a8bcead06717a2f6d079c17a126995531ff917");
        let password = PasswordGrantInputs {
            token_url: "https://pim.example.com/api/oauth/v1/token".into(),
            client,
            username: "u".into(),
            password: SecretValue::new("pw"),
        };
        assert_eq!(password.revision(), "sha256:05ec45f2f03b955832dd392864cada7f50ec5396bb9740b9df941c4a63d9a574");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let printed = format!("{:?}", inputs("p8e-very-secret"));
        assert!(!printed.contains("p8e-very-secret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn a_spec_without_a_flow_block_has_no_flow() {
        assert!(of(&AdobeCredentialSpec::default()).is_none());
    }
}
