//! What the client secret rotation keeps in this process's memory between reconciles: its
//! backoff, a management token while it is valid, and a new secret whose persisting failed (so
//! that it is not lost with the answer that showed it). Only an optimisation and a guard: the
//! procedure itself is persisted in the state Secret.

use jiff::{SignedDuration, Timestamp};

use crate::secret_value::SecretValue;

/// A management token is not used this close to its expiry.
const MANAGEMENT_TOKEN_MARGIN: SignedDuration = SignedDuration::from_mins(5);

/// A secret Adobe created whose persisting failed.
#[derive(Debug, Clone)]
pub struct Unpersisted {
    pub uuid: String,
    pub created_at: Timestamp,
    pub value: SecretValue,
}

/// The rotation's memory of one credential.
#[derive(Debug, Default)]
pub struct Memory {
    /// SHA-256 of the trigger annotation last seen.
    trigger: Option<String>,
    failures: u32,
    /// No management call before this time (after a failure), unless the spec or trigger change.
    retry_at: Option<Timestamp>,
    failed_generation: Option<i64>,
    /// Attempts to verify the new secret so far.
    verify_attempts: u32,
    /// `(fingerprint of the client secret it was minted with, token, expiry)`.
    management_token: Option<(String, SecretValue, Timestamp)>,
    unpersisted: Option<Unpersisted>,
}

impl Memory {
    /// The trigger annotation's hash as the credential now carries it; `true` when it is new,
    /// which lifts the backoff: someone asks to try again.
    pub fn trigger_seen(&mut self, trigger: Option<String>) -> bool {
        if self.trigger == trigger {
            return false;
        }
        self.retry_at = None;
        self.trigger = trigger;
        true
    }

    /// Until when the rotation backs off for spec `generation`; a new generation does not.
    pub fn backoff(&self, generation: Option<i64>) -> Option<Timestamp> {
        self.retry_at.filter(|_| self.failed_generation == generation)
    }

    /// A rotation step failed for spec `generation`; no management call before `retry_at`.
    pub fn failed(&mut self, generation: Option<i64>, retry_at: Timestamp) {
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(retry_at);
        self.failed_generation = generation;
    }

    /// Rotation failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A rotation step succeeded.
    pub fn progressed(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    /// Counts a verification attempt of the new secret; returns how many there were.
    pub fn verify_attempted(&mut self) -> u32 {
        self.verify_attempts = self.verify_attempts.saturating_add(1);
        self.verify_attempts
    }

    pub fn verify_done(&mut self) {
        self.verify_attempts = 0;
    }

    /// A management token minted with the client secret of `fingerprint`, valid at `now` for a
    /// while longer.
    pub fn management_token(&self, fingerprint: &str, now: Timestamp) -> Option<SecretValue> {
        let (fp, token, expires_at) = self.management_token.as_ref()?;
        let fresh = now.checked_add(MANAGEMENT_TOKEN_MARGIN).is_ok_and(|later| later < *expires_at);
        (fp == fingerprint && fresh).then(|| token.clone())
    }

    pub fn keep_management_token(&mut self, fingerprint: String, token: SecretValue, expires_at: Timestamp) {
        self.management_token = Some((fingerprint, token, expires_at));
    }

    /// A secret Adobe created whose persisting failed: kept until it is persisted.
    pub fn hold_unpersisted(&mut self, secret: Unpersisted) {
        self.unpersisted = Some(secret);
    }

    /// The unpersisted secret, if there is one.
    pub fn unpersisted(&self) -> Option<Unpersisted> {
        self.unpersisted.clone()
    }

    pub fn persisted(&mut self) {
        self.unpersisted = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_new_trigger_lifts_the_backoff_and_a_new_generation_ignores_it() {
        let mut memory = Memory::default();
        assert!(!memory.trigger_seen(None), "no trigger, no news");
        memory.failed(Some(1), ts("2026-12-01T15:10:00Z"));
        assert_eq!(memory.failures(), 1);
        assert_eq!(memory.backoff(Some(1)), Some(ts("2026-12-01T15:10:00Z")));
        assert_eq!(memory.backoff(Some(2)), None, "a spec change retries at once");
        assert!(memory.trigger_seen(Some("h1".into())));
        assert_eq!(memory.backoff(Some(1)), None);
        assert!(!memory.trigger_seen(Some("h1".into())), "the same trigger again is no news");
        memory.progressed();
        assert_eq!(memory.failures(), 0);
    }

    #[test]
    fn a_management_token_is_reused_only_for_its_secret_and_while_fresh() {
        let mut memory = Memory::default();
        memory.keep_management_token("fp-old".into(), SecretValue::new("mt"), ts("2026-12-02T00:00:00Z"));
        let now = ts("2026-12-01T00:00:00Z");
        assert!(memory.management_token("fp-old", now).is_some());
        assert!(memory.management_token("fp-new", now).is_none());
        assert!(memory.management_token("fp-old", ts("2026-12-01T23:56:00Z")).is_none(), "about to expire");
    }
}
