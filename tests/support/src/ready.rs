//! Waiting for a freshly started server, failing fast and informatively when it dies.

use std::{future::Future, time::Duration};

use anyhow::{Result, bail};
use tokio::time::{Instant, sleep, timeout};

use crate::process::Server;

const LOG_TAIL_LINES: usize = 40;
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Polls `probe` until it succeeds. Fails at once if `server` exits, and at `deadline` with the
/// last probe error; both errors carry the tail of the server's log.
pub(crate) async fn wait_until<F, Fut>(server: &mut Server, what: &str, deadline: Instant, mut probe: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    loop {
        if let Some(status) = server.exit_status()? {
            bail!("{} exited ({status}) while waiting for {what}\n{}", server.name(), server.log_tail(LOG_TAIL_LINES));
        }
        let error = match timeout(PROBE_TIMEOUT, probe()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_) => anyhow::anyhow!("probe did not answer within {PROBE_TIMEOUT:?}"),
        };
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}; last error: {error:#}\n{}", server.log_tail(LOG_TAIL_LINES));
        }
        sleep(POLL_INTERVAL).await;
    }
}
