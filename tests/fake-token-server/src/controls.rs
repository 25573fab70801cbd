//! The methods a test uses to set up, disturb and observe a running server.

use std::time::{Duration, SystemTime};

use crate::{
    AdobeClient, ClientSecretInfo, Error, FakeTokenServer, Fault, FaultId,
    log::{EndpointKind, Outcome, RequestRecord},
};

impl FakeTokenServer {
    /// The `{ims}` base that JWT audiences (`{ims}/c/{client_id}`) and metascope claims
    /// (`{ims}/s/{metascope}`) must use. Defaults to [`url`](Self::url).
    pub fn issuer_base_url(&self) -> String {
        self.state.registry().issuer_base_url.clone()
    }

    /// Changes the `{ims}` base, e.g. to `https://ims-na1.adobelogin.com` when the client under
    /// test derives the audience from a fixed host. A trailing slash is ignored.
    pub fn set_issuer_base_url(&self, url: impl Into<String>) {
        let url = url.into();
        self.state.registry().issuer_base_url = url.trim_end_matches('/').to_owned();
    }

    /// Registers an Adobe credential, replacing one with the same client id.
    ///
    /// Fails with more than two secrets or an unusable public key.
    pub fn register_adobe_client(&self, client: AdobeClient) -> Result<(), Error> {
        self.state.registry().adobe.register(client)
    }

    /// Adds a client secret, as rotation does before the old one is removed. Fails if the client
    /// already has two.
    pub fn add_adobe_client_secret(&self, client_id: &str, secret: impl Into<String>) -> Result<(), Error> {
        self.state.registry().adobe.add_secret(client_id, secret.into())
    }

    /// Removes a client secret; requests using it fail with `invalid_client` from then on.
    pub fn remove_adobe_client_secret(&self, client_id: &str, secret: &str) -> Result<(), Error> {
        self.state.registry().adobe.remove_secret(client_id, secret)
    }

    /// Replaces the public key (or certificate) of a service account, as when its certificate
    /// is rotated; JWTs signed with the old key fail with `invalid_signature` from then on.
    pub fn set_adobe_public_key(&self, client_id: &str, public_key_pem: &str) -> Result<(), Error> {
        self.state.registry().adobe.set_public_key(client_id, public_key_pem)
    }

    /// Changes the lifetime of tokens issued to this client from now on.
    pub fn set_adobe_token_lifetime(&self, client_id: &str, lifetime: Duration) -> Result<(), Error> {
        self.state.registry().adobe.set_token_lifetime(client_id, lifetime)
    }

    /// The Adobe user that `/ims/authorize/v2` signs in and consents for from now on (by
    /// default `test-user@AdobeID`).
    pub fn set_signed_in_user(&self, user: impl Into<String>) {
        self.state.registry().adobe.users.signed_in_user = user.into();
    }

    /// The user withdraws consent for this client (account.adobe.com → Connected applications):
    /// all their refresh tokens for it die, and refreshing fails with `invalid_grant`. Returns
    /// how many live refresh tokens died. A new authorization consents again.
    pub fn revoke_user_consent(&self, client_id: &str, user: &str) -> usize {
        self.state.registry().adobe.users.revoke(client_id, user)
    }

    /// How many refresh tokens this client was issued for this user (the chain's length: one
    /// per code exchange or successful refresh).
    pub fn refresh_tokens_issued(&self, client_id: &str, user: &str) -> usize {
        self.state.registry().adobe.users.issued_refresh_tokens(client_id, user)
    }

    /// How many of this client's refresh tokens are still usable; with rotation, one per live
    /// authorization.
    pub fn live_refresh_tokens(&self, client_id: &str) -> usize {
        self.state.registry().adobe.users.live_refresh_tokens(client_id)
    }

    /// Adds or removes the I/O Management API from the client's project; without it the API
    /// answers 403.
    pub fn set_management_api_in_project(&self, client_id: &str, in_project: bool) -> Result<(), Error> {
        self.state.registry().adobe.set_api_in_project(client_id, in_project)
    }

    /// How long a secret added through the I/O Management API takes before IMS accepts it.
    pub fn set_secret_activation_delay(&self, client_id: &str, delay: Duration) -> Result<(), Error> {
        self.state.registry().adobe.set_activation_delay(client_id, delay)
    }

    /// Backdates (or postdates) a secret's creation, e.g. to make it older than a rotation
    /// period.
    pub fn set_client_secret_created_at(&self, client_id: &str, uuid: &str, at: SystemTime) -> Result<(), Error> {
        self.state.registry().adobe.set_secret_created_at(client_id, uuid, at)
    }

    /// The client's secrets as the I/O Management API lists them, oldest first.
    pub fn client_secrets(&self, client_id: &str) -> Vec<ClientSecretInfo> {
        self.state.registry().adobe.secret_infos(client_id)
    }

    /// The uuid of the client's secret with this value, if the client has it.
    pub fn client_secret_uuid(&self, client_id: &str, value: &str) -> Option<String> {
        self.state.registry().adobe.uuid_of(client_id, value)
    }

    /// The values of every secret the I/O Management API created for the client, also deleted
    /// ones, oldest first (for leak checks).
    pub fn created_client_secrets(&self, client_id: &str) -> Vec<String> {
        self.state.registry().adobe.created_secret_values(client_id)
    }

    /// Answers the I/O Management API's POST and DELETE with 200, as Adobe's API description
    /// lists them, instead of the 201 and 204 its guides show.
    pub fn answer_management_with_200(&self, answer_200: bool) {
        self.state.registry().adobe.management.answer_200 = answer_200;
    }

    /// Registers an Akeneo API connection, or replaces its secret.
    pub fn register_akeneo_client(&self, client_id: impl Into<String>, secret: impl Into<String>) {
        self.state.registry().akeneo.register_client(client_id.into(), secret.into());
    }

    /// Registers an Akeneo user, or replaces their password.
    pub fn register_akeneo_user(&self, username: impl Into<String>, password: impl Into<String>) {
        self.state.registry().akeneo.register_user(username.into(), password.into());
    }

    /// Lifetime of Akeneo access tokens issued from now on (default: 1 hour).
    pub fn set_akeneo_access_token_lifetime(&self, lifetime: Duration) {
        self.state.registry().akeneo.access_token_lifetime = lifetime;
    }

    /// Lifetime of Akeneo refresh tokens issued from now on (default: 14 days).
    pub fn set_akeneo_refresh_token_lifetime(&self, lifetime: Duration) {
        self.state.registry().akeneo.refresh_token_lifetime = lifetime;
    }

    /// Invalidates every Akeneo refresh token, so that clients must use the password grant.
    pub fn revoke_akeneo_refresh_tokens(&self) {
        self.state.registry().akeneo.revoke_refresh_tokens();
    }

    /// Starts applying a fault. Faults apply in the order they were injected: the first that
    /// matches a request is used.
    pub fn inject_fault(&self, fault: Fault) -> FaultId {
        self.state.registry().faults.insert(fault)
    }

    /// Stops applying a fault; `false` if it was already gone (e.g. used up).
    pub fn clear_fault(&self, id: FaultId) -> bool {
        self.state.registry().faults.remove(id)
    }

    /// Stops applying every fault.
    pub fn clear_faults(&self) {
        self.state.registry().faults.clear();
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.registry().log().to_vec()
    }

    /// The requests that claimed this client id, oldest first.
    pub fn requests_for(&self, client_id: &str) -> Vec<RequestRecord> {
        self.state
            .registry()
            .log()
            .iter()
            .filter(|record| record.client_id.as_deref() == Some(client_id))
            .cloned()
            .collect()
    }

    /// How many access tokens were issued to this client.
    pub fn mint_count(&self, client_id: &str) -> usize {
        count_mints(self.state.registry().log(), client_id)
    }

    /// The access tokens issued to this client, oldest first.
    pub fn issued_tokens(&self, client_id: &str) -> Vec<String> {
        self.state.registry().issued_tokens(client_id).map(|token| token.expose().to_owned()).collect()
    }

    /// Waits until at least `count` tokens have been issued to this client in total.
    pub async fn wait_for_mints(&self, client_id: &str, count: usize, timeout: Duration) -> Result<(), Error> {
        self.state
            .wait_for("minted tokens", client_id, count, timeout, |registry| count_mints(registry.log(), client_id))
            .await
    }

    /// Waits until at least `count` requests claiming this client id have arrived, including
    /// ones still being answered (delayed or hanging): the point to act on a request in flight.
    pub async fn wait_for_arrivals(&self, client_id: &str, count: usize, timeout: Duration) -> Result<(), Error> {
        self.state
            .wait_for("arrived requests", client_id, count, timeout, |registry| registry.arrivals(client_id))
            .await
    }

    /// Waits until at least `count` requests to `endpoint` claiming this client id have arrived,
    /// including ones still being answered.
    pub async fn wait_for_endpoint_arrivals(
        &self,
        endpoint: EndpointKind,
        client_id: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.state
            .wait_for("arrived requests at the endpoint", client_id, count, timeout, |registry| {
                registry.endpoint_arrivals(endpoint, client_id)
            })
            .await
    }

    /// The requests to `endpoint` that claimed this client id, oldest first.
    pub fn requests_to(&self, endpoint: EndpointKind, client_id: &str) -> Vec<RequestRecord> {
        self.requests_for(client_id).into_iter().filter(|record| record.endpoint == endpoint).collect()
    }

    /// Waits until at least `count` requests (of any outcome) have claimed this client id and
    /// been answered.
    pub async fn wait_for_requests(&self, client_id: &str, count: usize, timeout: Duration) -> Result<(), Error> {
        self.state
            .wait_for("requests", client_id, count, timeout, |registry| {
                registry.log().iter().filter(|record| record.client_id.as_deref() == Some(client_id)).count()
            })
            .await
    }
}

fn count_mints(log: &[RequestRecord], client_id: &str) -> usize {
    log.iter()
        .filter(|record| record.outcome == Outcome::Issued && record.client_id.as_deref() == Some(client_id))
        .count()
}
