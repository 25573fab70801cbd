//! The series computed at scrape time rather than stored in a family: per credential (token
//! expiry, Ready), per replica (readiness, leadership) and per rotating credential (client
//! secret age).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use crate::health::Health;

/// What is exported per credential: the expiry of its token and its Ready condition.
#[derive(Debug, Default)]
pub(super) struct CredentialGauges {
    pub(super) expires_at: Option<Timestamp>,
    /// Ready is True, and the condition's reason.
    pub(super) ready: Option<(bool, String)>,
}

/// The per-credential gauges, computed at scrape time: seconds until each token expires
/// (negative once expired, so an alert needs no `time()` arithmetic) and Ready with its reason
/// (one series per credential: a new reason replaces the old series).
#[derive(Debug, Default)]
pub(super) struct CredentialCollector(Mutex<HashMap<(String, String), CredentialGauges>>);

impl CredentialCollector {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), CredentialGauges>> {
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
pub(super) struct ProcessCollector(Mutex<Option<Arc<Health>>>);

impl ProcessCollector {
    /// From now on, the gauges read `health`.
    pub(super) fn observe(&self, health: Arc<Health>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(health);
    }
}

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
pub(super) struct SecretAgeCollector(Mutex<HashMap<(String, String), Timestamp>>);

impl SecretAgeCollector {
    /// The creation time of each credential's client secret, by namespace and name.
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Timestamp>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Collector for SecretAgeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Timestamp::now();
        let entries: Vec<_> = self.lock().iter().map(|(k, v)| (k.clone(), *v)).collect();
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
