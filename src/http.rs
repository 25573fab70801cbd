//! `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What the probes report.
#[derive(Debug, Default)]
pub struct Health {
    /// Cleared when the controller stops for any reason but a requested shutdown.
    failed: AtomicBool,
    /// A standby replica (not leader) is ready: it has nothing to sync.
    standby: AtomicBool,
    /// Watches still waiting for their first complete list.
    unsynced_watches: AtomicUsize,
    leading: AtomicBool,
}

impl Health {
    pub fn set_standby(&self) {
        self.standby.store(true, Ordering::SeqCst);
    }

    /// Called when leading starts; readiness then waits for `watches` caches to sync.
    pub fn start_leading(&self, watches: usize) {
        self.unsynced_watches.store(watches, Ordering::SeqCst);
        self.leading.store(true, Ordering::SeqCst);
        self.standby.store(false, Ordering::SeqCst);
    }

    pub fn watch_synced(&self) {
        // Saturating: never below zero even if called once too often.
        let _ = self.unsynced_watches.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    pub fn set_failed(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        let synced = self.leading.load(Ordering::SeqCst) && self.unsynced_watches.load(Ordering::SeqCst) == 0;
        !self.failed.load(Ordering::SeqCst) && (self.standby.load(Ordering::SeqCst) || synced)
    }

    pub fn is_alive(&self) -> bool {
        !self.failed.load(Ordering::SeqCst)
    }

    /// This replica runs the controller (it won the Lease, or runs without leader election).
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst) && self.is_alive()
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// Binds `addr` and serves until the runtime stops. Returns the bound address (port 0 picks one).
pub async fn serve(addr: SocketAddr, health: Arc<Health>, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    metrics.observe_health(health.clone());
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { health, metrics });
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "HTTP server stopped");
        }
    });
    Ok(bound)
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}

async fn healthz(State(state): State<AppState>) -> StatusCode {
    if state.health.is_alive() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

async fn readyz(State(state): State<AppState>) -> StatusCode {
    if state.health.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_every_watch_synced_or_as_standby() {
        let health = Health::default();
        assert!(!health.is_ready());
        health.set_standby();
        assert!(health.is_ready(), "a follower is a ready standby");
        health.start_leading(2);
        assert!(!health.is_ready(), "a new leader waits for its caches");
        health.watch_synced();
        assert!(!health.is_ready());
        health.watch_synced();
        health.watch_synced();
        assert!(health.is_ready());
        health.set_failed();
        assert!(!health.is_ready() && !health.is_alive());
    }
}
