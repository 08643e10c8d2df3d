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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
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
    /// Whether to listen for the store's hints that other processes
    /// committed (PostgreSQL `NOTIFY`, SQLite's short poll); without them
    /// only this process's writes and `poll` wake the feed.
    pub hints: bool,
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
            hints: true,
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

/// What the tail knows of one follower.
struct Slot {
    /// Which events it wants.
    filter: FeedFilter,
    /// Every event up to this position was handed out or filtered away.
    /// The follower moves it as it reads; the tail moves it past new events
    /// none of which pass the filter, so that an idle follower is never
    /// woken for them and never falls behind the ring.
    covered: AtomicU64,
    /// Wakes the follower: events it wants arrived, or the feed closed.
    wake: Notify,
}

impl Slot {
    /// Marks everything up to `position` covered (never moving back).
    fn cover(&self, position: u64) {
        self.covered.fetch_max(position, Ordering::SeqCst);
    }
}

/// What the tail and the followers share.
struct Shared {
    store: Arc<dyn EventStore>,
    options: FeedOptions,
    ring: Mutex<Ring>,
    /// Every follower, by id.
    followers: Mutex<HashMap<u64, Arc<Slot>>>,
    /// The next follower's id.
    next_follower: AtomicU64,
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
                followers: Mutex::default(),
                next_follower: AtomicU64::new(0),
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
        self.shared.followers.lock().expect("followers lock").len()
    }

    /// Ends every follower and the tail (at shutdown: a stream would
    /// otherwise hold its connection open until the deadline).
    pub fn close(&self) {
        self.shared.closed.cancel();
    }
}

impl Shared {
    /// Tells each follower about the events just added to the ring, which
    /// covers `(floor, head]` and was at `old_head` before them: a follower
    /// that waits at `old_head` or later is woken only if one of them
    /// passes its filter, and otherwise moved past them. Whether any
    /// follower was woken.
    fn announce(
        &self,
        events: &[Arc<crate::store::FeedEvent>],
        floor: u64,
        old_head: u64,
        head: u64,
    ) -> bool {
        let followers: Vec<Arc<Slot>> = self
            .followers
            .lock()
            .expect("followers lock")
            .values()
            .cloned()
            .collect();
        let mut woke = false;
        for slot in followers {
            let covered = slot.covered.load(Ordering::SeqCst);
            if covered >= head {
                continue;
            }
            // Still reading what came before (or from the store): awake.
            if covered < old_head || covered < floor {
                slot.wake.notify_one();
                woke = true;
                continue;
            }
            let wanted = events.iter().any(|e| {
                e.event.position > covered && slot.filter.matches(e.event.log_id, &e.reducer)
            });
            if wanted
                || slot
                    .covered
                    .compare_exchange(covered, head, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
            {
                slot.wake.notify_one();
                woke = true;
            }
        }
        woke
    }
}
