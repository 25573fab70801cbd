//! The reconciler: keeps one valid token per AdobeCredential in its target Secret.
//!
//! - [`watch`] wires the streams: the AdobeCredential watch, a metadata-only watch of Secrets
//!   mapped back to the credentials that read or write them, readiness and shutdown.
//! - [`state`] is what the operator remembers per credential between reconciles.
//! - [`provide`] reads the facts, takes the decision (`crate::decision`) and acts on it: mint,
//!   write, restore.
//! - [`report`] turns every outcome into status, Events, metrics and log lines.
//!
//! Every decision is taken from persisted facts (the target Secret's annotations, status), so a
//! restarted operator neither loses nor re-mints tokens.

mod cluster;
mod finalizer;
mod provide;
mod report;
mod rotate;
mod state;
mod watch;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch as signal;
use tracing::{debug, instrument};

use crate::crd::AdobeCredential;
use crate::error::{Error, Result};
use crate::health::Health;
use crate::index::SecretIndex;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::rate_limit::HostRateLimiter;
use crate::schedule::RenewalPolicy;
use crate::token::TokenClient;
use state::{CredentialState, States};

pub use watch::run;

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub tokens: TokenClient,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Whether this replica may mint and write now (always, without leader election).
    pub leadership: Arc<Leadership>,
    rate_limiter: HostRateLimiter,
    recorder: Recorder,
    index: Mutex<SecretIndex>,
    states: States,
    shutdown: signal::Receiver<bool>,
    min_mint_interval: Duration,
    shutdown_timeout: Duration,
    cluster_namespace: Option<String>,
    /// Credentials being reconciled right now (named when a shutdown deadline passes).
    in_flight: Mutex<HashSet<String>>,
    rotation: RotationConfig,
}

/// Client secret rotation settings of the process.
#[derive(Debug, Clone, Copy)]
pub struct RotationConfig {
    /// Whether credentials may rotate their client secret (the operator then writes source
    /// Secrets).
    pub enabled: bool,
    /// How long a new secret may take before IMS accepts it.
    pub verify_timeout: Duration,
}

/// Everything the controller needs from the process.
pub struct ContextParts {
    pub client: Client,
    pub tokens: TokenClient,
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub leadership: Arc<Leadership>,
    pub rate_limiter: HostRateLimiter,
    /// Turns true when the process is asked to stop.
    pub shutdown: signal::Receiver<bool>,
    /// Least time between two mints for unchanged inputs (see `schedule::mint_floor`).
    pub min_mint_interval: Duration,
    /// How long a shutdown waits for in-flight reconciles.
    pub shutdown_timeout: Duration,
    /// Where ClusterAdobeCredentials keep their source Secrets and minters; without it they are
    /// not served.
    pub cluster_namespace: Option<String>,
    pub rotation: RotationConfig,
}

impl Context {
    pub fn new(parts: ContextParts) -> Arc<Self> {
        Arc::new(Self {
            recorder: Recorder::new(parts.client.clone(), parts.reporter),
            client: parts.client,
            tokens: parts.tokens,
            metrics: parts.metrics,
            health: parts.health,
            leadership: parts.leadership,
            rate_limiter: parts.rate_limiter,
            index: Mutex::default(),
            states: States::default(),
            shutdown: parts.shutdown,
            min_mint_interval: parts.min_mint_interval,
            shutdown_timeout: parts.shutdown_timeout,
            cluster_namespace: parts.cluster_namespace,
            in_flight: Mutex::default(),
            rotation: parts.rotation,
        })
    }

    fn index(&self) -> MutexGuard<'_, SecretIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the end of a reconcile: the state update and the expiry metric, unless the
    /// credential was deleted meanwhile (then nothing of it may stay behind). The index lock is
    /// held throughout, so a deletion is either seen here or cleans up after.
    fn finish(&self, cred: &AdobeCredential, expires_at: Option<Timestamp>, update: impl FnOnce(&mut CredentialState)) {
        let (namespace, name) = (cred.namespace().unwrap_or_default(), cred.name_any());
        let index = self.index();
        let key = ObjectRef::from_obj(cred);
        if !index.contains(&namespace, &name) {
            self.forget(&key);
            return;
        }
        self.states.update(&key, update);
        if let Some(at) = expires_at {
            self.metrics.set_expiry(&namespace, &name, at);
        }
    }

    /// Drops everything kept about a credential that is gone.
    fn forget(&self, key: &ObjectRef<AdobeCredential>) {
        self.states.forget(key);
        self.metrics.forget(key.namespace.as_deref().unwrap_or_default(), &key.name);
    }
}

/// Human name of a credential for log lines and spans.
pub fn display_name(cred: &AdobeCredential) -> String {
    format!("{}/{}", cred.namespace().unwrap_or_default(), cred.name_any())
}

/// Read → decide → act → report.
#[instrument(skip_all, fields(credential = %display_name(&cred)))]
async fn reconcile(cred: Arc<AdobeCredential>, ctx: Arc<Context>) -> Result<Action> {
    let key = ObjectRef::from_obj(&*cred);
    if cred.metadata.deletion_timestamp.is_some() && !finalizer::holds(&cred) {
        // Going, and not held for a rotation: nothing to write for it any more.
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    ctx.states.update(&key, |s| s.trigger_seen(crate::rotation::trigger_hash(&cred)));
    if let Some(wait) = ctx.states.read(&key, |s| s.quiet_for(cred.metadata.generation, now)).flatten() {
        return Ok(Action::requeue(wait));
    }
    let _in_flight = watch::InFlight::enter(&ctx, display_name(&cred));
    let failures_in_status = cred.status.as_ref().map_or(0, |s| s.consecutive_failures);
    let failures_so_far = ctx.states.update(&key, |s| s.begin(failures_in_status));
    debug!("inspecting inputs and target");
    ctx.metrics.reconcile_started();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &cred.namespace().unwrap_or_default());
    // The rotation goes first: when it writes a new client secret to the source Secret, the
    // token path below mints with it in the same reconcile; then it sees that token.
    let rotation = rotate::before_token(&cred, &secrets, &ctx, now).await;
    if let rotate::Pending::Released = rotation {
        return Ok(Action::await_change());
    }
    let renewal = RenewalPolicy::new(cred.spec.renewal.as_ref(), ctx.min_mint_interval);
    let outcome = provide::ensure_token(&cred, &secrets, &ctx, now, renewal).await;
    let token = outcome.as_ref().ok().map(|done| &done.token);
    let rotation = rotate::after_token(&cred, &secrets, &ctx, rotation, token).await;
    match outcome {
        Ok(done) => report::success(&cred, &ctx, done, rotation, now).await,
        Err(failure) => report::failure(&cred, &ctx, failure, rotation, failures_so_far, now, &renewal).await,
    }
}

/// A reconcile that could not even report (its status write failed): retried with the same
/// backoff as every other failure.
#[instrument(skip_all, fields(credential = %display_name(&cred)))]
fn error_policy(cred: Arc<AdobeCredential>, err: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = 0;
    ctx.finish(&cred, None, |s| failures = s.failed_unreported());
    report::unreported(&ctx, err, failures)
}

/// A JSON Patch (RFC 6902): with `test` operations, it applies only to the object as read.
pub(crate) fn json_patch(operations: serde_json::Value) -> Result<kube::api::Patch<()>, kube::Error> {
    serde_json::from_value(operations).map(kube::api::Patch::Json).map_err(kube::Error::SerdeError)
}
