//! The steps from a persisted new secret to the end: verifying it at IMS, writing it to the
//! source Secret, confirming the switch once the target holds a token minted with it, and
//! deleting the previous secret after the grace period; or abandoning a new secret that never
//! worked.

use std::time::Duration;

use jiff::Timestamp;

use super::{Halt, Held, Look, Run, primary};
use crate::error::{Error, Result};
use crate::names::Reason;
use crate::rotation::persisted::{FailedRotation, Step, VERIFICATION_FAILED};
use crate::rotation::plan::{self, OldSecret};
use crate::rotation::world::{MintFor, SourceKeys, World};
use crate::target::StoredToken;

/// Longest wait between two verification attempts of a new secret.
const MAX_VERIFY_WAIT: Duration = Duration::from_secs(15);

impl<W: World> Run<'_, W> {
    /// Mints with the new secret; once IMS accepts it, writes it to the source Secret.
    pub(super) async fn verify(&mut self, give_up: bool, now: Timestamp) -> Result<Option<Halt>> {
        let mut procedure = self.procedure();
        let Step::Verifying { new, old, cause, started_at, .. } = procedure.step.clone() else {
            return Err(self.invalid_step("Verifying"));
        };
        let secret = self.new_secret()?;
        let client = self.client().await?;
        let attempt = self.world.remember(|m| m.verify_attempted());
        match self.mint_with(&client, &secret, MintFor::Verify).await {
            Ok(minted) => {
                self.world.remember(|m| {
                    m.verify_done();
                    m.keep_management_token(secret.fingerprint(), minted.access_token.clone(), minted.expires_at);
                });
                let keys = self.source_keys()?;
                self.world.write_source(&keys, &secret).await?;
                procedure.step = Step::SourceWritten { new: new.clone(), old, written_at: now, started_at };
                self.save(procedure, Some(secret)).await?;
                self.notice(
                    Reason::SourceSecretUpdated,
                    format!(
                        "IMS accepts the new client secret {}; wrote it to Secret {:?} key {:?}, the previous one kept under key {:?}",
                        new.uuid, keys.name, keys.primary, keys.secondary
                    ),
                );
                Ok(None)
            }
            Err(Error::InvalidClient { description, .. }) if give_up => {
                let err = Error::NewSecretVerificationFailed {
                    uuid: new.uuid.clone(),
                    timeout_secs: self.rotating.verify_timeout.as_secs(),
                    last_error: description,
                };
                procedure.step = Step::Abandoning { new_uuid: new.uuid, message: err.to_string(), cause };
                self.save(procedure, None).await?;
                Ok(None)
            }
            Err(Error::InvalidClient { .. }) => {
                let wait = Duration::from_secs(1).saturating_mul(1 << attempt.min(4)).min(MAX_VERIFY_WAIT);
                Ok(Some(Halt::VerifyPending(now + wait)))
            }
            Err(other) => Err(other),
        }
    }

    /// Where the new secret goes: first in the source Secret, the previous one under the
    /// secondary key (which the rotation needs).
    fn source_keys(&self) -> Result<SourceKeys> {
        let r = &self.rotating.source;
        let secondary = r.secondary_client_secret_key.clone().ok_or(Error::InvalidRotationSpec {
            field: "clientSecretRef",
            reason: "needs secondaryClientSecretKey".into(),
        })?;
        Ok(SourceKeys { name: r.name.clone(), primary: r.client_secret_key.clone(), secondary })
    }

    /// The credential is being deleted before the new secret reached the source Secret: nobody
    /// would ever hold it, so it is abandoned (deleted at Adobe), not verified.
    pub(super) async fn give_up(&mut self) -> Result<()> {
        let mut procedure = self.procedure();
        let Step::Verifying { new, cause, .. } = procedure.step.clone() else {
            return Err(self.invalid_step("Verifying"));
        };
        let message = "the AdobeCredential is being deleted before the new secret was put into use".to_owned();
        procedure.step = Step::Abandoning { new_uuid: new.uuid, message, cause };
        self.save(procedure, None).await
    }

    /// Whether the target's token was minted with the new secret, now first in the source.
    pub(super) async fn confirm_switch(&mut self, token: &StoredToken) -> Result<bool> {
        let mut procedure = self.procedure();
        let Step::SourceWritten { new, old, started_at, .. } = procedure.step.clone() else {
            return Ok(false);
        };
        let secret = self.new_secret()?;
        let (client, revision) = self.world.read_client().await?;
        let primary_key = &self.rotating.source.client_secret_key;
        let source_holds_new = client.secrets.first().is_some_and(|(k, v)| k == primary_key && *v == secret);
        if !source_holds_new {
            let (name, key) = (self.rotating.source.name.clone(), primary_key.clone());
            return Err(Error::SourceSecretReverted { name, key });
        }
        if token.revision != revision || token.client_secret_key.as_deref() != Some(primary_key) {
            return Ok(false);
        }
        let now = self.world.now();
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
    pub(super) async fn finish_rotation(&mut self, now: Timestamp) -> Result<Option<Halt>> {
        let mut procedure = self.procedure();
        let Step::Switched { new, old, switched_at, started_at } = procedure.step.clone() else {
            return Err(self.invalid_step("Switched"));
        };
        let secret = self.new_secret()?;
        let client = self.client().await?;
        if primary(&client)? != &secret {
            let r = &self.rotating.source;
            return Err(Error::SourceSecretReverted { name: r.name.clone(), key: r.client_secret_key.clone() });
        }
        let (token, _) = self.management_token(&client, &secret, now).await?;
        let (listed, checked) = self.list(&client, &token).await?;
        if !listed.iter().any(|l| l.uuid == new.uuid) {
            return Err(Error::NewSecretMissing { uuid: new.uuid });
        }
        if let Some(previous) = old.as_deref().and_then(|uuid| listed.iter().find(|l| l.uuid == uuid)) {
            match plan::old_secret(previous.last_used_at, switched_at, self.rotating.settings.grace, now) {
                OldSecret::HoldUntil { last_used, until } => {
                    let uuid = previous.uuid.clone();
                    return Ok(Some(Halt::Held { held: Held::Previous, uuid, last_used, until }));
                }
                OldSecret::Delete => {
                    self.world.delete(&client.client_id, &token, &previous.uuid, &checked).await?;
                }
            }
        }
        procedure.identified_source = new.fingerprint.clone();
        procedure.current = Some(new.clone());
        procedure.last_rotation = Some(now);
        procedure.last_failure = None;
        procedure.step = Step::Idle;
        self.save(procedure, None).await?;
        self.world.ended("completed");
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
    pub(super) async fn abandon(&mut self, now: Timestamp) -> Result<()> {
        let mut procedure = self.procedure();
        let Step::Abandoning { new_uuid, message, .. } = procedure.step.clone() else {
            return Err(self.invalid_step("Abandoning"));
        };
        // Listed first, like every change: the list proves the credential is this client's.
        let Look { client, token, listed, checked, .. } = self.look(now).await?;
        if listed.iter().any(|l| l.uuid == new_uuid) {
            self.world.delete(&client.client_id, &token, &new_uuid, &checked).await?;
        }
        procedure.step = Step::Idle;
        let reason = VERIFICATION_FAILED.to_owned();
        procedure.last_failure = Some(FailedRotation { at: now, reason, message: message.clone() });
        self.save(procedure, None).await?;
        self.world.ended("abandoned");
        self.warning(Reason::NewSecretDeleted, format!("deleted the new client secret {new_uuid}: {message}"));
        Ok(())
    }
}
