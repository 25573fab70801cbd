//! The Lease API side of leader election: [`LeaderElector`] acquires, renews and releases the
//! lease, every call bounded by a timeout ([`LeaseError`] when it fails or does not answer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{debug, info, warn};

use super::decisions::{Decision, Observation, decide, desired_spec, observe, released_spec};
use super::{Leadership, LeaseConfig};

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

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_call_counts_as_failed_after_its_timeout() {
        let started = tokio::time::Instant::now();
        let result: Result<(), LeaseError> =
            bounded("updating", 3 * SECOND, std::future::pending::<Result<(), kube::Error>>()).await;
        assert!(matches!(result, Err(LeaseError::TimedOut { action: "updating", .. })), "{result:?}");
        assert_eq!(started.elapsed(), 3 * SECOND);
    }
}
