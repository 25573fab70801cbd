//! The steps up to a persisted new secret: identifying the secret in use, starting a rotation,
//! the add, and settling an add whose answer was lost (or that a deletion interrupts).

use std::time::Duration;

use jiff::Timestamp;
use tracing::warn;

use super::{Halt, Held, Look, Run, secret_ref};
use crate::error::{Error, Result};
use crate::names::Reason;
use crate::rotation::management::Checked;
use crate::rotation::memory::Unpersisted;
use crate::rotation::persisted::{Cause, SecretRef, Step};
use crate::rotation::plan::{self, Listed, StartPlan};
use crate::rotation::world::World;
use crate::secret_value::SecretValue;
use crate::source::OAuthClient;
use crate::time_format::rfc3339;

/// Attempts to persist a new secret before giving up for this reconcile (it stays in memory).
const PERSIST_ATTEMPTS: u32 = 5;

/// What is left after an add whose answer may be lost was settled by deleting its orphans.
struct AfterLostAdd {
    client: OAuthClient,
    token: SecretValue,
    /// Secrets the credential has now.
    left: usize,
    checked: Checked,
}

impl<W: World> Run<'_, W> {
    /// Which secret is in use, and how old it is: at the first look, and again whenever the
    /// source Secret holds another client secret than when it was last identified.
    pub(super) async fn observe(&mut self, now: Timestamp) -> Result<()> {
        let Look { source, minted_at, listed, .. } = self.look(now).await?;
        let mut procedure = self.procedure();
        let before = procedure.current.take();
        procedure.current =
            plan::identify(&listed, before.as_ref(), &source, minted_at).map(|l| secret_ref(l, &source));
        procedure.identified_source = Some(source);
        procedure.observed_at.get_or_insert(now);
        let note = match (&before, &procedure.current) {
            (Some(before), Some(current)) if before.uuid != current.uuid => Some(format!(
                "the source Secret holds another client secret: {} (created {}) is in use, no longer {}",
                current.uuid,
                rfc3339(current.created_at),
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

    pub(super) async fn start(&mut self, cause: Cause, now: Timestamp) -> Result<Option<Halt>> {
        // Before anything changes at Adobe: a new secret that cannot reach the source Secret
        // would only sit there.
        self.world.check_source_writable().await?;
        // So that a deletion in the middle winds the rotation down first.
        self.world.hold().await?;
        let Look { client, source, token, minted_at, listed, checked } = self.look(now).await?;
        let mut procedure = self.procedure();
        let settings = &self.rotating.settings;
        // Identified from what the source Secret holds now, not from a uuid remembered.
        let at = plan::StartContext {
            known: procedure.current.as_ref(),
            source: &source,
            used_since: minted_at,
            delete_other: settings.delete_other_secret,
            grace: settings.grace,
            now,
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
            self.world.delete(&client.client_id, &token, &other.uuid, &checked).await?;
            self.warning(
                Reason::OtherSecretDeleted,
                format!(
                    "deleted client secret {} (created {}) to make room for the rotation, as clientSecretRotation.deleteOtherSecret allows",
                    other.uuid,
                    rfc3339(other.created_at)
                ),
            );
        }
        procedure.current = Some(secret_ref(&current, &source));
        procedure.identified_source = Some(source);
        procedure.handled_trigger = self.rotating.trigger.clone().or(procedure.handled_trigger);
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
        self.add(&client, &token, &checked, now).await.map(|()| None)
    }

    /// Adds a secret and persists it at once: Adobe shows its value only in this answer.
    async fn add(
        &mut self,
        client: &OAuthClient,
        token: &SecretValue,
        checked: &Checked,
        now: Timestamp,
    ) -> Result<()> {
        let added = self.world.add(&client.client_id, token, checked).await?;
        let added = Unpersisted { uuid: added.uuid, created_at: added.created_at, value: added.secret };
        self.world.remember(|m| m.hold_unpersisted(added.clone()));
        self.persist_added(added, now).await
    }

    async fn persist_added(&mut self, added: Unpersisted, now: Timestamp) -> Result<()> {
        let mut procedure = self.procedure();
        let Step::Adding { cause, started_at, .. } = procedure.step else {
            return Err(self.invalid_step("Adding"));
        };
        let Unpersisted { uuid, created_at, value } = added;
        procedure.step = Step::Verifying {
            new: SecretRef { uuid: uuid.clone(), created_at, fingerprint: Some(value.fingerprint()) },
            old: procedure.current.as_ref().map(|c| c.uuid.clone()),
            added_at: now,
            cause,
            started_at,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.save(procedure.clone(), Some(value.clone())).await {
                Ok(()) => break,
                Err(err) if attempt < PERSIST_ATTEMPTS && !matches!(err, Error::LeadershipLost) => {
                    warn!(error = %err, attempt, "persisting the new client secret failed; retrying");
                    self.world.pause(Duration::from_millis(200) * 2_u32.pow(attempt)).await;
                }
                Err(err) => return Err(err),
            }
        }
        self.world.remember(|m| m.persisted());
        let note = format!("added client secret {uuid} and saved it in Secret {:?}", self.rotating.state_secret);
        self.notice(Reason::ClientSecretAdded, note);
        Ok(())
    }

    /// After a lost add answer: persist a secret this process still holds, or delete the
    /// orphans (their values are unknown to anyone) and add again.
    pub(super) async fn resume_add(&mut self, now: Timestamp) -> Result<()> {
        if let Some(after) = self.clear_lost_add(now).await? {
            if after.left >= 2 {
                let detail = "another secret appeared during the rotation".to_owned();
                return Err(Error::TwoClientSecretsExist { detail });
            }
            self.add(&after.client, &after.token, &after.checked, now).await?;
        }
        Ok(())
    }

    /// The credential is being deleted during an add: what the add created is deleted (a secret
    /// it returned is persisted and given up like any new secret), and no add is made.
    pub(super) async fn forget_add(&mut self, now: Timestamp) -> Result<()> {
        if self.clear_lost_add(now).await?.is_some() {
            let mut procedure = self.procedure();
            procedure.step = Step::Idle;
            self.save(procedure, None).await?;
        }
        Ok(())
    }

    /// Settles an add whose answer may be lost: a secret this replica holds in memory is
    /// persisted (`None`); else the secrets the add created are deleted as orphans (nobody ever
    /// saw their values), and what is left is returned.
    async fn clear_lost_add(&mut self, now: Timestamp) -> Result<Option<AfterLostAdd>> {
        let Step::Adding { before, requested_at, .. } = self.procedure().step else {
            return Err(self.invalid_step("Adding"));
        };
        if let Some(held) = self.world.remember(|m| m.unpersisted()) {
            self.persist_added(held, now).await?;
            return Ok(None);
        }
        let Look { client, token, listed, checked, .. } = self.look(now).await?;
        let orphans: Vec<Listed> = plan::orphans(&listed, &before, requested_at).into_iter().cloned().collect();
        for orphan in &orphans {
            self.world.delete(&client.client_id, &token, &orphan.uuid, &checked).await?;
            self.notice(
                Reason::OrphanedSecretDeleted,
                format!(
                    "deleted client secret {}: an interrupted add created it, and its value, shown only in the lost answer, is known to nobody",
                    orphan.uuid
                ),
            );
        }
        let left = listed.len().saturating_sub(orphans.len());
        Ok(Some(AfterLostAdd { client, token, left, checked }))
    }
}
