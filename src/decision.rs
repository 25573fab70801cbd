//! What a reconcile does about the token, as one pure function of persisted facts and `now`.
//!
//! Every input may come from something a tenant can write (annotations of the target Secret,
//! the renewal settings, the lifetime a token endpoint answered with), so the rules hold for any
//! values: a token just minted is never due, two mints for unchanged inputs are at least the
//! mint floor apart (see [`schedule::mint_floor`]), and no arithmetic can panic.

use jiff::{SignedDuration, Timestamp};

use crate::mint_guard::MintRecord;
use crate::schedule::{Renewal, RenewalPolicy};
use crate::target::StoredToken;

/// How far in the future an issue time may lie (clock skew between the operator replicas that
/// wrote it) before the token is treated as forged.
const MAX_ISSUE_SKEW: SignedDuration = SignedDuration::from_mins(5);
/// Longest plausible token lifetime; Adobe's are 24 hours, Akeneo's one hour.
const MAX_LIFETIME: SignedDuration = SignedDuration::from_hours(400 * 24);

/// The facts a decision is taken from.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub now: Timestamp,
    /// Revision of the current inputs.
    pub revision: &'a str,
    /// The intact token in the target Secret (ours, fingerprint matching), if any.
    pub target_token: Option<&'a StoredToken>,
    /// Whether the target Secret already holds exactly what writing `target_token` would write.
    pub target_up_to_date: bool,
    /// The token this process last minted or saw in the target for the credential (kept in
    /// memory, so a deleted or edited target is restored without a new mint).
    pub held: Option<&'a StoredToken>,
    /// The last mint this process made for the credential.
    pub last_mint: Option<&'a MintRecord>,
    /// The credential's renewal settings, read once.
    pub renewal: RenewalPolicy,
}

/// Why a new token is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintReason {
    /// The target holds no usable token (missing, foreign, tampered, implausible timestamps).
    NoToken,
    /// The target's token was minted from other inputs (rotation, spec change).
    InputsChanged,
    /// The token's renewal time has come.
    RenewalDue,
}

impl MintReason {
    pub fn describe(self) -> &'static str {
        match self {
            MintReason::NoToken => "no valid token for the current inputs",
            MintReason::InputsChanged => "source inputs changed",
            MintReason::RenewalDue => "renewal due",
        }
    }
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision<'a> {
    /// The target holds a good token for the current inputs and nothing needs writing.
    Keep { token: &'a StoredToken, renewal: Renewal },
    /// The target's token is good but the Secret around it is not (keys, annotations, owner):
    /// write it again, without minting.
    Repair { token: &'a StoredToken, renewal: Renewal },
    /// The held token is still good for the current inputs but the target does not have it
    /// (its write failed, or the target was deleted or edited): write it instead of minting.
    Restore { token: &'a StoredToken, renewal: Renewal },
    /// Mint a new token now.
    Mint { reason: MintReason },
    /// A new token is needed, but the last one for these inputs is younger than the mint floor.
    WaitUntil { at: Timestamp, reason: MintReason },
}

/// Whether a token's timestamps could have been written by this operator; anything else (a
/// tenant's edit of the annotations) means "no valid token", never a panic or a loop.
pub fn plausible(token: &StoredToken, now: Timestamp) -> bool {
    let issued_ok = now.checked_add(MAX_ISSUE_SKEW).is_ok_and(|latest| token.issued_at <= latest);
    let lifetime = token.expires_at.duration_since(token.issued_at);
    issued_ok && lifetime.is_positive() && lifetime <= MAX_LIFETIME
}

/// When `token` is renewed under `facts`' settings.
pub fn renewal_of(token: &StoredToken, policy: &RenewalPolicy) -> Renewal {
    policy.renewal(token.issued_at, token.expires_at, &token.fingerprint())
}

pub fn decide<'a>(facts: &Facts<'a>) -> Decision<'a> {
    let now = facts.now;
    let usable = |t: &&StoredToken| plausible(t, now);
    let renewal_of = |t: &StoredToken| renewal_of(t, &facts.renewal);
    let target = facts.target_token.filter(usable);
    let current = target.filter(|t| t.revision == facts.revision);
    if let Some(token) = current {
        let renewal = renewal_of(token);
        if now < renewal.at {
            return if facts.target_up_to_date {
                Decision::Keep { token, renewal }
            } else {
                Decision::Repair { token, renewal }
            };
        }
    }
    if let Some(token) = facts.held.filter(usable).filter(|t| t.revision == facts.revision) {
        let renewal = renewal_of(token);
        if now < renewal.at {
            return Decision::Restore { token, renewal };
        }
    }
    let reason = match (current, target) {
        (Some(_), _) => MintReason::RenewalDue,
        (None, Some(_)) => MintReason::InputsChanged,
        (None, None) => MintReason::NoToken,
    };
    match earliest_mint(facts) {
        Some(at) if now < at => Decision::WaitUntil { at, reason },
        _ => Decision::Mint { reason },
    }
}

/// The earliest time a mint for the current inputs is allowed: the floor after the latest known
/// mint of the same inputs (persisted in the target, or remembered by this process).
fn earliest_mint(facts: &Facts<'_>) -> Option<Timestamp> {
    let persisted = [facts.target_token, facts.held]
        .into_iter()
        .flatten()
        .filter(|t| t.revision == facts.revision && plausible(t, facts.now))
        .map(MintRecord::of);
    let remembered = facts.last_mint.filter(|m| m.revision == facts.revision).cloned();
    persisted.chain(remembered).map(|m| m.next_allowed(facts.renewal.min_interval)).max()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::crd::RenewalSpec;
    use crate::schedule;
    use crate::secret_value::SecretValue;
    use proptest::prelude::*;

    const MIN: Duration = schedule::DEFAULT_MIN_MINT_INTERVAL;

    fn token(issued_at: Timestamp, lifetime: SignedDuration, revision: &str, value: &str) -> StoredToken {
        StoredToken {
            access_token: SecretValue::new(value),
            token_type: "bearer".into(),
            issued_at,
            expires_at: issued_at.saturating_add(lifetime).unwrap_or(Timestamp::MAX),
            revision: revision.into(),
            client_secret_key: None,
        }
    }

    fn facts<'a>(now: Timestamp, target: Option<&'a StoredToken>) -> Facts<'a> {
        Facts {
            now,
            revision: "r1",
            target_token: target,
            target_up_to_date: true,
            held: None,
            last_mint: None,
            renewal: RenewalPolicy::new(None, MIN),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_good_token_is_kept_or_repaired_and_renewed_when_due() {
        let t0 = ts("2026-11-24T00:00:00Z");
        let tok = token(t0, SignedDuration::from_hours(24), "r1", "a");
        let Decision::Keep { renewal, .. } = decide(&facts(t0 + SignedDuration::from_hours(1), Some(&tok))) else {
            panic!("kept")
        };
        let mut f = facts(t0 + SignedDuration::from_hours(1), Some(&tok));
        f.target_up_to_date = false;
        assert_eq!(decide(&f), Decision::Repair { token: &tok, renewal });
        assert_eq!(decide(&facts(renewal.at, Some(&tok))), Decision::Mint { reason: MintReason::RenewalDue });
    }

    #[test]
    fn new_inputs_and_missing_tokens_mint_but_not_within_the_floor() {
        let t0 = ts("2026-11-24T00:00:00Z");
        let old = token(t0, SignedDuration::from_hours(24), "r0", "a");
        let now = t0 + SignedDuration::from_mins(1);
        assert_eq!(decide(&facts(now, Some(&old))), Decision::Mint { reason: MintReason::InputsChanged });
        assert_eq!(decide(&facts(now, None)), Decision::Mint { reason: MintReason::NoToken });
        // The target was deleted ten seconds after a mint of these inputs: wait for the floor.
        let last = MintRecord {
            at: now - SignedDuration::from_secs(10),
            revision: "r1".into(),
            lifetime: Duration::from_secs(3600),
        };
        let mut f = facts(now, None);
        f.last_mint = Some(&last);
        let at = last.at + SignedDuration::from_mins(6);
        assert_eq!(decide(&f), Decision::WaitUntil { at, reason: MintReason::NoToken });
        f.now = at;
        assert_eq!(decide(&f), Decision::Mint { reason: MintReason::NoToken });
    }

    #[test]
    fn a_held_token_is_restored_instead_of_minting_again() {
        let t0 = ts("2026-11-24T00:00:00Z");
        let held = token(t0, SignedDuration::from_hours(24), "r1", "u");
        // The target was deleted, or its token edited (no intact token), or never written.
        let mut f = facts(t0 + SignedDuration::from_secs(5), None);
        f.held = Some(&held);
        assert!(matches!(decide(&f), Decision::Restore { token, .. } if *token == held));
        let forged = StoredToken { expires_at: ts("9999-12-30T00:00:00Z"), ..held.clone() };
        f.target_token = Some(&forged);
        assert!(matches!(decide(&f), Decision::Restore { .. }), "an implausible target token is not used");
        // Other inputs now: the held token is of no use.
        f.revision = "r2";
        assert_eq!(decide(&f), Decision::Mint { reason: MintReason::NoToken });
    }

    #[test]
    fn forged_timestamps_mean_no_valid_token() {
        let now = ts("2026-11-24T00:00:00Z");
        let future = token(ts("9999-12-30T00:00:00Z"), SignedDuration::from_hours(1), "r1", "f");
        assert!(!plausible(&future, now));
        assert_eq!(decide(&facts(now, Some(&future))), Decision::Mint { reason: MintReason::NoToken });
        let eternal = token(now, SignedDuration::from_hours(24 * 365 * 50), "r1", "e");
        assert!(!plausible(&eternal, now));
        let backwards = token(now, SignedDuration::from_hours(-1), "r1", "b");
        assert!(!plausible(&backwards, now));
    }

    fn any_timestamp() -> impl Strategy<Value = Timestamp> {
        (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second())
            .prop_map(|s| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    fn any_spec() -> impl Strategy<Value = Option<RenewalSpec>> {
        prop_oneof![
            Just(None),
            (1u8..=90).prop_map(|p| Some(RenewalSpec { renew_before: None, renew_before_percentage: Some(p) })),
            (1u64..=720 * 3600)
                .prop_map(|s| Some(RenewalSpec { renew_before: Some(format!("{s}s")), renew_before_percentage: None })),
        ]
    }

    proptest! {
        /// A token just minted is never due, whatever the lifetime, settings and jitter.
        #[test]
        fn a_fresh_token_is_never_due(
            lifetime in 1u64..=30 * 86_400,
            spec in any_spec(),
            key in "[a-f0-9]{16}",
            min_secs in 1u64..=120,
        ) {
            let issued = ts("2026-11-24T00:00:00Z");
            let min_interval = Duration::from_secs(min_secs);
            let lifetime = Duration::from_secs(lifetime);
            let expires = issued + SignedDuration::try_from(lifetime).expect("fits");
            let r = RenewalPolicy::new(spec.as_ref(), min_interval).renewal(issued, expires, &key);
            let floor = SignedDuration::try_from(schedule::mint_floor(lifetime, min_interval)).expect("fits");
            prop_assert!(r.at >= issued + floor, "renewal {} before the floor after {issued}", r.at);
        }

        /// Two mints for unchanged inputs are at least the floor apart: right after a mint
        /// (remembered, or persisted in the target), no decision is a mint until the floor.
        #[test]
        fn mints_for_unchanged_inputs_are_a_floor_apart(
            lifetime in 1i64..=30 * 86_400,
            spec in any_spec(),
            elapsed in 0i64..=30 * 86_400,
            persisted in any::<bool>(),
            up_to_date in any::<bool>(),
        ) {
            let t0 = ts("2026-11-24T00:00:00Z");
            let minted = token(t0, SignedDuration::from_secs(lifetime), "r1", "m");
            let record = MintRecord::of(&minted);
            let now = t0 + SignedDuration::from_secs(elapsed);
            let mut f = facts(now, persisted.then_some(&minted));
            f.last_mint = Some(&record);
            f.renewal = RenewalPolicy::new(spec.as_ref(), MIN);
            f.target_up_to_date = up_to_date;
            let floor = SignedDuration::try_from(schedule::mint_floor(record.lifetime, MIN)).expect("fits");
            if let Decision::Mint { .. } = decide(&f) {
                prop_assert!(now >= t0 + floor, "minted {elapsed}s after the last mint, floor {floor:?}");
            }
        }

        /// Any timestamps at all (as a tenant may write them into annotations): no panic, and a
        /// mint is never decided while a remembered mint of these inputs is within its floor.
        #[test]
        fn any_timestamps_are_handled(
            now in any_timestamp(),
            issued in any_timestamp(),
            expires in any_timestamp(),
            last in any_timestamp(),
            spec in any_spec(),
        ) {
            let stored = StoredToken { issued_at: issued, expires_at: expires, ..token(issued, SignedDuration::ZERO, "r1", "x") };
            let record = MintRecord { at: last, revision: "r1".into(), lifetime: Duration::from_secs(3600) };
            let mut f = facts(now, Some(&stored));
            f.held = Some(&stored);
            f.last_mint = Some(&record);
            f.renewal = RenewalPolicy::new(spec.as_ref(), MIN);
            let decision = decide(&f);
            if let Decision::Mint { .. } = decision {
                prop_assert!(now >= record.next_allowed(MIN));
            }
            let _ = f.renewal.renewal(issued, expires, "k");
        }
    }
}
