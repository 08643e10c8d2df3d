//! The events this process read last from the feed, shared by every
//! follower it serves, bounded by their payload bytes.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::store::FeedEvent;

/// A follower asked for events the ring no longer holds (or never read):
/// it reads them from the store instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Behind;

/// Every event of the feed at positions in `(floor, head]`, oldest first.
#[derive(Debug)]
pub(crate) struct Ring {
    events: VecDeque<Arc<FeedEvent>>,
    bytes: u64,
    budget: u64,
    floor: u64,
    head: u64,
    /// How many times [`Ring::reset`] moved it.
    resets: u64,
}

impl Ring {
    /// An empty ring at `head`, holding at most `budget` payload bytes
    /// (and always its newest event).
    pub(crate) fn new(head: u64, budget: u64) -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            budget,
            floor: head,
            head,
            resets: 0,
        }
    }

    /// How many times the ring was reset: a follower that read from it
    /// and then finds itself [`Behind`] fell behind by reading slowly only
    /// if the ring was not reset meanwhile.
    pub(crate) fn resets(&self) -> u64 {
        self.resets
    }

    /// The last position the ring covers.
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// The position after which the ring holds every event.
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// Adds the events read after [`Ring::head`], through `through`, and
    /// drops the oldest past the budget.
    pub(crate) fn extend(&mut self, events: Vec<Arc<FeedEvent>>, through: u64) {
        for event in events {
            self.bytes += event.event.payload.len() as u64;
            self.events.push_back(event);
        }
        self.head = self.head.max(through);
        while self.bytes > self.budget && self.events.len() > 1 {
            let oldest = self.events.pop_front().expect("more than one event");
            self.bytes -= oldest.event.payload.len() as u64;
            self.floor = oldest.event.position;
        }
    }

    /// Empties the ring and moves it to `head` (after a time nobody
    /// followed, instead of reading everything missed).
    pub(crate) fn reset(&mut self, head: u64) {
        self.events.clear();
        self.bytes = 0;
        self.floor = head;
        self.head = head;
        self.resets += 1;
    }

    /// Up to `max` events after position `after`, oldest first: none when
    /// `after` is at or past the head, [`Behind`] when some of them were
    /// dropped or never read.
    pub(crate) fn after(&self, after: u64, max: usize) -> Result<Vec<Arc<FeedEvent>>, Behind> {
        if after >= self.head {
            return Ok(Vec::new());
        }
        if after < self.floor {
            return Err(Behind);
        }
        let start = self.events.partition_point(|e| e.event.position <= after);
        Ok(self.events.range(start..).take(max).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogId;
    use crate::store::StoredEvent;

    fn event(position: u64, bytes: usize) -> Arc<FeedEvent> {
        Arc::new(FeedEvent {
            reducer: "r".into(),
            event: StoredEvent {
                log_id: LogId::default(),
                index: position,
                position,
                recorded_at: 0,
                payload: "x".repeat(bytes),
            },
        })
    }

    fn positions(events: &[Arc<FeedEvent>]) -> Vec<u64> {
        events.iter().map(|e| e.event.position).collect()
    }

    #[test]
    fn serves_what_it_holds_and_sends_older_readers_to_the_store() {
        let mut ring = Ring::new(10, 1000);
        assert_eq!(ring.after(10, 5), Ok(Vec::new()));
        assert_eq!(ring.after(9, 5), Err(Behind));
        ring.extend((11..=14).map(|p| event(p, 1)).collect(), 14);
        assert_eq!(positions(&ring.after(10, 10).unwrap()), [11, 12, 13, 14]);
        assert_eq!(positions(&ring.after(12, 1).unwrap()), [13]);
        assert_eq!(ring.after(14, 10), Ok(Vec::new()));
        assert_eq!(ring.after(20, 10), Ok(Vec::new()));
    }

    #[test]
    fn drops_the_oldest_past_its_byte_budget_but_keeps_the_newest() {
        let mut ring = Ring::new(0, 250);
        ring.extend((1..=3).map(|p| event(p, 100)).collect(), 3);
        assert_eq!(ring.after(0, 10), Err(Behind));
        assert_eq!(positions(&ring.after(1, 10).unwrap()), [2, 3]);
        ring.extend(vec![event(4, 1000)], 4);
        assert_eq!(ring.after(2, 10), Err(Behind));
        assert_eq!(positions(&ring.after(3, 10).unwrap()), [4]);
        assert_eq!(ring.resets(), 0);
        ring.reset(9);
        assert_eq!(ring.resets(), 1);
        assert_eq!(ring.after(4, 10), Err(Behind));
        assert_eq!(ring.after(9, 10), Ok(Vec::new()));
    }
}
