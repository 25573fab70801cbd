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
use tracing::{debug, error, info, warn};

use crate::crd::AdobeCredential;
use crate::decision::{self, Decision, Facts};
use crate::error::{Error, Result};
use crate::http::Health;
use crate::index::SecretIndex;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::mint_guard::{MintHistory, MintRecord};
use crate::rate_limit::HostRateLimiter;
use crate::schedule::{self, Renewal};
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
    min_mint_interval: Duration,
    shutdown_timeout: Duration,
    /// Credentials being reconciled right now (named when a shutdown deadline passes).
    in_flight: Mutex<HashSet<String>>,
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
    /// Least time between two mints for unchanged inputs (see `schedule::mint_floor`).
    pub min_mint_interval: Duration,
    /// How long a shutdown waits for in-flight reconciles.
    pub shutdown_timeout: Duration,
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
    /// The token last minted or seen in the target, and whether it is in the target: restored
    /// instead of minting again when a write failed (e.g. the API server was down) or the target
    /// was deleted or edited.
    held: Option<HeldToken>,
    /// Recent mints, for the mint guard.
    mints: MintHistory,
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
            min_mint_interval: parts.min_mint_interval,
            shutdown_timeout: parts.shutdown_timeout,
            in_flight: Mutex::default(),
        })
    }

    /// Records the end of a reconcile: the memory update and the expiry metric, unless the
    /// credential was deleted meanwhile (then nothing of it may stay behind). The index lock is
    /// held throughout, so a deletion is either seen here or cleans up after.
    fn finish(&self, cred: &AdobeCredential, expires_at: Option<Timestamp>, update: impl FnOnce(&mut Memory)) {
        let (namespace, name) = (cred.namespace().unwrap_or_default(), cred.name_any());
        let index = self.index();
        let key = ObjectRef::from_obj(cred);
        if !index.contains(&namespace, &name) {
            self.memory().remove(&key);
            self.metrics.forget(&namespace, &name);
            return;
        }
        update(self.memory().entry(key).or_default());
        if let Some(at) = expires_at {
            self.metrics.set_expiry(&namespace, &name, at);
        }
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

#[derive(Debug)]
struct HeldToken {
    token: StoredToken,
    written: bool,
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
                let in_scope = |ns: &str| self.namespace.as_deref().is_none_or(|scope| scope == ns);
                let kept = |ns: &str, name: &str| !in_scope(ns) || keep.contains(&(ns.to_owned(), name.to_owned()));
                self.ctx.memory().retain(|k, _| kept(k.namespace.as_deref().unwrap_or_default(), &k.name));
                self.ctx.metrics.retain(kept);
            }
        }
    }
}

/// Runs the controller until the process is asked to stop; in-flight reconciles finish first,
/// within the shutdown timeout.
pub async fn run(ctx: Arc<Context>, namespaces: Namespaces, concurrency: u16) {
    let scopes: Vec<Option<String>> = match namespaces {
        Namespaces::All => vec![None],
        Namespaces::List(list) => list.into_iter().map(Some).collect(),
    };
    ctx.health.start_leading(scopes.len());
    let controllers = scopes.into_iter().map(|ns| controller(ctx.clone(), ns, concurrency).boxed());
    let mut all = std::pin::pin!(future::join_all(controllers));
    let mut stop = ctx.shutdown.clone();
    tokio::select! {
        _ = &mut all => return,
        _ = stop.wait_for(|stop| *stop) => {}
    }
    if tokio::time::timeout(ctx.shutdown_timeout, all).await.is_err() {
        let mut stuck: Vec<String> = ctx.in_flight_names().into_iter().collect();
        stuck.sort();
        error!(timeout = ?ctx.shutdown_timeout, ?stuck, "reconciles still running at the shutdown deadline; stopping without them");
    }
}

/// Marks a credential as being reconciled until dropped.
struct InFlight<'a> {
    ctx: &'a Context,
    name: String,
}

impl<'a> InFlight<'a> {
    fn enter(ctx: &'a Context, name: String) -> Self {
        ctx.in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone());
        Self { ctx, name }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.ctx.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.name);
    }
}

impl Context {
    fn in_flight_names(&self) -> HashSet<String> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
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

/// A reconcile that could not even report (its status write failed): retried with the same
/// backoff as every other failure.
fn error_policy(cred: Arc<AdobeCredential>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(err.reason());
    let key = ObjectRef::from_obj(&*cred);
    let failures = ctx.memory().get(&key).map_or(0, |m| m.consecutive_failures).saturating_add(1);
    ctx.finish(&cred, None, |m| m.consecutive_failures = failures);
    let delay = schedule::failure_backoff(failures, err.retry(), err.retry_after(), rand::random());
    warn!(
        credential = %status::display_name(&cred),
        reason = err.reason(),
        error = %err,
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// A successful reconcile.
struct Done {
    token: StoredToken,
    renewal: Renewal,
    minted: bool,
    repaired: bool,
    /// The target held a token for other inputs (rotation picked up).
    inputs_changed: bool,
    /// Key of the first client secret of the source Secret.
    primary_secret_key: Option<String>,
    /// What was cleaned off the inputs (for status and an Event).
    notes: Vec<String>,
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

/// Read → decide → act → report.
async fn reconcile(cred: Arc<AdobeCredential>, ctx: Arc<Context>) -> Result<Action> {
    let key = ObjectRef::from_obj(&*cred);
    let now = Timestamp::now();
    if let Some(wait) = ctx.quiet_for(&key, cred.metadata.generation, now) {
        return Ok(Action::requeue(wait));
    }
    let _in_flight = InFlight::enter(&ctx, status::display_name(&cred));
    // Cleared before reading, so a change during this reconcile triggers another one.
    let failures_so_far = {
        let mut memory = ctx.memory();
        let m = memory.entry(key.clone()).or_default();
        m.dirty = false;
        m.consecutive_failures.max(cred.status.as_ref().map_or(0, |s| s.consecutive_failures))
    };
    debug!(credential = %status::display_name(&cred), "inspecting inputs and target");
    ctx.metrics.reconcile_started();
    let namespace = cred.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut flow = None;
    match ensure_token(&cred, &secrets, &ctx, now, &mut flow).await {
        Ok(done) => report_success(&cred, &ctx, flow, done, now).await,
        Err(failure) => report_failure(&cred, &ctx, flow, failure, failures_so_far, now).await,
    }
}

async fn report_success(
    cred: &AdobeCredential,
    ctx: &Context,
    flow: Option<&'static str>,
    done: Done,
    now: Timestamp,
) -> Result<Action> {
    let fallback_secret_key =
        done.token.client_secret_key.as_deref().filter(|k| Some(*k) != done.primary_secret_key.as_deref());
    let outcome = Outcome::Valid { token: &done.token, renewal: done.renewal, fallback_secret_key, notes: &done.notes };
    let mut desired = status::desired(cred, flow, &outcome, now);
    // Only now that the token is in the target may its consumers restart.
    let restarts = if cred.spec.rollout_restart_targets.is_empty() || !ctx.leadership.may_write() {
        Vec::new()
    } else {
        let namespace = cred.namespace().unwrap_or_default();
        rollout::restart_consumers(&ctx.client, &namespace, &cred.spec.rollout_restart_targets, &done.token).await
    };
    ctx.metrics.consumers_restarted(cred, &restarts);
    status::set_rollout_restarts(&mut desired, cred, &restarts, now);
    let new_revision = cred.status.as_ref().and_then(|s| s.source_revision.as_ref()) != Some(&done.token.revision);
    patch_status_if_changed(cred, ctx, desired).await?;
    publish_success(cred, ctx, &done).await;
    if done.minted && new_revision && !done.notes.is_empty() {
        publish(cred, ctx, EventType::Warning, "InputCleaned", "Mint", done.notes.join("; ")).await;
    }
    publish_restarts(cred, ctx, &restarts).await;
    let renewal_time = done.renewal.at;
    ctx.finish(cred, Some(done.token.expires_at), |m| {
        m.generation = cred.metadata.generation;
        m.quiet_until = Some(renewal_time);
        m.consecutive_failures = 0;
        m.not_before = None;
    });
    Ok(Action::requeue(renewal_time.duration_since(Timestamp::now()).unsigned_abs()))
}

async fn report_failure(
    cred: &AdobeCredential,
    ctx: &Context,
    flow: Option<&'static str>,
    failure: Failure,
    failures_so_far: u32,
    now: Timestamp,
) -> Result<Action> {
    let failures = failures_so_far.saturating_add(1);
    let error = &failure.error;
    ctx.metrics.reconcile_failed(error.reason());
    let mut delay = schedule::failure_backoff(failures, error.retry(), error.retry_after(), rand::random());
    if let Some(t) = &failure.last_good {
        // Wake up at expiry at the latest, to report TokenExpired on time.
        let to_expiry = t.expires_at.duration_since(now);
        if to_expiry.is_positive() {
            delay = delay.min(to_expiry.unsigned_abs());
        }
    }
    warn!(
        credential = %status::display_name(cred),
        reason = error.reason(),
        error = %error,
        consecutive_failures = failures,
        retry_in_ms = delay.as_millis() as u64,
        "could not provide a token"
    );
    let renewal_of = |t: &StoredToken| decision::renewal_of(t, cred.spec.renewal.as_ref(), ctx.min_mint_interval).at;
    let outcome = Outcome::Failed {
        error,
        last_good: failure.last_good.as_ref().map(|t| (t, renewal_of(t))),
        current_inputs: failure.current_inputs,
        consecutive_failures: failures,
    };
    let desired = status::desired(cred, flow, &outcome, now);
    let previous_reason = status::ready_condition(cred).map(|c| c.reason.clone());
    patch_status_if_changed(cred, ctx, desired).await?;
    if failures == 1 || previous_reason.as_deref() != Some(error.reason()) {
        publish(cred, ctx, EventType::Warning, error.reason(), "Mint", error.to_string()).await;
    }
    // Counted from now, after the response: Retry-After is relative to its arrival.
    let failed_at = Timestamp::now();
    ctx.finish(cred, failure.last_good.as_ref().map(|t| t.expires_at), |m| {
        m.generation = cred.metadata.generation;
        m.quiet_until = Some(failed_at + delay);
        m.not_before = error.retry_after().map(|wait| failed_at + wait);
        m.consecutive_failures = failures;
    });
    Ok(Action::requeue(delay))
}

/// Makes sure the target holds a valid token for the current inputs, minting only when the
/// decision calls for it.
async fn ensure_token(
    cred: &AdobeCredential,
    secrets: &Api<Secret>,
    ctx: &Context,
    now: Timestamp,
    flow: &mut Option<&'static str>,
) -> Result<Done, Failure> {
    // Read.
    let existing = secrets
        .get_opt(&cred.target_name())
        .await
        .map_err(|e| Failure::bare(Error::kube("reading the target Secret")(e)))?;
    let state = target::inspect(cred, existing);
    let last_good = match &state {
        TargetState::Present { token, .. } => token.clone().filter(|t| decision::plausible(t, now)),
        _ => None,
    };
    let failure = |error: Error, current_inputs: bool| Failure { error, last_good: last_good.clone(), current_inputs };

    let inputs = source::resolve(secrets, cred).await.map_err(|e| failure(e, false))?;
    *flow = Some(inputs.flow_name());
    let revision = inputs.revision();
    let current_inputs = last_good.as_ref().is_some_and(|t| t.revision == revision);
    let existing_secret = match state {
        TargetState::Conflict => {
            return Err(failure(Error::TargetConflict { name: cred.target_name() }, current_inputs));
        }
        TargetState::NotOpaque(type_) => {
            return Err(failure(Error::TargetNotOpaque { name: cred.target_name(), type_ }, current_inputs));
        }
        TargetState::Missing => None,
        TargetState::Present { secret, .. } => Some(secret),
    };
    // Templates and key ownership are checked before anything is minted: a broken template or a
    // taken key must not burn tokens.
    let probe = last_good.clone().unwrap_or_else(|| placeholder_token(now));
    let probe_data = target::render_data(cred, &probe, &inputs).map_err(|e| failure(e, current_inputs))?;
    if let Some((key, manager)) = existing_secret.as_ref().and_then(|s| target::foreign_key(cred, s, probe_data.keys()))
    {
        let error = Error::TargetKeyConflict { name: cred.target_name(), key, manager };
        return Err(failure(error, current_inputs));
    }
    let target_up_to_date = match (&last_good, &existing_secret) {
        (Some(token), Some(secret)) if current_inputs => target::is_up_to_date(cred, secret, token, &probe_data),
        _ => false,
    };

    // Decide.
    let key = ObjectRef::from_obj(cred);
    let (held, held_written, last_mint) = {
        let memory = ctx.memory();
        let m = memory.get(&key);
        let held = m.and_then(|m| m.held.as_ref());
        (held.map(|h| h.token.clone()), held.is_some_and(|h| h.written), m.and_then(|m| m.mints.last().cloned()))
    };
    let facts = Facts {
        now,
        revision: &revision,
        target_token: last_good.as_ref(),
        target_up_to_date,
        held: held.as_ref(),
        last_mint: last_mint.as_ref(),
        renewal: cred.spec.renewal.as_ref(),
        min_interval: ctx.min_mint_interval,
    };
    let done = |token: StoredToken, renewal, minted, repaired| Done {
        inputs_changed: minted && last_good.is_some() && !current_inputs,
        token,
        renewal,
        minted,
        repaired,
        primary_secret_key: inputs.client().secrets.first().map(|(key, _)| key.clone()),
        notes: inputs.client().notes.clone(),
    };

    // Act.
    let hold = |token: &StoredToken, written: bool| {
        ctx.memory().entry(key.clone()).or_default().held = Some(HeldToken { token: token.clone(), written });
    };
    match decision::decide(&facts) {
        Decision::Keep { token, renewal } => {
            hold(token, true);
            Ok(done(token.clone(), renewal, false, false))
        }
        Decision::Repair { token, renewal } => {
            write_target(cred, secrets, ctx, token, &probe_data).await.map_err(|e| failure(e, true))?;
            hold(token, true);
            Ok(done(token.clone(), renewal, false, true))
        }
        Decision::Restore { token, renewal } => {
            let data = target::render_data(cred, token, &inputs).map_err(|e| failure(e, current_inputs))?;
            write_target(cred, secrets, ctx, token, &data).await.map_err(|e| failure(e, current_inputs))?;
            hold(token, true);
            // A token whose first write failed is announced as minted now; else it is a repair.
            Ok(done(token.clone(), renewal, !held_written, held_written))
        }
        Decision::WaitUntil { at, .. } => {
            let wait = at.duration_since(now).unsigned_abs();
            Err(failure(Error::MintRateLimited { retry_at: at, budget_spent: false, wait }, current_inputs))
        }
        Decision::Mint { .. } => {
            let token = mint(ctx, cred, secrets, &inputs, revision).await.map_err(|e| failure(e, current_inputs))?;
            hold(&token, false);
            let data = target::render_data(cred, &token, &inputs).map_err(|e| failure(e, current_inputs))?;
            write_target(cred, secrets, ctx, &token, &data).await.map_err(|e| failure(e, current_inputs))?;
            hold(&token, true);
            let renewal = decision::renewal_of(&token, cred.spec.renewal.as_ref(), ctx.min_mint_interval);
            Ok(done(token, renewal, true, false))
        }
    }
}

fn placeholder_token(now: Timestamp) -> StoredToken {
    StoredToken {
        // As long as real tokens get (Adobe's are about 1–2 KiB): the size budgets hold for them.
        access_token: SecretValue::new("x".repeat(4096)),
        token_type: "bearer".into(),
        issued_at: now,
        expires_at: now,
        revision: String::new(),
        client_secret_key: None,
    }
}

/// One token request, if the mint guard allows it.
async fn mint(
    ctx: &Context,
    cred: &AdobeCredential,
    secrets: &Api<Secret>,
    inputs: &FlowInputs,
    revision: String,
) -> Result<StoredToken> {
    let key = ObjectRef::from_obj(cred);
    let now = Timestamp::now();
    let allowed = ctx.memory().entry(key.clone()).or_default().mints.check(now, &revision, ctx.min_mint_interval);
    if let Err(refusal) = allowed {
        ctx.metrics.mint_guard_tripped(&cred.namespace().unwrap_or_default(), &cred.name_any());
        let wait = refusal.retry_at.duration_since(now).unsigned_abs();
        return Err(Error::MintRateLimited { retry_at: refusal.retry_at, budget_spent: refusal.budget_spent, wait });
    }
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
    let token = StoredToken {
        access_token: minted.access_token,
        token_type: minted.token_type,
        issued_at: minted.issued_at,
        expires_at: minted.expires_at,
        revision,
        client_secret_key: Some(minted.client_secret_key),
    };
    ctx.memory().entry(key).or_default().mints.record(MintRecord::of(&token));
    if let Some(refresh_token) = &minted.refresh_token {
        // Persisted before anything else: the refresh token just used is already dead.
        refresh_state::save(secrets, cred, refresh_token, &token.revision, minted.issued_at).await?;
    }
    Ok(token)
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
    ctx.metrics.set_status(&cred.namespace().unwrap_or_default(), &cred.name_any(), &desired);
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
    let expiry = crate::time_format::rfc3339(done.token.expires_at);
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
        } else if let Some(problem) = restart.problem.filter(|_| !previous.contains(&restart.status)) {
            // Reported once when it appears, not on every reconcile.
            let note =
                format!("rollout restart target {target}: {}", restart.status.message.as_deref().unwrap_or_default());
            publish(cred, ctx, EventType::Warning, problem.reason(), "Restart", note).await;
        }
    }
}

async fn publish(cred: &AdobeCredential, ctx: &Context, type_: EventType, reason: &str, action: &str, note: String) {
    // Event notes are bounded by the API server (1 KiB): one human line, cut well below.
    let note = crate::error::one_line(&note, crate::error::MAX_MESSAGE);
    let event =
        Event { type_, reason: reason.to_owned(), note: Some(note), action: action.to_owned(), secondary: None };
    if let Err(err) = ctx.recorder.publish(&event, &cred.object_ref(&())).await {
        warn!(credential = %status::display_name(cred), error = %err, "could not publish an Event");
    }
}
