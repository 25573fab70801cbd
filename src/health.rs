//! What the probes report: whether the controller runs, leads, and has synced its caches.
//! Written by the controller and leader election, read by `/healthz`, `/readyz` and metrics.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
