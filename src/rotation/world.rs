//! What the rotation procedure needs from outside it: Adobe (IMS and the I/O Management API),
//! the credential's namespace (its source Secret, the state Secret, the finalizer), the process's
//! memory and the clock. The controller implements it against the cluster and Adobe
//! (`controller::rotate`); the procedure's unit tests against a scripted stand-in, so every step
//! is tested without an API server.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;

use super::Memory;
use super::management::{Added, Checked, Listing};
use super::persisted::Procedure;
use super::state_secret::Stored;
use crate::error::Result;
use crate::secret_value::SecretValue;
use crate::source::OAuthClient;
use crate::token::MintedToken;

/// Why the procedure mints a token: the management API's token, or checking a new secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintFor {
    ManagementToken,
    Verify,
}

impl MintFor {
    /// The `request` label of the rotation request metric.
    pub fn as_str(self) -> &'static str {
        match self {
            MintFor::ManagementToken => "management_token",
            MintFor::Verify => "verify",
        }
    }
}

/// Where the rotated client secret lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceKeys {
    /// The source Secret's name.
    pub name: String,
    /// The key of the client secret in use.
    pub primary: String,
    /// The key the previous secret moves to.
    pub secondary: String,
}

/// The rotation's view of the world. Every call that changes something outside checks first
/// that this replica may still write (leadership); every remote call waits for its host's rate
/// limit and is counted.
pub trait World: Sync {
    /// The time now.
    fn now(&self) -> Timestamp;

    /// Runs `f` on what this process remembers of the credential's rotation.
    fn remember<R>(&self, f: impl FnOnce(&mut Memory) -> R) -> R;

    /// The OAuth client as the source Secret holds it now (its first secret is the one in
    /// use), and the revision of the credential's inputs.
    fn read_client(&self) -> impl Future<Output = Result<(OAuthClient, String)>> + Send;

    /// Fails when this operator may not update the source Secret (or it is immutable). An answer
    /// that cannot be had is no refusal: the write itself will tell.
    fn check_source_writable(&self) -> impl Future<Output = Result<()>> + Send;

    /// Puts `secret` first in the source Secret and the previous first one under the secondary
    /// key, conditioned on the version read; nothing when it is there already.
    fn write_source(&self, keys: &SourceKeys, secret: &SecretValue) -> impl Future<Output = Result<()>> + Send;

    /// The persisted procedure; `None` when there is no state Secret yet.
    fn load(&self) -> impl Future<Output = Result<Option<Stored>>> + Send;

    /// Persists the procedure, with the new secret when its step holds one.
    fn save(&self, procedure: &Procedure, new_secret: Option<&SecretValue>) -> impl Future<Output = Result<()>> + Send;

    /// Keeps the credential from going before its rotation is wound down (the finalizer).
    fn hold(&self) -> impl Future<Output = Result<()>> + Send;

    /// Lets the credential go (removes the finalizer, when it is there).
    fn release(&self) -> impl Future<Output = Result<()>> + Send;

    /// A client_credentials token with the management scopes, minted at IMS with `secret`.
    fn mint(
        &self,
        client_id: &str,
        secret: &SecretValue,
        purpose: MintFor,
    ) -> impl Future<Output = Result<MintedToken>> + Send;

    /// The credential's secrets, as the management API lists them.
    fn list(&self, client_id: &str, token: &SecretValue) -> impl Future<Output = Result<Listing>> + Send;

    /// Adds a secret; the answer is the only time its value is shown.
    fn add(
        &self,
        client_id: &str,
        token: &SecretValue,
        checked: &Checked,
    ) -> impl Future<Output = Result<Added>> + Send;

    /// Deletes a secret; `false` when it was gone already.
    fn delete(
        &self,
        client_id: &str,
        token: &SecretValue,
        uuid: &str,
        checked: &Checked,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Waits before trying a write again.
    fn pause(&self, wait: Duration) -> impl Future<Output = ()> + Send;

    /// A rotation ended: `completed` or `abandoned`.
    fn ended(&self, outcome: &'static str);
}
