//! The one way times are cut and written: whole seconds, RFC 3339 (UTC). Status, target keys,
//! annotations of rollout restarts and messages all read the same to people and SDKs, and a
//! value compares equal after a round trip through the API server.

use jiff::Timestamp;

/// `at` without its fraction of a second.
pub fn whole_seconds(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
}

/// `at` as RFC 3339 in whole seconds, e.g. `2026-11-25T00:00:00Z`.
pub fn rfc3339(at: Timestamp) -> String {
    whole_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_are_cut() {
        let at: Timestamp = "2026-11-25T00:00:00.987Z".parse().expect("timestamp");
        assert_eq!(rfc3339(at), "2026-11-25T00:00:00Z");
        assert_eq!(rfc3339(Timestamp::MAX), Timestamp::MAX.to_string().replace(".999999999", ""));
    }
}
