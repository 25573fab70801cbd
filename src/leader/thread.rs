//! The lease loop on its own OS thread ([`LeaseThread`]), and where it is ([`Phase`]).

use std::sync::Arc;

use kube::Client;
use tokio::sync::{oneshot, watch};
use tracing::error;

use super::elector::LeaderElector;
use super::{Leadership, LeaseConfig};

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
