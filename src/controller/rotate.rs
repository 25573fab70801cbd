//! The client secret rotation in the reconciler, for credentials whose flow can rotate and asks
//! to (`flows::rotation_of`). A thin adapter: `rotation::procedure` decides and steps, against
//! [`ClusterWorld`] (the credential's namespace, Adobe, this process's memory, metrics and rate
//! limits); `rotation::report` says what to report; this module runs them in two halves around
//! the token path and keeps the rotation's backoff.
//!
//! Rotation problems do not touch Ready: the token path keeps a working secret throughout. They
//! show in the `ClientSecretRotation` condition, Events and metrics, and back off like mint
//! failures (a new trigger value or spec change retries at once).

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tracing::warn;

use super::{Context, finalizer};
use crate::crd::AdobeCredential;
use crate::error::{Error, Result};
use crate::flows::{self, Flow, Rotatable, ServerToServerInputs};
use crate::names::{FIELD_MANAGER, condition};
use crate::rotation::management::{self, Added, Checked, Listing, ManagementApi};
use crate::rotation::persisted::Procedure;
use crate::rotation::procedure::{self, Halt, Progress, Rotating};
use crate::rotation::report::{self, RotationReport};
use crate::rotation::settings::Settings;
use crate::rotation::state_secret::{self, Stored};
use crate::rotation::world::{MintFor, SourceKeys, World};
use crate::rotation::{Memory, trigger_hash};
use crate::schedule;
use crate::secret_value::SecretValue;
use crate::source::OAuthClient;
use crate::target::StoredToken;
use crate::token::MintedToken;

/// The rotation's state between the two halves of a reconcile.
pub(super) enum Pending {
    /// The credential does not ask for rotation.
    None,
    /// Backing off after a failure: nothing new to say until `wake_at`.
    Unchanged { wake_at: Option<Timestamp> },
    /// The procedure ran (or could not: `rotating` is `None`); maybe it waits for the token path.
    Ran { rotating: Option<Box<Rotating>>, progress: Box<Progress> },
    /// The credential is being deleted and its rotation is wound down: the finalizer is gone,
    /// and so is the credential; nothing more to do for it.
    Released,
}

/// What the rotation reports for a reconcile.
pub(super) enum Rotation {
    None,
    Unchanged { wake_at: Option<Timestamp> },
    Report(Box<RotationReport>),
}

impl Rotation {
    /// When the reconcile should look again for the rotation's sake.
    pub(super) fn wake_at(&self) -> Option<Timestamp> {
        match self {
            Rotation::None => None,
            Rotation::Unchanged { wake_at } => *wake_at,
            Rotation::Report(report) => report.wake_at,
        }
    }
}

/// The first half: everything up to writing the new secret to the source Secret.
pub(super) async fn before_token(
    cred: &AdobeCredential,
    secrets: &Api<Secret>,
    ctx: &Context,
    now: Timestamp,
) -> Pending {
    let failed = |err| Pending::Ran { rotating: None, progress: Box::new(Progress::failed(err, now)) };
    let rotatable = flows::rotation_of(&cred.spec);
    let settings = rotatable.map(|r| Settings::from_spec(r.rotation));
    // Held from the first rotation on, while this operator can wind one down; never where it
    // cannot, so that a deletion is never stuck on it.
    if !(matches!(settings, Some(Ok(_))) && ctx.rotation.enabled)
        && let Err(err) = finalizer::release(cred, ctx).await
    {
        return failed(err);
    }
    let (Some(rotatable), Some(settings)) = (rotatable, settings) else { return Pending::None };
    if !ctx.rotation.enabled {
        return failed(Error::ClientSecretRotationDisabled);
    }
    let settings = match settings {
        Ok(settings) => settings,
        Err(err) => return failed(err),
    };
    let key = ObjectRef::from_obj(cred);
    let backoff = ctx.states.read(&key, |s| s.rotation().backoff(cred.metadata.generation)).flatten();
    if let Some(retry_at) = backoff.filter(|at| now < *at) {
        return Pending::Unchanged { wake_at: Some(retry_at) };
    }
    let rotating = Rotating {
        settings,
        source: rotatable.client_secret_ref.clone(),
        state_secret: state_secret::secret_name(cred),
        verify_timeout: ctx.rotation.verify_timeout,
        trigger: trigger_hash(cred),
        deleting: cred.metadata.deletion_timestamp.is_some(),
    };
    let world = ClusterWorld { cred, secrets, ctx, key, rotatable, settings: &rotating.settings };
    let progress = procedure::advance(&world, &rotating).await;
    if progress.released(&rotating) {
        return Pending::Released;
    }
    Pending::Ran { rotating: Some(Box::new(rotating)), progress: Box::new(progress) }
}

/// The second half: once the token path has put a token into the target, the procedure sees
/// whether it was minted with the new secret. Then what to report.
pub(super) async fn after_token(
    cred: &AdobeCredential,
    secrets: &Api<Secret>,
    ctx: &Context,
    pending: Pending,
    token: Option<&StoredToken>,
) -> Rotation {
    let (rotating, mut progress) = match pending {
        Pending::None | Pending::Released => return Rotation::None,
        Pending::Unchanged { wake_at } => return Rotation::Unchanged { wake_at },
        Pending::Ran { rotating, progress } => (rotating, *progress),
    };
    if let (Some(rotating), Some(token), Some(rotatable)) = (&rotating, token, flows::rotation_of(&cred.spec)) {
        let key = ObjectRef::from_obj(cred);
        let world = ClusterWorld { cred, secrets, ctx, key, rotatable, settings: &rotating.settings };
        progress = procedure::after_token(&world, rotating, progress, token).await;
    }
    Rotation::Report(Box::new(conclude(cred, ctx, rotating.as_deref(), progress)))
}

/// Keeps the rotation's backoff and failure metrics, and turns the progress into its report.
fn conclude(cred: &AdobeCredential, ctx: &Context, rotating: Option<&Rotating>, progress: Progress) -> RotationReport {
    let key = ObjectRef::from_obj(cred);
    let previous_reason = cred
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == condition::CLIENT_SECRET_ROTATION))
        .map(|c| c.reason.clone());
    let mut retry_at = progress.stopped_at;
    match &progress.halt {
        Halt::Failed(err) => {
            ctx.metrics.rotation_failed(err.reason());
            let failures = ctx.states.read(&key, |s| s.rotation().failures()).unwrap_or(0).saturating_add(1);
            let delay = schedule::failure_backoff(failures, err.retry(), err.retry_after(), rand::random());
            retry_at = progress.stopped_at + delay;
            ctx.states.update(&key, |s| s.rotation_mut().failed(cred.metadata.generation, retry_at));
            warn!(reason = err.reason(), error = %err, retry_in_ms = delay.as_millis() as u64, "client secret rotation step failed");
        }
        _ => ctx.states.update(&key, |s| s.rotation_mut().progressed()),
    }
    report::report(progress, rotating.map(|r| &r.settings), previous_reason.as_deref(), retry_at)
}

/// The rotation's world in the reconciler: the credential's namespace through the API server,
/// Adobe through the operator's HTTP client (rate-limited per host, counted), and the
/// credential's remembered state.
struct ClusterWorld<'a> {
    cred: &'a AdobeCredential,
    secrets: &'a Api<Secret>,
    ctx: &'a Context,
    key: ObjectRef<AdobeCredential>,
    rotatable: Rotatable<'a>,
    settings: &'a Settings,
}

impl ClusterWorld<'_> {
    /// Waits for the host's rate limit and checks leadership before a remote call.
    async fn before_call(&self, url: &str) -> Result<()> {
        if let Some(host) = reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned)) {
            self.ctx.rate_limiter.acquire(&host).await;
        }
        self.ctx.leadership.check()
    }

    /// One I/O Management API call, after the rate limit, counted.
    async fn call<'b, T, F>(
        &'b self,
        request: &str,
        client_id: &'b str,
        token: &'b SecretValue,
        call: impl FnOnce(ManagementApi<'b>) -> F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        self.before_call(&self.settings.endpoint).await?;
        let result = match ManagementApi::new(&self.ctx.tokens, self.settings, client_id, token) {
            Ok(api) => call(api).await,
            Err(err) => Err(err),
        };
        self.ctx.metrics.rotation_request(request, result.as_ref().map_or_else(Error::reason, |_| "ok"));
        result
    }
}

impl World for ClusterWorld<'_> {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn remember<R>(&self, f: impl FnOnce(&mut Memory) -> R) -> R {
        self.ctx.states.update(&self.key, |s| f(s.rotation_mut()))
    }

    async fn read_client(&self) -> Result<(OAuthClient, String)> {
        let flow = flows::resolve(self.secrets, self.cred).await?;
        Ok((flow.client().clone(), flow.revision()))
    }

    async fn check_source_writable(&self) -> Result<()> {
        let name = self.rotatable.client_secret_ref.name.clone();
        let source = self.secrets.get_opt(&name).await.map_err(Error::kube("reading the source Secret"))?;
        if source.is_some_and(|s| s.immutable == Some(true)) {
            return Err(Error::SourceSecretImmutable { name });
        }
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: self.cred.namespace(),
                    verb: Some("update".into()),
                    resource: Some("secrets".into()),
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviews: Api<SelfSubjectAccessReview> = Api::all(self.ctx.client.clone());
        match reviews.create(&PostParams::default(), &review).await {
            Ok(answer) if answer.status.as_ref().is_some_and(|s| !s.allowed) => {
                Err(Error::SourceSecretNotWritable { name })
            }
            Ok(_) => Ok(()),
            Err(err) => {
                warn!(error = %err, "could not ask whether the source Secret may be updated; trying anyway");
                Ok(())
            }
        }
    }

    /// An update conditioned on the version read: an edit in between is never overwritten.
    async fn write_source(&self, keys: &SourceKeys, secret: &SecretValue) -> Result<()> {
        let mut source = self
            .secrets
            .get_opt(&keys.name)
            .await
            .map_err(Error::kube("reading the source Secret"))?
            .ok_or_else(|| Error::SourceSecretNotFound { name: keys.name.clone() })?;
        let data = source.data.get_or_insert_with(Default::default);
        let current = data.get(&keys.primary).cloned();
        let holds_new = current
            .as_ref()
            .and_then(|v| std::str::from_utf8(&v.0).ok())
            .is_some_and(|v| crate::source::clean(v).0 == secret.expose());
        if holds_new {
            return Ok(());
        }
        if let Some(previous) = current {
            data.insert(keys.secondary.clone(), previous);
        }
        data.insert(keys.primary.clone(), ByteString(secret.expose().as_bytes().to_vec()));
        self.ctx.leadership.check()?;
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
        self.secrets
            .replace(&keys.name, &params, &source)
            .await
            .map_err(Error::kube("writing the new client secret to the source Secret"))?;
        Ok(())
    }

    async fn load(&self) -> Result<Option<Stored>> {
        state_secret::load(self.secrets, self.cred).await
    }

    async fn save(&self, procedure: &Procedure, new_secret: Option<&SecretValue>) -> Result<()> {
        self.ctx.leadership.check()?;
        state_secret::save(self.secrets, self.cred, procedure, new_secret).await
    }

    async fn hold(&self) -> Result<()> {
        finalizer::ensure(self.cred, self.ctx).await
    }

    async fn release(&self) -> Result<()> {
        finalizer::release(self.cred, self.ctx).await
    }

    async fn mint(&self, client_id: &str, secret: &SecretValue, purpose: MintFor) -> Result<MintedToken> {
        let scopes = management::SCOPES.iter().map(|s| (*s).to_owned()).collect();
        let inputs = ServerToServerInputs::with_secret(self.rotatable.ims_endpoint, client_id, secret.clone(), scopes);
        self.before_call(&inputs.ims_endpoint).await?;
        let minted = inputs.mint(&self.ctx.tokens, None).await;
        self.ctx.metrics.rotation_request(purpose.as_str(), minted.as_ref().map_or_else(Error::reason, |_| "ok"));
        minted
    }

    async fn list(&self, client_id: &str, token: &SecretValue) -> Result<Listing> {
        self.call("list", client_id, token, |api| async move { api.list().await }).await
    }

    async fn add(&self, client_id: &str, token: &SecretValue, checked: &Checked) -> Result<Added> {
        self.call("add", client_id, token, |api| async move { api.add(checked).await }).await
    }

    async fn delete(&self, client_id: &str, token: &SecretValue, uuid: &str, checked: &Checked) -> Result<bool> {
        self.call("delete", client_id, token, |api| async move { api.delete(uuid, checked).await }).await
    }

    async fn pause(&self, wait: Duration) {
        tokio::time::sleep(wait).await;
    }

    fn ended(&self, outcome: &'static str) {
        self.ctx.metrics.rotation_ended(outcome);
    }
}
