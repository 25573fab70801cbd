//! Everything a running server knows, shared between the request handlers and the test's handle.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::EncodingKey;
use rand::Rng;
use tokio::sync::watch;

use crate::{
    Error,
    adobe::AdobeClients,
    akeneo::AkeneoAccounts,
    faults::FaultQueue,
    log::{EndpointKind, RequestRecord},
};

/// A credential or token. Its `Debug` output is redacted so that no derived `Debug` of the state
/// can leak it into test output or logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// A fresh random value, usable as an opaque token.
    pub(crate) fn random() -> Self {
        let mut bytes = [0_u8; 48];
        rand::rng().fill(&mut bytes[..]);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What an Adobe access token allows when presented as `Authorization: Bearer` to the I/O
/// Management API.
#[derive(Debug, Clone)]
pub(crate) struct Bearer {
    pub(crate) client_id: String,
    pub(crate) scopes: BTreeSet<String>,
    pub(crate) expires_at: SystemTime,
}

/// The mutable state, behind one lock so that every request sees a consistent picture.
#[derive(Debug)]
pub(crate) struct Registry {
    /// `{ims}` in JWT audiences and metascope claim names, without a trailing slash.
    pub(crate) issuer_base_url: String,
    pub(crate) adobe: AdobeClients,
    pub(crate) akeneo: AkeneoAccounts,
    pub(crate) faults: FaultQueue,
    log: Vec<RequestRecord>,
    issued_tokens: HashMap<String, Vec<Secret>>,
    /// Requests per client id counted on arrival, before any delay or hang: the log only has a
    /// request once it is answered, so tests that act while a request is in flight wait on this.
    arrivals: HashMap<String, usize>,
    /// The same, per endpoint.
    endpoint_arrivals: HashMap<(EndpointKind, String), usize>,
    /// Adobe access tokens issued by the client credentials endpoint, for the I/O Management API.
    bearers: HashMap<Secret, Bearer>,
}

impl Registry {
    pub(crate) fn log(&self) -> &[RequestRecord] {
        &self.log
    }

    pub(crate) fn issued_tokens(&self, client_id: &str) -> impl Iterator<Item = &Secret> {
        self.issued_tokens.get(client_id).into_iter().flatten()
    }

    pub(crate) fn arrivals(&self, client_id: &str) -> usize {
        self.arrivals.get(client_id).copied().unwrap_or(0)
    }

    pub(crate) fn endpoint_arrivals(&self, endpoint: EndpointKind, client_id: &str) -> usize {
        self.endpoint_arrivals.get(&(endpoint, client_id.to_owned())).copied().unwrap_or(0)
    }

    /// What a bearer token allows, if this server issued it and it has not expired.
    pub(crate) fn bearer(&self, token: &str, now: SystemTime) -> Option<&Bearer> {
        self.bearers.get(&Secret::new(token)).filter(|bearer| now < bearer.expires_at)
    }
}

pub(crate) struct ServerState {
    registry: Mutex<Registry>,
    /// Bumped on every arrival and new log entry so that waiters re-check their condition.
    log_version: watch::Sender<u64>,
    /// Signs the access tokens (HS256). Nobody verifies them, but they must be well-formed JWTs.
    pub(crate) access_token_key: EncodingKey,
}

impl fmt::Debug for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerState").field("registry", &*self.registry()).finish_non_exhaustive()
    }
}

impl ServerState {
    pub(crate) fn new(issuer_base_url: String) -> Self {
        let mut signing_secret = [0_u8; 32];
        rand::rng().fill(&mut signing_secret[..]);
        Self {
            registry: Mutex::new(Registry {
                issuer_base_url,
                adobe: AdobeClients::default(),
                akeneo: AkeneoAccounts::default(),
                faults: FaultQueue::default(),
                log: Vec::new(),
                issued_tokens: HashMap::new(),
                arrivals: HashMap::new(),
                endpoint_arrivals: HashMap::new(),
                bearers: HashMap::new(),
            }),
            log_version: watch::Sender::new(0),
            access_token_key: EncodingKey::from_secret(&signing_secret),
        }
    }

    /// The registry. A panic while it was locked (only possible in a test's own closure) leaves
    /// it consistent enough for a fake, so poisoning is ignored rather than cascading.
    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request that has just arrived and wakes the waiters.
    pub(crate) fn arrived(&self, endpoint: EndpointKind, client_id: Option<&str>) {
        if let Some(client_id) = client_id {
            {
                let mut registry = self.registry();
                *registry.arrivals.entry(client_id.to_owned()).or_default() += 1;
                *registry.endpoint_arrivals.entry((endpoint, client_id.to_owned())).or_default() += 1;
            }
            self.log_version.send_modify(|version| *version += 1);
        }
    }

    /// Appends to the request log and remembers the issued access token (and what it allows at
    /// the I/O Management API), in one step so that a waiter woken by the log entry also sees
    /// the token.
    pub(crate) fn record(&self, record: RequestRecord, access_token: Option<Secret>, bearer: Option<Bearer>) {
        tracing::info!(
            endpoint = ?record.endpoint,
            path = %record.path,
            client_id = record.client_id.as_deref().unwrap_or("-"),
            grant_type = record.grant_type.as_deref().unwrap_or("-"),
            scope = record.scope.as_deref().unwrap_or("-"),
            status = record.status.map(|status| status.as_u16()),
            outcome = ?record.outcome,
            fault = ?record.fault,
            debug_id = record.debug_id.as_deref().unwrap_or("-"),
            // The client secret by its uuid (the field name avoids the word tests grep for).
            uuid = record.secret_uuid.as_deref().unwrap_or("-"),
            "token request"
        );
        {
            let mut registry = self.registry();
            if let (Some(token), Some(bearer)) = (&access_token, bearer) {
                let now = SystemTime::now();
                registry.bearers.retain(|_, known| now < known.expires_at);
                registry.bearers.insert(token.clone(), bearer);
            }
            if let (Some(token), Some(client_id)) = (access_token, &record.client_id) {
                registry.issued_tokens.entry(client_id.clone()).or_default().push(token);
            }
            registry.log.push(record);
        }
        self.log_version.send_modify(|version| *version += 1);
    }

    /// Waits until `count` (evaluated on the log) reaches `wanted` or `timeout` passes.
    pub(crate) async fn wait_for(
        &self,
        what: &'static str,
        client_id: &str,
        wanted: usize,
        timeout: Duration,
        count: impl Fn(&Registry) -> usize,
    ) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribing before the first check means no log entry can slip in between.
        let mut changes = self.log_version.subscribe();
        loop {
            let seen = count(&self.registry());
            if seen >= wanted {
                return Ok(());
            }
            let timed_out = tokio::time::timeout_at(deadline, changes.changed()).await.is_err();
            if timed_out {
                return Err(Error::Timeout { what, client_id: client_id.to_owned(), wanted, seen, timeout });
            }
        }
    }
}
