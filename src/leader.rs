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
//! [`write_time_left`]) tested without an API server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::error::Error;

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

/// A Lease API call that failed or did not answer in time.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{action} the lease: {source}")]
    Api {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("{action} the lease timed out after {after:?}")]
    TimedOut { action: &'static str, after: Duration },
}

/// Runs one API call with a timeout; a call that does not answer in time counts as failed.
async fn bounded<T>(
    action: &'static str,
    after: Duration,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, LeaseError> {
    match tokio::time::timeout(after, call).await {
        Ok(result) => result.map_err(|source| LeaseError::Api { action, source }),
        Err(_) => Err(LeaseError::TimedOut { action, after }),
    }
}

/// Result of one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Leading,
    /// Held by another replica (its identity).
    Following(String),
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    leadership: Arc<Leadership>,
    observed: Option<Observation>,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig, leadership: Arc<Leadership>) -> Self {
        Self { api: Api::namespaced(client, &config.namespace), config, leadership, observed: None }
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// Bound of each API call: the renew deadline, the longest any renewal may take; a renewal
    /// attempt as a whole is further bounded by the time left before the deadline (see `hold`).
    fn call_timeout(&self) -> Duration {
        self.config.renew_deadline
    }

    /// Returns once this replica holds the lease; [`Leadership`] counts from the sending of the
    /// write that took it.
    pub async fn acquire(&mut self) {
        let mut last_holder = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                    return;
                }
                Ok(Attempt::Following(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        info!(lease = %self.config.name, leader = %holder, "following the current leader");
                        last_holder = Some(holder);
                    }
                }
                Err(err) => warn!(lease = %self.config.name, error = %err, "could not read or take the lease"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the lease every retry period until a renewal is not confirmed within the renew
    /// deadline, or another replica holds the lease; then revokes [`Leadership`] and returns.
    pub async fn hold(&mut self) {
        loop {
            let left = self.leadership.time_left(Instant::now());
            tokio::time::sleep(self.config.retry_period.min(left)).await;
            let left = self.leadership.time_left(Instant::now());
            if !left.is_zero() {
                match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                    Ok(Ok(Attempt::Leading)) => debug!(lease = %self.config.name, "lease renewed"),
                    Ok(Ok(Attempt::Following(holder))) => {
                        self.leadership.revoke();
                        warn!(lease = %self.config.name, leader = %holder, "another replica holds the lease");
                        return;
                    }
                    Ok(Err(err)) => warn!(lease = %self.config.name, error = %err, "could not renew the lease"),
                    Err(_) => warn!(lease = %self.config.name, "lease renewal still unanswered at the renew deadline"),
                }
            }
            if !self.leadership.may_write() {
                self.leadership.revoke();
                warn!(lease = %self.config.name, "lease not renewed within the renew deadline");
                return;
            }
        }
    }

    /// Gives the lease up (on shutdown) so that a follower takes over without waiting for it to
    /// expire. Writing stops first.
    pub async fn release(&mut self) {
        self.leadership.revoke();
        let timeout = self.call_timeout();
        let lease = match bounded("reading", timeout, self.api.get_opt(&self.config.name)).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(err) => {
                warn!(lease = %self.config.name, error = %err, "could not release the lease");
                return;
            }
        };
        let Some(spec) =
            released_spec(&lease.spec.clone().unwrap_or_default(), &self.config.identity, Timestamp::now())
        else {
            return;
        };
        let released = Lease { spec: Some(spec), ..lease };
        match bounded("releasing", timeout, self.api.replace(&self.config.name, &PostParams::default(), &released))
            .await
        {
            Ok(_) => info!(lease = %self.config.name, "released the lease"),
            Err(err) => warn!(lease = %self.config.name, error = %err, "could not release the lease"),
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, LeaseError> {
        let timeout = self.call_timeout();
        let current = bounded("reading", timeout, self.api.get_opt(&self.config.name)).await?;
        if let Some(lease) = &current {
            self.observed = Some(observe(self.observed.take(), lease.spec.clone().unwrap_or_default(), Instant::now()));
        }
        let observed = current.as_ref().and(self.observed.as_ref());
        let decision = decide(observed, &self.config.identity, self.config.lease_duration, Instant::now());
        let current_spec = observed.map(|o| &o.spec);
        let spec = match decision {
            Decision::Follow { holder } => return Ok(Attempt::Following(holder)),
            Decision::Create | Decision::TakeOver | Decision::Renew => {
                desired_spec(current_spec, &self.config.identity, self.config.lease_duration, Timestamp::now())
            }
        };
        // Confirmation counts from here: a follower sees the new spec only after the API server
        // accepted it, so it takes over no sooner than a lease duration after this instant.
        let sent_at = Instant::now();
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.config.name.clone()), ..Default::default() },
                    spec: Some(spec),
                };
                bounded("creating", timeout, self.api.create(&PostParams::default(), &lease)).await?
            }
            Some(lease) => {
                // replace() carries the resourceVersion: of two replicas racing, one gets a conflict.
                let lease = Lease { spec: Some(spec), ..lease };
                bounded("updating", timeout, self.api.replace(&self.config.name, &PostParams::default(), &lease))
                    .await?
            }
        };
        self.leadership.confirm(sent_at);
        self.observed = Some(observe(self.observed.take(), written.spec.unwrap_or_default(), Instant::now()));
        Ok(Attempt::Leading)
    }
}

/// Where the lease thread is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Trying to acquire the lease (following another replica, or none yet).
    Candidate,
    Leading,
    /// Leadership lost (or the lease thread failed): stop at once.
    Lost,
}

/// The lease loop on a dedicated OS thread, with its own single-threaded runtime and its own API
/// client (a kube client's connections are tasks of the runtime that created it), so reconciles
/// that keep the main runtime's workers busy cannot starve renewals.
pub struct LeaseThread {
    phase: watch::Receiver<Phase>,
    stop: Option<oneshot::Sender<()>>,
    finished: oneshot::Receiver<()>,
}

impl LeaseThread {
    /// Starts acquiring the lease; `leadership` follows the renewals.
    pub fn spawn(config: LeaseConfig, leadership: Arc<Leadership>) -> std::io::Result<Self> {
        let (phase_tx, phase) = watch::channel(Phase::Candidate);
        let (stop, stop_rx) = oneshot::channel();
        let (finished_tx, finished) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("lease".into()).spawn(move || {
            // Dropped when the thread ends, however it ends: `stop` then returns.
            let _finished = finished_tx;
            runtime.block_on(lease_loop(config, leadership, phase_tx, stop_rx));
        })?;
        Ok(Self { phase, stop: Some(stop), finished })
    }

    /// Resolves `true` once this replica leads, `false` if the lease thread ended first.
    pub async fn leading(&mut self) -> bool {
        matches!(self.phase.wait_for(|p| *p != Phase::Candidate).await.as_deref(), Ok(Phase::Leading))
    }

    /// Resolves when leadership is lost, or the lease thread ended.
    pub async fn lost(&mut self) {
        let _ = self.phase.wait_for(|p| *p == Phase::Lost).await;
    }

    /// Stops the loop, releasing the lease if held, and waits for the thread (bounded by the
    /// release's own API timeouts).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.finished.await;
    }
}

async fn lease_loop(
    config: LeaseConfig,
    leadership: Arc<Leadership>,
    phase: watch::Sender<Phase>,
    mut stop: oneshot::Receiver<()>,
) {
    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(err) => {
            error!(error = %err, "cannot build the Kubernetes client of the lease thread");
            phase.send_replace(Phase::Lost);
            return;
        }
    };
    let mut elector = LeaderElector::new(client, config, leadership);
    tokio::select! {
        () = elector.acquire() => {}
        _ = &mut stop => return,
    }
    phase.send_replace(Phase::Leading);
    tokio::select! {
        () = elector.hold() => {
            phase.send_replace(Phase::Lost);
        }
        _ = &mut stop => elector.release().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn held_by(holder: &str, duration_seconds: i32, transitions: i32) -> LeaseSpec {
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

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_call_counts_as_failed_after_its_timeout() {
        let started = tokio::time::Instant::now();
        let result: Result<(), LeaseError> =
            bounded("updating", 3 * SECOND, std::future::pending::<Result<(), kube::Error>>()).await;
        assert!(matches!(result, Err(LeaseError::TimedOut { action: "updating", .. })), "{result:?}");
        assert_eq!(started.elapsed(), 3 * SECOND);
    }
}
