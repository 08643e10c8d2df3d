//! The log ends a store's writer learned from its own reads and commits,
//! so that a batch appending to logs it wrote before needs no read first.
//!
//! A remembered end is only a presumption: another process may have
//! appended since. The store statement therefore stores a presumed batch
//! only if every log it appends to still ends where the plan presumed (the
//! statement fails as a race otherwise, and the batch is read and run
//! again under the write lock). A presumption is used only where being
//! wrong cannot change an answer: every append in the batch either states
//! no expected index or expects exactly the presumed end, so a request is
//! never refused as stale on a remembered end. Idempotency keys are not
//! read either: a key stored before collides on its primary key, with the
//! same rerun.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Write;
use super::batch::{Found, Rows};
use crate::LogId;

/// Log ends remembered at most; past it the memory starts again empty.
const CAPACITY: usize = 100_000;

/// The last index of logs this writer read or wrote.
#[derive(Debug, Default)]
pub(crate) struct KnownEnds {
    ends: Mutex<HashMap<LogId, u64>>,
}

impl KnownEnds {
    /// What the database presumably holds for `writes`, if every log they
    /// append to is remembered and every expected index matches; `None`
    /// means read it.
    pub(crate) fn presume(&self, writes: &[Write]) -> Option<Found> {
        let ends = self.ends.lock().expect("known ends lock");
        let mut lasts: HashMap<LogId, u64> = HashMap::new();
        let mut after: HashMap<LogId, u64> = HashMap::new();
        for write in writes.iter().filter(|w| w.creates().is_none()) {
            let known = *ends.get(&write.log_id)?;
            lasts.insert(write.log_id, known);
            let end = after.entry(write.log_id).or_insert(known);
            if write.expected_last_index().is_some_and(|e| e != *end) {
                return None;
            }
            *end += write.events.len() as u64;
        }
        Some(Found {
            lasts,
            keys: HashMap::new(),
        })
    }

    /// Remembers the ends a read found.
    pub(crate) fn learn(&self, found: &Found) {
        self.remember(found.lasts.iter().map(|(&id, &last)| (id, last)));
    }

    /// Remembers the ends a committed batch left.
    pub(crate) fn learn_stored(&self, rows: &Rows<'_>) {
        let created = rows.create_log.iter().zip(&rows.create_last_index);
        let appended = rows.log_id.iter().zip(&rows.log_last_index);
        self.remember(
            created
                .chain(appended)
                .map(|(&id, &last)| (LogId::from(id), last as u64)),
        );
    }

    /// Forgets the logs `writes` name (their batch failed: their ends are
    /// unknown).
    pub(crate) fn forget(&self, writes: &[Write]) {
        let mut ends = self.ends.lock().expect("known ends lock");
        for write in writes {
            ends.remove(&write.log_id);
        }
    }

    fn remember(&self, found: impl Iterator<Item = (LogId, u64)>) {
        let mut ends = self.ends.lock().expect("known ends lock");
        for (id, last) in found {
            if ends.len() >= CAPACITY && !ends.contains_key(&id) {
                ends.clear();
            }
            ends.insert(id, last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;
    use crate::store::Events;

    fn append(log: LogId, expected: Option<u64>, n: usize) -> Write {
        let events: Events = (0..n)
            .map(|_| Payload::parse(r#"{"add":1}"#).unwrap())
            .collect();
        Write::append(log, expected, events)
    }

    fn found(log: LogId, last: u64) -> Found {
        Found {
            lasts: HashMap::from([(log, last)]),
            keys: HashMap::new(),
        }
    }

    #[test]
    fn an_unknown_log_is_read() {
        let ends = KnownEnds::default();
        assert!(ends.presume(&[append(LogId::new(), None, 1)]).is_none());
    }

    #[test]
    fn appends_chain_on_a_known_end_and_a_stale_expectation_is_read() {
        let ends = KnownEnds::default();
        let log = LogId::new();
        ends.learn(&found(log, 4));
        let chained = [append(log, Some(4), 2), append(log, Some(6), 1)];
        assert_eq!(ends.presume(&chained).unwrap().lasts[&log], 4);
        assert!(ends.presume(&[append(log, None, 1)]).is_some());
        // Another process may have moved the end to 7: read it rather than
        // refuse the request on a remembered 4.
        assert!(ends.presume(&[append(log, Some(7), 1)]).is_none());
        ends.forget(&[append(log, None, 1)]);
        assert!(ends.presume(&[append(log, None, 1)]).is_none());
    }

    #[test]
    fn memory_is_bounded() {
        let ends = KnownEnds::default();
        let first = LogId::new();
        ends.learn(&found(first, 0));
        for _ in 0..CAPACITY {
            ends.learn(&found(LogId::new(), 0));
        }
        let held = ends.ends.lock().unwrap().len();
        assert!(held <= CAPACITY, "{held} ends held");
        assert!(ends.presume(&[append(first, None, 1)]).is_none());
    }
}
