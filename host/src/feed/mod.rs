//! Following the feed live: every event stored, by any process, delivered
//! to each follower in position order, never skipped or repeated.
//!
//! One task per process (`tail`) reads the events committed after the last
//! one it read into a shared ring (`ring`, bounded by bytes) whenever it is
//! woken: by this process's own writes at once, by another process's
//! commits through the store's hints (PostgreSQL `NOTIFY`, a short poll on
//! SQLite), and by a slower poll in case a hint was lost. Each follower
//! (`follow`) first pages the store from where it starts, then reads the
//! ring; one that falls behind what the ring still holds after it caught
//! up ends, and its client resumes from the last position it received.

mod follow;
mod ring;
mod tail;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::store::{EventStore, FeedFilter};

pub use follow::{Follow, Followed};
use ring::Ring;

/// Tuning of a [`Feed`].
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// Payload bytes of recent events kept for followers; a follower further
    /// behind than that ends (and resumes from the store).
    pub buffer_bytes: u64,
    /// How often the store is read for new events when no hint came.
    pub poll: Duration,
    /// Events per page when a follower catches up from the store.
    pub page_limit: u32,
    /// Payload bytes per such page (at least one event).
    pub page_bytes: u64,
}

impl Default for FeedOptions {
    fn default() -> Self {
        Self {
            buffer_bytes: 16 << 20,
            poll: Duration::from_secs(1),
            page_limit: 256,
            page_bytes: 1 << 20,
        }
    }
}

/// The feed as this process follows it. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    shared: Arc<Shared>,
}

/// What the tail and the followers share.
struct Shared {
    store: Arc<dyn EventStore>,
    options: FeedOptions,
    ring: Mutex<Ring>,
    /// The ring's head, announced to followers (and counting them).
    head: watch::Sender<u64>,
    /// Wakes the tail: this process stored events.
    stored: Notify,
    /// Ends the tail and every follower.
    closed: CancellationToken,
    /// Whether the tail was started (on the first follower).
    started: OnceLock<()>,
}

impl Feed {
    /// The feed of `store`. Nothing runs until someone follows it.
    pub fn new(store: Arc<dyn EventStore>, options: FeedOptions) -> Self {
        let ring = Ring::new(0, options.buffer_bytes);
        Self {
            shared: Arc::new(Shared {
                store,
                ring: Mutex::new(ring),
                head: watch::Sender::new(0),
                stored: Notify::new(),
                closed: CancellationToken::new(),
                started: OnceLock::new(),
                options,
            }),
        }
    }

    /// Tells followers that this process stored events.
    pub fn stored(&self) {
        self.shared.stored.notify_one();
    }

    /// Follows the events passing `filter` after position `after`.
    pub fn follow(&self, after: u64, filter: FeedFilter) -> Follow {
        self.shared.started.get_or_init(|| {
            tokio::spawn(tail::run(Arc::downgrade(&self.shared)));
        });
        Follow::new(self.shared.clone(), after, filter)
    }

    /// How many followers there are now.
    pub fn followers(&self) -> usize {
        self.shared.head.receiver_count()
    }

    /// Ends every follower and the tail (at shutdown: a stream would
    /// otherwise hold its connection open until the deadline).
    pub fn close(&self) {
        self.shared.closed.cancel();
    }
}
