//! Polling for eventual conditions, so tests assert on observed state rather than on sleeps.

use std::{fmt::Display, future::Future, time::Duration};

use anyhow::{Result, bail};
use tokio::time::{Instant, sleep};

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `condition` until it returns `true`; fails with "timed out after … waiting for `what`"
/// once `timeout` has passed.
pub async fn wait_for<F, Fut>(what: impl Display, timeout: Duration, mut condition: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        sleep(POLL_INTERVAL).await;
    }
}
