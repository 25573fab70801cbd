//! The one way times are cut and written: whole seconds, RFC 3339 (UTC). Status, target keys,
//! annotations of rollout restarts and messages all read the same to people and SDKs, and a
//! value compares equal after a round trip through the API server. And the one way durations
//! are read, from the spec and from flags.

use jiff::{SignedDuration, Timestamp};

/// `at` without its fraction of a second.
pub fn whole_seconds(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
}

/// `at` as RFC 3339 in whole seconds, e.g. `2026-11-25T00:00:00Z`.
pub fn rfc3339(at: Timestamp) -> String {
    whole_seconds(at).to_string()
}

/// `90d`, `1d12h`, `30m`, `0s`: days, hours, minutes and seconds, checked, at most 100 years.
pub fn parse_duration(text: &str) -> Option<SignedDuration> {
    const LIMIT: i64 = 100 * 365 * 86_400;
    let text = text.trim();
    if text.is_empty() || text.len() > 32 {
        return None;
    }
    let (mut total, mut number, mut digits) = (0_i64, 0_i64, 0_usize);
    for c in text.chars() {
        if let Some(digit) = c.to_digit(10) {
            number = number.checked_mul(10)?.checked_add(i64::from(digit))?;
            digits += 1;
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        if digits == 0 {
            return None;
        }
        total = total.checked_add(number.checked_mul(unit)?)?;
        (number, digits) = (0, 0);
    }
    (digits == 0 && total <= LIMIT).then(|| SignedDuration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_days_and_refuse_garbage() {
        assert_eq!(parse_duration("90d"), Some(SignedDuration::from_hours(90 * 24)));
        assert_eq!(parse_duration("1d12h30m5s"), Some(SignedDuration::from_secs(86_400 + 12 * 3600 + 1805)));
        assert_eq!(parse_duration("0s"), Some(SignedDuration::ZERO));
        for bad in ["", "d", "90", "9x", "-1d", "1.5h", "99999999999999999999d", "36501y", &"1s".repeat(20)] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(parse_duration("36500d"), Some(SignedDuration::from_hours(36_500 * 24)));
        assert_eq!(parse_duration("36501d"), None, "over a century");
    }

    #[test]
    fn fractions_are_cut() {
        let at: Timestamp = "2026-11-25T00:00:00.987Z".parse().expect("timestamp");
        assert_eq!(rfc3339(at), "2026-11-25T00:00:00Z");
        assert_eq!(rfc3339(Timestamp::MAX), Timestamp::MAX.to_string().replace(".999999999", ""));
    }
}
