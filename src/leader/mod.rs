//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics: a lease is
//! taken over only after it went unrenewed for its whole duration as observed on the local clock
//! (so clock skew between replicas does not matter), the leader renews every retry period, and
//! it gives up leadership when it could not renew within the renew deadline.
//!
//! Three guarantees on top of that:
//! - every Lease API call is bounded by a timeout (kube's client has none for reads), and a
//!   renewal attempt by the time left before the renew deadline, so a frozen API server cannot
//!   hang the loop past the deadline;
//! - the loop runs on its own OS thread with its own runtime and API client ([`LeaseThread`]),
//!   so reconciles that keep the main runtime's workers busy cannot delay a renewal;
//! - [`Leadership::may_write`] turns false once the last confirmed renewal, counted from when its
//!   request was *sent*, is older than the renew deadline. The deadline is shorter than the lease
//!   duration, and a follower counts the duration from when it *saw* that renewal (later than the
//!   send), so the old leader stops minting and writing before any follower may take over.
//!
//! The decisions are pure functions ([`decide`], [`desired_spec`], [`released_spec`],
//! [`write_time_left`]) in `decisions`, tested without an API server. The Lease API calls are in
//! `elector` ([`LeaderElector`]), the dedicated thread in `thread`; [`LeaseConfig`] and
//! [`Leadership`], which the rest of the operator holds, are here.

mod decisions;
mod elector;
mod thread;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::Error;

pub use decisions::{Decision, Observation, decide, desired_spec, observe, released_spec, write_time_left};
pub use elector::{LeaderElector, LeaseError};
pub use thread::{LeaseThread, Phase};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's constraints: the leader must give up before a follower may take over, and
    /// must get more than one renewal attempt within the deadline.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_period.is_zero() {
            return Err("the lease retry period must be positive".into());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "the lease renew deadline ({:?}) must be shorter than the lease duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.renew_deadline <= self.retry_period.mul_f64(1.2) {
            return Err(format!(
                "the lease renew deadline ({:?}) must be longer than 1.2 × the retry period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        Ok(())
    }
}

/// Whether this replica may mint and write right now: shared (behind an `Arc`) by the lease
/// thread, which confirms renewals, and the reconcilers, which ask before every mint and write.
/// Reading it is one atomic load and one clock read.
#[derive(Debug)]
pub struct Leadership {
    /// `None` without leader election: writing is always allowed.
    renew_deadline: Option<Duration>,
    origin: Instant,
    /// When the request of the last confirmed renewal was sent, as nanoseconds after `origin`
    /// plus one; 0 when there is none (not leading, or leadership given up).
    confirmed: AtomicU64,
}

impl Leadership {
    /// Without leader election: the only replica always writes.
    pub fn unelected() -> Arc<Self> {
        Arc::new(Self { renew_deadline: None, origin: Instant::now(), confirmed: AtomicU64::new(0) })
    }

    /// With leader election: writing is allowed only within `renew_deadline` of the sending of
    /// the last renewal the API server confirmed. Starts as not leading.
    pub fn elected(renew_deadline: Duration) -> Arc<Self> {
        Arc::new(Self { renew_deadline: Some(renew_deadline), origin: Instant::now(), confirmed: AtomicU64::new(0) })
    }

    /// True while this replica holds the lease by a renewal younger than the renew deadline.
    pub fn may_write(&self) -> bool {
        self.may_write_at(Instant::now())
    }

    /// `Ok` when [`Self::may_write`], else [`Error::LeadershipLost`]: the one call the
    /// reconciler makes before minting or writing.
    pub fn check(&self) -> Result<(), Error> {
        if self.may_write() { Ok(()) } else { Err(Error::LeadershipLost) }
    }

    fn may_write_at(&self, now: Instant) -> bool {
        match self.renew_deadline {
            None => true,
            Some(deadline) => !write_time_left(self.last_confirmed(), deadline, now).is_zero(),
        }
    }

    /// Time left before writing stops unless another renewal is confirmed.
    fn time_left(&self, now: Instant) -> Duration {
        match self.renew_deadline {
            None => Duration::MAX,
            Some(deadline) => write_time_left(self.last_confirmed(), deadline, now),
        }
    }

    fn last_confirmed(&self) -> Option<Instant> {
        match self.confirmed.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.origin + Duration::from_nanos(n - 1)),
        }
    }

    /// The API server accepted our renewal whose request was sent at `sent_at`.
    fn confirm(&self, sent_at: Instant) {
        let nanos = u64::try_from(sent_at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX - 1);
        self.confirmed.store(nanos + 1, Ordering::Release);
    }

    /// Stops writing at once (lease lost, released, or held by another replica).
    fn revoke(&self) {
        self.confirmed.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::decisions::tests::{SECOND, held_by};
    use super::*;

    fn config(lease: u64, renew: u64, retry: u64) -> LeaseConfig {
        LeaseConfig {
            namespace: "ns".into(),
            name: "lease".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        }
    }

    #[test]
    fn leadership_follows_confirmed_renewals() {
        let leadership = Leadership::elected(3 * SECOND);
        let t0 = Instant::now();
        assert!(!leadership.may_write_at(t0), "not before the first confirmed renewal");
        assert!(matches!(leadership.check(), Err(Error::LeadershipLost)));
        leadership.confirm(t0);
        assert!(leadership.may_write_at(t0 + 2 * SECOND));
        assert!(!leadership.may_write_at(t0 + 3 * SECOND), "renew deadline passed without renewal");
        leadership.confirm(t0 + 2 * SECOND);
        assert!(leadership.may_write_at(t0 + 4 * SECOND));
        assert_eq!(leadership.time_left(t0 + 4 * SECOND), SECOND);
        leadership.revoke();
        assert!(!leadership.may_write_at(t0 + 2 * SECOND));

        let alone = Leadership::unelected();
        assert!(alone.may_write());
        assert!(alone.check().is_ok());
    }

    #[test]
    fn the_leader_stops_before_a_follower_may_take_over() {
        // The leader's renewal is sent at t0, reaches the API server, and a follower sees it
        // (no sooner than t0). Neither renews nor sees anything afterwards.
        let cfg = config(4, 3, 1);
        cfg.validate().expect("valid");
        let t0 = Instant::now();
        let leadership = Leadership::elected(cfg.renew_deadline);
        leadership.confirm(t0);
        let seen_by_follower = observe(None, held_by("leader", 4, 0), t0);
        let mut now = t0;
        while now < t0 + 10 * SECOND {
            let follower_takes_over =
                decide(Some(&seen_by_follower), "me", cfg.lease_duration, now) == Decision::TakeOver;
            assert!(!(follower_takes_over && leadership.may_write_at(now)), "two writers at {:?}", now - t0);
            now += Duration::from_millis(10);
        }
    }

    #[test]
    fn timings_are_checked_like_client_go() {
        assert!(config(15, 10, 2).validate().is_ok());
        assert!(config(4, 3, 1).validate().is_ok());
        assert!(config(10, 10, 2).validate().is_err(), "deadline must be below the duration");
        assert!(config(15, 2, 2).validate().is_err(), "deadline must leave room for a retry");
        assert!(config(15, 10, 0).validate().is_err());
    }
}
