//! A token bucket per token-endpoint host. Requests over the rate wait their turn instead of
//! failing, so a mass rotation or a fresh install of thousands of credentials reaches Adobe IMS
//! as a steady stream.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct HostRateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    /// May go negative: each waiting caller has reserved one token ahead.
    tokens: f64,
    updated: Instant,
}

impl HostRateLimiter {
    /// `per_second` requests per second and host on average, bursts of up to `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second: per_second.max(0.001), burst: f64::from(burst.max(1)), buckets: Mutex::default() }
    }

    /// How long the caller must wait before its request to `host`; the slot is reserved.
    pub fn reserve(&self, host: &str) -> Duration {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(host.to_owned()).or_insert(Bucket { tokens: self.burst, updated: now });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst) - 1.0;
        bucket.updated = now;
        if bucket.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-bucket.tokens / self.per_second) }
    }

    /// Waits until a request to `host` may go out.
    pub async fn acquire(&self, host: &str) {
        let wait = self.reserve(host);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_spaces_requests_per_host() {
        let limiter = HostRateLimiter::new(10.0, 3);
        let waits: Vec<Duration> = (0..5).map(|_| limiter.reserve("ims")).collect();
        assert_eq!(&waits[..3], &[Duration::ZERO; 3]);
        assert_eq!(waits[3], Duration::from_millis(100));
        assert_eq!(waits[4], Duration::from_millis(200));
        assert_eq!(limiter.reserve("other-host"), Duration::ZERO, "hosts are independent");
        tokio::time::advance(Duration::from_secs(1)).await;
        // After a quiet second the bucket is full again (capped at the burst).
        let refilled: Vec<Duration> = (0..3).map(|_| limiter.reserve("ims")).collect();
        assert_eq!(refilled, [Duration::ZERO; 3]);
        assert!(limiter.reserve("ims") > Duration::ZERO);
    }
}
