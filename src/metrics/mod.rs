//! Prometheus metrics (prometheus-client), served at `/metrics`. Labels never carry secret
//! material: flow, outcome (an error reason), the namespace/name of a credential, its Ready
//! reason, and a workload kind.
//!
//! [`Metrics`] is the handle the operator records through; `families` registers the metrics by
//! group, `collectors` computes the series read at scrape time, `labels` holds the label sets.

mod collectors;
mod families;
mod labels;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::crd::{AdobeCredential, AdobeCredentialStatus};
use crate::health::Health;
use crate::names::condition::READY;
use crate::rollout::Restart;
use collectors::ProcessCollector;
use families::{ClusterMetrics, CredentialMetrics, MintMetrics, RotationMetrics};
use labels::{
    ClusterNamespaceLabels, CredentialLabels, FlowLabels, MintLabels, OutcomeLabels, ReasonLabels, RestartLabels,
    RotationRequestLabels, WORKLOAD_KINDS, WatchLabels, kind_label,
};

/// Every metric of the operator.
pub struct Metrics {
    registry: Registry,
    mint: MintMetrics,
    cluster: ClusterMetrics,
    credentials: CredentialMetrics,
    process: Arc<ProcessCollector>,
    rotation: RotationMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("adobe_credential");
        // The exposition follows the order of registration: changing it changes the output.
        let mint = MintMetrics::register(&mut registry);
        let cluster = ClusterMetrics::register(&mut registry);
        let credentials = CredentialMetrics::register(&mut registry);
        let process = Arc::new(ProcessCollector::default());
        registry.register_collector(Box::new(process.clone()));
        let rotation = RotationMetrics::register(&mut registry);
        Self { registry, mint, cluster, credentials, process, rotation }
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn mint_finished(&self, flow: &str, outcome: &str, took: Duration) {
        self.mint.requests.get_or_create(&MintLabels { flow: flow.to_owned(), outcome: outcome.to_owned() }).inc();
        self.mint.duration.get_or_create(&FlowLabels { flow: flow.to_owned() }).observe(took.as_secs_f64());
    }

    pub fn reconcile_started(&self) {
        self.mint.reconciles.inc();
    }

    pub fn reconcile_failed(&self, reason: &str) {
        self.mint.reconcile_errors.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }

    /// Counts a mint as in flight until the guard is dropped.
    pub fn mint_in_flight(&self) -> GaugeGuard {
        GaugeGuard::new(self.mint.in_flight.clone())
    }

    /// Counts a mint as queued for the rate limit until the guard is dropped.
    pub fn mint_queued(&self) -> GaugeGuard {
        GaugeGuard::new(self.mint.queued.clone())
    }

    pub fn set_expiry(&self, namespace: &str, name: &str, expires_at: Timestamp) {
        self.credentials.gauges.lock().entry((namespace.to_owned(), name.to_owned())).or_default().expires_at =
            Some(expires_at);
    }

    /// Exports the Ready condition of `status` (the one a reconcile wrote or found unchanged).
    pub fn set_status(&self, namespace: &str, name: &str, status: &AdobeCredentialStatus) {
        let Some(ready) = status.conditions.iter().find(|c| c.type_ == READY) else { return };
        let state = (ready.status == "True", ready.reason.clone());
        self.credentials.gauges.lock().entry((namespace.to_owned(), name.to_owned())).or_default().ready = Some(state);
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
            self.credentials.rollout_restarts.get_or_create(&labels).inc();
        }
    }

    /// Exports this replica's readiness and leadership, read from `health` at scrape time.
    pub fn observe_health(&self, health: Arc<Health>) {
        self.process.observe(health);
    }

    pub fn mint_guard_tripped(&self, namespace: &str, name: &str) {
        self.mint
            .guard_trips
            .get_or_create(&CredentialLabels { namespace: namespace.to_owned(), name: name.to_owned() })
            .inc();
    }

    /// The namespace counts of a ClusterAdobeCredential.
    pub fn set_cluster_namespaces(&self, name: &str, selected: u32, written: u32, failed: u32) {
        for (state, count) in [("selected", selected), ("written", written), ("failed", failed)] {
            let labels = ClusterNamespaceLabels { name: name.to_owned(), state };
            self.cluster.namespaces.get_or_create(&labels).set(i64::from(count));
        }
    }

    /// Whether a watch of the ClusterAdobeCredential controller has a complete list.
    pub fn set_cluster_watch_listed(&self, watch: &'static str, listed: bool) {
        self.cluster.watches.get_or_create(&WatchLabels { watch }).set(i64::from(listed));
    }

    /// Drops the series of a deleted ClusterAdobeCredential.
    pub fn forget_cluster(&self, name: &str) {
        for state in ["selected", "written", "failed"] {
            self.cluster.namespaces.remove(&ClusterNamespaceLabels { name: name.to_owned(), state });
        }
    }

    /// One request of a client secret rotation (`management_token`, `verify`, `list`, `add`,
    /// `delete`) and its outcome.
    pub fn rotation_request(&self, request: &str, outcome: &str) {
        let labels = RotationRequestLabels { request: request.to_owned(), outcome: outcome.to_owned() };
        self.rotation.requests.get_or_create(&labels).inc();
    }

    /// A rotation ended: `completed` or `abandoned`.
    pub fn rotation_ended(&self, outcome: &str) {
        self.rotation.ended.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
    }

    pub fn rotation_failed(&self, reason: &str) {
        self.rotation.errors.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }

    /// The creation time of the client secret a credential's source Secret holds (`None`:
    /// unknown, the series is dropped).
    pub fn set_client_secret_created(&self, namespace: &str, name: &str, created_at: Option<Timestamp>) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut ages = self.rotation.secret_ages.lock();
        match created_at {
            Some(at) => ages.insert(key, at),
            None => ages.remove(&key),
        };
    }

    /// Drops every series of one credential (deleted, or gone while the watch was down).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.credentials.gauges.lock().remove(&(namespace.to_owned(), name.to_owned()));
        self.set_client_secret_created(namespace, name, None);
        self.mint.guard_trips.remove(&CredentialLabels { namespace: namespace.to_owned(), name: name.to_owned() });
        for kind in WORKLOAD_KINDS {
            let labels =
                RestartLabels { namespace: namespace.to_owned(), name: name.to_owned(), kind: kind_label(kind) };
            self.credentials.rollout_restarts.remove(&labels);
        }
    }

    /// Keeps the series of the credentials `keep` accepts, by namespace and name (after a relist).
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let gone: Vec<(String, String)> =
            self.credentials.gauges.lock().keys().filter(|(ns, name)| !keep(ns, name)).cloned().collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WorkloadKind;

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
