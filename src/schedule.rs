//! Pure timing decisions: when a token is renewed, and how long to wait after a failure.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use crate::crd::RenewalSpec;
use crate::error::Retry;

/// Longest jitter added to a renewal, so thousands of tokens minted together spread out.
const MAX_RENEWAL_JITTER: Duration = Duration::from_secs(300);
const TRANSIENT_BACKOFF_BASE: Duration = Duration::from_secs(1);
const TRANSIENT_BACKOFF_CAP: Duration = Duration::from_secs(300);
const PERMANENT_BACKOFF_BASE: Duration = Duration::from_secs(30);
const PERMANENT_BACKOFF_CAP: Duration = Duration::from_secs(900);

/// How long before expiry a token of `lifetime` is renewed.
pub fn renew_before(lifetime: Duration, spec: Option<&RenewalSpec>) -> Duration {
    let third = lifetime / 3;
    match spec {
        Some(RenewalSpec { renew_before_percentage: Some(pct), .. }) => lifetime * u32::from(*pct) / 100,
        Some(RenewalSpec { renew_before: Some(text), .. }) => match parse_duration(text) {
            // A margin as long as the lifetime would renew in a loop.
            Some(d) if d < lifetime => d,
            _ => third,
        },
        _ => third,
    }
}

/// When a token issued at `issued_at` and expiring at `expires_at` is renewed. The jitter is
/// derived from `jitter_key` (the token's fingerprint) so that every reconcile computes the
/// same time: a moving renewal time would rewrite status on every pass.
pub fn renewal_time(
    issued_at: Timestamp,
    expires_at: Timestamp,
    spec: Option<&RenewalSpec>,
    jitter_key: &str,
) -> Timestamp {
    let lifetime = Duration::try_from(expires_at.duration_since(issued_at)).unwrap_or(Duration::ZERO);
    let before = renew_before(lifetime, spec);
    let jitter = (before / 10).min(MAX_RENEWAL_JITTER).mul_f64(unit_fraction(jitter_key));
    let total = SignedDuration::try_from(before + jitter).unwrap_or(SignedDuration::MAX);
    let at = expires_at.checked_sub(total).unwrap_or(issued_at);
    // Round to whole milliseconds: status carries RFC 3339 times and must compare equal after a
    // round trip through the API server.
    Timestamp::from_millisecond(at.as_millisecond()).unwrap_or(at).max(issued_at)
}

/// A number in [0, 1) derived from `key`.
fn unit_fraction(key: &str) -> f64 {
    let digest = Sha256::digest(key.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Parses `8h`, `30m`, `90s`, `1h30m` (the forms the CRD admits).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let value: u64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total += Duration::from_secs(value.checked_mul(unit)?);
    }
    (number.is_empty() && !total.is_zero()).then_some(total)
}

/// Delay before the next attempt after `consecutive_failures` failures in a row (≥ 1):
/// exponential with jitter in [½, 1] of the step, never shorter than the server's `Retry-After`.
/// `random` is uniform in [0, 1).
pub fn failure_backoff(
    consecutive_failures: u32,
    retry: Retry,
    retry_after: Option<Duration>,
    random: f64,
) -> Duration {
    let (base, cap) = match retry {
        Retry::Transient => (TRANSIENT_BACKOFF_BASE, TRANSIENT_BACKOFF_CAP),
        Retry::Permanent => (PERMANENT_BACKOFF_BASE, PERMANENT_BACKOFF_CAP),
    };
    let exponent = consecutive_failures.saturating_sub(1).min(20);
    let step = base.saturating_mul(1u32 << exponent).min(cap);
    let delay = step / 2 + (step / 2).mul_f64(random.clamp(0.0, 1.0));
    delay.max(retry_after.unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn default_renewal_is_one_third_before_expiry_plus_bounded_jitter() {
        let issued = ts("2026-11-24T00:00:00Z");
        let expires = ts("2026-11-25T00:00:00Z");
        let at = renewal_time(issued, expires, None, "sha256:aa");
        let earliest = ts("2026-11-24T15:55:00Z"); // 8h before expiry minus the 5 min cap
        let latest = ts("2026-11-24T16:00:00Z");
        assert!(at > earliest && at <= latest, "{at}");
        assert_eq!(at, renewal_time(issued, expires, None, "sha256:aa"), "deterministic");
        assert_ne!(at, renewal_time(issued, expires, None, "sha256:bb"), "spread by key");
    }

    #[test]
    fn renew_before_forms() {
        let day = Duration::from_secs(86400);
        let spec = |d: Option<&str>, p: Option<u8>| RenewalSpec {
            renew_before: d.map(str::to_owned),
            renew_before_percentage: p,
        };
        assert_eq!(renew_before(day, Some(&spec(Some("8h"), None))), Duration::from_secs(8 * 3600));
        assert_eq!(renew_before(day, Some(&spec(None, Some(50)))), day / 2);
        // Longer than the lifetime: fall back to a third rather than renewing in a loop.
        assert_eq!(renew_before(day, Some(&spec(Some("48h"), None))), day / 3);
        assert_eq!(renew_before(Duration::from_secs(6), None), Duration::from_secs(2));
    }

    #[test]
    fn renewal_never_precedes_issue() {
        let issued = ts("2026-11-24T00:00:00Z");
        let at = renewal_time(issued, ts("2026-11-24T00:00:03Z"), None, "k");
        assert!(at >= issued && at < ts("2026-11-24T00:00:03Z"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("8h"), Some(Duration::from_secs(28800)));
        for bad in ["", "8", "h", "1d", "-1h", "0s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let t = |n, r| failure_backoff(n, Retry::Transient, None, r);
        assert_eq!(t(1, 0.0), Duration::from_millis(500));
        assert_eq!(t(1, 1.0), Duration::from_secs(1));
        assert_eq!(t(4, 1.0), Duration::from_secs(8));
        assert_eq!(t(30, 1.0), TRANSIENT_BACKOFF_CAP);
        assert_eq!(failure_backoff(1, Retry::Transient, Some(Duration::from_secs(20)), 0.5), Duration::from_secs(20));
        assert!(failure_backoff(1, Retry::Permanent, None, 0.0) >= Duration::from_secs(15));
        assert_eq!(failure_backoff(30, Retry::Permanent, None, 1.0), PERMANENT_BACKOFF_CAP);
    }
}
