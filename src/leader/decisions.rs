//! The pure decisions of leader election, tested without an API server: how long a leader may
//! still write ([`write_time_left`]), when a lease was last seen to change ([`observe`]), what
//! the lease as read means for this replica ([`decide`]), and the spec to write to take, renew
//! ([`desired_spec`]) or give it up ([`released_spec`]).

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

/// How much longer a leader whose last confirmed renewal was sent at `last_confirmed` may write:
/// zero once `renew_deadline` has passed since, or when no renewal was confirmed.
pub fn write_time_left(last_confirmed: Option<Instant>, renew_deadline: Duration, now: Instant) -> Duration {
    last_confirmed.map_or(Duration::ZERO, |sent| renew_deadline.saturating_sub(now.saturating_duration_since(sent)))
}

/// The lease as last read, and when (on the local clock) it was first seen with this content.
#[derive(Debug, Clone)]
pub struct Observation {
    pub spec: LeaseSpec,
    pub since: Instant,
}

/// Records a read of the lease: the observation time moves only when the content changed
/// (every renewal changes `renewTime`).
pub fn observe(previous: Option<Observation>, spec: LeaseSpec, now: Instant) -> Observation {
    match previous {
        Some(seen) if seen.spec == spec => seen,
        _ => Observation { spec, since: now },
    }
}

/// What the lease as last read means for this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no lease: create it, held by us.
    Create,
    /// Another replica holds it and it has not expired on our clock.
    Follow { holder: String },
    /// Free (released), or held by another replica but unrenewed for its whole duration since we
    /// saw it change: take it over.
    TakeOver,
    /// Held by us: renew it.
    Renew,
}

/// client-go's `tryAcquireOrRenew` decision. `observed` is `None` when the lease does not
/// exist; its duration is the lease's own `leaseDurationSeconds` (`default_duration` when unset).
pub fn decide(observed: Option<&Observation>, identity: &str, default_duration: Duration, now: Instant) -> Decision {
    let Some(Observation { spec, since }) = observed else { return Decision::Create };
    match spec.holder_identity.as_deref().filter(|h| !h.is_empty()) {
        None => Decision::TakeOver,
        Some(holder) if holder == identity => Decision::Renew,
        Some(holder) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(default_duration, Duration::from_secs);
            if now.saturating_duration_since(*since) >= duration {
                Decision::TakeOver
            } else {
                Decision::Follow { holder: holder.to_owned() }
            }
        }
    }
}

/// The spec to write when creating, taking over or renewing: the acquire time and the
/// transitions counter stay on a renewal and move on a change of holder.
pub fn desired_spec(
    current: Option<&LeaseSpec>,
    identity: &str,
    lease_duration: Duration,
    now: Timestamp,
) -> LeaseSpec {
    let duration_seconds = Some(i32::try_from(lease_duration.as_secs().max(1)).unwrap_or(i32::MAX));
    let Some(current) = current else {
        return LeaseSpec {
            holder_identity: Some(identity.to_owned()),
            lease_duration_seconds: duration_seconds,
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..Default::default()
        };
    };
    let renewing = current.holder_identity.as_deref() == Some(identity);
    let transitions = current.lease_transitions.unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: duration_seconds,
        acquire_time: if renewing { current.acquire_time.clone() } else { Some(MicroTime(now)) },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if renewing { transitions } else { transitions.saturating_add(1) }),
        ..current.clone()
    }
}

/// The spec that gives the lease up, so that a follower takes over without waiting for it to
/// expire; `None` when we do not hold it.
pub fn released_spec(current: &LeaseSpec, identity: &str, now: Timestamp) -> Option<LeaseSpec> {
    (current.holder_identity.as_deref() == Some(identity)).then(|| LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..current.clone()
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) const SECOND: Duration = Duration::from_secs(1);

    pub(crate) fn held_by(holder: &str, duration_seconds: i32, transitions: i32) -> LeaseSpec {
        let at = Timestamp::from_second(1_700_000_000).expect("timestamp");
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration_seconds),
            acquire_time: Some(MicroTime(at)),
            renew_time: Some(MicroTime(at)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    #[test]
    fn missing_lease_is_created_with_zero_transitions() {
        let now = Instant::now();
        assert_eq!(decide(None, "me", 15 * SECOND, now), Decision::Create);
        let at = Timestamp::now();
        let spec = desired_spec(None, "me", 15 * SECOND, at);
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.acquire_time, Some(MicroTime(at)));
        assert_eq!(spec.renew_time, Some(MicroTime(at)));
    }

    #[test]
    fn expiry_is_measured_on_the_local_clock_from_the_last_change() {
        let t0 = Instant::now();
        // The lease's renewTime may say anything (clock skew): only when we saw it change counts.
        let seen = observe(None, held_by("other", 4, 2), t0);
        let follow = Decision::Follow { holder: "other".into() };
        assert_eq!(decide(Some(&seen), "me", 15 * SECOND, t0 + 3 * SECOND), follow);
        // The lease's own duration (4 s) counts, not ours (15 s).
        assert_eq!(decide(Some(&seen), "me", 15 * SECOND, t0 + 4 * SECOND), Decision::TakeOver);

        // Re-reading the same content keeps the first observation time ...
        let again = observe(Some(seen.clone()), held_by("other", 4, 2), t0 + 3 * SECOND);
        assert_eq!(again.since, t0);
        assert_eq!(decide(Some(&again), "me", 15 * SECOND, t0 + 4 * SECOND), Decision::TakeOver);
        // ... a renewal (changed content) restarts the clock.
        let mut renewed = held_by("other", 4, 2);
        renewed.renew_time = Some(MicroTime(Timestamp::from_second(1_700_000_002).expect("ts")));
        let renewed = observe(Some(seen), renewed, t0 + 3 * SECOND);
        assert_eq!(renewed.since, t0 + 3 * SECOND);
        assert_eq!(decide(Some(&renewed), "me", 15 * SECOND, t0 + 6 * SECOND), follow);
        assert_eq!(decide(Some(&renewed), "me", 15 * SECOND, t0 + 7 * SECOND), Decision::TakeOver);
    }

    #[test]
    fn lease_without_duration_uses_the_configured_one() {
        let t0 = Instant::now();
        let mut spec = held_by("other", 0, 0);
        spec.lease_duration_seconds = None;
        let seen = observe(None, spec, t0);
        assert!(matches!(decide(Some(&seen), "me", 10 * SECOND, t0 + 9 * SECOND), Decision::Follow { .. }));
        assert_eq!(decide(Some(&seen), "me", 10 * SECOND, t0 + 10 * SECOND), Decision::TakeOver);
    }

    #[test]
    fn own_lease_is_renewed_keeping_acquire_time_and_transitions() {
        let t0 = Instant::now();
        let current = held_by("me", 15, 3);
        // Ours even if we have not seen it change for longer than its duration.
        let seen = observe(None, current.clone(), t0);
        assert_eq!(decide(Some(&seen), "me", 15 * SECOND, t0 + 60 * SECOND), Decision::Renew);
        let at = Timestamp::from_second(1_700_000_010).expect("timestamp");
        let spec = desired_spec(Some(&current), "me", 15 * SECOND, at);
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.acquire_time, current.acquire_time);
        assert_eq!(spec.renew_time, Some(MicroTime(at)));
    }

    #[test]
    fn takeover_counts_a_transition_and_restarts_acquire_time() {
        let current = held_by("other", 4, 3);
        let at = Timestamp::from_second(1_700_000_010).expect("timestamp");
        let spec = desired_spec(Some(&current), "me", 15 * SECOND, at);
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(at)));
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }

    #[test]
    fn release_frees_the_lease_for_an_immediate_takeover() {
        let at = Timestamp::from_second(1_700_000_010).expect("timestamp");
        let current = held_by("me", 15, 3);
        let released = released_spec(&current, "me", at).expect("ours to release");
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_duration_seconds, Some(1));
        assert_eq!(released.lease_transitions, Some(3));
        assert_eq!(released_spec(&held_by("other", 15, 3), "me", at), None, "never release another's lease");

        // A follower takes a released lease at once, without waiting for any duration, and the
        // previous holder counts as another holder.
        let t0 = Instant::now();
        let seen = observe(None, released.clone(), t0);
        assert_eq!(decide(Some(&seen), "other", 15 * SECOND, t0), Decision::TakeOver);
        let taken = desired_spec(Some(&released), "other", 15 * SECOND, at);
        assert_eq!(taken.lease_transitions, Some(4));
        let mut empty = released;
        empty.holder_identity = Some(String::new());
        assert_eq!(decide(Some(&observe(None, empty, t0)), "other", 15 * SECOND, t0), Decision::TakeOver);
    }

    #[test]
    fn writing_stops_at_the_renew_deadline_counted_from_the_send() {
        let sent = Instant::now();
        let deadline = 10 * SECOND;
        assert_eq!(write_time_left(None, deadline, sent), Duration::ZERO, "no renewal confirmed yet");
        assert_eq!(write_time_left(Some(sent), deadline, sent + 4 * SECOND), 6 * SECOND);
        assert_eq!(write_time_left(Some(sent), deadline, sent + deadline - Duration::from_millis(1)).as_millis(), 1);
        assert_eq!(write_time_left(Some(sent), deadline, sent + deadline), Duration::ZERO);
        assert_eq!(write_time_left(Some(sent), deadline, sent + 60 * SECOND), Duration::ZERO);
    }
}
