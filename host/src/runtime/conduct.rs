//! A reducer version's recent conduct: whether its folds keep running long
//! or trapping. A version whose last [`STRIKES`] folds each had a call that
//! did starts its next calls at the lowest CPU priority instead of earning
//! the demotion again each time, so a reducer that loops or exhausts its
//! memory on every call stops competing with well-behaved ones from the
//! first instant of each call. One fold whose calls all ended in time
//! without trapping clears the record.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Consecutive bad folds after which a version's calls start demoted.
pub(crate) const STRIKES: u32 = 3;

/// The record of one reducer version, shared by its folds.
#[derive(Debug, Default)]
pub(crate) struct Conduct {
    /// Bad folds in a row.
    strikes: AtomicU32,
    /// Calls started demoted because of the record.
    started_demoted: AtomicU64,
}

impl Conduct {
    /// Whether the version's last folds all ran long or trapped (without
    /// counting anything).
    pub(crate) fn suspect(&self) -> bool {
        self.strikes.load(Ordering::Relaxed) >= STRIKES
    }

    /// Whether the next call should start demoted; counts it if so.
    pub(crate) fn start_demoted(&self) -> bool {
        let suspect = self.suspect();
        if suspect {
            self.started_demoted.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("eventlogs_reducer_calls_started_demoted_total").increment(1);
        }
        suspect
    }

    /// Records how a fold ended: `bad` if one of its calls trapped or ran
    /// long.
    pub(crate) fn settle(&self, bad: bool) {
        if bad {
            let _ = self
                .strikes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                    Some(s.saturating_add(1))
                });
        } else {
            self.strikes.store(0, Ordering::Relaxed);
        }
    }

    /// How many calls of this version started demoted.
    pub(crate) fn started_demoted(&self) -> u64 {
        self.started_demoted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_bad_calls_in_a_row_make_a_suspect_and_one_good_call_clears_it() {
        let conduct = Conduct::default();
        conduct.settle(true);
        conduct.settle(true);
        assert!(!conduct.start_demoted());
        conduct.settle(true);
        assert!(conduct.start_demoted());
        assert!(conduct.start_demoted());
        assert_eq!(conduct.started_demoted(), 2);
        conduct.settle(false);
        assert!(!conduct.start_demoted());
        conduct.settle(true);
        conduct.settle(false);
        conduct.settle(true);
        conduct.settle(true);
        assert!(!conduct.start_demoted(), "the good call broke the run");
    }
}
