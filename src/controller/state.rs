//! What the operator remembers about each credential between reconciles, changed only through
//! named operations. Only an optimisation and a guard: it is lost on restart and rebuilt from
//! the target Secret and status, so every decision still rests on persisted facts.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;

use crate::crd::AdobeCredential;
use crate::mint_guard::{MintHistory, MintRecord, Refusal};
use crate::rotation;
use crate::target::StoredToken;

/// The remembered state of one credential.
#[derive(Debug, Default)]
pub struct CredentialState {
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
    /// The token last minted or seen in the target: restored instead of minting again when a
    /// write failed (the API server was down) or the target was deleted or edited.
    held: Option<HeldToken>,
    /// Recent mints, for the mint guard.
    mints: MintHistory,
    /// The client secret rotation's memory (the procedure itself is persisted).
    rotation: rotation::Memory,
}

#[derive(Debug)]
struct HeldToken {
    token: StoredToken,
    /// It reached the target Secret at least once.
    written: bool,
}

impl CredentialState {
    /// Time left before anything needs doing, if the remembered decision still holds for this
    /// generation and no referenced Secret changed.
    pub fn quiet_for(&self, generation: Option<i64>, now: Timestamp) -> Option<Duration> {
        if let Some(until) = self.not_before.filter(|until| now < *until) {
            return Some(until.duration_since(now).unsigned_abs());
        }
        if self.dirty || self.generation != generation {
            return None;
        }
        let until = self.quiet_until?;
        (now < until).then(|| until.duration_since(now).unsigned_abs())
    }

    /// A referenced Secret changed to `resource_version`. Returns whether that is news, i.e. not
    /// the watch event of the operator's own write, and if so calls for a full reconcile.
    pub fn secret_changed(&mut self, resource_version: Option<&str>) -> bool {
        let own_write = self.own_target_version.is_some() && self.own_target_version.as_deref() == resource_version;
        if !own_write {
            self.dirty = true;
        }
        !own_write
    }

    /// A full reconcile starts: a change seen from now on calls for another one. Returns the
    /// failures in a row so far, also those a restarted operator knows only from status.
    pub fn begin(&mut self, failures_in_status: u32) -> u32 {
        self.dirty = false;
        self.consecutive_failures.max(failures_in_status)
    }

    /// The token to restore instead of minting, and whether it was ever written.
    pub fn held(&self) -> Option<(&StoredToken, bool)> {
        self.held.as_ref().map(|h| (&h.token, h.written))
    }

    pub fn hold(&mut self, token: &StoredToken, written: bool) {
        self.held = Some(HeldToken { token: token.clone(), written });
    }

    pub fn last_mint(&self) -> Option<&MintRecord> {
        self.mints.last()
    }

    /// The mint guard: whether a mint for `revision` may go out at `now`.
    pub fn may_mint(&self, now: Timestamp, revision: &str, min_interval: Duration) -> Result<(), Refusal> {
        self.mints.check(now, revision, min_interval)
    }

    /// A token came back from the endpoint; it is held until written.
    pub fn minted(&mut self, token: &StoredToken) {
        self.mints.record(MintRecord::of(token));
        self.hold(token, false);
    }

    /// The operator wrote `token` to the target, which is now at `resource_version`.
    pub fn wrote(&mut self, token: &StoredToken, resource_version: Option<String>) {
        self.own_target_version = resource_version;
        self.hold(token, true);
    }

    /// The reconcile of `generation` ended with a valid token: quiet until its renewal.
    pub fn succeeded(&mut self, generation: Option<i64>, renewal_at: Timestamp) {
        self.generation = generation;
        self.quiet_until = Some(renewal_at);
        self.consecutive_failures = 0;
        self.not_before = None;
    }

    /// The reconcile of `generation` failed (the `failures`-th time in a row): quiet until
    /// `retry_at` unless the inputs change, and not before `not_before` in any case.
    pub fn failed(
        &mut self,
        generation: Option<i64>,
        failures: u32,
        retry_at: Timestamp,
        not_before: Option<Timestamp>,
    ) {
        self.generation = generation;
        self.consecutive_failures = failures;
        self.quiet_until = Some(retry_at);
        self.not_before = not_before;
    }

    /// A reconcile failed before it could report (its status write failed): counted, so the
    /// backoff grows, but the remembered decision stays open.
    pub fn failed_unreported(&mut self) -> u32 {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.consecutive_failures
    }

    /// The rotation trigger annotation's hash as the credential now carries it. A new value is
    /// news (a full reconcile) and lifts the rotation's backoff: someone asks to try again.
    pub fn trigger_seen(&mut self, trigger: Option<String>) {
        if self.rotation.trigger_seen(trigger) {
            self.dirty = true;
        }
    }

    pub fn rotation(&self) -> &rotation::Memory {
        &self.rotation
    }

    pub fn rotation_mut(&mut self) -> &mut rotation::Memory {
        &mut self.rotation
    }
}

/// The state of every credential this replica serves.
#[derive(Debug, Default)]
pub struct States(Mutex<HashMap<ObjectRef<AdobeCredential>, CredentialState>>);

impl States {
    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectRef<AdobeCredential>, CredentialState>> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state of `key`, created empty when there is none.
    pub fn update<R>(&self, key: &ObjectRef<AdobeCredential>, f: impl FnOnce(&mut CredentialState) -> R) -> R {
        f(self.lock().entry(key.clone()).or_default())
    }

    /// Runs `f` on the state of `key`, if there is one.
    pub fn read<R>(&self, key: &ObjectRef<AdobeCredential>, f: impl FnOnce(&CredentialState) -> R) -> Option<R> {
        self.lock().get(key).map(f)
    }

    /// Marks the credentials `keys` changed by a Secret event at `resource_version`; returns
    /// those for which that is news.
    pub fn secret_changed(
        &self,
        keys: Vec<ObjectRef<AdobeCredential>>,
        resource_version: Option<&str>,
    ) -> Vec<ObjectRef<AdobeCredential>> {
        let mut states = self.lock();
        keys.into_iter().filter(|key| states.entry(key.clone()).or_default().secret_changed(resource_version)).collect()
    }

    pub fn forget(&self, key: &ObjectRef<AdobeCredential>) {
        self.lock().remove(key);
    }

    pub fn retain(&self, keep: impl Fn(&ObjectRef<AdobeCredential>) -> bool) {
        self.lock().retain(|key, _| keep(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret_value::SecretValue;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn token(issued: &str, expires: &str) -> StoredToken {
        StoredToken {
            access_token: SecretValue::new("tok"),
            token_type: "bearer".into(),
            issued_at: ts(issued),
            expires_at: ts(expires),
            revision: "sha256:r".into(),
            client_secret_key: None,
        }
    }

    const FLOOR: Duration = Duration::from_secs(30);

    #[test]
    fn a_new_credential_is_never_quiet() {
        assert_eq!(CredentialState::default().quiet_for(Some(1), ts("2026-12-01T00:00:00Z")), None);
    }

    #[test]
    fn success_is_quiet_until_renewal_unless_the_generation_or_a_secret_changes() {
        let mut state = CredentialState::default();
        state.succeeded(Some(1), ts("2026-12-01T16:00:00Z"));
        let now = ts("2026-12-01T15:00:00Z");
        assert_eq!(state.quiet_for(Some(1), now), Some(Duration::from_secs(3600)));
        assert_eq!(state.quiet_for(Some(2), now), None, "a spec change is news");
        assert_eq!(state.quiet_for(Some(1), ts("2026-12-01T16:00:00Z")), None, "renewal is due");
        assert!(state.secret_changed(Some("41")));
        assert_eq!(state.quiet_for(Some(1), now), None, "a Secret change is news");
        assert_eq!(state.begin(0), 0);
        assert_eq!(state.quiet_for(Some(1), now), Some(Duration::from_secs(3600)), "the reconcile took it in");
    }

    #[test]
    fn the_echo_of_our_own_write_is_no_news() {
        let mut state = CredentialState::default();
        let t = token("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z");
        state.wrote(&t, Some("42".into()));
        state.succeeded(Some(1), ts("2026-12-01T16:00:00Z"));
        assert!(!state.secret_changed(Some("42")));
        assert!(state.quiet_for(Some(1), ts("2026-12-01T01:00:00Z")).is_some());
        assert!(state.secret_changed(Some("43")), "someone else's write");
        assert!(CredentialState::default().secret_changed(None), "no write of ours to compare with");
    }

    #[test]
    fn retry_after_holds_even_when_the_inputs_change() {
        let mut state = CredentialState::default();
        let failed_at = ts("2026-12-01T00:00:00Z");
        state.failed(Some(1), 1, ts("2026-12-01T00:00:05Z"), Some(ts("2026-12-01T00:01:00Z")));
        assert!(state.secret_changed(Some("7")));
        assert_eq!(state.quiet_for(Some(2), failed_at), Some(Duration::from_secs(60)));
        assert_eq!(state.quiet_for(Some(2), ts("2026-12-01T00:01:00Z")), None);
    }

    #[test]
    fn failures_count_up_and_success_resets_them() {
        let mut state = CredentialState::default();
        assert_eq!(state.begin(3), 3, "a restarted operator continues the count from status");
        state.failed(Some(1), 4, ts("2026-12-01T00:00:05Z"), None);
        assert_eq!(state.failed_unreported(), 5);
        assert_eq!(state.begin(0), 5);
        state.succeeded(Some(1), ts("2026-12-01T16:00:00Z"));
        assert_eq!(state.begin(0), 0);
    }

    #[test]
    fn a_minted_token_is_held_unwritten_until_written_and_guards_the_next_mint() {
        let mut state = CredentialState::default();
        let t = token("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z");
        assert_eq!(state.may_mint(t.issued_at, &t.revision, FLOOR), Ok(()));
        state.minted(&t);
        assert_eq!(state.held(), Some((&t, false)));
        assert_eq!(state.last_mint(), Some(&MintRecord::of(&t)));
        let refusal = state.may_mint(ts("2026-12-01T00:00:01Z"), &t.revision, FLOOR).expect_err("within the floor");
        assert!(!refusal.budget_spent);
        state.wrote(&t, Some("9".into()));
        assert_eq!(state.held(), Some((&t, true)));
    }

    #[test]
    fn a_new_trigger_is_news() {
        let mut state = CredentialState::default();
        state.succeeded(Some(1), ts("2026-12-01T16:00:00Z"));
        let now = ts("2026-12-01T15:00:00Z");
        state.trigger_seen(None);
        assert!(state.quiet_for(Some(1), now).is_some(), "no trigger, no news");
        state.trigger_seen(Some("h1".into()));
        assert_eq!(state.quiet_for(Some(1), now), None);
        state.begin(0);
        state.trigger_seen(Some("h1".into()));
        assert!(state.quiet_for(Some(1), now).is_some(), "the same trigger again is no news");
    }

    #[test]
    fn states_are_created_on_update_and_forgotten() {
        let states = States::default();
        let key = ObjectRef::new("c").within("ns");
        assert!(states.read(&key, |_| ()).is_none());
        states.update(&key, |s| s.succeeded(Some(1), ts("2026-12-01T16:00:00Z")));
        assert_eq!(states.secret_changed(vec![key.clone()], None), vec![key.clone()]);
        states.retain(|k| k.namespace.as_deref() != Some("ns"));
        assert!(states.read(&key, |_| ()).is_none());
        states.update(&key, |_| ());
        states.forget(&key);
        assert!(states.read(&key, |_| ()).is_none());
    }
}
