//! Reduces that failed, remembered for a while: the same reduce fails again
//! without running the reducer.
//!
//! A reducer runs in a sandbox with no clock, no randomness and no I/O, so
//! a fold is a function of the version and the log's events: a reduce of
//! the same log, with the same version, to the same end, that failed with
//! a panic, a rejected event, a trap, the memory or stack cap or a bad
//! output fails again the same way. Calling it again only burns CPU that
//! other reducers' requests need, which is what a client retrying a broken
//! log in a loop does. Such a failure is answered again from here for
//! [`DETERMINISTIC_FOR`]. A timeout also depends on how busy the machine
//! was, so it is remembered only for [`TIMEOUT_FOR`]; an instance that
//! could not be had (503) is not remembered at all. A new event moves the
//! log's end, and with it the key: the next reduce runs.
//!
//! A repeated failure is answered no sooner than the fold took to fail, so
//! a client retrying in a loop is paced as before (a loop of instant
//! answers would take the CPU the fold no longer does); the wait is a timer
//! and costs nothing.

use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::LogId;
use crate::runtime::{FailureKind, ReducerError, Version};

/// How long a deterministic failure is answered without running the fold.
const DETERMINISTIC_FOR: Duration = Duration::from_secs(600);

/// How long a timeout is answered without running the fold.
const TIMEOUT_FOR: Duration = Duration::from_secs(5);

/// Failed reduces remembered, at most.
const CAPACITY: u64 = 10_000;

/// One reduce: the log, the reducer version, the log's last index.
pub(crate) type ReduceKey = (LogId, Version, u64);

/// Recently failed reduces.
pub(crate) struct FailedReduces {
    entries: Cache<ReduceKey, Failure>,
}

/// One failed reduce, remembered.
#[derive(Clone)]
pub(crate) struct Failure {
    /// How it failed.
    pub(crate) error: ReducerError,
    /// How long it took to fail.
    pub(crate) took: Duration,
    /// Until when it is answered from here.
    until: Instant,
}

impl Default for FailedReduces {
    fn default() -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(DETERMINISTIC_FOR)
                .build(),
        }
    }
}

impl FailedReduces {
    /// The failure the reduce under `key` ended with lately, if it is still
    /// to be answered.
    pub(crate) fn get(&self, key: &ReduceKey) -> Option<Failure> {
        match self.entries.get(key) {
            Some(failure) if Instant::now() < failure.until => Some(failure),
            Some(_) => {
                self.entries.invalidate(key);
                None
            }
            None => None,
        }
    }

    /// Remembers that the reduce under `key` failed with `error` after
    /// `took`, if the failure would recur.
    pub(crate) fn remember(&self, key: ReduceKey, error: &ReducerError, took: Duration) {
        if let Some(lasting) = recurs_for(&error.kind) {
            let failure = Failure {
                error: error.clone(),
                took,
                until: Instant::now() + lasting,
            };
            self.entries.insert(key, failure);
        }
    }
}

/// How long a failure of this kind would recur on the same input.
fn recurs_for(kind: &FailureKind) -> Option<Duration> {
    match kind {
        FailureKind::Timeout(_) => Some(TIMEOUT_FOR),
        // Transient (every slot busy), about a cached aggregate the fold
        // falls back from, or a host bug: run again.
        FailureKind::Instantiation(_)
        | FailureKind::UndecodableState(_)
        | FailureKind::InvalidBatch(_) => None,
        FailureKind::UndecodableEvent { .. }
        | FailureKind::RejectedEvent { .. }
        | FailureKind::UnserializableState(_)
        | FailureKind::OutOfMemory(_)
        | FailureKind::StackOverflow(_)
        | FailureKind::Panic(_)
        | FailureKind::OutputTooLarge { .. }
        | FailureKind::InvalidOutput(_)
        | FailureKind::Trap(_) => Some(DETERMINISTIC_FOR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_that_recur_are_remembered() {
        let remembered = |kind: FailureKind| recurs_for(&kind);
        assert_eq!(
            remembered(FailureKind::Panic("boom".into())),
            Some(DETERMINISTIC_FOR)
        );
        assert_eq!(
            remembered(FailureKind::Timeout(Duration::from_secs(1))),
            Some(TIMEOUT_FOR)
        );
        assert_eq!(remembered(FailureKind::Instantiation("busy".into())), None);
        assert_eq!(remembered(FailureKind::UndecodableState("x".into())), None);
    }
}
