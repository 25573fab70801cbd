//! Prometheus metrics (prometheus-client), served at `/metrics`. Labels never carry secret
//! material: flow, outcome (an error reason), the namespace/name of a credential, its Ready
//! reason, and a workload kind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::{AdobeCredential, AdobeCredentialStatus, WorkloadKind};
use crate::health::Health;
use crate::names::condition::READY;
use crate::rollout::Restart;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MintLabels {
    flow: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    flow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    watch: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterNamespaceLabels {
    name: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationRequestLabels {
    request: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RestartLabels {
    namespace: String,
    name: String,
    kind: String,
}

const WORKLOAD_KINDS: [WorkloadKind; 3] =
    [WorkloadKind::Deployment, WorkloadKind::StatefulSet, WorkloadKind::DaemonSet];

fn kind_label(kind: WorkloadKind) -> String {
    format!("{kind:?}")
}

/// Every metric of the operator.
pub struct Metrics {
    registry: Registry,
    mint_requests: Family<MintLabels, Counter>,
    mint_duration: Family<FlowLabels, Histogram>,
    reconcile_errors: Family<ReasonLabels, Counter>,
    mints_in_flight: Gauge,
    mints_queued: Gauge,
    mint_guard_trips: Family<CredentialLabels, Counter>,
    rollout_restarts: Family<RestartLabels, Counter>,
    reconciles: Counter,
    cluster_namespaces: Family<ClusterNamespaceLabels, Gauge>,
    cluster_watches: Family<WatchLabels, Gauge>,
    credentials: Arc<CredentialCollector>,
    process: Arc<ProcessCollector>,
    rotation_requests: Family<RotationRequestLabels, Counter>,
    rotations: Family<OutcomeLabels, Counter>,
    rotation_errors: Family<ReasonLabels, Counter>,
    secret_ages: Arc<SecretAgeCollector>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("adobe_credential");
        let mint_requests = Family::<MintLabels, Counter>::default();
        registry.register(
            "mint_requests",
            "Token requests by flow and outcome (ok or a failure reason)",
            mint_requests.clone(),
        );
        let mint_duration = Family::<FlowLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register("mint_duration_seconds", "Latency of token requests", mint_duration.clone());
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register("reconcile_errors", "Failed reconciles by status reason", reconcile_errors.clone());
        let mints_in_flight = Gauge::default();
        registry.register("mints_in_flight", "Token requests under way", mints_in_flight.clone());
        let mints_queued = Gauge::default();
        registry.register("mints_queued", "Token requests waiting for the per-host rate limit", mints_queued.clone());
        let mint_guard_trips = Family::<CredentialLabels, Counter>::default();
        registry.register(
            "mint_guard_trips",
            "Mints refused by the per-credential mint guard (a mint loop or a tenant changing inputs too often)",
            mint_guard_trips.clone(),
        );
        let reconciles = Counter::default();
        registry.register(
            "reconciles",
            "Reconciles that inspected a credential's inputs and target (quiet wake-ups not counted)",
            reconciles.clone(),
        );
        let cluster_namespaces = Family::<ClusterNamespaceLabels, Gauge>::default();
        registry.register(
            "cluster_namespaces",
            "Namespaces of a ClusterAdobeCredential by state: selected, written (holding the current token), failed",
            cluster_namespaces.clone(),
        );
        let cluster_watches = Family::<WatchLabels, Gauge>::default();
        registry.register(
            "cluster_watch_listed",
            "1 when the ClusterAdobeCredential watch (namespaces, copies) has a complete list, 0 while it has none (no copy is written or removed then)",
            cluster_watches.clone(),
        );
        let rollout_restarts = Family::<RestartLabels, Counter>::default();
        registry.register(
            "rollout_restarts",
            "Rollout restarts of the workloads (kind) a credential names, for a new token",
            rollout_restarts.clone(),
        );
        let credentials = Arc::new(CredentialCollector::default());
        registry.register_collector(Box::new(credentials.clone()));
        let process = Arc::new(ProcessCollector::default());
        registry.register_collector(Box::new(process.clone()));
        let rotation_requests = Family::<RotationRequestLabels, Counter>::default();
        registry.register(
            "client_secret_rotation_requests",
            "Requests of client secret rotations: management_token and verify (IMS), list, add and delete (I/O Management API), by outcome (ok or a reason)",
            rotation_requests.clone(),
        );
        let rotations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "client_secret_rotations",
            "Client secret rotations that ended: completed, or abandoned (the new secret never worked and was deleted)",
            rotations.clone(),
        );
        let rotation_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "client_secret_rotation_errors",
            "Failed or refused client secret rotation steps by reason (retried with backoff)",
            rotation_errors.clone(),
        );
        let secret_ages = Arc::new(SecretAgeCollector::default());
        registry.register_collector(Box::new(secret_ages.clone()));
        Self {
            cluster_namespaces,
            cluster_watches,
            rotation_requests,
            rotations,
            rotation_errors,
            secret_ages,
            reconciles,
            registry,
            mint_requests,
            mint_duration,
            reconcile_errors,
            mints_in_flight,
            mints_queued,
            mint_guard_trips,
            rollout_restarts,
            credentials,
            process,
        }
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn mint_finished(&self, flow: &str, outcome: &str, took: Duration) {
        self.mint_requests.get_or_create(&MintLabels { flow: flow.to_owned(), outcome: outcome.to_owned() }).inc();
        self.mint_duration.get_or_create(&FlowLabels { flow: flow.to_owned() }).observe(took.as_secs_f64());
    }

    pub fn reconcile_started(&self) {
        self.reconciles.inc();
    }

    pub fn reconcile_failed(&self, reason: &str) {
        self.reconcile_errors.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }

    /// Counts a mint as in flight until the guard is dropped.
    pub fn mint_in_flight(&self) -> GaugeGuard {
        GaugeGuard::new(self.mints_in_flight.clone())
    }

    /// Counts a mint as queued for the rate limit until the guard is dropped.
    pub fn mint_queued(&self) -> GaugeGuard {
        GaugeGuard::new(self.mints_queued.clone())
    }

    pub fn set_expiry(&self, namespace: &str, name: &str, expires_at: Timestamp) {
        self.credentials.lock().entry((namespace.to_owned(), name.to_owned())).or_default().expires_at =
            Some(expires_at);
    }

    /// Exports the Ready condition of `status` (the one a reconcile wrote or found unchanged).
    pub fn set_status(&self, namespace: &str, name: &str, status: &AdobeCredentialStatus) {
        let Some(ready) = status.conditions.iter().find(|c| c.type_ == READY) else { return };
        let state = (ready.status == "True", ready.reason.clone());
        self.credentials.lock().entry((namespace.to_owned(), name.to_owned())).or_default().ready = Some(state);
    }

    /// Counts the consumers of `cred` restarted for a new token.
    pub fn consumers_restarted(&self, cred: &AdobeCredential, restarts: &[Restart]) {
        use kube::ResourceExt;
        for restart in restarts.iter().filter(|r| r.restarted) {
            let labels = RestartLabels {
                namespace: cred.namespace().unwrap_or_default(),
                name: cred.name_any(),
                kind: kind_label(restart.status.kind),
            };
            self.rollout_restarts.get_or_create(&labels).inc();
        }
    }

    /// Exports this replica's readiness and leadership, read from `health` at scrape time.
    pub fn observe_health(&self, health: Arc<Health>) {
        *self.process.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(health);
    }

    pub fn mint_guard_tripped(&self, namespace: &str, name: &str) {
        self.mint_guard_trips
            .get_or_create(&CredentialLabels { namespace: namespace.to_owned(), name: name.to_owned() })
            .inc();
    }

    /// The namespace counts of a ClusterAdobeCredential.
    pub fn set_cluster_namespaces(&self, name: &str, selected: u32, written: u32, failed: u32) {
        for (state, count) in [("selected", selected), ("written", written), ("failed", failed)] {
            let labels = ClusterNamespaceLabels { name: name.to_owned(), state };
            self.cluster_namespaces.get_or_create(&labels).set(i64::from(count));
        }
    }

    /// Whether a watch of the ClusterAdobeCredential controller has a complete list.
    pub fn set_cluster_watch_listed(&self, watch: &'static str, listed: bool) {
        self.cluster_watches.get_or_create(&WatchLabels { watch }).set(i64::from(listed));
    }

    /// Drops the series of a deleted ClusterAdobeCredential.
    pub fn forget_cluster(&self, name: &str) {
        for state in ["selected", "written", "failed"] {
            self.cluster_namespaces.remove(&ClusterNamespaceLabels { name: name.to_owned(), state });
        }
    }

    /// One request of a client secret rotation (`management_token`, `verify`, `list`, `add`,
    /// `delete`) and its outcome.
    pub fn rotation_request(&self, request: &str, outcome: &str) {
        let labels = RotationRequestLabels { request: request.to_owned(), outcome: outcome.to_owned() };
        self.rotation_requests.get_or_create(&labels).inc();
    }

    /// A rotation ended: `completed` or `abandoned`.
    pub fn rotation_ended(&self, outcome: &str) {
        self.rotations.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
    }

    pub fn rotation_failed(&self, reason: &str) {
        self.rotation_errors.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }

    /// The creation time of the client secret a credential's source Secret holds (`None`:
    /// unknown, the series is dropped).
    pub fn set_client_secret_created(&self, namespace: &str, name: &str, created_at: Option<Timestamp>) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut ages = self.secret_ages.0.lock().unwrap_or_else(|e| e.into_inner());
        match created_at {
            Some(at) => ages.insert(key, at),
            None => ages.remove(&key),
        };
    }

    /// Drops every series of one credential (deleted, or gone while the watch was down).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.credentials.lock().remove(&(namespace.to_owned(), name.to_owned()));
        self.set_client_secret_created(namespace, name, None);
        self.mint_guard_trips.remove(&CredentialLabels { namespace: namespace.to_owned(), name: name.to_owned() });
        for kind in WORKLOAD_KINDS {
            let labels =
                RestartLabels { namespace: namespace.to_owned(), name: name.to_owned(), kind: kind_label(kind) };
            self.rollout_restarts.remove(&labels);
        }
    }

    /// Keeps the series of the credentials `keep` accepts, by namespace and name (after a relist).
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let gone: Vec<(String, String)> =
            self.credentials.lock().keys().filter(|(ns, name)| !keep(ns, name)).cloned().collect();
        for (namespace, name) in gone {
            self.forget(&namespace, &name);
        }
    }
}

/// Decrements its gauge when dropped, so every exit path (errors, cancellation) is counted.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What is exported per credential: the expiry of its token and its Ready condition.
#[derive(Debug, Default)]
struct CredentialGauges {
    expires_at: Option<Timestamp>,
    /// Ready is True, and the condition's reason.
    ready: Option<(bool, String)>,
}

/// The per-credential gauges, computed at scrape time: seconds until each token expires
/// (negative once expired, so an alert needs no `time()` arithmetic) and Ready with its reason
/// (one series per credential: a new reason replaces the old series).
#[derive(Debug, Default)]
struct CredentialCollector(Mutex<HashMap<(String, String), CredentialGauges>>);

impl CredentialCollector {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), CredentialGauges>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Collector for CredentialCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Timestamp::now();
        let (mut expiries, mut ready) = (Vec::new(), Vec::new());
        for ((namespace, name), state) in self.lock().iter() {
            if let Some(at) = state.expires_at {
                expiries.push((namespace.clone(), name.clone(), at.duration_since(now).as_secs_f64()));
            }
            if let Some((is_ready, reason)) = &state.ready {
                ready.push((namespace.clone(), name.clone(), reason.clone(), i64::from(*is_ready)));
            }
        }
        let mut family = encoder.encode_descriptor(
            "token_expiry_seconds",
            "Seconds until the token in each credential's target Secret expires",
            None,
            ConstGauge::<f64>::new(0.0).metric_type(),
        )?;
        for (namespace, name, seconds) in expiries {
            let labels = [("namespace", namespace.as_str()), ("name", name.as_str())];
            ConstGauge::<f64>::new(seconds).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "ready",
            "1 while a credential's Ready condition is True, else 0; reason: the condition's reason",
            None,
            ConstGauge::<i64>::new(0).metric_type(),
        )?;
        for (namespace, name, reason, value) in ready {
            let labels = [("namespace", namespace.as_str()), ("name", name.as_str()), ("reason", reason.as_str())];
            ConstGauge::<i64>::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// This replica's readiness (`/readyz`) and leadership, read at scrape time.
#[derive(Debug, Default)]
struct ProcessCollector(Mutex<Option<Arc<Health>>>);

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(health) = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone() else { return Ok(()) };
        let gauges = [
            ("operator_ready", "1 while this replica is ready (/readyz answers 200), else 0", health.is_ready()),
            (
                "operator_leader",
                "1 while this replica is the active one (it holds the Lease, or runs without leader election), else 0",
                health.is_leading(),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::<i64>::new(i64::from(value));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// Seconds since each rotating credential's client secret was created, at scrape time.
#[derive(Debug, Default)]
struct SecretAgeCollector(Mutex<HashMap<(String, String), Timestamp>>);

impl Collector for SecretAgeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Timestamp::now();
        let entries: Vec<_> =
            self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect();
        let probe = ConstGauge::<f64>::new(0.0);
        let mut family = encoder.encode_descriptor(
            "client_secret_age_seconds",
            "Seconds since the client secret in use was created (credentials with clientSecretRotation)",
            None,
            probe.metric_type(),
        )?;
        for ((namespace, name), created_at) in entries {
            let labels = [("namespace", namespace.as_str()), ("name", name.as_str())];
            let seconds = now.duration_since(created_at).as_secs_f64();
            ConstGauge::<f64>::new(seconds).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_mints_errors_and_expiry() {
        let metrics = Metrics::new();
        metrics.mint_finished("oauthServerToServer", "ok", Duration::from_millis(120));
        metrics.mint_finished("oauthServerToServer", "InvalidClient", Duration::from_millis(80));
        metrics.reconcile_failed("InvalidClient");
        metrics.reconcile_started();
        let guard = metrics.mint_in_flight();
        metrics.set_expiry("team-a", "firefly", Timestamp::now() + jiff::SignedDuration::from_secs(3600));
        let text = metrics.encode();
        assert!(
            text.contains(r#"adobe_credential_mint_requests_total{flow="oauthServerToServer",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"adobe_credential_reconcile_errors_total{reason="InvalidClient"} 1"#), "{text}");
        assert!(text.contains("adobe_credential_mints_in_flight 1"), "{text}");
        assert!(text.contains("adobe_credential_reconciles_total 1"), "{text}");
        assert!(text.contains("adobe_credential_mint_duration_seconds_bucket"), "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("adobe_credential_token_expiry_seconds{"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains(r#"namespace="team-a""#) && line.contains(r#"name="firefly""#), "{line}");
        let seconds: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("value");
        assert!((3590.0..=3600.0).contains(&seconds), "{seconds}");
        metrics.mint_guard_tripped("team-a", "firefly");
        assert!(
            metrics
                .encode()
                .contains(r#"adobe_credential_mint_guard_trips_total{namespace="team-a",name="firefly"} 1"#)
        );
        metrics.rotation_request("add", "ok");
        metrics.rotation_ended("completed");
        metrics.rotation_failed("TwoClientSecretsExist");
        metrics.set_client_secret_created(
            "team-a",
            "firefly",
            Some(Timestamp::now() - jiff::SignedDuration::from_hours(1)),
        );
        let text = metrics.encode();
        assert!(
            text.contains(r#"adobe_credential_client_secret_rotation_requests_total{request="add",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"adobe_credential_client_secret_rotations_total{outcome="completed"} 1"#), "{text}");
        assert!(
            text.contains(r#"adobe_credential_client_secret_rotation_errors_total{reason="TwoClientSecretsExist"} 1"#)
        );
        let age = text
            .lines()
            .find(|l| l.starts_with("adobe_credential_client_secret_age_seconds{"))
            .unwrap_or_else(|| panic!("{text}"));
        let seconds: f64 = age.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("value");
        assert!((3600.0..3610.0).contains(&seconds), "{seconds}");
        drop(guard);
        metrics.forget("team-a", "firefly");
        let text = metrics.encode();
        assert!(text.contains("adobe_credential_mints_in_flight 0"));
        assert!(!text.contains(r#"name="firefly""#), "{text}");
    }

    fn status(ready: &str, reason: &str) -> AdobeCredentialStatus {
        serde_json::from_value(serde_json::json!({ "conditions": [{
            "type": "Ready", "status": ready, "reason": reason, "message": "m",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }] }))
        .expect("status")
    }

    #[test]
    fn exposes_ready_by_reason_restarts_and_leadership() {
        let metrics = Metrics::new();
        metrics.set_status("team-a", "firefly", &status("True", "TokenMinted"));
        metrics.set_status("team-a", "akeneo", &status("False", "InvalidClient"));
        let text = metrics.encode();
        assert!(text.contains(r#"adobe_credential_ready{namespace="team-a",name="firefly",reason="TokenMinted"} 1"#));
        assert!(text.contains(r#"adobe_credential_ready{namespace="team-a",name="akeneo",reason="InvalidClient"} 0"#));
        // A new reason replaces the series: one per credential.
        metrics.set_status("team-a", "akeneo", &status("False", "TokenExpired"));
        let text = metrics.encode();
        assert_eq!(text.matches(r#"name="akeneo""#).count(), 1, "{text}");
        assert!(text.contains(r#"adobe_credential_ready{namespace="team-a",name="akeneo",reason="TokenExpired"} 0"#));

        let mut cred = AdobeCredential::new("firefly", Default::default());
        cred.metadata.namespace = Some("team-a".into());
        let restart = |kind, restarted| Restart {
            status: crate::crd::RolloutRestartStatus { kind, name: "app".into(), restarted_at: None, message: None },
            restarted,
            problem: None,
        };
        let restarts = [restart(WorkloadKind::Deployment, true), restart(WorkloadKind::StatefulSet, false)];
        metrics.consumers_restarted(&cred, &restarts);
        metrics.consumers_restarted(&cred, &restarts[..1]);
        let text = metrics.encode();
        let line = r#"adobe_credential_rollout_restarts_total{namespace="team-a",name="firefly",kind="Deployment"} 2"#;
        assert!(text.contains(line), "{text}");
        assert!(!text.contains(r#"kind="StatefulSet""#), "only restarts are counted: {text}");

        assert!(!text.contains("adobe_credential_operator_"), "nothing before the health is known");
        let health = Arc::new(Health::default());
        metrics.observe_health(health.clone());
        let text = metrics.encode();
        assert!(
            text.contains("adobe_credential_operator_ready 0") && text.contains("adobe_credential_operator_leader 0")
        );
        health.start_leading(0);
        let text = metrics.encode();
        assert!(
            text.contains("adobe_credential_operator_ready 1") && text.contains("adobe_credential_operator_leader 1")
        );

        metrics.retain(|_, name| name != "firefly");
        let text = metrics.encode();
        assert!(!text.contains(r#"name="firefly""#), "{text}");
        assert!(text.contains(r#"name="akeneo""#), "{text}");
    }
}
