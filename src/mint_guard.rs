//! The last line of defence against mint loops: a per-credential budget checked right before
//! every token request, whatever decided to mint. A bug anywhere else shows up as a status
//! reason (`MintRateLimited`), an Event and a metric, never as traffic to the token endpoint.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::error::MintBudget;
use crate::schedule;
use crate::target::StoredToken;

/// Mints one credential may make in [`BUDGET_WINDOW`], for any inputs (each change of the
/// source Secret or spec is a legitimate reason to mint; a tenant rotating every second is not).
pub const BUDGET_MINTS: usize = 12;
pub const BUDGET_WINDOW: Duration = Duration::from_secs(3600);
pub const BUDGET: MintBudget = MintBudget { mints: BUDGET_MINTS, window: BUDGET_WINDOW };

/// One mint: when, for which inputs, and the lifetime it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintRecord {
    pub at: Timestamp,
    pub revision: String,
    pub lifetime: Duration,
}

impl MintRecord {
    pub fn of(token: &StoredToken) -> Self {
        Self {
            at: token.issued_at,
            revision: token.revision.clone(),
            lifetime: Duration::try_from(token.expires_at.duration_since(token.issued_at)).unwrap_or(Duration::ZERO),
        }
    }

    /// The earliest time another mint for the same inputs is allowed.
    pub fn next_allowed(&self, min_interval: Duration) -> Timestamp {
        let floor =
            SignedDuration::try_from(schedule::mint_floor(self.lifetime, min_interval)).unwrap_or(SignedDuration::MAX);
        self.at.checked_add(floor).unwrap_or(Timestamp::MAX)
    }
}

/// The recent mints of one credential, newest last; never longer than the budget.
#[derive(Debug, Clone, Default)]
pub struct MintHistory(VecDeque<MintRecord>);

/// Why a mint was refused, and when it may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub retry_at: Timestamp,
    /// The budget for changed inputs is spent (otherwise: the floor for the same inputs).
    pub budget_spent: bool,
}

impl MintHistory {
    pub fn last(&self) -> Option<&MintRecord> {
        self.0.back()
    }

    /// Whether a mint for `revision` may go out at `now`.
    pub fn check(&self, now: Timestamp, revision: &str, min_interval: Duration) -> Result<(), Refusal> {
        if let Some(last) = self.last().filter(|m| m.revision == revision) {
            let next = last.next_allowed(min_interval);
            if now < next {
                return Err(Refusal { retry_at: next, budget_spent: false });
            }
        }
        let window = SignedDuration::try_from(BUDGET_WINDOW).unwrap_or(SignedDuration::MAX);
        let window_start = now.checked_sub(window).unwrap_or(Timestamp::MIN);
        let in_window: Vec<&MintRecord> = self.0.iter().filter(|m| m.at > window_start).collect();
        match in_window.first() {
            Some(oldest) if in_window.len() >= BUDGET_MINTS => {
                Err(Refusal { retry_at: oldest.at.checked_add(window).unwrap_or(Timestamp::MAX), budget_spent: true })
            }
            _ => Ok(()),
        }
    }

    pub fn record(&mut self, mint: MintRecord) {
        if self.0.len() >= BUDGET_MINTS {
            self.0.pop_front();
        }
        self.0.push_back(mint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn record(at: Timestamp, revision: &str) -> MintRecord {
        MintRecord { at, revision: revision.into(), lifetime: Duration::from_secs(86_400) }
    }

    #[test]
    fn same_inputs_wait_for_the_floor() {
        let t0 = ts("2026-11-24T00:00:00Z");
        let mut history = MintHistory::default();
        assert_eq!(history.check(t0, "r1", Duration::from_secs(30)), Ok(()));
        history.record(record(t0, "r1"));
        // A day-long token: the floor is a tenth of it.
        let next = t0 + SignedDuration::from_mins(144);
        let refused = history.check(t0 + SignedDuration::from_secs(1), "r1", Duration::from_secs(30));
        assert_eq!(refused, Err(Refusal { retry_at: next, budget_spent: false }));
        assert_eq!(history.check(next, "r1", Duration::from_secs(30)), Ok(()));
        assert_eq!(history.check(t0 + SignedDuration::from_secs(1), "r2", Duration::from_secs(30)), Ok(()));
    }

    #[test]
    fn changed_inputs_have_a_budget_per_window() {
        let t0 = ts("2026-11-24T00:00:00Z");
        let mut history = MintHistory::default();
        for i in 0..BUDGET_MINTS {
            let at = t0 + SignedDuration::from_secs(i as i64 * 60);
            assert_eq!(history.check(at, &format!("r{i}"), Duration::from_secs(30)), Ok(()), "mint {i}");
            history.record(record(at, &format!("r{i}")));
        }
        let now = t0 + SignedDuration::from_mins(30);
        let refused = history.check(now, "fresh", Duration::from_secs(30));
        assert_eq!(refused, Err(Refusal { retry_at: t0 + SignedDuration::from_hours(1), budget_spent: true }));
        assert_eq!(history.check(t0 + SignedDuration::from_hours(1), "fresh", Duration::from_secs(30)), Ok(()));
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let mut history = MintHistory::default();
        history.record(MintRecord { at: Timestamp::MAX, revision: "r".into(), lifetime: Duration::MAX });
        assert!(history.check(Timestamp::MIN, "r", Duration::MAX).is_err());
        assert!(history.check(Timestamp::MAX, "x", Duration::ZERO).is_ok());
    }
}
