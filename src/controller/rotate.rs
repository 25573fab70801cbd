//! Drives the client secret rotation of credentials that ask for it (`clientSecretRotation`).
//!
//! Each reconcile runs the procedure as far as it can go, persisting every step in the state
//! Secret before the next (see `rotation::plan::Step`): list → add → verify → write the source
//! Secret → (the token path mints with the new secret) → after the grace period, compare the
//! previous secret's last use and delete it. What to do next is decided by `plan::next` from the
//! persisted step alone, so a restarted operator resumes where the last one stopped; a secret
//! whose add answer was lost is deleted as an orphan (nobody ever saw its value) and the add
//! redone, so there is never a third secret and never a lost one.
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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::{Context, finalizer};
use crate::crd::{AdobeCredential, ClientSecretRotationStatus, OAuthServerToServer};
use crate::error::{Error, Result};
use crate::flows::{self, Flow, ServerToServerInputs};
use crate::names::{FIELD_MANAGER, Reason, annotation};
use crate::notice::Notice;
use crate::rotation::management::{self, Checked, ManagementApi};
use crate::rotation::memory::Unpersisted;
use crate::rotation::plan::{
    self, Cause, FailedRotation, Listed, Next, OldSecret, Procedure, SecretRef, Settings, StartPlan, Step,
};
use crate::rotation::state_secret::{self, Stored};
use crate::schedule;
use crate::secret_value::SecretValue;
use crate::source::OAuthClient;
use crate::target::StoredToken;
use crate::time_format::{rfc3339, whole_seconds};

/// Steps one reconcile may take at most (a whole rotation takes six).
const MAX_STEPS: usize = 10;
/// Attempts to persist a new secret before giving up for this reconcile (it stays in memory).
const PERSIST_ATTEMPTS: u32 = 5;
/// Longest wait between two verification attempts of a new secret.
const MAX_VERIFY_WAIT: Duration = Duration::from_secs(15);

/// The rotation's state between the two halves of a reconcile.
pub(super) enum Pending {
    /// The credential does not ask for rotation.
    None,
    /// Backing off after a failure: nothing new to say until `wake_at`.
    Unchanged { wake_at: Option<Timestamp> },
    /// The procedure ran; maybe it waits for the token path.
    Ran(Box<Progress>),
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

pub(super) struct RotationReport {
    pub status: ClientSecretRotationStatus,
    pub healthy: bool,
    pub reason: &'static str,
    pub message: String,
    pub notices: Vec<Notice>,
    pub wake_at: Option<Timestamp>,
    /// Creation time of the secret in use, for `client_secret_age_seconds`.
    pub secret_created_at: Option<Timestamp>,
}

/// Where the procedure stopped in this reconcile.
#[derive(Debug)]
enum Halt {
    /// Nothing to do before `until` (never, if `None`).
    Wait(Option<Timestamp>),
    /// IMS does not accept the new secret yet; try again at the time given.
    VerifyPending(Timestamp),
    /// The source Secret holds the new secret; the token path must mint with it.
    AwaitingToken,
    /// Someone else still uses a secret the rotation would delete (`uuid`).
    Held {
        held: Held,
        uuid: String,
        last_used: Timestamp,
        until: Timestamp,
    },
    Failed(Error),
}

/// Which secret a hold keeps.
#[derive(Debug)]
enum Held {
    /// The previous secret, after the switch.
    Previous,
    /// The other secret `deleteOtherSecret` would delete before a rotation starts; the source
    /// Secret holds `current`.
    Other { current: String },
}

impl Held {
    fn reason(&self) -> Reason {
        match self {
            Held::Previous => Reason::OldSecretStillInUse,
            Held::Other { .. } => Reason::OtherSecretStillInUse,
        }
    }
}

pub(super) struct Progress {
    settings: Option<Settings>,
    stored: Option<Stored>,
    trigger: Option<String>,
    notices: Vec<Notice>,
    halt: Halt,
}

/// The first half: everything up to writing the new secret to the source Secret.
pub(super) async fn before_token(
    cred: &AdobeCredential,
    secrets: &Api<Secret>,
    ctx: &Context,
    now: Timestamp,
) -> Pending {
    let failed =
        |halt| Pending::Ran(Box::new(Progress { settings: None, stored: None, trigger: None, notices: vec![], halt }));
    let flow = cred.spec.oauth_server_to_server.as_ref();
    let settings = flow.and_then(|f| f.client_secret_rotation.as_ref()).map(Settings::from_spec);
    let deleting = cred.metadata.deletion_timestamp.is_some();
    // Held from the first rotation on (`start`), while this operator can wind one down; never
    // where it cannot, so that a deletion is never stuck on it.
    if !(matches!(settings, Some(Ok(_))) && ctx.rotation.enabled)
        && let Err(err) = finalizer::release(cred, ctx).await
    {
        return failed(Halt::Failed(err));
    }
    let (Some(flow), Some(settings)) = (flow, settings) else { return Pending::None };
    if !ctx.rotation.enabled {
        return failed(Halt::Failed(Error::ClientSecretRotationDisabled));
    }
    let settings = match settings {
        Ok(settings) => settings,
        Err(err) => return failed(Halt::Failed(err)),
    };
    let key = ObjectRef::from_obj(cred);
    let backoff = ctx.states.read(&key, |s| s.rotation().backoff(cred.metadata.generation)).flatten();
    if let Some(retry_at) = backoff.filter(|at| now < *at) {
        return Pending::Unchanged { wake_at: Some(retry_at) };
    }
    let trigger = crate::rotation::trigger_hash(cred);
    let mut run = Run { cred, flow, secrets, ctx, key, settings, stored: None, trigger, notices: vec![], deleting };
    let halt = match state_secret::load(secrets, cred).await {
        Ok(stored) => {
            run.stored = stored;
            // A rotation under way since before the finalizer existed is held from now on.
            let under_way = run.stored.as_ref().is_some_and(|s| s.procedure.step != Step::Idle);
            let held = if under_way && !deleting { finalizer::ensure(cred, ctx).await } else { Ok(()) };
            match held {
                Ok(()) => run.drive().await,
                Err(err) => Halt::Failed(err),
            }
        }
        Err(err) => Halt::Failed(err),
    };
    let halt = run.release_when_wound_down(halt).await;
    if deleting && matches!(halt, Halt::Wait(None)) {
        return Pending::Released;
    }
    Pending::Ran(Box::new(run.into_progress(halt)))
}

/// The second half: once the token path has put a token minted with the new secret into the
/// target, the switch is recorded and the procedure goes on (to the grace period, or straight to
/// deleting the previous secret).
pub(super) async fn after_token(
    cred: &AdobeCredential,
    secrets: &Api<Secret>,
    ctx: &Context,
    pending: Pending,
    token: Option<&StoredToken>,
) -> Rotation {
    let progress = match pending {
        Pending::None | Pending::Released => return Rotation::None,
        Pending::Unchanged { wake_at } => return Rotation::Unchanged { wake_at },
        Pending::Ran(progress) => *progress,
    };
    let mut progress = progress;
    if let (Halt::AwaitingToken, Some(token), Some(settings), Some(flow)) =
        (&progress.halt, token, progress.settings.clone(), cred.spec.oauth_server_to_server.as_ref())
    {
        let key = ObjectRef::from_obj(cred);
        let mut run = Run {
            cred,
            flow,
            secrets,
            ctx,
            key,
            settings,
            stored: progress.stored.take(),
            trigger: progress.trigger.take(),
            notices: std::mem::take(&mut progress.notices),
            deleting: cred.metadata.deletion_timestamp.is_some(),
        };
        let halt = match run.confirm_switch(token).await {
            Ok(true) => run.drive().await,
            Ok(false) => Halt::AwaitingToken,
            Err(err) => Halt::Failed(err),
        };
        let halt = run.release_when_wound_down(halt).await;
        progress = run.into_progress(halt);
    }
    Rotation::Report(Box::new(finish_report(cred, ctx, progress)))
}

/// Turns where the procedure stopped into status, condition, Events, metrics and a wake-up.
fn finish_report(cred: &AdobeCredential, ctx: &Context, progress: Progress) -> RotationReport {
    let key = ObjectRef::from_obj(cred);
    let now = Timestamp::now();
    let procedure = progress.stored.as_ref().map(|s| &s.procedure);
    let mut notices = progress.notices;
    let previous_reason = cred
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == crate::names::condition::CLIENT_SECRET_ROTATION))
        .map(|c| c.reason.clone());
    let wake_at = match &progress.halt {
        Halt::Failed(err) => {
            ctx.metrics.rotation_failed(err.reason());
            let failures = ctx.states.read(&key, |s| s.rotation().failures()).unwrap_or(0).saturating_add(1);
            let delay = schedule::failure_backoff(failures, err.retry(), err.retry_after(), rand::random());
            let retry_at = now + delay;
            ctx.states.update(&key, |s| s.rotation_mut().failed(cred.metadata.generation, retry_at));
            warn!(reason = err.reason(), error = %err, retry_in_ms = delay.as_millis() as u64, "client secret rotation step failed");
            if previous_reason.as_deref() != Some(err.reason()) {
                notices.push(Notice::warning(err.reason(), "Rotate", err.to_string()));
            }
            // Only a change of the spec or of the operator's flags helps these, and either
            // brings a reconcile of its own.
            let needs_a_change = matches!(err, Error::ClientSecretRotationDisabled | Error::InvalidRotationSpec { .. });
            (!needs_a_change).then_some(retry_at)
        }
        halt => {
            ctx.states.update(&key, |s| s.rotation_mut().progressed());
            match halt {
                Halt::Wait(until) => *until,
                Halt::VerifyPending(at) => Some(*at),
                Halt::AwaitingToken | Halt::Failed(_) => None,
                Halt::Held { until, .. } => Some(*until),
            }
        }
    };
    let described = describe(procedure, progress.settings.as_ref(), &progress.halt);
    if let Halt::Held { held, .. } = &progress.halt
        && previous_reason.as_deref() != Some(held.reason().as_str())
    {
        notices.push(Notice::warning(held.reason().as_str(), "Rotate", described.message.clone()));
    }
    RotationReport {
        status: described.status,
        healthy: described.healthy,
        reason: described.reason,
        message: described.message,
        notices,
        wake_at,
        secret_created_at: procedure.and_then(|p| p.current.as_ref()).map(|c| c.created_at),
    }
}

/// The status and condition of a rotation (pure).
#[derive(Debug, PartialEq)]
struct Described {
    status: ClientSecretRotationStatus,
    healthy: bool,
    reason: &'static str,
    message: String,
}

fn describe(procedure: Option<&Procedure>, settings: Option<&Settings>, halt: &Halt) -> Described {
    let time = |t: Timestamp| Time(whole_seconds(t));
    let step = procedure.map_or(&Step::Idle, |p| &p.step);
    let idle = *step == Step::Idle;
    let due = procedure.zip(settings).and_then(|(p, s)| plan::due_at(p, s)).filter(|_| idle);
    let status = ClientSecretRotationStatus {
        step: step.name().to_owned(),
        current_secret_uuid: procedure.and_then(|p| p.current.as_ref()).map(|c| c.uuid.clone()),
        current_secret_created_at: procedure.and_then(|p| p.current.as_ref()).map(|c| time(c.created_at)),
        new_secret_uuid: step.new_secret().map(|n| n.uuid.clone()),
        last_rotation_time: procedure.and_then(|p| p.last_rotation).map(time),
        next_rotation_time: due.map(time),
    };
    let next = match due {
        Some(at) => format!("next rotation at {}", rfc3339(at)),
        None => format!("rotations on demand only: set annotation {} to a new value", annotation::ROTATE_CLIENT_SECRET),
    };
    let (healthy, reason, message) = match (halt, step) {
        (Halt::Failed(err), _) => (false, err.reason(), err.to_string()),
        (Halt::Held { held: held @ Held::Previous, uuid, last_used, until }, _) => (
            false,
            held.reason().as_str(),
            format!(
                "the previous client secret {uuid} was used at {} after the switch, by something other than this operator; it is kept, and deleted once unused until {}",
                rfc3339(*last_used),
                rfc3339(*until)
            ),
        ),
        (Halt::Held { held: held @ Held::Other { current }, uuid, last_used, until }, _) => (
            false,
            held.reason().as_str(),
            format!(
                "the source Secret holds client secret {current}; the other one, {uuid}, was used at {}, so deleteOtherSecret deletes it only once unused for the grace period: the rotation waits until {}",
                rfc3339(*last_used),
                rfc3339(*until)
            ),
        ),
        (_, Step::Idle) => match procedure.and_then(|p| p.last_failure.as_ref()) {
            Some(FailedRotation { reason, message, .. }) => {
                let reason = if reason == "NewSecretVerificationFailed" {
                    "NewSecretVerificationFailed"
                } else {
                    Reason::RotationIdle.as_str()
                };
                (false, reason, format!("{message}; {next}"))
            }
            None => {
                let current = match procedure.and_then(|p| p.current.as_ref()) {
                    Some(c) => format!("client secret {} (created {}) in use", c.uuid, rfc3339(c.created_at)),
                    None => "the client secret in use is not identified yet".to_owned(),
                };
                (true, Reason::RotationIdle.as_str(), format!("{current}; {next}"))
            }
        },
        (_, step) => (true, Reason::RotationInProgress.as_str(), in_progress(step, settings)),
    };
    Described { status, healthy, reason, message }
}

fn in_progress(step: &Step, settings: Option<&Settings>) -> String {
    match step {
        Step::Idle => "idle".to_owned(),
        Step::Adding { cause, .. } => format!("{} rotation: adding a new client secret", cause.describe()),
        Step::Verifying { new, .. } => format!("waiting for IMS to accept the new client secret {}", new.uuid),
        Step::Abandoning { new_uuid, .. } => {
            format!("deleting the new client secret {new_uuid}, which IMS did not accept")
        }
        Step::SourceWritten { new, .. } => {
            format!("the new client secret {} is in the source Secret; waiting for a token minted with it", new.uuid)
        }
        Step::Switched { new, old, switched_at, .. } => {
            let end = settings.and_then(|s| switched_at.checked_add(s.grace).ok());
            let old = old.as_deref().unwrap_or("(unknown)");
            match end {
                Some(end) => format!(
                    "client secret {} in use since {}; the previous one {old} is deleted after the grace period, at {}",
                    new.uuid,
                    rfc3339(*switched_at),
                    rfc3339(end)
                ),
                None => format!("client secret {} in use; the previous one {old} is deleted next", new.uuid),
            }
        }
    }
}

/// One reconcile's run of the procedure.
struct Run<'a> {
    cred: &'a AdobeCredential,
    flow: &'a OAuthServerToServer,
    secrets: &'a Api<Secret>,
    ctx: &'a Context,
    key: ObjectRef<AdobeCredential>,
    settings: Settings,
    stored: Option<Stored>,
    trigger: Option<String>,
    notices: Vec<Notice>,
    /// The credential is being deleted: the rotation is wound down, none starts.
    deleting: bool,
}

impl Run<'_> {
    fn into_progress(self, halt: Halt) -> Progress {
        Progress {
            settings: Some(self.settings),
            stored: self.stored,
            trigger: self.trigger,
            notices: self.notices,
            halt,
        }
    }

    fn procedure(&self) -> Procedure {
        self.stored.as_ref().map(|s| s.procedure.clone()).unwrap_or_default()
    }

    /// A credential being deleted whose rotation has nothing left to do lets go of it.
    async fn release_when_wound_down(&self, halt: Halt) -> Halt {
        if !(self.deleting && matches!(halt, Halt::Wait(None))) {
            return halt;
        }
        match finalizer::release(self.cred, self.ctx).await {
            Ok(()) => halt,
            Err(err) => Halt::Failed(err),
        }
    }

    fn new_secret(&self) -> Result<SecretValue> {
        self.stored.as_ref().and_then(|s| s.new_secret.clone()).ok_or_else(|| Error::RotationStateInvalid {
            name: state_secret::secret_name(self.cred),
            detail: "the new client secret of the rotation in progress is missing".into(),
        })
    }

    fn notice(&mut self, reason: Reason, note: String) {
        info!(reason = reason.as_str(), "{note}");
        self.notices.push(Notice::normal(reason, "Rotate", note));
    }

    /// Runs steps until one has to wait.
    async fn drive(&mut self) -> Halt {
        for _ in 0..MAX_STEPS {
            let now = Timestamp::now();
            let source = self.source_while_idle().await;
            let procedure = self.stored.as_ref().map(|s| &s.procedure);
            let timeout = self.ctx.rotation.verify_timeout;
            let trigger = self.trigger.as_deref();
            let next = if self.deleting {
                plan::wind_down(procedure, &self.settings, timeout, now)
            } else {
                plan::next(procedure, &self.settings, trigger, source.as_deref(), timeout, now)
            };
            let step = match next {
                Next::Wait { until } => return Halt::Wait(until),
                Next::ConfirmSwitch => return Halt::AwaitingToken,
                Next::Observe => self.observe().await.map(|()| None),
                Next::Start { cause } => self.start(cause).await,
                Next::ResumeAdd => self.resume_add().await.map(|()| None),
                Next::Verify { give_up } => self.verify(give_up).await,
                Next::Abandon => self.abandon().await.map(|()| None),
                Next::Finish => self.finish().await,
                Next::ForgetAdd => self.forget_add().await.map(|()| None),
                Next::GiveUp => self.give_up().await.map(|()| None),
            };
            match step {
                Ok(None) => {}
                Ok(Some(halt)) => return halt,
                Err(err) => return Halt::Failed(err),
            }
        }
        Halt::Wait(Some(Timestamp::now()))
    }

    /// While idle, the fingerprint of the client secret the source Secret holds first (one read
    /// of the source Secret): a new one there means the secret in use changed. `None` when it
    /// cannot be read (the token path reports why), a rotation is under way (it knows), or the
    /// credential is being deleted.
    async fn source_while_idle(&self) -> Option<String> {
        let idle = self.stored.as_ref().is_some_and(|s| s.procedure.step == Step::Idle);
        // Winding down never looks at it.
        if !idle || self.deleting {
            return None;
        }
        let (client, _) = self.client().await.ok()?;
        Self::primary(&client).ok().map(SecretValue::fingerprint)
    }

    async fn save(&mut self, procedure: Procedure, new_secret: Option<SecretValue>) -> Result<()> {
        self.ctx.leadership.check()?;
        state_secret::save(self.secrets, self.cred, &procedure, new_secret.as_ref()).await?;
        let new_secret = new_secret.filter(|_| procedure.step.holds_new_value());
        self.stored = Some(Stored { procedure, new_secret });
        Ok(())
    }

    /// The client as the source Secret has it now (the first secret is the one in use).
    async fn client(&self) -> Result<(OAuthClient, String)> {
        let flow = flows::resolve(self.secrets, self.cred).await?;
        Ok((flow.client().clone(), flow.revision()))
    }

    fn primary(client: &OAuthClient) -> Result<&SecretValue> {
        client.secrets.first().map(|(_, secret)| secret).ok_or(Error::NoFlow)
    }

    /// Waits for the host's rate limit and checks leadership before a remote call.
    async fn before_call(&self, url: &str) -> Result<()> {
        if let Some(host) = reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned)) {
            self.ctx.rate_limiter.acquire(&host).await;
        }
        self.ctx.leadership.check()
    }

    /// A token with the management scopes, minted with `secret`, and when it was requested.
    async fn mint_with(
        &self,
        client: &OAuthClient,
        secret: &SecretValue,
        request: &str,
    ) -> Result<crate::token::MintedToken> {
        let inputs = ServerToServerInputs {
            ims_endpoint: self.flow.ims_endpoint.trim_end_matches('/').to_owned(),
            client: OAuthClient {
                client_id: client.client_id.clone(),
                secrets: vec![("rotation".into(), secret.clone())],
                notes: vec![],
            },
            scopes: management::SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            org_id: None,
        };
        self.before_call(&inputs.ims_endpoint).await?;
        let minted = inputs.mint(&self.ctx.tokens, None).await;
        self.ctx.metrics.rotation_request(request, minted.as_ref().map_or_else(Error::reason, |_| "ok"));
        minted.map_err(|err| match err {
            // IMS refuses scopes the project does not grant: the I/O Management API is missing.
            Error::InvalidScope { description, .. } => Error::ManagementApiNotInProject {
                description: format!("IMS refused the management scopes: {description}"),
            },
            other => other,
        })
    }

    /// A management token minted with `secret` (reused while valid), and when it was minted if
    /// that happened just now.
    async fn management_token(
        &self,
        client: &OAuthClient,
        secret: &SecretValue,
    ) -> Result<(SecretValue, Option<Timestamp>)> {
        let fingerprint = secret.fingerprint();
        let now = Timestamp::now();
        if let Some(token) =
            self.ctx.states.read(&self.key, |s| s.rotation().management_token(&fingerprint, now)).flatten()
        {
            return Ok((token, None));
        }
        let minted = self.mint_with(client, secret, "management_token").await?;
        let token = minted.access_token.clone();
        self.ctx
            .states
            .update(&self.key, |s| s.rotation_mut().keep_management_token(fingerprint, token, minted.expires_at));
        Ok((minted.access_token, Some(minted.issued_at)))
    }

    /// One I/O Management API call, after the rate limit, counted.
    async fn call<T>(&self, request: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
        self.before_call(&self.settings.endpoint).await?;
        let result = call.await;
        self.ctx.metrics.rotation_request(request, result.as_ref().map_or_else(Error::reason, |_| "ok"));
        result
    }

    fn api<'b>(&'b self, client: &'b OAuthClient, token: &'b SecretValue) -> Result<ManagementApi<'b>> {
        ManagementApi::new(&self.ctx.tokens, &self.settings, &client.client_id, token)
    }

    /// Which secret is in use, and how old it is: at the first look, and again whenever the
    /// source Secret holds another client secret than when it was last identified.
    async fn observe(&mut self) -> Result<()> {
        let (client, _) = self.client().await?;
        let primary = Self::primary(&client)?;
        let source = primary.fingerprint();
        let (token, minted_at) = self.management_token(&client, primary).await?;
        let (listed, _) = self.call("list", self.api(&client, &token)?.list()).await?;
        let mut procedure = self.procedure();
        let before = procedure.current.take();
        procedure.current =
            plan::identify(&listed, before.as_ref(), &source, minted_at).map(|l| secret_ref(l, &source));
        procedure.identified_source = Some(source);
        procedure.observed_at.get_or_insert_with(Timestamp::now);
        let changed = before.as_ref().map(|b| &b.uuid) != procedure.current.as_ref().map(|c| &c.uuid);
        let note = match (&before, &procedure.current) {
            (Some(before), Some(now)) if changed => Some(format!(
                "the source Secret holds another client secret: {} (created {}) is in use, no longer {}",
                now.uuid,
                rfc3339(now.created_at),
                before.uuid
            )),
            _ => None,
        };
        self.save(procedure, None).await?;
        if let Some(note) = note {
            self.notice(Reason::ClientSecretInUseChanged, note);
        }
        Ok(())
    }

    async fn start(&mut self, cause: Cause) -> Result<Option<Halt>> {
        // Before anything changes at Adobe: a new secret that cannot reach the source Secret
        // would only sit there.
        self.check_source_writable().await?;
        // So that a deletion in the middle winds the rotation down first.
        finalizer::ensure(self.cred, self.ctx).await?;
        let (client, _) = self.client().await?;
        let primary = Self::primary(&client)?;
        let source = primary.fingerprint();
        let (token, minted_at) = self.management_token(&client, primary).await?;
        let api = self.api(&client, &token)?;
        let (listed, checked) = self.call("list", api.list()).await?;
        let mut procedure = self.procedure();
        // Identified from what the source Secret holds now, not from a uuid remembered.
        let at = plan::StartContext {
            known: procedure.current.as_ref(),
            source: &source,
            used_since: minted_at,
            delete_other: self.settings.delete_other_secret,
            grace: self.settings.grace,
            now: Timestamp::now(),
        };
        let (current, other) = match plan::plan_start(&listed, at) {
            StartPlan::Add { current, delete_first } => (current, delete_first),
            StartPlan::HoldOther { current, other, last_used, until } => {
                let current = current.uuid;
                return Ok(Some(Halt::Held { held: Held::Other { current }, uuid: other.uuid, last_used, until }));
            }
            StartPlan::Refuse(detail) if listed.len() == 2 => return Err(Error::TwoClientSecretsExist { detail }),
            StartPlan::Refuse(detail) => return Err(Error::MalformedManagementResponse { detail }),
        };
        if let Some(other) = other {
            self.call("delete", api.delete(&other.uuid, &checked)).await?;
            let note = format!(
                "deleted client secret {} (created {}) to make room for the rotation, as clientSecretRotation.deleteOtherSecret allows",
                other.uuid,
                rfc3339(other.created_at)
            );
            warn!("{note}");
            self.notices.push(Notice::warning(Reason::OtherSecretDeleted.as_str(), "Rotate", note));
        }
        let now = Timestamp::now();
        procedure.current = Some(secret_ref(&current, &source));
        procedure.identified_source = Some(source);
        procedure.handled_trigger = self.trigger.clone().or(procedure.handled_trigger);
        procedure.step = Step::Adding { before: vec![current.uuid.clone()], requested_at: now, cause, started_at: now };
        // Persisted before the add: a secret that appears without its answer is then known to
        // be this add's orphan.
        self.save(procedure, None).await?;
        self.notice(
            Reason::RotationStarted,
            format!(
                "rotating the client secret ({}): current secret {} created {}",
                cause.describe(),
                current.uuid,
                rfc3339(current.created_at)
            ),
        );
        self.add(&client, &token, &checked).await.map(|()| None)
    }

    /// Asks the API server whether this operator may update the source Secret. An answer that
    /// cannot be had is no refusal: the write itself will tell.
    async fn check_source_writable(&self) -> Result<()> {
        let name = self.flow.client_secret_ref.name.clone();
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

    /// Adds a secret and persists it at once: Adobe shows its value only in this answer.
    async fn add(&mut self, client: &OAuthClient, token: &SecretValue, checked: &Checked) -> Result<()> {
        let added = self.call("add", self.api(client, token)?.add(checked)).await?;
        let (uuid, created_at, secret) = (added.uuid, added.created_at, added.secret);
        let held = Unpersisted { uuid: uuid.clone(), created_at, value: secret.clone() };
        self.ctx.states.update(&self.key, |s| s.rotation_mut().hold_unpersisted(held));
        self.persist_added(uuid, created_at, secret).await
    }

    async fn persist_added(&mut self, uuid: String, created_at: Timestamp, secret: SecretValue) -> Result<()> {
        let mut procedure = self.procedure();
        let Step::Adding { cause, started_at, .. } = procedure.step else {
            return Err(invalid_step(self.cred, "Adding"));
        };
        procedure.step = Step::Verifying {
            new: SecretRef { uuid: uuid.clone(), created_at, fingerprint: Some(secret.fingerprint()) },
            old: procedure.current.as_ref().map(|c| c.uuid.clone()),
            added_at: Timestamp::now(),
            cause,
            started_at,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.save(procedure.clone(), Some(secret.clone())).await {
                Ok(()) => break,
                Err(err) if attempt < PERSIST_ATTEMPTS && !matches!(err, Error::LeadershipLost) => {
                    warn!(error = %err, attempt, "persisting the new client secret failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200) * 2_u32.pow(attempt)).await;
                }
                Err(err) => return Err(err),
            }
        }
        self.ctx.states.update(&self.key, |s| s.rotation_mut().persisted());
        self.notice(
            Reason::ClientSecretAdded,
            format!("added client secret {uuid} and saved it in Secret {:?}", state_secret::secret_name(self.cred)),
        );
        Ok(())
    }

    /// After a lost add answer: persist a secret this process still holds, or delete the
    /// orphans (their values are unknown to anyone) and add again.
    async fn resume_add(&mut self) -> Result<()> {
        if let Some(remaining) = self.clear_lost_add().await? {
            let (client, token, listed, checked) = remaining;
            if listed >= 2 {
                let detail = "another secret appeared during the rotation".to_owned();
                return Err(Error::TwoClientSecretsExist { detail });
            }
            self.add(&client, &token, &checked).await?;
        }
        Ok(())
    }

    /// The credential is being deleted during an add: what the add created is deleted (a secret
    /// it returned is persisted and given up like any new secret), and no add is made.
    async fn forget_add(&mut self) -> Result<()> {
        if self.clear_lost_add().await?.is_some() {
            let mut procedure = self.procedure();
            procedure.step = Step::Idle;
            self.save(procedure, None).await?;
        }
        Ok(())
    }

    /// Settles an add whose answer may be lost: a secret this replica holds in memory is
    /// persisted (`None`); else the secrets the add created are deleted as orphans (nobody ever
    /// saw their values), and the client, management token, number of secrets left and the
    /// checked list are returned.
    async fn clear_lost_add(&mut self) -> Result<Option<(OAuthClient, SecretValue, usize, Checked)>> {
        let Step::Adding { before, requested_at, .. } = self.procedure().step else {
            return Err(invalid_step(self.cred, "Adding"));
        };
        if let Some(held) = self.ctx.states.read(&self.key, |s| s.rotation().unpersisted()).flatten() {
            self.persist_added(held.uuid, held.created_at, held.value).await?;
            return Ok(None);
        }
        let (client, _) = self.client().await?;
        let (token, _) = self.management_token(&client, Self::primary(&client)?).await?;
        let (listed, checked) = self.call("list", self.api(&client, &token)?.list()).await?;
        let orphans: Vec<Listed> = plan::orphans(&listed, &before, requested_at).into_iter().cloned().collect();
        for orphan in &orphans {
            self.call("delete", self.api(&client, &token)?.delete(&orphan.uuid, &checked)).await?;
            self.notice(
                Reason::OrphanedSecretDeleted,
                format!(
                    "deleted client secret {}: an interrupted add created it, and its value, shown only in the lost answer, is known to nobody",
                    orphan.uuid
                ),
            );
        }
        let left = listed.len().saturating_sub(orphans.len());
        Ok(Some((client, token, left, checked)))
    }

    /// The credential is being deleted before the new secret reached the source Secret: nobody
    /// would ever hold it, so it is abandoned (deleted at Adobe), not verified.
    async fn give_up(&mut self) -> Result<()> {
        let mut procedure = self.procedure();
        let Step::Verifying { new, cause, .. } = procedure.step.clone() else {
            return Err(invalid_step(self.cred, "Verifying"));
        };
        let message = "the AdobeCredential is being deleted before the new secret was put into use".to_owned();
        procedure.step = Step::Abandoning { new_uuid: new.uuid, message, cause };
        self.save(procedure, None).await
    }

    /// Mints with the new secret; once IMS accepts it, writes it to the source Secret.
    async fn verify(&mut self, give_up: bool) -> Result<Option<Halt>> {
        let mut procedure = self.procedure();
        let Step::Verifying { new, old, cause, started_at, .. } = procedure.step.clone() else {
            return Err(invalid_step(self.cred, "Verifying"));
        };
        let secret = self.new_secret()?;
        let (client, _) = self.client().await?;
        let attempt = self.ctx.states.update(&self.key, |s| s.rotation_mut().verify_attempted());
        match self.mint_with(&client, &secret, "verify").await {
            Ok(minted) => {
                self.ctx.states.update(&self.key, |s| {
                    s.rotation_mut().verify_done();
                    s.rotation_mut().keep_management_token(
                        secret.fingerprint(),
                        minted.access_token.clone(),
                        minted.expires_at,
                    );
                });
                let keys = self.write_source(&secret).await?;
                procedure.step =
                    Step::SourceWritten { new: new.clone(), old, written_at: Timestamp::now(), started_at };
                self.save(procedure, Some(secret)).await?;
                self.notice(
                    Reason::SourceSecretUpdated,
                    format!(
                        "IMS accepts the new client secret {}; wrote it to Secret {:?} key {:?}, the previous one kept under key {:?}",
                        new.uuid, self.flow.client_secret_ref.name, keys.0, keys.1
                    ),
                );
                Ok(None)
            }
            Err(Error::InvalidClient { description, .. }) if give_up => {
                let timeout_secs = self.ctx.rotation.verify_timeout.as_secs();
                let err = Error::NewSecretVerificationFailed {
                    uuid: new.uuid.clone(),
                    timeout_secs,
                    last_error: description,
                };
                procedure.step = Step::Abandoning { new_uuid: new.uuid, message: err.to_string(), cause };
                self.save(procedure, None).await?;
                Ok(None)
            }
            Err(Error::InvalidClient { .. }) => {
                let wait = Duration::from_secs(1).saturating_mul(1 << attempt.min(4)).min(MAX_VERIFY_WAIT);
                Ok(Some(Halt::VerifyPending(Timestamp::now() + wait)))
            }
            Err(other) => Err(other),
        }
    }

    /// Puts the new secret first in the source Secret and the previous first one under the
    /// secondary key, with an update conditioned on the version read (an edit in between is never
    /// overwritten). Nothing to do when it is there already. Returns the two keys.
    async fn write_source(&self, secret: &SecretValue) -> Result<(String, String)> {
        let r = &self.flow.client_secret_ref;
        let secondary = r.secondary_client_secret_key.clone().ok_or(Error::InvalidRotationSpec {
            field: "clientSecretRef",
            reason: "needs secondaryClientSecretKey".into(),
        })?;
        let keys = (r.client_secret_key.clone(), secondary.clone());
        let mut source = self
            .secrets
            .get_opt(&r.name)
            .await
            .map_err(Error::kube("reading the source Secret"))?
            .ok_or_else(|| Error::SourceSecretNotFound { name: r.name.clone() })?;
        let data = source.data.get_or_insert_with(Default::default);
        let current = data.get(&r.client_secret_key).cloned();
        let holds_new = current
            .as_ref()
            .and_then(|v| std::str::from_utf8(&v.0).ok())
            .is_some_and(|v| crate::source::clean(v).0 == secret.expose());
        if holds_new {
            return Ok(keys);
        }
        if let Some(previous) = current {
            data.insert(secondary, previous);
        }
        data.insert(r.client_secret_key.clone(), ByteString(secret.expose().as_bytes().to_vec()));
        self.ctx.leadership.check()?;
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
        self.secrets
            .replace(&r.name, &params, &source)
            .await
            .map_err(Error::kube("writing the new client secret to the source Secret"))?;
        Ok(keys)
    }

    /// Whether the target's token was minted with the new secret, now first in the source.
    async fn confirm_switch(&mut self, token: &StoredToken) -> Result<bool> {
        let mut procedure = self.procedure();
        let Step::SourceWritten { new, old, started_at, .. } = procedure.step.clone() else {
            return Ok(false);
        };
        let secret = self.new_secret()?;
        let (client, revision) = self.client().await?;
        let primary_key = &self.flow.client_secret_ref.client_secret_key;
        let source_holds_new = client.secrets.first().is_some_and(|(k, v)| k == primary_key && *v == secret);
        if !source_holds_new {
            let (name, key) = (self.flow.client_secret_ref.name.clone(), primary_key.clone());
            return Err(Error::SourceSecretReverted { name, key });
        }
        if token.revision != revision || token.client_secret_key.as_deref() != Some(primary_key) {
            return Ok(false);
        }
        let now = Timestamp::now();
        procedure.step = Step::Switched { new: new.clone(), old, switched_at: now, started_at };
        self.save(procedure, Some(secret)).await?;
        let took = now.duration_since(started_at).as_secs_f64();
        self.notice(
            Reason::ClientSecretSwitched,
            format!("a token minted with the new client secret {} is in the target Secret, {took:.1}s after the rotation started", new.uuid),
        );
        Ok(true)
    }

    /// After the grace period: the previous secret goes unless someone else still uses it.
    async fn finish(&mut self) -> Result<Option<Halt>> {
        let mut procedure = self.procedure();
        let Step::Switched { new, old, switched_at, started_at } = procedure.step.clone() else {
            return Err(invalid_step(self.cred, "Switched"));
        };
        let secret = self.new_secret()?;
        let (client, _) = self.client().await?;
        if Self::primary(&client)? != &secret {
            let r = &self.flow.client_secret_ref;
            return Err(Error::SourceSecretReverted { name: r.name.clone(), key: r.client_secret_key.clone() });
        }
        let (token, _) = self.management_token(&client, &secret).await?;
        let api = self.api(&client, &token)?;
        let (listed, checked) = self.call("list", api.list()).await?;
        if !listed.iter().any(|l| l.uuid == new.uuid) {
            return Err(Error::NewSecretMissing { uuid: new.uuid });
        }
        let now = Timestamp::now();
        if let Some(previous) = old.as_deref().and_then(|uuid| listed.iter().find(|l| l.uuid == uuid)) {
            match plan::old_secret(previous.last_used_at, switched_at, self.settings.grace, now) {
                OldSecret::HoldUntil { last_used, until } => {
                    let uuid = previous.uuid.clone();
                    return Ok(Some(Halt::Held { held: Held::Previous, uuid, last_used, until }));
                }
                OldSecret::Delete => {
                    self.call("delete", api.delete(&previous.uuid, &checked)).await?;
                }
            }
        }
        procedure.identified_source = new.fingerprint.clone();
        procedure.current = Some(new.clone());
        procedure.last_rotation = Some(now);
        procedure.last_failure = None;
        procedure.step = Step::Idle;
        self.save(procedure, None).await?;
        self.ctx.metrics.rotation_ended("completed");
        let took = now.duration_since(started_at).as_secs_f64();
        let old = old.unwrap_or_else(|| "(unknown)".into());
        self.notice(
            Reason::RotationCompleted,
            format!(
                "deleted the previous client secret {old}; client secret {} in use, rotation completed in {took:.1}s",
                new.uuid
            ),
        );
        Ok(None)
    }

    /// The new secret never worked: delete it (with a token of the current secret), keep the
    /// current one, and remember the failure.
    async fn abandon(&mut self) -> Result<()> {
        let mut procedure = self.procedure();
        let Step::Abandoning { new_uuid, message, .. } = procedure.step.clone() else {
            return Err(invalid_step(self.cred, "Abandoning"));
        };
        let (client, _) = self.client().await?;
        let (token, _) = self.management_token(&client, Self::primary(&client)?).await?;
        let api = self.api(&client, &token)?;
        // Listed first, like every change: the list proves the credential is this client's.
        let (listed, checked) = self.call("list", api.list()).await?;
        if listed.iter().any(|l| l.uuid == new_uuid) {
            self.call("delete", api.delete(&new_uuid, &checked)).await?;
        }
        procedure.step = Step::Idle;
        let reason = "NewSecretVerificationFailed".to_owned();
        procedure.last_failure = Some(FailedRotation { at: Timestamp::now(), reason, message: message.clone() });
        self.save(procedure, None).await?;
        self.ctx.metrics.rotation_ended("abandoned");
        let note = format!("deleted the new client secret {new_uuid}: {message}");
        warn!("{note}");
        self.notices.push(Notice::warning(Reason::NewSecretDeleted.as_str(), "Rotate", note));
        Ok(())
    }
}

/// A listed secret whose value has fingerprint `fingerprint`.
fn secret_ref(listed: &Listed, fingerprint: &str) -> SecretRef {
    SecretRef { uuid: listed.uuid.clone(), created_at: listed.created_at, fingerprint: Some(fingerprint.to_owned()) }
}

fn invalid_step(cred: &AdobeCredential, expected: &str) -> Error {
    Error::RotationStateInvalid {
        name: state_secret::secret_name(cred),
        detail: format!("the procedure is not at step {expected}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ClientSecretRotation;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn settings(every: Option<&str>) -> Settings {
        Settings::from_spec(&ClientSecretRotation {
            org_id: "1".into(),
            credential_id: "2".into(),
            every: every.map(str::to_owned),
            grace_period: Some("1h".into()),
            management_endpoint: "https://api.adobe.io".into(),
            delete_other_secret: false,
        })
        .expect("valid")
    }

    fn procedure(step: Step) -> Procedure {
        Procedure {
            current: Some(SecretRef { uuid: "aa".into(), created_at: ts("2026-01-01T00:00:00Z"), fingerprint: None }),
            step,
            ..Default::default()
        }
    }

    #[test]
    fn idle_says_which_secret_is_in_use_and_when_the_next_rotation_is() {
        let d = describe(Some(&procedure(Step::Idle)), Some(&settings(Some("90d"))), &Halt::Wait(None));
        assert!(d.healthy);
        assert_eq!(d.reason, "RotationIdle");
        assert_eq!(
            d.message,
            "client secret aa (created 2026-01-01T00:00:00Z) in use; next rotation at 2026-04-01T00:00:00Z"
        );
        assert_eq!(d.status.step, "Idle");
        assert_eq!(d.status.current_secret_uuid.as_deref(), Some("aa"));
        assert_eq!(d.status.next_rotation_time, Some(Time(ts("2026-04-01T00:00:00Z"))));
        let on_demand = describe(Some(&procedure(Step::Idle)), Some(&settings(None)), &Halt::Wait(None));
        assert!(on_demand.message.contains("on demand only"), "{}", on_demand.message);
        assert_eq!(on_demand.status.next_rotation_time, None);
    }

    #[test]
    fn steps_in_progress_are_healthy_and_name_the_new_secret() {
        let t = ts("2026-01-01T00:00:00Z");
        let new = SecretRef { uuid: "bb".into(), created_at: t, fingerprint: None };
        let switched = Step::Switched { new, old: Some("aa".into()), switched_at: t, started_at: t };
        let d = describe(Some(&procedure(switched)), Some(&settings(Some("90d"))), &Halt::Wait(Some(t)));
        assert_eq!((d.healthy, d.reason), (true, "RotationInProgress"));
        assert_eq!(d.status.step, "WaitingForGrace");
        assert_eq!(d.status.new_secret_uuid.as_deref(), Some("bb"));
        assert_eq!(d.status.next_rotation_time, None, "no next rotation while one is under way");
        assert!(d.message.contains("at 2026-01-01T01:00:00Z"), "{}", d.message);
    }

    #[test]
    fn failures_holds_and_abandoned_rotations_are_not_healthy() {
        let err = Error::ManagementCredentialNotFound { org_id: "1".into(), credential_id: "2".into() };
        let d = describe(Some(&procedure(Step::Idle)), Some(&settings(None)), &Halt::Failed(err));
        assert_eq!((d.healthy, d.reason), (false, "ManagementCredentialNotFound"));
        assert!(d.message.contains("check clientSecretRotation.orgId and credentialId"));
        let (last_used, until) = (ts("2026-01-01T00:30:00Z"), ts("2026-01-01T01:30:00Z"));
        let held = Halt::Held { held: Held::Previous, uuid: "aa".into(), last_used, until };
        let d = describe(Some(&procedure(Step::Idle)), Some(&settings(None)), &held);
        assert_eq!((d.healthy, d.reason), (false, "OldSecretStillInUse"));
        let other = Held::Other { current: "bb".into() };
        let d = describe(
            Some(&procedure(Step::Idle)),
            Some(&settings(None)),
            &Halt::Held { held: other, uuid: "aa".into(), last_used, until },
        );
        assert_eq!((d.healthy, d.reason), (false, "OtherSecretStillInUse"));
        assert!(d.message.contains("holds client secret bb; the other one, aa, was used"), "{}", d.message);
        let mut abandoned = procedure(Step::Idle);
        abandoned.last_failure = Some(FailedRotation {
            at: ts("2026-01-01T00:00:00Z"),
            reason: "NewSecretVerificationFailed".into(),
            message: "IMS did not accept the new client secret bb".into(),
        });
        let d = describe(Some(&abandoned), Some(&settings(Some("90d"))), &Halt::Wait(None));
        assert_eq!((d.healthy, d.reason), (false, "NewSecretVerificationFailed"));
        assert!(d.message.starts_with("IMS did not accept") && d.message.contains("next rotation at"), "{}", d.message);
    }
}
