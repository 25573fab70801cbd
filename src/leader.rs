//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics: a lease is
//! taken over only after it went unrenewed for its whole duration as observed on the local clock
//! (so clock skew between replicas does not matter), the leader renews every retry period, and
//! it gives up leadership when it could not renew within the renew deadline.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;
use tracing::{debug, info, warn};

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

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The lease as last seen, and when (locally) it last changed.
    observed: Option<(LeaseSpec, Instant)>,
}

/// Result of one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Leading,
    /// Held by another replica (its identity).
    Following(String),
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self { api: Api::namespaced(client, &config.namespace), config, observed: None }
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// Returns once this replica holds the lease.
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

    /// Renews the lease until renewal fails for longer than the renew deadline, or another
    /// replica holds it; then returns. The caller must stop writing at once.
    pub async fn hold(&mut self) {
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => last_renewal = Instant::now(),
                Ok(Attempt::Following(holder)) => {
                    warn!(lease = %self.config.name, leader = %holder, "another replica holds the lease");
                    return;
                }
                Err(err) => warn!(lease = %self.config.name, error = %err, "could not renew the lease"),
            }
            if last_renewal.elapsed() > self.config.renew_deadline {
                warn!(lease = %self.config.name, "lease not renewed within the renew deadline");
                return;
            }
        }
    }

    /// Gives the lease up (on shutdown) so that a follower takes over without waiting for it to
    /// expire.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else { return };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&self.config.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => info!(lease = %self.config.name, "released the lease"),
            Err(err) => warn!(lease = %self.config.name, error = %err, "could not release the lease"),
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let me = self.config.identity.clone();
        let duration_seconds = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.config.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            let created = self.api.create(&PostParams::default(), &lease).await?;
            self.observe(created.spec.unwrap_or_default());
            return Ok(Attempt::Leading);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        self.observe(spec.clone());
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let held_by_other = holder.as_ref().is_some_and(|h| *h != me);
        if held_by_other && !self.observed_expired(&spec) {
            return Ok(Attempt::Following(holder.unwrap_or_default()));
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = LeaseSpec {
            holder_identity: Some(me),
            lease_duration_seconds: Some(duration_seconds),
            acquire_time: if holder.as_deref() == Some(self.config.identity.as_str()) {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if holder.as_deref() == Some(self.config.identity.as_str()) {
                transitions
            } else {
                transitions + 1
            }),
            ..spec
        };
        lease.spec = Some(new_spec);
        // replace() carries the resourceVersion: of two replicas racing, one gets a conflict.
        let updated = self.api.replace(&self.config.name, &PostParams::default(), &lease).await?;
        debug!(lease = %self.config.name, "lease renewed");
        self.observe(updated.spec.unwrap_or_default());
        Ok(Attempt::Leading)
    }

    fn observe(&mut self, spec: LeaseSpec) {
        let changed = self.observed.as_ref().is_none_or(|(seen, _)| *seen != spec);
        if changed {
            self.observed = Some((spec, Instant::now()));
        }
    }

    /// Expired when unchanged for the lease's duration on our own clock.
    fn observed_expired(&self, spec: &LeaseSpec) -> bool {
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        self.observed.as_ref().is_some_and(|(_, since)| since.elapsed() >= duration)
    }
}
