//! The reconciler: keeps one valid token per AdobeCredential in its target Secret.
//!
//! Triggers: the AdobeCredential watch, a metadata-only watch of Secrets mapped back to the
//! credentials that read (source) or write (target) them through [`SecretIndex`], and the
//! requeue at each token's renewal time. Every decision is taken from persisted facts (the target
//! Secret's annotations, status), so a restarted operator neither loses nor re-mints tokens.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt, TryStreamExt, future, stream};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::crd::AdobeCredential;
use crate::error::{Error, Result};
use crate::http::Health;
use crate::index::SecretIndex;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::rate_limit::HostRateLimiter;
use crate::schedule;
use crate::source::{self, FlowInputs, SecretValue};
use crate::status::{self, Outcome};
use crate::target::{self, FIELD_MANAGER, StoredToken, TargetState};
use crate::token::TokenClient;
use crate::{refresh_state, rollout};

/// Which namespaces the operator serves.
#[derive(Debug, Clone)]
pub enum Namespaces {
    All,
    List(Vec<String>),
}

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
    memory: Mutex<HashMap<ObjectRef<AdobeCredential>, Memory>>,
    shutdown: watch::Receiver<bool>,
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
    pub shutdown: watch::Receiver<bool>,
}

/// What the operator remembers about a credential between reconciles. Only an optimisation:
/// it is lost on restart and rebuilt from the target Secret and status.
#[derive(Debug, Default)]
struct Memory {
    /// Generation the remembered decision was taken for.
    generation: Option<i64>,
    /// A referenced Secret changed since the last full reconcile.
    dirty: bool,
    /// Nothing to do before this time (renewal, or retry after a failure).
    quiet_until: Option<Timestamp>,
    /// The token endpoint asked (Retry-After) not to be called before this time: holds whatever
    /// triggers a reconcile, unlike `quiet_until`, which a change of inputs overrides.
    not_before: Option<Timestamp>,
    consecutive_failures: u32,
    /// resourceVersion of our own last write to the target, to ignore its watch event.
    own_target_version: Option<String>,
    /// A token minted but not yet written (the write failed, e.g. the API server was down):
    /// written on the next attempt instead of minting again.
    unwritten_token: Option<StoredToken>,
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
            memory: Mutex::default(),
            shutdown: parts.shutdown,
        })
    }

    fn memory(&self) -> MutexGuard<'_, HashMap<ObjectRef<AdobeCredential>, Memory>> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn index(&self) -> MutexGuard<'_, SecretIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Time left before anything needs doing, if the remembered decision still holds.
    fn quiet_for(&self, key: &ObjectRef<AdobeCredential>, generation: Option<i64>, now: Timestamp) -> Option<Duration> {
        let memory = self.memory();
        let m = memory.get(key)?;
        if let Some(until) = m.not_before.filter(|until| now < *until) {
            return Some(until.duration_since(now).unsigned_abs());
        }
        if m.dirty || m.generation != generation {
            return None;
        }
        let until = m.quiet_until?;
        (now < until).then(|| until.duration_since(now).unsigned_abs())
    }

    /// Credentials that a change of the Secret `meta` concerns; marks them for a full reconcile.
    fn credentials_touched_by(&self, meta: &PartialObjectMeta<Secret>) -> Vec<ObjectRef<AdobeCredential>> {
        let namespace = meta.namespace().unwrap_or_default();
        let secret = meta.name_any();
        let candidates = self.index().credentials_for(&namespace, &secret);
        let mut memory = self.memory();
        candidates
            .into_iter()
            .filter(|cred| {
                let m = memory.entry(cred.clone()).or_default();
                // The watch event of our own target write is no news.
                let own_write = m.own_target_version.is_some() && m.own_target_version == meta.resource_version();
                if !own_write {
                    m.dirty = true;
                }
                !own_write
            })
            .collect()
    }
}

/// Keeps the Secret index in step with one credential watch (one per namespace or cluster-wide).
struct IndexUpdater {
    ctx: Arc<Context>,
    namespace: Option<String>,
    relisted: HashSet<(String, String)>,
    /// The first complete list has been seen (readiness).
    synced: bool,
}

impl IndexUpdater {
    fn observe(&mut self, event: &watcher::Event<AdobeCredential>) {
        let key = |c: &AdobeCredential| (c.namespace().unwrap_or_default(), c.name_any());
        match event {
            watcher::Event::Apply(cred) => self.ctx.index().upsert(cred),
            watcher::Event::Delete(cred) => {
                let (namespace, name) = key(cred);
                self.ctx.index().remove(&namespace, &name);
                self.ctx.memory().remove(&ObjectRef::from_obj(cred));
                self.ctx.metrics.forget(&namespace, &name);
            }
            watcher::Event::Init => self.relisted.clear(),
            watcher::Event::InitApply(cred) => {
                self.relisted.insert(key(cred));
                self.ctx.index().upsert(cred);
            }
            watcher::Event::InitDone => {
                if !self.synced {
                    // Seen here rather than through Store::wait_until_ready, which wakes only
                    // one of several waiters and the Controller already waits on it.
                    self.synced = true;
                    debug!(namespace = ?self.namespace, "AdobeCredential cache synced");
                    self.ctx.health.watch_synced();
                }
                let keep = std::mem::take(&mut self.relisted);
                self.ctx.index().retain_namespace(self.namespace.as_deref(), &keep);
                let mut memory = self.ctx.memory();
                memory.retain(|k, _| {
                    self.namespace.as_deref().is_some_and(|ns| k.namespace.as_deref() != Some(ns))
                        || keep.contains(&(k.namespace.clone().unwrap_or_default(), k.name.clone()))
                });
            }
        }
    }
}

/// Runs the controller until the process is asked to stop; in-flight reconciles finish first.
pub async fn run(ctx: Arc<Context>, namespaces: Namespaces, concurrency: u16) {
    let scopes: Vec<Option<String>> = match namespaces {
        Namespaces::All => vec![None],
        Namespaces::List(list) => list.into_iter().map(Some).collect(),
    };
    ctx.health.start_leading(scopes.len());
    let controllers = scopes.into_iter().map(|ns| controller(ctx.clone(), ns, concurrency).boxed());
    future::join_all(controllers).await;
}

async fn controller(ctx: Arc<Context>, namespace: Option<String>, concurrency: u16) {
    let (credentials, secrets): (Api<AdobeCredential>, Api<PartialObjectMeta<Secret>>) = match &namespace {
        Some(ns) => (Api::namespaced(ctx.client.clone(), ns), Api::namespaced(ctx.client.clone(), ns)),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    let (reader, writer) = reflector::store();
    let mut updater =
        IndexUpdater { ctx: ctx.clone(), namespace: namespace.clone(), relisted: HashSet::new(), synced: false };
    let credential_stream = watcher(credentials, watcher::Config::default())
        .default_backoff()
        // managedFields are never read here and are a large share of each cached object.
        .modify(|cred| cred.managed_fields_mut().clear())
        .inspect_ok(move |event| updater.observe(event))
        .reflect(writer)
        .applied_objects();

    let mut shutdown = ctx.shutdown.clone();
    Controller::for_stream(credential_stream, reader)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .reconcile_on(secret_triggers(secrets, ctx.clone()))
        .graceful_shutdown_on(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, action)) => debug!(credential = %obj, ?action, "reconciled"),
                Err(err) => warn!(error = %err, "controller error"),
            }
        })
        .await;
}

/// Credentials to reconcile because a Secret they reference changed. Metadata only: the operator
/// never holds the data of Secrets it does not need.
fn secret_triggers(
    secrets: Api<PartialObjectMeta<Secret>>,
    ctx: Arc<Context>,
) -> impl Stream<Item = ObjectRef<AdobeCredential>> {
    watcher(secrets, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .filter_map(|result| async move { result.map_err(|err| warn!(error = %err, "Secret watch error")).ok() })
        .flat_map(move |meta| stream::iter(ctx.credentials_touched_by(&meta)))
}

fn error_policy(cred: Arc<AdobeCredential>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(err.reason());
    warn!(credential = %status::display_name(&cred), reason = err.reason(), error = %err, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// A successful reconcile.
struct Done {
    token: StoredToken,
    minted: bool,
    repaired: bool,
    /// The target held a token for other inputs (rotation picked up).
    inputs_changed: bool,
    /// Key of the first client secret of the source Secret.
    primary_secret_key: Option<String>,
}

/// A failed reconcile, with what is known about the token left in place.
struct Failure {
    error: Error,
    last_good: Option<StoredToken>,
    current_inputs: bool,
}

impl Failure {
    fn bare(error: Error) -> Self {
        Self { error, last_good: None, current_inputs: false }
    }
}

async fn reconcile(cred: Arc<AdobeCredential>, ctx: Arc<Context>) -> Result<Action> {
    let key = ObjectRef::from_obj(&*cred);
    let now = Timestamp::now();
    if let Some(wait) = ctx.quiet_for(&key, cred.metadata.generation, now) {
        return Ok(Action::requeue(wait));
    }
    // Cleared before reading, so a change during this reconcile triggers another one.
    let failures_so_far = {
        let mut memory = ctx.memory();
        let m = memory.entry(key.clone()).or_default();
        m.dirty = false;
        m.consecutive_failures.max(cred.status.as_ref().map_or(0, |s| s.consecutive_failures))
    };
    debug!(credential = %status::display_name(&cred), "inspecting inputs and target");
    let namespace = cred.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let renewal_of = |t: &StoredToken| {
        schedule::renewal_time(t.issued_at, t.expires_at, cred.spec.renewal.as_ref(), &t.fingerprint())
    };

    let mut flow = None;
    match ensure_token(&cred, &secrets, &ctx, now, &renewal_of, &mut flow).await {
        Ok(done) => {
            let renewal_time = renewal_of(&done.token);
            let fallback_secret_key =
                done.token.client_secret_key.as_deref().filter(|k| Some(*k) != done.primary_secret_key.as_deref());
            let outcome = Outcome::Valid { token: &done.token, renewal_time, fallback_secret_key };
            let mut desired = status::desired(&cred, flow, &outcome, now);
            // Only now that the token is in the target may its consumers restart.
            let restarts = if cred.spec.rollout_restart_targets.is_empty() {
                Vec::new()
            } else {
                rollout::restart_consumers(&ctx.client, &namespace, &cred.spec.rollout_restart_targets, &done.token)
                    .await?
            };
            desired.rollout_restarts = restarts.iter().map(|r| r.status.clone()).collect();
            patch_status_if_changed(&cred, &ctx, desired).await?;
            publish_success(&cred, &ctx, &done).await;
            publish_restarts(&cred, &ctx, &restarts).await;
            ctx.metrics.set_expiry(&namespace, &cred.name_any(), done.token.expires_at);
            let mut memory = ctx.memory();
            let m = memory.entry(key).or_default();
            m.generation = cred.metadata.generation;
            m.quiet_until = Some(renewal_time);
            m.consecutive_failures = 0;
            m.not_before = None;
            Ok(Action::requeue(renewal_time.duration_since(Timestamp::now()).unsigned_abs()))
        }
        Err(failure) => {
            let failures = failures_so_far.saturating_add(1);
            let error = &failure.error;
            ctx.metrics.reconcile_failed(error.reason());
            if let Some(t) = &failure.last_good {
                ctx.metrics.set_expiry(&namespace, &cred.name_any(), t.expires_at);
            }
            let mut delay = schedule::failure_backoff(failures, error.retry(), error.retry_after(), rand::random());
            if let Some(t) = &failure.last_good {
                // Wake up at expiry at the latest, to report TokenExpired on time.
                let to_expiry = t.expires_at.duration_since(now);
                if to_expiry.is_positive() {
                    delay = delay.min(to_expiry.unsigned_abs());
                }
            }
            warn!(
                credential = %status::display_name(&cred),
                reason = error.reason(),
                error = %error,
                consecutive_failures = failures,
                retry_in_ms = delay.as_millis() as u64,
                "could not provide a token"
            );
            let outcome = Outcome::Failed {
                error,
                last_good: failure.last_good.as_ref().map(|t| (t, renewal_of(t))),
                current_inputs: failure.current_inputs,
                consecutive_failures: failures,
            };
            let desired = status::desired(&cred, flow, &outcome, now);
            let previous_reason = status::ready_condition(&cred).map(|c| c.reason.clone());
            patch_status_if_changed(&cred, &ctx, desired).await?;
            if failures == 1 || previous_reason.as_deref() != Some(error.reason()) {
                publish(&cred, &ctx, EventType::Warning, error.reason(), "Mint", error.to_string()).await;
            }
            let mut memory = ctx.memory();
            let m = memory.entry(key).or_default();
            m.generation = cred.metadata.generation;
            // Counted from now, after the response: Retry-After is relative to its arrival.
            let failed_at = Timestamp::now();
            m.quiet_until = Some(failed_at + delay);
            m.not_before = error.retry_after().map(|wait| failed_at + wait);
            m.consecutive_failures = failures;
            Ok(Action::requeue(delay))
        }
    }
}

/// Makes sure the target holds a valid token for the current inputs, minting only when needed.
async fn ensure_token(
    cred: &AdobeCredential,
    secrets: &Api<Secret>,
    ctx: &Context,
    now: Timestamp,
    renewal_of: &impl Fn(&StoredToken) -> Timestamp,
    flow: &mut Option<&'static str>,
) -> Result<Done, Failure> {
    let existing = secrets
        .get_opt(&cred.target_name())
        .await
        .map_err(|e| Failure::bare(Error::kube("reading the target Secret")(e)))?;
    let state = target::inspect(cred, existing);
    let last_good = match &state {
        TargetState::Present { token, .. } => token.clone(),
        _ => None,
    };
    let failure = |error: Error, current_inputs: bool| Failure { error, last_good: last_good.clone(), current_inputs };

    let inputs = source::resolve(secrets, cred).await.map_err(|e| failure(e, false))?;
    *flow = Some(inputs.flow_name());
    let revision = inputs.revision();
    let current_inputs = last_good.as_ref().is_some_and(|t| t.revision == revision);
    let primary_secret_key = inputs.client().secrets.first().map(|(key, _)| key.clone());

    let existing_secret = match state {
        TargetState::Conflict => {
            return Err(failure(Error::TargetConflict { name: cred.target_name() }, current_inputs));
        }
        TargetState::Missing => None,
        TargetState::Present { secret, .. } => Some(secret),
    };

    // The token in the target is still good for these inputs: keep it, repair the rest.
    if let Some(token) = last_good.clone().filter(|t| current_inputs && now < renewal_of(t)) {
        let data = target::render_data(cred, &token, &inputs).map_err(|e| failure(e, true))?;
        let up_to_date = existing_secret.as_ref().is_some_and(|s| target::is_up_to_date(cred, s, &token, &data));
        if !up_to_date {
            write_target(cred, secrets, ctx, &token, &data).await.map_err(|e| failure(e, true))?;
        }
        return Ok(Done { token, minted: false, repaired: !up_to_date, inputs_changed: false, primary_secret_key });
    }

    // Templates are checked before minting: a broken template must not burn tokens.
    target::render_data(cred, &placeholder_token(now), &inputs).map_err(|e| failure(e, current_inputs))?;
    let key = ObjectRef::from_obj(cred);
    let unwritten = ctx.memory().get_mut(&key).and_then(|m| m.unwritten_token.take());
    let token = match unwritten.filter(|t| t.revision == revision && now < renewal_of(t)) {
        Some(token) => token,
        None => mint(ctx, cred, secrets, &inputs, revision).await.map_err(|e| failure(e, current_inputs))?,
    };
    let data = target::render_data(cred, &token, &inputs).map_err(|e| failure(e, current_inputs))?;
    if let Err(error) = write_target(cred, secrets, ctx, &token, &data).await {
        ctx.memory().entry(key).or_default().unwritten_token = Some(token);
        return Err(failure(error, current_inputs));
    }
    let inputs_changed = last_good.is_some() && !current_inputs;
    Ok(Done { token, minted: true, repaired: false, inputs_changed, primary_secret_key })
}

fn placeholder_token(now: Timestamp) -> StoredToken {
    StoredToken {
        access_token: SecretValue::new("placeholder"),
        token_type: "bearer".into(),
        issued_at: now,
        expires_at: now,
        revision: String::new(),
        client_secret_key: None,
    }
}

async fn mint(
    ctx: &Context,
    cred: &AdobeCredential,
    secrets: &Api<Secret>,
    inputs: &FlowInputs,
    revision: String,
) -> Result<StoredToken> {
    let refresh_token = match inputs {
        FlowInputs::PasswordGrant(_) => refresh_state::load(secrets, cred, &revision, Timestamp::now()).await?,
        _ => None,
    };
    if let Some(host) = reqwest::Url::parse(inputs.endpoint()).ok().and_then(|u| u.host_str().map(str::to_owned)) {
        let _queued = ctx.metrics.mint_queued();
        ctx.rate_limiter.acquire(&host).await;
    }
    ctx.leadership.check()?; // after the rate limit's queue, which may take a while
    let _in_flight = ctx.metrics.mint_in_flight();
    let started = std::time::Instant::now();
    let minted = ctx.tokens.mint(inputs, refresh_token.as_ref()).await;
    let outcome = minted.as_ref().map_or_else(Error::reason, |_| "ok");
    ctx.metrics.mint_finished(inputs.flow_name(), outcome, started.elapsed());
    let minted = minted?;
    if let Some(refresh_token) = &minted.refresh_token {
        // Persisted before anything else: the refresh token just used is already dead.
        refresh_state::save(secrets, cred, refresh_token, &revision, minted.issued_at).await?;
    }
    Ok(StoredToken {
        access_token: minted.access_token,
        token_type: minted.token_type,
        issued_at: minted.issued_at,
        expires_at: minted.expires_at,
        revision,
        client_secret_key: Some(minted.client_secret_key),
    })
}

async fn write_target(
    cred: &AdobeCredential,
    secrets: &Api<Secret>,
    ctx: &Context,
    token: &StoredToken,
    data: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    ctx.leadership.check()?;
    let version = target::apply(secrets, cred, token, data).await?;
    ctx.memory().entry(ObjectRef::from_obj(cred)).or_default().own_target_version = version;
    Ok(())
}

async fn patch_status_if_changed(
    cred: &AdobeCredential,
    ctx: &Context,
    desired: crate::crd::AdobeCredentialStatus,
) -> Result<()> {
    if cred.status.as_ref().is_some_and(|current| status::same_when_written(current, &desired)) {
        return Ok(());
    }
    ctx.leadership.check()?;
    let api: Api<AdobeCredential> = Api::namespaced(ctx.client.clone(), &cred.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": AdobeCredential::api_version(&()),
        "kind": AdobeCredential::kind(&()),
        "status": desired,
    });
    api.patch_status(&cred.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(Error::kube("writing status"))?;
    Ok(())
}

async fn publish_success(cred: &AdobeCredential, ctx: &Context, done: &Done) {
    let expiry = target::rfc3339(done.token.expires_at);
    let fingerprint = done.token.fingerprint();
    if done.minted {
        let why = if done.inputs_changed { "source inputs changed" } else { "no valid token for the current inputs" };
        info!(credential = %status::display_name(cred), token = %fingerprint, expires_at = %expiry, why, "minted token");
        let note = format!("minted token {fingerprint} valid until {expiry} ({why})");
        publish(cred, ctx, EventType::Normal, status::REASON_TOKEN_MINTED, "Mint", note).await;
    } else if done.repaired {
        info!(credential = %status::display_name(cred), token = %fingerprint, "restored the target Secret");
        let note = format!("restored the target Secret with the current token {fingerprint}");
        publish(cred, ctx, EventType::Normal, "TargetRestored", "Write", note).await;
    }
}

async fn publish_restarts(cred: &AdobeCredential, ctx: &Context, restarts: &[rollout::Restart]) {
    let previous = cred.status.as_ref().map(|s| s.rollout_restarts.as_slice()).unwrap_or_default();
    for restart in restarts {
        let target = format!("{:?} {:?}", restart.status.kind, restart.status.name);
        if restart.restarted {
            info!(credential = %status::display_name(cred), %target, "restarted a consumer for the new token");
            let note = format!("restarted {target} for the new token");
            publish(cred, ctx, EventType::Normal, "RolloutRestarted", "Restart", note).await;
        } else if restart.status.message.is_some() && !previous.contains(&restart.status) {
            // Reported once when it goes missing, not on every reconcile.
            let note = format!("rollout restart target {target} not found in the namespace");
            publish(cred, ctx, EventType::Warning, "RolloutTargetNotFound", "Restart", note).await;
        }
    }
}

async fn publish(cred: &AdobeCredential, ctx: &Context, type_: EventType, reason: &str, action: &str, note: String) {
    let event =
        Event { type_, reason: reason.to_owned(), note: Some(note), action: action.to_owned(), secondary: None };
    if let Err(err) = ctx.recorder.publish(&event, &cred.object_ref(&())).await {
        warn!(credential = %status::display_name(cred), error = %err, "could not publish an Event");
    }
}
