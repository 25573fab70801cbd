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
/// A dead refresh-token chain: one refused request an hour at first, then a day.
const AFTER_INPUT_CHANGE_BACKOFF_BASE: Duration = Duration::from_secs(3600);
const AFTER_INPUT_CHANGE_BACKOFF_CAP: Duration = Duration::from_secs(86_400);

/// Default least time between two mints of one credential for unchanged inputs; the operator
/// flag `--min-mint-interval` sets it. The floor of a token is the longer of this and a tenth of
/// its lifetime, so neither a `renewBefore` close to the lifetime nor an endpoint that answers
/// with a tiny `expires_in` can make the operator mint in a loop.
pub const DEFAULT_MIN_MINT_INTERVAL: Duration = Duration::from_secs(30);

/// The least time between two mints for unchanged inputs, for a token of `lifetime`.
pub fn mint_floor(lifetime: Duration, min_interval: Duration) -> Duration {
    (lifetime / 10).max(min_interval)
}

/// When a token is renewed, and whether the renewal settings had to be overridden for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    pub at: Timestamp,
    /// The requested margin would renew sooner than the mint floor after issue (or was longer
    /// than the lifetime): the renewal was moved to the floor.
    pub clamped: bool,
}

/// How far before expiry a token is renewed, as the spec asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Margin {
    /// A third of the lifetime (the default, and the fallback for a margin that cannot be read).
    Third,
    Percent(u8),
    Before(Duration),
}

/// A credential's renewal settings, read once per reconcile into the facts decisions use: the
/// margin its spec asks for, and the least time between two mints for unchanged inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalPolicy {
    margin: Margin,
    pub min_interval: Duration,
}

impl RenewalPolicy {
    pub fn new(spec: Option<&RenewalSpec>, min_interval: Duration) -> Self {
        let margin = match spec {
            Some(RenewalSpec { renew_before_percentage: Some(pct), .. }) => Margin::Percent(*pct),
            Some(RenewalSpec { renew_before: Some(text), .. }) => {
                positive_duration(text).map_or(Margin::Third, Margin::Before)
            }
            _ => Margin::Third,
        };
        Self { margin, min_interval }
    }

    /// How long before expiry a token of `lifetime` is renewed.
    fn renew_before(&self, lifetime: Duration) -> Duration {
        match self.margin {
            Margin::Percent(pct) => lifetime * u32::from(pct) / 100,
            // A margin as long as the lifetime would renew in a loop.
            Margin::Before(d) if d < lifetime => d,
            Margin::Before(_) | Margin::Third => lifetime / 3,
        }
    }

    /// When a token issued at `issued_at` and expiring at `expires_at` is renewed: never earlier
    /// than the mint floor after its issue, whatever the settings and the timestamps (which may
    /// come from annotations a tenant can edit: all arithmetic saturates). The jitter is derived
    /// from `jitter_key` (the token's fingerprint) so that every reconcile computes the same time:
    /// a moving renewal time would rewrite status on every pass.
    pub fn renewal(&self, issued_at: Timestamp, expires_at: Timestamp, jitter_key: &str) -> Renewal {
        let lifetime = Duration::try_from(expires_at.duration_since(issued_at)).unwrap_or(Duration::ZERO);
        let before = self.renew_before(lifetime);
        let jitter = (before / 10).min(MAX_RENEWAL_JITTER).mul_f64(unit_fraction(jitter_key));
        let margin = SignedDuration::try_from(before.saturating_add(jitter)).unwrap_or(SignedDuration::MAX);
        let wanted = expires_at.checked_sub(margin).unwrap_or(Timestamp::MIN);
        let floor = SignedDuration::try_from(mint_floor(lifetime, self.min_interval)).unwrap_or(SignedDuration::MAX);
        let earliest = issued_at.checked_add(floor).unwrap_or(Timestamp::MAX);
        let overridden = matches!(self.margin, Margin::Before(d) if d >= lifetime);
        let (at, clamped) = if wanted < earliest { (earliest, true) } else { (wanted, overridden) };
        // Round to whole milliseconds: status carries RFC 3339 times and must compare equal after
        // a round trip through the API server. Rounded up, so the floor still holds.
        let millis = at.as_millisecond().saturating_add(i64::from(at.subsec_nanosecond() % 1_000_000 != 0));
        Renewal { at: Timestamp::from_millisecond(millis).unwrap_or(at), clamped }
    }
}

/// A number in [0, 1) derived from `key`.
fn unit_fraction(key: &str) -> f64 {
    let digest = Sha256::digest(key.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// A positive duration (`8h`, `30m`, `90s`, `1h30m`, `2d`), as renewal settings and flags take.
pub fn positive_duration(text: &str) -> Option<Duration> {
    crate::time_format::parse_duration(text).and_then(|d| Duration::try_from(d).ok()).filter(|d| !d.is_zero())
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
        Retry::AfterInputChange => (AFTER_INPUT_CHANGE_BACKOFF_BASE, AFTER_INPUT_CHANGE_BACKOFF_CAP),
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
        let policy = RenewalPolicy::new(None, DEFAULT_MIN_MINT_INTERVAL);
        let at = policy.renewal(issued, expires, "sha256:aa").at;
        let earliest = ts("2026-11-24T15:55:00Z"); // 8h before expiry minus the 5 min cap
        let latest = ts("2026-11-24T16:00:00Z");
        assert!(at > earliest && at <= latest, "{at}");
        let again = |key| policy.renewal(issued, expires, key).at;
        assert_eq!(at, again("sha256:aa"), "deterministic");
        assert_ne!(at, again("sha256:bb"), "spread by key");
    }

    #[test]
    fn renew_before_forms() {
        let day = Duration::from_secs(86400);
        let spec = |d: Option<&str>, p: Option<u8>| RenewalSpec {
            renew_before: d.map(str::to_owned),
            renew_before_percentage: p,
        };
        let renew_before = |lifetime, spec: Option<&RenewalSpec>| {
            RenewalPolicy::new(spec, DEFAULT_MIN_MINT_INTERVAL).renew_before(lifetime)
        };
        assert_eq!(renew_before(day, Some(&spec(Some("8h"), None))), Duration::from_secs(8 * 3600));
        assert_eq!(renew_before(day, Some(&spec(None, Some(50)))), day / 2);
        // Longer than the lifetime: fall back to a third rather than renewing in a loop.
        assert_eq!(renew_before(day, Some(&spec(Some("48h"), None))), day / 3);
        assert_eq!(renew_before(day, Some(&spec(Some("soon"), None))), day / 3, "unreadable: the default");
        assert_eq!(renew_before(Duration::from_secs(6), None), Duration::from_secs(2));
    }

    #[test]
    fn a_margin_close_to_the_lifetime_is_clamped_to_the_floor() {
        let issued = ts("2026-11-24T00:00:00Z");
        let expires = ts("2026-11-24T01:00:00Z");
        let spec = RenewalSpec { renew_before: Some("59m59s".into()), renew_before_percentage: None };
        let r = RenewalPolicy::new(Some(&spec), DEFAULT_MIN_MINT_INTERVAL).renewal(issued, expires, "k");
        assert_eq!(r, Renewal { at: ts("2026-11-24T00:06:00Z"), clamped: true }, "a tenth of the hour");
        // A tiny expires_in: the floor is the minimum interval, past the expiry.
        let default = RenewalPolicy::new(None, DEFAULT_MIN_MINT_INTERVAL);
        let r = default.renewal(issued, ts("2026-11-24T00:00:03Z"), "k");
        assert_eq!(r, Renewal { at: ts("2026-11-24T00:00:30Z"), clamped: true });
        let r = default.renewal(issued, expires, "k");
        assert!(!r.clamped);
    }

    #[test]
    fn durations() {
        assert_eq!(positive_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(positive_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(positive_duration("8h"), Some(Duration::from_secs(28800)));
        assert_eq!(positive_duration("1d"), Some(Duration::from_secs(86_400)));
        for bad in ["", "8", "h", "-1h", "0s", "1.5h"] {
            assert_eq!(positive_duration(bad), None, "{bad}");
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
        // A dead refresh-token chain: at most one refused request an hour, then a day.
        let dead = |n, r| failure_backoff(n, Retry::AfterInputChange, None, r);
        assert_eq!(dead(1, 0.0), Duration::from_secs(1800));
        assert_eq!(dead(30, 1.0), Duration::from_secs(86_400));
        assert!((1..40).all(|n| dead(n, 0.0) >= Duration::from_secs(1800)));
    }
}
