//! The metrics of the operator by what they watch, each group registered with its names and
//! help texts: token requests and reconciles, ClusterAdobeCredentials, each credential's series,
//! and client secret rotations. The exposition lists families in the order they are registered
//! (collectors after the families), so [`super::Metrics::new`] registers the groups in a fixed
//! order.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::collectors::{CredentialCollector, SecretAgeCollector};
use super::labels::{
    ClusterNamespaceLabels, CredentialLabels, FlowLabels, MintLabels, OutcomeLabels, ReasonLabels, RestartLabels,
    RotationRequestLabels, WatchLabels,
};

/// Token requests and reconciles.
pub(super) struct MintMetrics {
    pub(super) requests: Family<MintLabels, Counter>,
    pub(super) duration: Family<FlowLabels, Histogram>,
    pub(super) reconcile_errors: Family<ReasonLabels, Counter>,
    pub(super) in_flight: Gauge,
    pub(super) queued: Gauge,
    pub(super) guard_trips: Family<CredentialLabels, Counter>,
    pub(super) reconciles: Counter,
}

impl MintMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let requests = Family::<MintLabels, Counter>::default();
        registry.register(
            "mint_requests",
            "Token requests by flow and outcome (ok or a failure reason)",
            requests.clone(),
        );
        let duration = Family::<FlowLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register("mint_duration_seconds", "Latency of token requests", duration.clone());
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register("reconcile_errors", "Failed reconciles by status reason", reconcile_errors.clone());
        let in_flight = Gauge::default();
        registry.register("mints_in_flight", "Token requests under way", in_flight.clone());
        let queued = Gauge::default();
        registry.register("mints_queued", "Token requests waiting for the per-host rate limit", queued.clone());
        let guard_trips = Family::<CredentialLabels, Counter>::default();
        registry.register(
            "mint_guard_trips",
            "Mints refused by the per-credential mint guard (a mint loop or a tenant changing inputs too often)",
            guard_trips.clone(),
        );
        let reconciles = Counter::default();
        registry.register(
            "reconciles",
            "Reconciles that inspected a credential's inputs and target (quiet wake-ups not counted)",
            reconciles.clone(),
        );
        Self { requests, duration, reconcile_errors, in_flight, queued, guard_trips, reconciles }
    }
}

/// The namespaces of each ClusterAdobeCredential, and whether its watches have a complete list.
pub(super) struct ClusterMetrics {
    pub(super) namespaces: Family<ClusterNamespaceLabels, Gauge>,
    pub(super) watches: Family<WatchLabels, Gauge>,
}

impl ClusterMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let namespaces = Family::<ClusterNamespaceLabels, Gauge>::default();
        registry.register(
            "cluster_namespaces",
            "Namespaces of a ClusterAdobeCredential by state: selected, written (holding the current token), failed",
            namespaces.clone(),
        );
        let watches = Family::<WatchLabels, Gauge>::default();
        registry.register(
            "cluster_watch_listed",
            "1 when the ClusterAdobeCredential watch (namespaces, copies) has a complete list, 0 while it has none (no copy is written or removed then)",
            watches.clone(),
        );
        Self { namespaces, watches }
    }
}

/// Each credential's series: the restarts of the workloads it names, its token's expiry and its
/// Ready condition.
pub(super) struct CredentialMetrics {
    pub(super) rollout_restarts: Family<RestartLabels, Counter>,
    pub(super) gauges: Arc<CredentialCollector>,
}

impl CredentialMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let rollout_restarts = Family::<RestartLabels, Counter>::default();
        registry.register(
            "rollout_restarts",
            "Rollout restarts of the workloads (kind) a credential names, for a new token",
            rollout_restarts.clone(),
        );
        let gauges = Arc::new(CredentialCollector::default());
        registry.register_collector(Box::new(gauges.clone()));
        Self { rollout_restarts, gauges }
    }
}

/// Client secret rotations: their requests, their ends, their failed steps, and the age of the
/// client secret in use.
pub(super) struct RotationMetrics {
    pub(super) requests: Family<RotationRequestLabels, Counter>,
    pub(super) ended: Family<OutcomeLabels, Counter>,
    pub(super) errors: Family<ReasonLabels, Counter>,
    pub(super) secret_ages: Arc<SecretAgeCollector>,
}

impl RotationMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RotationRequestLabels, Counter>::default();
        registry.register(
            "client_secret_rotation_requests",
            "Requests of client secret rotations: management_token and verify (IMS), list, add and delete (I/O Management API), by outcome (ok or a reason)",
            requests.clone(),
        );
        let ended = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "client_secret_rotations",
            "Client secret rotations that ended: completed, or abandoned (the new secret never worked and was deleted)",
            ended.clone(),
        );
        let errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "client_secret_rotation_errors",
            "Failed or refused client secret rotation steps by reason (retried with backoff)",
            errors.clone(),
        );
        let secret_ages = Arc::new(SecretAgeCollector::default());
        registry.register_collector(Box::new(secret_ages.clone()));
        Self { requests, ended, errors, secret_ages }
    }
}
