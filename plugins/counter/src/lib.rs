//! The smallest reducer: counts a log's events, whatever they say.

use eventlogs_guest::{Aggregate, EventRecord};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

/// How many events a log holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Counter {
    /// The number of events folded.
    pub count: u64,
}

impl Aggregate for Counter {
    type Event = IgnoredAny;

    /// Any JSON counts, so appends need no fold.
    const VALIDATES: bool = false;

    fn apply(&mut self, _record: &EventRecord<IgnoredAny>) {
        self.count += 1;
    }
}

eventlogs_guest::export_reducer!(Counter);
