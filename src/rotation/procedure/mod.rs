//! The client secret rotation, step by step. Each reconcile runs it as far as it can go,
//! persisting every step in the state Secret before the next (see `plan::Step`): list → add →
//! verify → write the source Secret → (the token path mints with the new secret) → after the
//! grace period, compare the previous secret's last use and delete it. What to do next is
//! decided by `plan::next` from the persisted step alone, so a restarted operator resumes where
//! the last one stopped; a secret whose add answer was lost is deleted as an orphan (nobody ever
//! saw its value) and the add redone, so there is never a third secret and never a lost one.
//!
//! Everything outside goes through [`World`], so each step is unit-tested against a scripted
//! stand-in (`tests.rs`). [`adding`] holds the steps up to a persisted new secret, [`switching`]
//! those from verifying it to deleting the previous one.

mod adding;
mod switching;
#[cfg(test)]
mod tests;

use std::time::Duration;

use jiff::Timestamp;
use tracing::{info, warn};

use super::management::Checked;
use super::persisted::{Procedure, SecretRef, Step};
use super::plan::{self, Listed, Next};
use super::settings::Settings;
use super::state_secret::Stored;
use super::world::{MintFor, World};
use crate::crd::ClientSecretRef;
use crate::error::{Error, Result};
use crate::names::Reason;
use crate::notice::Notice;
use crate::secret_value::SecretValue;
use crate::source::OAuthClient;
use crate::target::StoredToken;

/// Steps one reconcile may take at most (a whole rotation takes six).
const MAX_STEPS: usize = 10;

/// What the procedure works from in one reconcile, besides the world.
#[derive(Debug, Clone)]
pub struct Rotating {
    pub settings: Settings,
    /// The source Secret whose client secret is rotated.
    pub source: ClientSecretRef,
    /// Name of the state Secret (for messages).
    pub state_secret: String,
    /// How long a new secret may take before IMS accepts it.
    pub verify_timeout: Duration,
    /// SHA-256 of the on-demand trigger annotation, if set.
    pub trigger: Option<String>,
    /// The credential is being deleted: the rotation is wound down, none starts.
    pub deleting: bool,
}

/// Where the procedure stopped in this reconcile.
#[derive(Debug)]
pub enum Halt {
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
pub enum Held {
    /// The previous secret, after the switch.
    Previous,
    /// The other secret `deleteOtherSecret` would delete before a rotation starts; the source
    /// Secret holds `current`.
    Other { current: String },
}

impl Held {
    pub fn reason(&self) -> Reason {
        match self {
            Held::Previous => Reason::OldSecretStillInUse,
            Held::Other { .. } => Reason::OtherSecretStillInUse,
        }
    }
}

/// What a run of the procedure leaves: the persisted state, its Events, where and when it
/// stopped.
#[derive(Debug)]
pub struct Progress {
    pub stored: Option<Stored>,
    pub notices: Vec<Notice>,
    pub halt: Halt,
    pub stopped_at: Timestamp,
}

impl Progress {
    /// A rotation that could not run at all.
    pub fn failed(err: Error, at: Timestamp) -> Self {
        Self { stored: None, notices: vec![], halt: Halt::Failed(err), stopped_at: at }
    }

    /// A credential being deleted whose rotation is wound down and let go of.
    pub fn released(&self, rotating: &Rotating) -> bool {
        wound_down(rotating, &self.halt)
    }
}

/// Everything up to writing the new secret to the source Secret: runs steps until one has to
/// wait.
pub async fn advance<W: World>(world: &W, rotating: &Rotating) -> Progress {
    let mut run = Run { world, rotating, stored: None, notices: vec![] };
    let halt = match world.load().await {
        Ok(stored) => {
            run.stored = stored;
            // A rotation under way since before the finalizer existed is held from now on.
            let under_way = run.stored.as_ref().is_some_and(|s| s.procedure.step != Step::Idle);
            let held = if under_way && !rotating.deleting { world.hold().await } else { Ok(()) };
            match held {
                Ok(()) => run.drive().await,
                Err(err) => Halt::Failed(err),
            }
        }
        Err(err) => Halt::Failed(err),
    };
    run.finish(halt).await
}

/// Once the token path has put `token` into the target: if it was minted with the new secret,
/// the switch is recorded and the procedure goes on (to the grace period, or straight to
/// deleting the previous secret).
pub async fn after_token<W: World>(
    world: &W,
    rotating: &Rotating,
    progress: Progress,
    token: &StoredToken,
) -> Progress {
    if !matches!(progress.halt, Halt::AwaitingToken) {
        return progress;
    }
    let mut run = Run { world, rotating, stored: progress.stored, notices: progress.notices };
    let halt = match run.confirm_switch(token).await {
        Ok(true) => run.drive().await,
        Ok(false) => Halt::AwaitingToken,
        Err(err) => Halt::Failed(err),
    };
    run.finish(halt).await
}

/// One reconcile's run of the procedure.
struct Run<'a, W> {
    world: &'a W,
    rotating: &'a Rotating,
    stored: Option<Stored>,
    notices: Vec<Notice>,
}

impl<W: World> Run<'_, W> {
    /// A credential being deleted whose rotation has nothing left to do lets go of it.
    async fn finish(self, halt: Halt) -> Progress {
        let halt = match wound_down(self.rotating, &halt) {
            true => self.world.release().await.map_or_else(Halt::Failed, |()| halt),
            false => halt,
        };
        Progress { stored: self.stored, notices: self.notices, halt, stopped_at: self.world.now() }
    }

    /// Runs steps until one has to wait.
    async fn drive(&mut self) -> Halt {
        for _ in 0..MAX_STEPS {
            let now = self.world.now();
            let source = self.source_while_idle().await;
            let procedure = self.stored.as_ref().map(|s| &s.procedure);
            let (settings, timeout) = (&self.rotating.settings, self.rotating.verify_timeout);
            let next = if self.rotating.deleting {
                plan::wind_down(procedure, settings, timeout, now)
            } else {
                plan::next(procedure, settings, self.rotating.trigger.as_deref(), source.as_deref(), timeout, now)
            };
            let step = match next {
                Next::Wait { until } => return Halt::Wait(until),
                Next::ConfirmSwitch => return Halt::AwaitingToken,
                Next::Observe => self.observe(now).await.map(|()| None),
                Next::Start { cause } => self.start(cause, now).await,
                Next::ResumeAdd => self.resume_add(now).await.map(|()| None),
                Next::Verify { give_up } => self.verify(give_up, now).await,
                Next::Abandon => self.abandon(now).await.map(|()| None),
                Next::Finish => self.finish_rotation(now).await,
                Next::ForgetAdd => self.forget_add(now).await.map(|()| None),
                Next::GiveUp => self.give_up().await.map(|()| None),
            };
            match step {
                Ok(None) => {}
                Ok(Some(halt)) => return halt,
                Err(err) => return Halt::Failed(err),
            }
        }
        Halt::Wait(Some(self.world.now()))
    }

    fn procedure(&self) -> Procedure {
        self.stored.as_ref().map(|s| s.procedure.clone()).unwrap_or_default()
    }

    fn new_secret(&self) -> Result<SecretValue> {
        self.stored.as_ref().and_then(|s| s.new_secret.clone()).ok_or_else(|| Error::RotationStateInvalid {
            name: self.rotating.state_secret.clone(),
            detail: "the new client secret of the rotation in progress is missing".into(),
        })
    }

    fn invalid_step(&self, expected: &str) -> Error {
        Error::RotationStateInvalid {
            name: self.rotating.state_secret.clone(),
            detail: format!("the procedure is not at step {expected}"),
        }
    }

    fn notice(&mut self, reason: Reason, note: String) {
        info!(reason = reason.as_str(), "{note}");
        self.notices.push(Notice::normal(reason, "Rotate", note));
    }

    fn warning(&mut self, reason: Reason, note: String) {
        warn!(reason = reason.as_str(), "{note}");
        self.notices.push(Notice::warning(reason.as_str(), "Rotate", note));
    }

    async fn save(&mut self, procedure: Procedure, new_secret: Option<SecretValue>) -> Result<()> {
        self.world.save(&procedure, new_secret.as_ref()).await?;
        let new_secret = new_secret.filter(|_| procedure.step.holds_new_value());
        self.stored = Some(Stored { procedure, new_secret });
        Ok(())
    }

    /// While idle, the fingerprint of the client secret the source Secret holds first: a new one
    /// there means the secret in use changed. `None` when it cannot be read (the token path
    /// reports why), a rotation is under way (it knows), or the credential is being deleted
    /// (winding down never looks at it).
    async fn source_while_idle(&self) -> Option<String> {
        let idle = self.stored.as_ref().is_some_and(|s| s.procedure.step == Step::Idle);
        if !idle || self.rotating.deleting {
            return None;
        }
        let client = self.world.read_client().await.ok()?.0;
        primary(&client).ok().map(SecretValue::fingerprint)
    }

    /// The client as the source Secret has it now.
    async fn client(&self) -> Result<OAuthClient> {
        Ok(self.world.read_client().await?.0)
    }

    /// A token with the management scopes, minted with `secret`.
    async fn mint_with(
        &self,
        client: &OAuthClient,
        secret: &SecretValue,
        purpose: MintFor,
    ) -> Result<crate::token::MintedToken> {
        self.world.mint(&client.client_id, secret, purpose).await.map_err(|err| match err {
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
        now: Timestamp,
    ) -> Result<(SecretValue, Option<Timestamp>)> {
        let fingerprint = secret.fingerprint();
        if let Some(token) = self.world.remember(|m| m.management_token(&fingerprint, now)) {
            return Ok((token, None));
        }
        let minted = self.mint_with(client, secret, MintFor::ManagementToken).await?;
        let token = minted.access_token.clone();
        self.world.remember(|m| m.keep_management_token(fingerprint, token, minted.expires_at));
        Ok((minted.access_token, Some(minted.issued_at)))
    }

    /// The credential's secrets, refused unless the list is of this client's credential.
    async fn list(&self, client: &OAuthClient, token: &SecretValue) -> Result<(Vec<Listed>, Checked)> {
        let listing = self.world.list(&client.client_id, token).await?;
        listing.checked(&self.rotating.settings, &client.client_id)
    }

    /// The credential's secrets, listed with a management token of the client secret the source
    /// Secret holds first.
    async fn look(&self, now: Timestamp) -> Result<Look> {
        let client = self.client().await?;
        let secret = primary(&client)?.clone();
        let (token, minted_at) = self.management_token(&client, &secret, now).await?;
        let (listed, checked) = self.list(&client, &token).await?;
        Ok(Look { source: secret.fingerprint(), client, token, minted_at, listed, checked })
    }
}

/// What [`Run::look`] saw, and what it takes to act on it.
struct Look {
    client: OAuthClient,
    /// Fingerprint of the source Secret's first client secret.
    source: String,
    token: SecretValue,
    /// When the management token was minted, if that happened just now (a use of the source's
    /// secret the list may show).
    minted_at: Option<Timestamp>,
    listed: Vec<Listed>,
    checked: Checked,
}

/// A credential being deleted whose rotation has nothing left to do: nothing is left at Adobe
/// that nobody holds.
fn wound_down(rotating: &Rotating, halt: &Halt) -> bool {
    rotating.deleting && matches!(halt, Halt::Wait(None))
}

/// The client secret in use: the first in the source Secret.
fn primary(client: &OAuthClient) -> Result<&SecretValue> {
    client.secrets.first().map(|(_, secret)| secret).ok_or(Error::NoFlow)
}

/// A listed secret whose value has fingerprint `fingerprint`.
fn secret_ref(listed: &Listed, fingerprint: &str) -> SecretRef {
    SecretRef { uuid: listed.uuid.clone(), created_at: listed.created_at, fingerprint: Some(fingerprint.to_owned()) }
}
