//! The event wrapper a reducer receives.

/// One recorded event: the decoded payload plus what the host recorded
/// about it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord<E> {
    index: u64,
    recorded_at: i64,
    event: E,
}

impl<E> EventRecord<E> {
    /// A record, as the host would hand it over. Useful in unit tests.
    pub fn new(index: u64, recorded_at: i64, event: E) -> Self {
        Self {
            index,
            recorded_at,
            event,
        }
    }

    /// The event's 0-based position in its log.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// When the host recorded the event: microseconds since the Unix epoch,
    /// UTC, from the server clock.
    pub fn recorded_at(&self) -> i64 {
        self.recorded_at
    }

    /// The decoded event.
    pub fn event(&self) -> &E {
        &self.event
    }

    /// Takes the decoded event out of the record.
    pub fn into_event(self) -> E {
        self.event
    }
}
