//! How lifetimes are reported. Tests use lifetimes of a few seconds or less, and a client that
//! reads `expires_in: 0` would treat the token as already expired, so every value is at least
//! one unit.

use std::time::Duration;

pub(crate) fn whole_seconds(lifetime: Duration) -> u64 {
    lifetime.as_secs().max(1)
}

pub(crate) fn whole_millis(lifetime: Duration) -> u128 {
    lifetime.as_millis().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_round_down_but_never_to_zero() {
        assert_eq!(whole_seconds(Duration::from_millis(3_999)), 3);
        assert_eq!(whole_seconds(Duration::from_millis(10)), 1);
        assert_eq!(whole_millis(Duration::from_micros(10)), 1);
        assert_eq!(whole_millis(Duration::from_secs(86_400)), 86_400_000);
    }
}
